"""Thin handlers for /api/*: parse, call one function, answer.

Seed-compatible paths and field names; errors are mapped in ``errors.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import metrics
from ..aio import Slices
from ..cluster.messages import MembershipEvent, unpack
from ..cluster.redisconn import SentinelURL, is_sentinel
from ..model.jobs import Job, rfc3339
from ..model.schedule import Budget, ScheduleError, ScheduleTooCostly, describe, parse
from ..scheduling.audit import job_ledger, settle_for
from . import actions
from .errors import BadRequest, RequestTimeout, UnsupportedMediaType
from .openapi import spec as openapi_spec
from .runtime import RUNTIME, Runtime

MAX_PAGE = 500
MAX_PREVIEW = 100


def rt(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


JSON_TYPES = ("application/json", "application/merge-patch+json")
BODY_READ_SECONDS = 10


async def read_json(request: web.Request) -> Any:
    ctype = request.headers.get("Content-Type", "")
    # parsed, not matched: "text/plain; x=+json" is text (a page may send that cross-site without a preflight)
    if request.can_read_body and request.content_type not in JSON_TYPES:
        raise UnsupportedMediaType("send JSON with Content-Type: application/json", {"contentType": ctype[:100] or None})
    try:
        async with asyncio.timeout(BODY_READ_SECONDS):  # a client trickling its body holds nothing for long
            raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {BODY_READ_SECONDS} s") from None
    if not raw:
        raise BadRequest("request body is empty; send a JSON object")
    text = raw.decode("utf-8")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("JSON nested too deeply") from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise BadRequest("body has a value that cannot be read", {"body": str(e)[:200]}) from None


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON")


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", {name: raw[:50]}) from None
    if not lo <= v <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}", {name: v})
    return v


def _instant_param(raw: str | None, name: str) -> datetime:
    if not raw:
        return datetime.now(UTC)
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an RFC 3339 instant", {name: raw[:60]}) from None
    if dt.tzinfo is None:
        raise BadRequest(f"{name} must carry a UTC offset", {name: raw[:60]})
    if not 1970 <= dt.year <= 9000:
        raise BadRequest(f"{name} must be between 1970 and 9000", {name: raw[:60]})
    return dt.astimezone(UTC)


def _if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    v = raw.strip().removeprefix("W/").strip('"')
    if not v.isdigit():
        raise BadRequest("If-Match must be the job's version, as in its ETag", {"If-Match": raw[:40]})
    return int(v)


PREVIEW_STEPS = 4_000  # schedule steps one preview may spend (100 fires cost at most ~400)


async def preview(schedule_text: str, zone: str, start: datetime, count: int) -> list[dict[str, str]]:
    """The next ``count`` fire times, computed in slices (never holding the loop) within PREVIEW_STEPS
    (``ScheduleTooCostly`` past it). Fewer when the schedule ends."""
    s = parse(schedule_text, zone)
    out = []
    slices = Slices()
    for t in islice(s.iter_after(start, Budget(PREVIEW_STEPS)), count):
        local = t.astimezone(s.zone)
        out.append({"utc": rfc3339(t) or "", "local": local.isoformat(), "offset": local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]})
        await slices.pause()
    return out


_NEXT_RUN: dict[tuple[str, str], datetime] = {}


def next_run(job: Job) -> str | None:
    """The next fire time; shared by every job with the same schedule and zone until it passes."""
    if job.paused:
        return None
    now = datetime.now(UTC)
    key = (job.schedule, job.time_zone)
    nxt = _NEXT_RUN.get(key)
    if nxt is None or nxt <= now:
        try:
            nxt = job.parsed_schedule.next_after(now)
        except ScheduleError:
            return None
        if len(_NEXT_RUN) > 10_000:
            _NEXT_RUN.clear()
        _NEXT_RUN[key] = nxt
    return rfc3339(nxt)


def exec_to_api(e: dict[str, Any] | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "id": e["id"], "jobId": e["job_id"], "scheduledAt": rfc3339(e["scheduled_at"]), "kind": e["kind"],
        "state": e["state"], "fence": e["fence"], "node": e["node"], "attempts": e["attempts"],
        "statusCode": e["status_code"], "durationMs": e["duration_ms"], "latenessMs": e["lateness_ms"],
        "error": e["error"], "responseExcerpt": e["response_excerpt"], "missedCount": e["missed_count"],
        "missedFrom": rfc3339(e["missed_from"]), "claimedAt": rfc3339(e["claimed_at"]),
        "startedAt": rfc3339(e["started_at"]), "finishedAt": rfc3339(e["finished_at"]),
        "redelivered": bool(e.get("redelivered")),
    }


def job_state(job: Job, last: dict[str, Any] | None) -> str:
    if job.paused:
        return "paused"
    if last is not None and last["state"] in ("running", "claimed"):
        return "running"
    if last is not None and last["state"] in ("failed", "timed_out"):
        return "failing"
    return "waiting"


async def enrich(r: Runtime, jobs: list[Job], last: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The API's view of jobs: their last execution (read here unless given), owner, state, next run."""
    ids = [j.id for j in jobs]
    if last is None:
        last = await r.store.last_executions(ids)
    try:
        holders = await r.locks.holders(ids)
    except Exception:
        holders = {}
    out = []
    slices = Slices()  # a page of 500 jobs with rare schedules: their next fires are computed in slices
    for j in jobs:
        d = j.to_api()
        le = last.get(j.id)
        d["owner"] = holders.get(j.id) or j.owner
        d["nextRunAt"] = next_run(j)
        d["running"] = le is not None and le["state"] in ("running", "claimed")
        d["lastExecutedAt"] = rfc3339(le["started_at"] or le["scheduled_at"]) if le else None
        d["isLocked"] = bool(holders.get(j.id))
        d["state"] = job_state(j, le)
        d["lastExecution"] = exec_to_api(le)
        out.append(d)
        await slices.pause()
    return out


