"""A client for any cronring node's API: ``Client`` (blocking, standard library only) and ``AsyncClient``
(aiohttp), the same methods on both. Errors come back as exceptions by status (``NotFound``,
``Conflict``, ``Unavailable``…, all ``ApiError`` with ``status``, ``message`` and ``details``). The CLI
is built on ``Client``.

    from cronring.client import Client
    c = Client("http://127.0.0.1:8081", token="…")
    job = c.create_job({"uri": "https://example.com/hook", "schedule": "*/5 * * * *", "name": "poll"})
    c.pause(job["id"])
    for tick in c.ticks(job["id"])["ticks"]:
        print(tick["scheduledAt"], tick["fate"])

    async with AsyncClient("http://127.0.0.1:8081") as c:
        jobs = await c.list_jobs()
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TypedDict, cast
from urllib.parse import quote, urlencode

import aiohttp

from . import __version__


class Job(TypedDict, total=False):
    """A job as the API shows it (secret header values and credentials in the target masked)."""

    id: str
    name: str
    uri: str
    httpMethod: str
    headers: dict[str, str]
    body: Any
    schedule: str
    timeZone: str
    paused: bool
    labels: dict[str, str]
    delivery: str
    misfirePolicy: str
    misfireGraceSeconds: int
    concurrencyPolicy: str
    schedules: list[str]
    startAt: str | None
    endAt: str | None
    maxRuns: int | None
    remainingRuns: int | None
    jitterSeconds: int
    dstPolicy: dict[str, str]
    excludeCalendars: list[str]
    skipUntil: str | None
    completedAt: str | None
    pauseAfterFailures: int
    alertUri: str | None
    pausedReason: str | None
    pausedBy: str | None
    pausedAt: str | None
    pausedUntil: str | None
    failStreak: int
    failingSince: str | None
    version: int
    state: str
    owner: str | None
    nextRunAt: str | None


class ApiError(Exception):
    """The API answered with an error (``status`` 0: the node could not be reached). ``applied``: from
    ``apply_jobs``, what the batches before the refused one did (its merged result)."""

    applied: dict[str, Any] | None = None

    def __init__(self, status: int, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {message}" + (f" {json.dumps(details)}" if details else "") if status else message)
        self.status, self.message, self.details = status, message, details


class BadRequest(ApiError):  # 400, 415, 422: the input was refused, nothing changed
    pass


class Unauthorized(ApiError):  # 401: no or a wrong token
    pass


class Forbidden(ApiError):  # 403: a read token tried to write
    pass


class NotFound(ApiError):  # 404
    pass


class Conflict(ApiError):  # 409, 412: a run in flight, the job cap, a stale version
    pass


class TooManyRequests(ApiError):  # 429: run-now limit, throttled authentication
    pass


class Unavailable(ApiError):  # 503 or unreachable: Redis, MariaDB or the node's lease; retry
    pass


_BY_STATUS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                         409: Conflict, 412: Conflict, 415: BadRequest, 422: BadRequest,
                                         429: TooManyRequests, 503: Unavailable}


def error_for(status: int, body: bytes) -> ApiError:
    try:
        err = json.loads(body or b"{}")
    except ValueError:
        err = {}
    if not isinstance(err, dict):
        err = {}
    # a refused bulk apply lists its items in ``items`` (its ``details`` are two counts): they are this error's details
    details = err["items"] if isinstance(err.get("items"), list) else err.get("details")
    return _BY_STATUS.get(status, ApiError)(status, str(err.get("error") or f"HTTP {status}"), details)


def _check_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):  # urlopen would also read file: and ftp: URLs
        raise BadRequest(0, f"the node's URL must be http(s), got {url!r}")
    return url


def _ticks_path(job_id: str, start: str | None, end: str | None) -> str:
    query = urlencode({k: v for k, v in (("from", start), ("to", end)) if v})
    return f"/api/crons/{quote(job_id)}/ticks" + (f"?{query}" if query else "")


def _forecast_path(start: str | None, end: str | None, step: int | None) -> str:
    query = urlencode({k: str(v) for k, v in (("from", start), ("to", end), ("step", step)) if v is not None})
    return "/api/forecast" + (f"?{query}" if query else "")


def _preview_path(job_id: str, count: int | None, excluded: bool) -> str:
    query = urlencode({**({"count": str(count)} if count else {}), **({"excluded": "true"} if excluded else {})})
    return f"/api/crons/{quote(job_id)}/preview" + (f"?{query}" if query else "")


def _skip_body(count: int | None, until: str | None) -> dict[str, Any]:
    """``count`` due instants, or every instant up to ``until`` (RFC 3339); neither: cancel the skip."""
    if count is not None and until is not None:
        raise BadRequest(0, "skip takes count or until, not both")
    return {"until": until} if until is not None else {"count": count or 0}


def _backfill_body(start: str, end: str, policy: str | None, max_per_second: int | None) -> dict[str, Any]:
    return {"from": start, "to": end, **({"concurrencyPolicy": policy} if policy else {}),
            **({"maxPerSecond": max_per_second} if max_per_second else {})}


def _pause_body(note: str | None, until: str | None = None) -> dict[str, Any] | None:
    body = {k: v for k, v in (("note", note), ("until", until)) if v is not None}
    return body or None


def _query(path: str, **params: Any) -> str:
    query = urlencode({k: str(v) for k, v in params.items() if v is not None})
    return path + (f"?{query}" if query else "")


def _audit_path(job_id: str | None, actor: str | None, action: str | None, limit: int | None,
                before: int | str | None) -> str:
    return _query("/api/audit", jobId=job_id, actor=actor, action=action, limit=limit, before=before)


def _alerts_path(job_id: str | None, type_: str | None, limit: int | None) -> str:
    return _query("/api/alerts", jobId=job_id, type=type_, limit=limit)


def _bulk(action: str) -> str:
    if action not in ("pause", "resume", "run", "delete"):
        raise BadRequest(0, f"bulk actions are pause, resume, run and delete, not {action!r}")
    return action


def _bulk_body(selector: str | None, ids: list[str] | None, dry_run: bool, note: str | None) -> dict[str, Any]:
    return {**({"selector": selector} if selector is not None else {}), **({"ids": ids} if ids is not None else {}),
            **({"dryRun": True} if dry_run else {}), **({"note": note} if note is not None else {})}


CLIENT_HEADER = "X-Cronring-Client"  # how a write came, in the audit log: "cli/..." is the CLI, else the API

APPLY_BATCH = 1000  # jobs per POST /api/crons/apply (the node's limit)
APPLY_BATCH_BYTES = 4 * 1024 * 1024  # ... and at most this much JSON (half the node's default limit; less on a 413)
Progress = Callable[[int, int], None]  # (jobs done, jobs in all)


class _Batches:
    """The jobs, each as JSON once, cut into consecutive batches of at most ``batch`` jobs and ``max_bytes`` of request
    body (a job bigger than that goes alone). After a 413 (``shrink``) the batches from the refused one on are
    smaller: the node's own limit may be below APPLY_BATCH_BYTES (CRONRING_MAX_APPLY_BODY_BYTES)."""

    def __init__(self, jobs: Sequence[dict[str, Any]], batch: int) -> None:
        if not 1 <= batch <= APPLY_BATCH:
            raise BadRequest(0, f"batch must be between 1 and {APPLY_BATCH}, got {batch}")
        self.docs = [json.dumps(job).encode() for job in jobs]
        self.batch, self.max_bytes = batch, APPLY_BATCH_BYTES

    def cut(self, start: int) -> list[bytes]:
        """The batch that begins with job ``start``."""
        size, end = _APPLY_WRAPPER, start
        while end < len(self.docs) and end - start < self.batch:
            n = len(self.docs[end]) + (2 if end > start else 0)  # (", " between two jobs)
            if end > start and size + n > self.max_bytes:
                break
            size, end = size + n, end + 1
        return self.docs[start:end]

    def shrink(self, e: ApiError, part: list[bytes]) -> bool:
        """A batch refused as too large (413: nothing was written) is sent again in smaller ones: up to the limit the
        node told, if this request was over it, else half of it. False when it was one job: that job is too large."""
        if e.status != 413 or len(part) < 2:
            return False
        sent = _APPLY_WRAPPER + sum(len(d) for d in part) + 2 * (len(part) - 1)
        limit = e.details.get("limit") if isinstance(e.details, dict) else None
        self.max_bytes = limit if isinstance(limit, int) and 0 < limit < sent else sent // 2
        return True


