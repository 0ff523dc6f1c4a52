"""The receiver's web app: the independent witness that fault tests and benchmarks count with."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

try:  # installed: cronring.receiver beside cronring.verify; a checkout's node.receiver beside node.verify
    from .. import verify
except ImportError:  # a checkout's `python -m receiver`: receiver/ is a top-level package, node/ beside it
    from node import verify  # type: ignore[no-redef]

BODY_LOG_BYTES = 2048
SIGNATURE_TOLERANCE_S = verify.TOLERANCE_S
MAX_DELIVERIES_KEPT = 2_000_000
MAX_ALERTS_KEPT = 100_000


@dataclass(slots=True)
class JobStats:
    deliveries: int = 0
    redeliveries: int = 0
    double_fires: int = 0
    stale_fences: int = 0
    bad_signatures: int = 0
    max_fence: int = -1
    lateness_ms: list[float] = field(default_factory=list)
    executions: set[str] = field(default_factory=set)
    ticks: dict[str, str] = field(default_factory=dict)  # scheduled_at -> first execution id


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


# the witness's words for cronring.verify's reasons (its log and its answers have always used these)
_VERDICTS = {verify.Reason.MISSING: "missing", verify.Reason.MALFORMED: "malformed", verify.Reason.EXPIRED: "expired",
             verify.Reason.BAD_SIGNATURE: "bad"}


def signature_verdict(secrets: tuple[str, ...], header: str | None, body: bytes, now: float) -> str:
    """'ok', 'missing', 'malformed', 'expired' or 'bad' (cronring.verify's check, as a word to record)."""
    try:
        verify.verify_signature(secrets, header, body, now=now, tolerance=SIGNATURE_TOLERANCE_S)
    except verify.Rejected as e:
        return _VERDICTS.get(e.reason, e.reason.value)
    return "ok"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else None


def _int_or_none(value: str | None) -> int | None:
    if value is None or not value.strip().lstrip("-").isdigit() or len(value) > 18:
        return None
    return int(value)


class Witness:
    def __init__(self, log_file: str, secrets: tuple[str, ...]) -> None:
        self.log_path = Path(log_file)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.log_path.parent.resolve()
        self.secrets = secrets
        self.jobs: dict[str, JobStats] = {}
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=MAX_DELIVERIES_KEPT)
        self.alerts: OrderedDict[str, dict[str, Any]] = OrderedDict()  # Idempotency-Key (or id) -> alert, oldest first
        self._unkeyed = 0
        self.total = 0
        self.started = time.time()
        self._lines: list[str] = []
        self._fh = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open, flushed in batches

    def flush(self) -> None:
        if self._lines:
            self._fh.write("".join(self._lines))
            self._fh.flush()
            self._lines.clear()

    def close(self) -> None:
        self.flush()
        self._fh.close()

    def reset(self) -> None:
        self.jobs.clear()
        self.deliveries.clear()
        self.alerts.clear()
        self.total = 0

    def observe(self, request: web.Request, body: bytes) -> tuple[int, dict[str, Any]]:
        now = time.time()
        arrival = datetime.fromtimestamp(now, UTC)
        h = request.headers
        job_id = h.get("X-Cron-Job-Id", "")[:64] or None
        exec_id = h.get("X-Cron-Execution-Id", "")[:64] or None
        sched_raw = h.get("X-Cron-Scheduled-At")
        scheduled = _parse_time(sched_raw)
        fence = _int_or_none(h.get("X-Cron-Fence"))
        attempt = _int_or_none(h.get("X-Cron-Attempt"))
        lateness = (arrival - scheduled).total_seconds() * 1000 if scheduled else None
        verdict = signature_verdict(self.secrets, h.get("X-Cron-Signature"), body, now) if self.secrets else "unchecked"
        status = 200
        outcome = "delivered"
        stats = self.jobs.setdefault(job_id, JobStats()) if job_id else None
        if self.secrets and verdict != "ok":
            status, outcome = 401, f"signature {verdict}"
            if stats:
                stats.bad_signatures += 1
        elif stats is not None:
            if fence is not None and verify.fence_is_stale(fence, stats.max_fence):
                stats.stale_fences += 1
                status, outcome = 409, "stale fence"
            if fence is not None:
                stats.max_fence = max(stats.max_fence, fence)
            if exec_id and exec_id in stats.executions:
                stats.redeliveries += 1
                outcome = "redelivery" if status == 200 else outcome
            else:
                if exec_id:
                    stats.executions.add(exec_id)
                stats.deliveries += 1
                if lateness is not None:
                    stats.lateness_ms.append(lateness)
                if sched_raw:
                    first = stats.ticks.get(sched_raw)
                    if first is None:
                        stats.ticks[sched_raw] = exec_id or ""
                    elif first != exec_id:
                        stats.double_fires += 1
                        outcome = "double fire"
        self.total += 1
        record = {
            "arrivedAt": arrival.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "method": request.method, "path": request.path, "jobId": job_id, "executionId": exec_id,
            "scheduledAt": sched_raw, "fence": fence, "attempt": attempt, "node": h.get("X-Cron-Node", "")[:200] or None,
            "latenessMs": None if lateness is None else round(lateness, 1), "signature": verdict, "outcome": outcome,
            "status": status, "body": body[:BODY_LOG_BYTES].decode("utf-8", errors="replace"),
        }
        self.deliveries.append({k: record[k] for k in ("jobId", "executionId", "scheduledAt", "fence", "attempt",
                                                       "node", "latenessMs", "outcome", "arrivedAt", "path")})
        self._lines.append(json.dumps(record) + "\n")
        if len(self._lines) >= 500:
            self.flush()
        return status, {"success": status == 200, "receivedAt": record["arrivedAt"], "executionId": exec_id,
                        **({} if status == 200 else {"error": outcome})}

    def observe_alert(self, request: web.Request, body: bytes) -> dict[str, Any]:
        """One POST of an alert, recorded whatever it carries: cronring's JSON (``{id, type, at, job?…}``) or a
        Slack-style ``{"text": …}`` (its type then from ``X-Cronring-Alert``). Deliveries with the same
        ``Idempotency-Key`` (else the same id) are one alert seen ``deliveries`` times; its ``signature`` is
        "ok" only while every delivery's was (else the first other verdict: a witness hides no bad one)."""
        now = time.time()
        h = request.headers
        verdict = signature_verdict(self.secrets, h.get("X-Cron-Signature"), body, now) if self.secrets else "unchecked"
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        doc = parsed if isinstance(parsed, dict) else {}
        raw_id = doc.get("id")
        alert_id = str(raw_id) if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
        kind = doc.get("type") if isinstance(doc.get("type"), str) else None
        key = h.get("Idempotency-Key", "")[:200] or alert_id
        entry = self.alerts.get(key) if key else None
        if entry is None:
            entry = {
                "id": alert_id or key, "type": kind or h.get("X-Cronring-Alert", "")[:100] or None, "at": doc.get("at"),
                "receivedAt": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "path": request.path, "signature": verdict, "deliveries": 0,
                "body": parsed if parsed is not None else body[:BODY_LOG_BYTES].decode("utf-8", errors="replace"),
            }
            if not key:
                self._unkeyed += 1
                key = f" unkeyed {self._unkeyed}"  # no key, no id: an alert of its own
            self.alerts[key] = entry
            while len(self.alerts) > MAX_ALERTS_KEPT:
                self.alerts.popitem(last=False)
        elif entry["signature"] == "ok":
            entry["signature"] = verdict
        entry["deliveries"] += 1
        return entry

    def stats(self, job: str | None = None) -> dict[str, Any]:
        def one(s: JobStats) -> dict[str, Any]:
            return {"deliveries": s.deliveries, "redeliveries": s.redeliveries, "doubleFires": s.double_fires,
                    "staleFences": s.stale_fences, "badSignatures": s.bad_signatures, "maxFence": s.max_fence,
                    "ticks": len(s.ticks), "latenessMs": {"p50": percentile(s.lateness_ms, 50),
                                                          "p99": percentile(s.lateness_ms, 99),
                                                          "max": max(s.lateness_ms) if s.lateness_ms else None}}

        if job is not None:
            return one(self.jobs[job]) if job in self.jobs else one(JobStats())
        all_late = [v for s in self.jobs.values() for v in s.lateness_ms]
        total = {
            "requests": self.total,
            "deliveries": sum(s.deliveries for s in self.jobs.values()),
            "redeliveries": sum(s.redeliveries for s in self.jobs.values()),
            "doubleFires": sum(s.double_fires for s in self.jobs.values()),
            "staleFences": sum(s.stale_fences for s in self.jobs.values()),
            "badSignatures": sum(s.bad_signatures for s in self.jobs.values()),
            "jobs": len(self.jobs),
            "latenessMs": {"p50": percentile(all_late, 50), "p99": percentile(all_late, 99),
                           "max": max(all_late) if all_late else None},
        }
        return {"total": total, "jobs": {k: one(v) for k, v in self.jobs.items()}}