# ---- handlers --------------------------------------------------------------------

async def list_crons(request: web.Request) -> web.Response:
    r = rt(request)
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
    cursor = _int_param(request, "cursor", 0, 0, 2**62) or None
    q = request.query.get("q") or None
    if q is not None and (len(q) > 200 or "\x00" in q):
        raise BadRequest("q must be at most 200 characters", {"q": "too long or contains NUL"})
    state = request.query.get("state") or None
    if state not in (None, "all", "paused", "active"):
        raise BadRequest("state must be all, active or paused", {"state": state[:30]})
    jobs = await r.store.list_jobs(limit=limit + 1, cursor=cursor, q=q,
                                   paused={"paused": True, "active": False}.get(state or "all"))
    more = len(jobs) > limit
    jobs = jobs[:limit]
    headers = {}
    if more:
        nxt = jobs[-1].seq
        headers["X-Next-Cursor"] = str(nxt)
        query = dict(request.query)
        query["cursor"] = str(nxt)
        headers["Link"] = f'<{request.rel_url.with_query(query)}>; rel="next"'
    return web.json_response(await enrich(r, jobs), headers=headers)


async def create_cron(request: web.Request) -> web.Response:
    r = rt(request)
    created = await actions.create_job(r, await read_json(request))
    (body,) = await enrich(r, [created])
    return web.json_response(body, status=201, headers={"ETag": f'"{created.version}"',
                                                        "Location": f"/api/crons/{created.id}"})


async def get_cron(request: web.Request) -> web.Response:
    r = rt(request)
    job, last = await r.store.get_job_and_last(request.match_info["id"])
    (body,) = await enrich(r, [job], {job.id: last} if last else {})
    return web.json_response(body, headers={"ETag": f'"{job.version}"'})


async def update_cron(request: web.Request) -> web.Response:
    r = rt(request)
    if_version = _if_match(request)
    updated = await actions.update_job(r, request.match_info["id"], await read_json(request), if_version)
    (body,) = await enrich(r, [updated])
    return web.json_response(body, headers={"ETag": f'"{updated.version}"'})