def _apply_body(part: list[bytes], dry_run: bool) -> bytes:
    return b'{"jobs": [' + b", ".join(part) + b'], "dryRun": ' + (b"true" if dry_run else b"false") + b"}"


_APPLY_WRAPPER = len(_apply_body([], False))  # a request's bytes besides its jobs (and the ", " between them)


def _apply_total(dry_run: bool) -> dict[str, Any]:
    return {"dryRun": dry_run, "created": 0, "updated": 0, "unchanged": 0, "jobs": [], "batches": 0}


def _merge(total: dict[str, Any], part: dict[str, Any], offset: int) -> None:
    """A batch's answer into the whole one: counts added, its jobs' indexes made indexes of the whole list."""
    for key in ("created", "updated", "unchanged"):
        total[key] += int(part.get(key) or 0)
    total["jobs"] += [{**j, "index": int(j["index"]) + offset} for j in part.get("jobs") or []]
    total["batches"] += 1


def _refused(e: ApiError, offset: int, total: dict[str, Any]) -> ApiError:
    """A batch's refusal, its items' indexes made indexes of the whole list, with what was applied before it."""
    if isinstance(e.details, list):
        e.details = [{**i, "index": int(i["index"]) + offset} if isinstance(i, dict) and isinstance(i.get("index"), int)
                     else i for i in e.details]
    e.applied = total
    return e