WITNESS: web.AppKey[Witness] = web.AppKey("witness", Witness)


def _qnum(request: web.Request, name: str, cast: type, lo: float, hi: float) -> Any:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        v = cast(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} must be a number"}), content_type="application/json") from None
    if not lo <= v <= hi:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} out of range"}), content_type="application/json")
    return v


async def hook(request: web.Request) -> web.Response:
    w = request.app[WITNESS]
    body = await request.read()
    delay_ms = _qnum(request, "delay_ms", int, 0, 600_000)
    forced = _qnum(request, "status", int, 100, 599)
    fail_rate = _qnum(request, "fail_rate", float, 0.0, 1.0)
    status, payload = w.observe(request, body)
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    if status == 200:
        if fail_rate and random.random() < fail_rate:  # noqa: S311 (a test double's failure rate, not a secret)
            status = 503
            payload["success"] = False
        if forced:
            status = forced
            payload["success"] = 200 <= forced < 300
    return web.json_response(payload, status=status)


async def alert(request: web.Request) -> web.Response:
    """POST /alerts or /alerts/…: record it (signed or not: the witness judges afterwards) and answer 200."""
    body = await request.read()
    entry = request.app[WITNESS].observe_alert(request, body)
    return web.json_response({"received": True, "id": entry["id"], "deliveries": entry["deliveries"]})