async def delete_cron(request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    await actions.delete_job(rt(request), job_id, _if_match(request))
    return web.json_response({"id": job_id, "deleted": True})


async def pause_cron(request: web.Request) -> web.Response:
    return await _set_paused(request, True)


async def resume_cron(request: web.Request) -> web.Response:
    return await _set_paused(request, False)


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    r = rt(request)
    job = await actions.set_paused(r, request.match_info["id"], paused)
    (body,) = await enrich(r, [job])
    return web.json_response(body)


async def run_cron(request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    execution_id = await actions.run_now(rt(request), job_id)
    return web.json_response({"executionId": execution_id, "jobId": job_id}, status=202)


async def list_executions(request: web.Request) -> web.Response:
    r = rt(request)
    job_id = request.match_info["id"]
    await r.store.get_job(job_id, include_deleted=True)
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
    before = _instant_param(request.query["before"], "before") if request.query.get("before") else None
    rows = await r.store.executions(job_id, limit=limit, before=before)
    return web.json_response([exec_to_api(e) for e in rows])


TICKS_LIMIT = 10_000


async def job_ticks(request: web.Request) -> web.Response:
    """The tick ledger: every scheduled instant in [from, to) with its fate (why did or didn't it run?)."""
    r = rt(request)
    job_id = request.match_info["id"]
    await r.store.get_job(job_id, include_deleted=True)
    end = _instant_param(request.query.get("to"), "to")
    start = _instant_param(request.query["from"], "from") if request.query.get("from") else end - timedelta(hours=1)
    if start >= end:
        raise BadRequest("from must be before to", {"from": rfc3339(start), "to": rfc3339(end)})
    limit = _int_param(request, "limit", TICKS_LIMIT, 1, TICKS_LIMIT)
    s = r.settings
    settle = settle_for(s.member_ttl, s.heartbeat_interval, s.claim_ahead)
    try:
        ledger = await job_ledger(r.store, job_id, start, end, settle=settle, limit=limit)
    except ScheduleTooCostly as e:
        raise BadRequest(str(e), {"from": rfc3339(start), "to": rfc3339(end)}) from None
    return web.json_response({"jobId": job_id, "from": rfc3339(start), "to": rfc3339(end), **ledger.to_api()})


async def preview_cron(request: web.Request) -> web.Response:
    r = rt(request)
    job = await r.store.get_job(request.match_info["id"])
    count = _int_param(request, "count", 10, 1, MAX_PREVIEW)
    start = _instant_param(request.query.get("from"), "from")
    try:
        fires = await preview(job.schedule, job.time_zone, start, count)
    except ScheduleTooCostly as e:
        raise BadRequest(str(e), {"count": count, "from": rfc3339(start)}) from None
    return web.json_response({"schedule": job.schedule, "timeZone": job.time_zone, "fires": fires})


async def preview_schedule(request: web.Request) -> web.Response:
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    unknown = set(payload) - {"schedule", "timeZone", "count", "from"}
    if unknown:
        raise BadRequest("unknown fields", {k[:60]: "unknown field" for k in unknown})
    sched, zone = payload.get("schedule"), payload.get("timeZone", "UTC")
    if not isinstance(sched, str):
        raise BadRequest("invalid input", {"schedule": "is required and must be a string"})
    if not isinstance(zone, str):
        raise BadRequest("invalid input", {"timeZone": "must be a string"})
    count = payload.get("count", 10)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PREVIEW:
        raise BadRequest("invalid input", {"count": f"must be an integer between 1 and {MAX_PREVIEW}"})
    frm = payload.get("from")
    if frm is not None and not isinstance(frm, str):
        raise BadRequest("invalid input", {"from": "must be an RFC 3339 string"})
    start = _instant_param(frm, "from")
    try:
        fires = await preview(sched, zone, start, count)
    except ScheduleTooCostly as e:
        raise BadRequest(str(e), {"count": count, "from": rfc3339(start)}) from None
    except ScheduleError as e:
        key = "timeZone" if "time zone" in str(e) else "schedule"
        raise BadRequest("invalid input", {key: str(e)}) from None
    return web.json_response({"schedule": sched, "timeZone": zone, "description": describe(sched), "fires": fires})


async def cluster(request: web.Request) -> web.Response:
    return web.json_response(await cluster_view(rt(request)))


async def cluster_view(r: Runtime) -> dict[str, Any]:
    view = r.membership.view
    infos = await r.membership.infos()
    members = []
    for node_id, score in sorted(view.members.items()):
        info = infos.get(node_id)
        members.append({
            "id": node_id, "url": info.url if info else None, "version": info.version if info else None,
            "startedAt": rfc3339(datetime.fromtimestamp(info.started_at, UTC)) if info else None,
            "owned": info.owned if info else None, "heartbeatAgeMs": max(0, view.server_now_ms - score),
            "self": node_id == r.settings.node_id,
        })
    raw = await r.redis.lrange(r.keys.handovers, 0, 49)
    handovers = []
    for blob in raw:
        try:
            rec = unpack(cast(bytes, blob))
        except ValueError:
            continue
        if isinstance(rec, MembershipEvent):
            handovers.append({"node": rec.node_id, "epoch": rec.epoch, **rec.detail})
    return {
        "nodeId": r.settings.node_id, "epoch": view.epoch, "members": members,
        "ownedHere": len(r.scheduler.owned), "catalogueJobs": r.catalogue.live_count(),
        "heartbeatFresh": r.membership.fresh(),
        "heartbeatAgeMs": None if (age := r.membership.heartbeat_age()) is None else int(age * 1000),
        "memberTtlMs": int(r.settings.member_ttl * 1000), "heartbeatIntervalMs": int(r.settings.heartbeat_interval * 1000),
        "handoversIn": r.scheduler.ownership.handovers_in, "handoversOut": r.scheduler.ownership.handovers_out,
        "locksHeld": len(r.scheduler.ownership.held),
        # jobs the ring gives this node whose lock another node has kept for longer than member_ttl
        "stuckJobs": [{"jobId": j, "lockHolder": h} for j, h in list(r.scheduler.ownership.stuck.items())[:100]],
        "recentHandovers": handovers,
        "backends": backends_view(r),
    }


def backends_view(r: Runtime) -> dict[str, Any]:
    """Where this node's Redis and MariaDB are: with Sentinel, the service it follows; with several
    MariaDB hosts, the one it writes to now and how often that changed (never a password)."""
    url = r.settings.database
    sentinel = is_sentinel(r.settings.redis_url)
    return {
        "redis": {"mode": "sentinel" if sentinel else "single",
                  **({"service": SentinelURL.parse(r.settings.redis_url).service} if sentinel else {})},
        "database": {"mode": "primary-switch" if r.store.multi_host else "single",
                     "hosts": [f"{h}:{p}" for h, p in url.hosts], "primary": r.store.primary_name,
                     "switches": r.store.switches},
    }


async def health(request: web.Request) -> web.Response:
    r = rt(request)
    db_ok = await r.store.ping()
    try:
        redis_ok = bool(await r.redis.ping())
    except Exception:
        redis_ok = False
    total = None
    if db_ok:
        try:
            total = await r.store.count_jobs()
        except Exception:
            total = None
    ok = db_ok and redis_ok
    body = {
        "status": "healthy" if ok else "unhealthy", "instanceId": r.settings.node_id,
        "redis": "connected" if redis_ok else "disconnected", "database": "connected" if db_ok else "disconnected",
        "totalCronsDB": total, "activeCronsInstance": len(r.scheduler.owned), "epoch": r.membership.view.epoch,
        "members": len(r.membership.view.members), "heartbeatFresh": r.membership.fresh(),
        "version": r.version, "uptimeSeconds": int(time.time() - r.membership.started_at),
        # audited instants of this node's jobs that were due and have no row (a bug): should stay 0
        "unaccountedTicks": r.auditor.unaccounted,
    }
    return web.json_response(body, status=200 if ok else 503)


async def livez(request: web.Request) -> web.Response:
    """Liveness: the process and its event loop answer. Nothing else is asked (a dependency outage
    must not get a node restarted: it recovers by itself)."""
    r = rt(request)
    return web.json_response({"status": "live", "instanceId": r.settings.node_id,
                              "uptimeSeconds": int(time.time() - r.membership.started_at)})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the node can serve and fire: Redis and MariaDB answer, its membership lease is
    fresh, and it is not stopping. 503 with the failing checks otherwise (a load balancer sends
    it nothing meanwhile)."""
    r = rt(request)
    try:
        async with asyncio.timeout(2):
            redis_ok = bool(await r.redis.ping())
    except Exception:
        redis_ok = False
    checks = {"redis": redis_ok, "database": await r.store.ping(), "membership": r.membership.fresh(),
              "running": not r.scheduler.stopping}
    ok = all(checks.values())
    return web.json_response({"status": "ready" if ok else "not ready", "instanceId": r.settings.node_id,
                              "checks": checks}, status=200 if ok else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest(metrics.REGISTRY))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())


def setup(app: web.Application) -> None:
    app.router.add_get("/api/crons", list_crons)
    app.router.add_post("/api/crons", create_cron)
    app.router.add_post("/api/schedules/preview", preview_schedule)
    app.router.add_get("/api/crons/{id:[0-9a-f]{1,32}}", get_cron)
    app.router.add_put("/api/crons/{id:[0-9a-f]{1,32}}", update_cron)
    app.router.add_patch("/api/crons/{id:[0-9a-f]{1,32}}", update_cron)
    app.router.add_delete("/api/crons/{id:[0-9a-f]{1,32}}", delete_cron)
    app.router.add_post("/api/crons/{id:[0-9a-f]{1,32}}/run", run_cron)
    app.router.add_post("/api/crons/{id:[0-9a-f]{1,32}}/pause", pause_cron)
    app.router.add_post("/api/crons/{id:[0-9a-f]{1,32}}/resume", resume_cron)
    app.router.add_get("/api/crons/{id:[0-9a-f]{1,32}}/executions", list_executions)
    app.router.add_get("/api/crons/{id:[0-9a-f]{1,32}}/preview", preview_cron)
    app.router.add_get("/api/crons/{id:[0-9a-f]{1,32}}/ticks", job_ticks)
    app.router.add_get("/api/cluster", cluster)
    app.router.add_get("/api/health", health)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/api/openapi.json", openapi)