def _job_refused(e: ApiError, index: int, job: dict[str, Any], total: dict[str, Any]) -> ApiError:
    """A job its single route refused (one request per job, an older node), told as a refused batch tells its items:
    ``details`` lists it — its index in the whole list, name, status, error and ``fields`` (the route's details) —
    and ``applied`` holds the jobs before it."""
    if e.status:  # (0: no answer, nothing to tell about the job)
        e.details = [{"index": index, "name": job.get("name"), "status": e.status, "error": e.message,
                      "fields": e.details if isinstance(e.details, dict) else {}}]
    e.applied = total
    return e


def _older_node(e: ApiError) -> bool:
    """A node without POST /api/crons/apply (release 2 or older, say in a rolling upgrade) answers 404 or 405;
    this one never does (a refused batch is a 400 or a 403)."""
    return e.status in (404, 405)


def _one_by_one(job: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The single route that does what an item of a batch does: (method, path, body)."""
    if "id" in job:
        return "PUT", f"/api/crons/{quote(str(job['id']))}", {k: v for k, v in job.items() if k != "id"}
    return "POST", "/api/crons", job


def _one_done(total: dict[str, Any], index: int, job: dict[str, Any], answer: Any) -> None:
    result = "updated" if "id" in job else "created"
    total[result] += 1
    total["jobs"].append({"index": index, "id": answer.get("id"), "name": answer.get("name"),
                          "version": answer.get("version"), "result": result})


def _backfill_path(job_id: str, backfill_id: str) -> str:
    return f"/api/crons/{quote(job_id)}/backfills/{quote(backfill_id)}"


def _calendar_path(name: str) -> str:
    return f"/api/calendars/{quote(name, safe='')}"


class Client:
    """Blocking client (urllib): scripts, the CLI, anything without an event loop."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 15.0, *,
                 client: str = f"python/{__version__}") -> None:
        self.url, self.token, self.timeout, self.client = _check_url(url), token, timeout, client

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, path, body)[0]

    def _call(self, method: str, path: str, body: Any = None) -> tuple[Any, dict[str, str]]:
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 (http(s) only)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header(CLIENT_HEADER, self.client)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (http(s) only)
                raw, headers = resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as e:
            raise error_for(e.code, e.read()) from None
        except (urllib.error.URLError, OSError) as e:
            raise Unavailable(0, f"cannot reach {self.url}: {getattr(e, 'reason', e)}") from None
        return (json.loads(raw) if raw else None), headers

    def list_jobs(self, q: str | None = None, state: str | None = None, label: str | None = None) -> list[Job]:
        """Every job (all pages); ``state``: active, paused or failing (the last scheduled run failed)."""
        out: list[Job] = []
        cursor = None
        while True:
            params = {"limit": "500", **({"q": q} if q else {}), **({"cursor": cursor} if cursor else {}),
                      **({"state": state} if state else {}), **({"label": label} if label else {})}
            page, headers = self._call("GET", "/api/crons?" + urlencode(params))
            out += page
            cursor = headers.get("X-Next-Cursor")
            if not cursor:
                return out

    def get_job(self, job_id: str) -> Job:
        return cast("Job", self.call("GET", f"/api/crons/{quote(job_id)}"))

    def create_job(self, spec: dict[str, Any]) -> Job:
        return cast("Job", self.call("POST", "/api/crons", spec))

    def update_job(self, job_id: str, fields: dict[str, Any]) -> Job:
        """Change some fields (PATCH); what is left out stays as it is, secrets included."""
        return cast("Job", self.call("PATCH", f"/api/crons/{quote(job_id)}", fields))

    def replace_job(self, job_id: str, spec: dict[str, Any]) -> Job:
        return cast("Job", self.call("PUT", f"/api/crons/{quote(job_id)}", spec))

    def delete_job(self, job_id: str) -> None:
        self.call("DELETE", f"/api/crons/{quote(job_id)}")

    def run(self, job_id: str) -> dict[str, Any]:
        return cast("dict[str, Any]", self.call("POST", f"/api/crons/{quote(job_id)}/run"))

    def pause(self, job_id: str, note: str | None = None, until: str | None = None) -> Job:
        """Pause, with why (``note``) and when it ends by itself (``until``, RFC 3339)."""
        return cast("Job", self.call("POST", f"/api/crons/{quote(job_id)}/pause", _pause_body(note, until)))

    def resume(self, job_id: str, note: str | None = None) -> Job:
        return cast("Job", self.call("POST", f"/api/crons/{quote(job_id)}/resume", _pause_body(note)))

    def versions(self, job_id: str) -> list[dict[str, Any]]:
        """Its versions, newest first, each with the change that made it (who, how, what)."""
        return cast("list[dict[str, Any]]", self.call("GET", f"/api/crons/{quote(job_id)}/versions"))

    def version(self, job_id: str, version: int) -> dict[str, Any]:
        return cast("dict[str, Any]", self.call("GET", f"/api/crons/{quote(job_id)}/versions/{int(version)}"))

    def restore(self, job_id: str, version: int) -> Job:
        """A new version equal to ``version`` (every field of its definition)."""
        return cast("Job", self.call("POST", f"/api/crons/{quote(job_id)}/restore", {"version": version}))

    def audit(self, *, job_id: str | None = None, actor: str | None = None, action: str | None = None,
              limit: int | None = None, before: int | str | None = None) -> list[dict[str, Any]]:
        """The audit log, newest first (``before``: a row's id, or an RFC 3339 instant)."""
        return cast("list[dict[str, Any]]", self.call("GET", _audit_path(job_id, actor, action, limit, before)))

    def alerts(self, *, job_id: str | None = None, type_: str | None = None, limit: int | None = None
               ) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self.call("GET", _alerts_path(job_id, type_, limit)))

    def bulk(self, action: str, *, selector: str | None = None, ids: list[str] | None = None, dry_run: bool = False,
             note: str | None = None) -> dict[str, Any]:
        """pause, resume, run or delete every job a label selector matches (and/or ``ids``); the jobs touched."""
        return cast("dict[str, Any]", self.call("POST", f"/api/crons/{_bulk(action)}",
                                                _bulk_body(selector, ids, dry_run, note)))

    def apply_jobs(self, jobs: Sequence[dict[str, Any]], dry_run: bool = False, batch: int = APPLY_BATCH,
                   progress: Progress | None = None) -> dict[str, Any]:
        """Create (a job spec) and update (a spec with the ``id`` of a job; a field left out stays) many jobs through
        ``POST /api/crons/apply``, ``batch`` at a time, each batch all or nothing. The merged answer: ``created``,
        ``updated``, ``unchanged``, ``jobs`` (``index`` into ``jobs``, ``id``, ``name``, ``version``, ``result``),
        ``batches``. A refused batch raises its ``ApiError``: ``details`` lists the items that failed (indexes
        into ``jobs``), ``applied`` what the batches before it did. ``progress(done, total)`` after each batch. A
        batch over the node's body limit (413) is sent again in smaller ones. A node without the route (an older
        release) gets one request per job (not all or nothing then; a refused job is raised as a batch's item)."""
        total = _apply_total(dry_run)
        batches = _Batches(jobs, batch)
        offset = 0
        while offset < len(jobs):
            part = batches.cut(offset)
            try:
                answer = self.call("POST", "/api/crons/apply", _apply_body(part, dry_run))
            except ApiError as e:
                if batches.shrink(e, part):
                    continue  # nothing was written: the same jobs again, fewer a request
                if not (_older_node(e) and not dry_run):
                    raise _refused(e, offset, total) from None
                return self._apply_one_by_one(jobs, offset, total, progress)
            _merge(total, answer, offset)
            offset += len(part)
            if progress is not None:
                progress(offset, len(jobs))
        return total

    def _apply_one_by_one(self, jobs: Sequence[dict[str, Any]], start: int, total: dict[str, Any],
                          progress: Progress | None) -> dict[str, Any]:
        for index in range(start, len(jobs)):
            try:
                _one_done(total, index, jobs[index], self.call(*_one_by_one(jobs[index])))
            except ApiError as e:
                raise _job_refused(e, index, jobs[index], total) from None
            if progress is not None:
                progress(index + 1, len(jobs))
        return total

    def executions(self, job_id: str) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self.call("GET", f"/api/crons/{quote(job_id)}/executions"))

    def preview(self, job_id: str, count: int | None = None, excluded: bool = False) -> dict[str, Any]:
        """The next fire times (``excluded``: with the instants a calendar or a bound excludes, and why)."""
        return cast("dict[str, Any]", self.call("GET", _preview_path(job_id, count, excluded)))

    def skip(self, job_id: str, count: int | None = None, until: str | None = None) -> Job:
        """Skip the next ``count`` due instants, or every instant up to ``until``; neither cancels the skip."""
        return cast("Job", self.call("POST", f"/api/crons/{quote(job_id)}/skip", _skip_body(count, until)))

    def backfill(self, job_id: str, start: str, end: str, *, policy: str | None = None,
                 max_per_second: int | None = None) -> dict[str, Any]:
        """Send every instant of ``[start, end)`` (RFC 3339) again, idempotently; its ``{id, ticks}``."""
        return cast("dict[str, Any]", self.call("POST", f"/api/crons/{quote(job_id)}/backfill",
                                                _backfill_body(start, end, policy, max_per_second)))

    def backfills(self, job_id: str) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self.call("GET", f"/api/crons/{quote(job_id)}/backfills"))

    def get_backfill(self, job_id: str, backfill_id: str) -> dict[str, Any]:
        return cast("dict[str, Any]", self.call("GET", _backfill_path(job_id, backfill_id)))

    def cancel_backfill(self, job_id: str, backfill_id: str) -> dict[str, Any]:
        return cast("dict[str, Any]", self.call("DELETE", _backfill_path(job_id, backfill_id)))

    def calendars(self) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", self.call("GET", "/api/calendars"))

    def get_calendar(self, name: str) -> dict[str, Any]:
        return cast("dict[str, Any]", self.call("GET", _calendar_path(name)))

    def put_calendar(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Create or replace ``{timeZone, dates, ranges, weekdays, description}``."""
        return cast("dict[str, Any]", self.call("PUT", _calendar_path(name), spec))

    def delete_calendar(self, name: str) -> None:
        self.call("DELETE", _calendar_path(name))

    def ticks(self, job_id: str, start: str | None = None, end: str | None = None) -> dict[str, Any]:
        """The tick ledger of ``[start, end)`` (RFC 3339; default the last hour)."""
        return cast("dict[str, Any]", self.call("GET", _ticks_path(job_id, start, end)))

    def cluster(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self.call("GET", "/api/cluster"))

    def forecast(self, start: str | None = None, end: str | None = None, step: int | None = None) -> dict[str, Any]:
        """Requests the active jobs will send in each ``step``-second slot of ``[start, end)`` (RFC 3339; default
        the next 24 hours by the minute), and the busiest slots with the schedules behind them."""
        return cast("dict[str, Any]", self.call("GET", _forecast_path(start, end, step)))

    def health(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self.call("GET", "/api/health"))


class AsyncClient:
    """The same API for asyncio code (aiohttp). Use as ``async with AsyncClient(url) as c``."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 15.0, *,
                 client: str = f"python/{__version__}") -> None:
        self.url, self.token, self.client = _check_url(url), token, client
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        return (await self._call(method, path, body))[0]

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[Any, dict[str, str]]:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            headers[CLIENT_HEADER] = self.client
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=headers)
        kw: dict[str, Any] = {"data": body, "headers": {"Content-Type": "application/json"}} \
            if isinstance(body, bytes) else {"json": body}
        try:
            async with self._session.request(method, self.url + path, **kw) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise error_for(resp.status, raw)
                return (json.loads(raw) if raw else None), dict(resp.headers)
        except (aiohttp.ClientConnectionError, TimeoutError) as e:
            raise Unavailable(0, f"cannot reach {self.url}: {e}") from None

    async def list_jobs(self, q: str | None = None, state: str | None = None, label: str | None = None) -> list[Job]:
        out: list[Job] = []
        cursor = None
        while True:
            params = {"limit": "500", **({"q": q} if q else {}), **({"cursor": cursor} if cursor else {}),
                      **({"state": state} if state else {}), **({"label": label} if label else {})}
            page, headers = await self._call("GET", "/api/crons?" + urlencode(params))
            out += page
            cursor = headers.get("X-Next-Cursor")
            if not cursor:
                return out

    async def get_job(self, job_id: str) -> Job:
        return cast("Job", await self.call("GET", f"/api/crons/{quote(job_id)}"))

    async def create_job(self, spec: dict[str, Any]) -> Job:
        return cast("Job", await self.call("POST", "/api/crons", spec))

    async def update_job(self, job_id: str, fields: dict[str, Any]) -> Job:
        return cast("Job", await self.call("PATCH", f"/api/crons/{quote(job_id)}", fields))

    async def replace_job(self, job_id: str, spec: dict[str, Any]) -> Job:
        return cast("Job", await self.call("PUT", f"/api/crons/{quote(job_id)}", spec))

    async def delete_job(self, job_id: str) -> None:
        await self.call("DELETE", f"/api/crons/{quote(job_id)}")

    async def run(self, job_id: str) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("POST", f"/api/crons/{quote(job_id)}/run"))

    async def pause(self, job_id: str, note: str | None = None, until: str | None = None) -> Job:
        return cast("Job", await self.call("POST", f"/api/crons/{quote(job_id)}/pause", _pause_body(note, until)))

    async def resume(self, job_id: str, note: str | None = None) -> Job:
        return cast("Job", await self.call("POST", f"/api/crons/{quote(job_id)}/resume", _pause_body(note)))

    async def versions(self, job_id: str) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", await self.call("GET", f"/api/crons/{quote(job_id)}/versions"))

    async def version(self, job_id: str, version: int) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("GET", f"/api/crons/{quote(job_id)}/versions/{int(version)}"))

    async def restore(self, job_id: str, version: int) -> Job:
        return cast("Job", await self.call("POST", f"/api/crons/{quote(job_id)}/restore", {"version": version}))

    async def audit(self, *, job_id: str | None = None, actor: str | None = None, action: str | None = None,
                    limit: int | None = None, before: int | str | None = None) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", await self.call("GET", _audit_path(job_id, actor, action, limit, before)))

    async def alerts(self, *, job_id: str | None = None, type_: str | None = None, limit: int | None = None
                     ) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", await self.call("GET", _alerts_path(job_id, type_, limit)))

    async def bulk(self, action: str, *, selector: str | None = None, ids: list[str] | None = None,
                   dry_run: bool = False, note: str | None = None) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("POST", f"/api/crons/{_bulk(action)}",
                                                      _bulk_body(selector, ids, dry_run, note)))

    async def apply_jobs(self, jobs: Sequence[dict[str, Any]], dry_run: bool = False, batch: int = APPLY_BATCH,
                         progress: Progress | None = None) -> dict[str, Any]:
        """``Client.apply_jobs`` for asyncio code."""
        total = _apply_total(dry_run)
        batches = _Batches(jobs, batch)
        offset = 0
        while offset < len(jobs):
            part = batches.cut(offset)
            try:
                answer = await self.call("POST", "/api/crons/apply", _apply_body(part, dry_run))
            except ApiError as e:
                if batches.shrink(e, part):
                    continue
                if not (_older_node(e) and not dry_run):
                    raise _refused(e, offset, total) from None
                return await self._apply_one_by_one(jobs, offset, total, progress)
            _merge(total, answer, offset)
            offset += len(part)
            if progress is not None:
                progress(offset, len(jobs))
        return total

    async def _apply_one_by_one(self, jobs: Sequence[dict[str, Any]], start: int, total: dict[str, Any],
                                progress: Progress | None) -> dict[str, Any]:
        for index in range(start, len(jobs)):
            try:
                _one_done(total, index, jobs[index], await self.call(*_one_by_one(jobs[index])))
            except ApiError as e:
                raise _job_refused(e, index, jobs[index], total) from None
            if progress is not None:
                progress(index + 1, len(jobs))
        return total

    async def executions(self, job_id: str) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", await self.call("GET", f"/api/crons/{quote(job_id)}/executions"))

    async def preview(self, job_id: str, count: int | None = None, excluded: bool = False) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("GET", _preview_path(job_id, count, excluded)))

    async def skip(self, job_id: str, count: int | None = None, until: str | None = None) -> Job:
        return cast("Job", await self.call("POST", f"/api/crons/{quote(job_id)}/skip", _skip_body(count, until)))

    async def backfill(self, job_id: str, start: str, end: str, *, policy: str | None = None,
                       max_per_second: int | None = None) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("POST", f"/api/crons/{quote(job_id)}/backfill",
                                                      _backfill_body(start, end, policy, max_per_second)))

    async def backfills(self, job_id: str) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", await self.call("GET", f"/api/crons/{quote(job_id)}/backfills"))

    async def get_backfill(self, job_id: str, backfill_id: str) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("GET", _backfill_path(job_id, backfill_id)))

    async def cancel_backfill(self, job_id: str, backfill_id: str) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("DELETE", _backfill_path(job_id, backfill_id)))

    async def calendars(self) -> list[dict[str, Any]]:
        return cast("list[dict[str, Any]]", await self.call("GET", "/api/calendars"))

    async def get_calendar(self, name: str) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("GET", _calendar_path(name)))

    async def put_calendar(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("PUT", _calendar_path(name), spec))

    async def delete_calendar(self, name: str) -> None:
        await self.call("DELETE", _calendar_path(name))

    async def ticks(self, job_id: str, start: str | None = None, end: str | None = None) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("GET", _ticks_path(job_id, start, end)))

    async def cluster(self) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("GET", "/api/cluster"))

    async def forecast(self, start: str | None = None, end: str | None = None, step: int | None = None
                       ) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("GET", _forecast_path(start, end, step)))

    async def health(self) -> dict[str, Any]:
        return cast("dict[str, Any]", await self.call("GET", "/api/health"))