async def alerts(request: web.Request) -> web.Response:
    """GET /alerts[?type=]: the alerts received, oldest first."""
    kind = request.query.get("type")
    return web.json_response([a for a in request.app[WITNESS].alerts.values() if kind is None or a["type"] == kind])


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[WITNESS].stats(request.query.get("job")))


async def deliveries(request: web.Request) -> web.Response:
    w = request.app[WITNESS]
    job = request.query.get("job")
    items = [d for d in w.deliveries if job is None or d["jobId"] == job]
    return web.json_response(items)


async def health(request: web.Request) -> web.Response:
    w = request.app[WITNESS]
    return web.json_response({"status": "healthy", "uptimeSeconds": int(time.time() - w.started), "requests": w.total})


async def reset(request: web.Request) -> web.Response:
    """Forget everything: only with ``Authorization: Bearer $RECEIVER_TOKEN``, or from this machine
    when no token is set."""
    token = request.app[RESET_TOKEN]
    if token:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(sent.encode(), token.encode()):
            raise web.HTTPUnauthorized(text=json.dumps({"error": "reset needs the receiver's token"}),
                                       content_type="application/json")
    elif request.remote not in ("127.0.0.1", "::1"):
        raise web.HTTPForbidden(text=json.dumps({"error": "reset is only allowed from this machine without a token"}),
                                content_type="application/json")
    request.app[WITNESS].reset()
    return web.json_response({"reset": True})


async def logs_index(request: web.Request) -> web.Response:
    w = request.app[WITNESS]
    w.flush()
    # its own log only: never another program's file in the same directory
    return web.json_response({"files": [w.log_path.name]})


async def read_log(request: web.Request) -> web.Response:
    w = request.app[WITNESS]
    w.flush()
    name = request.match_info["name"]
    lines = _qnum(request, "lines", int, 1, 10_000) or 100
    if name != w.log_path.name:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such log"}), content_type="application/json")
    path = w.log_path
    if path.is_symlink() or not path.is_file():
        raise web.HTTPNotFound(text=json.dumps({"error": "no such log"}), content_type="application/json")
    with open(path, "rb") as fh:  # noqa: ASYNC230 - a small local file
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - lines * 4096))
        tail = fh.read().decode("utf-8", errors="replace").splitlines()[-lines:]
    return web.json_response({"file": name, "lines": tail})


async def _flusher(app: web.Application) -> Any:
    w = app[WITNESS]

    async def loop() -> None:
        while True:
            await asyncio.sleep(0.5)
            w.flush()

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    w.close()


RESET_TOKEN: web.AppKey[str] = web.AppKey("reset_token", str)


def create_app(*, log_file: str, secrets: tuple[str, ...] = (), token: str = "") -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[WITNESS] = Witness(log_file, secrets)
    app[RESET_TOKEN] = token
    app.router.add_route("*", "/webhook", hook)
    app.router.add_route("*", "/hooks/{name}", hook)
    app.router.add_post("/alerts", alert)
    app.router.add_post("/alerts/{tail:.+}", alert)
    app.router.add_get("/alerts", alerts)
    app.router.add_get("/stats", stats)
    app.router.add_get("/deliveries", deliveries)
    app.router.add_get("/health", health)
    app.router.add_post("/reset", reset)
    app.router.add_get("/logs", logs_index)
    app.router.add_get("/logs/{name}", read_log)
    app.cleanup_ctx.append(_flusher)
    return app
