"""Thin handlers for /api/*: parse, call one function, answer.

Seed-compatible paths and field names; errors are mapped in ``errors.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import fastjson, metrics
from ..model import jobs as jobmod
from ..model.alerts import AlertType
from ..model.audit import ACTOR_NAME, AuditAction
from ..model.errors import NotFound
from ..model.jobs import warnings
from ..model.labels import LabelError, Selector, parse_selector
from ..model.schedule import ScheduleTooCostly, describe
from ..model.times import rfc3339
from ..model.timetable import Timetable
from ..scheduling import forecast as fc
from . import actions, forecasts
from .auth import actor_of, caller
from .errors import BadRequest, BatchRefused, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from .openapi import spec as openapi_spec
from .presentation import (
    BODY_READ_SECONDS,
    enrich,
    execution_view,
    ledger,
    preview,
    pulse_view,
    scoped_cluster_view,
    transitions,
)
from .runtime import RUNTIME, Runtime

MAX_PAGE = 500
MAX_PREVIEW = 100
# JSON values a bulk apply may carry (a thousand ordinary jobs are ~40,000); parsing this many takes ~40 ms here,
# 2.8 million (8 MiB of ``{}``) 0.5 s. More is a 413: the client sends fewer jobs a request.
APPLY_VALUES = 200_000


def rt(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


JSON_TYPES = ("application/json", "application/merge-patch+json")


async def read_json(request: web.Request, *, max_bytes: int | None = None, max_values: int | None = None) -> Any:
    """The request's JSON body. ``max_bytes``: the route's own limit (else the app's); ``max_values``: how many JSON
    values it may hold, counted before it is parsed (json.loads runs on the loop in one step, and a thread would not
    help: the parser holds the GIL)."""
    ctype = request.headers.get("Content-Type", "")
    # parsed, not matched: "text/plain; x=+json" is text (a page may send that cross-site without a preflight)
    if request.can_read_body and request.content_type not in JSON_TYPES:
        raise UnsupportedMediaType("send JSON with Content-Type: application/json", {"contentType": ctype[:100] or None})
    if max_bytes is not None:
        request = request.clone(client_max_size=max_bytes)
    try:
        async with asyncio.timeout(BODY_READ_SECONDS):  # a client trickling its body holds nothing for long
            raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {BODY_READ_SECONDS} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("request body too large", {"limit": request.client_max_size}) from None
    if not raw:
        raise BadRequest("request body is empty; send a JSON object")
    if max_values is not None and await _more_values(raw, max_values):
        raise PayloadTooLarge(f"request body too large: more than {max_values} JSON values; send fewer jobs a request",
                              {"limit": request.client_max_size, "values": max_values})
    text = raw.decode("utf-8")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("JSON nested too deeply") from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise BadRequest("body has a value that cannot be read", {"body": str(e)[:200]}) from None


async def _more_values(raw: bytes, most: int) -> bool:
    """Has a JSON text more than ``most`` values? Counted from above — a value is one after a comma or the first in
    an array or an object (commas in strings count too) — a megabyte a step, stopping once past ``most``."""
    seen, step = 1, 1 << 20
    for start in range(0, len(raw), step):
        end = start + step
        seen += raw.count(b",", start, end) + raw.count(b"[", start, end) + raw.count(b"{", start, end)
        if seen > most:
            return True
        await asyncio.sleep(0)
    return False


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON")


_INTEGER = re.compile(r"-?[0-9]{1,19}")  # fullmatch: "$" would also take "5\n"
_VERSION = re.compile(r"[0-9]{1,18}")


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default  # an empty value (?limit=) is refused below like any other non-integer
    if not _INTEGER.fullmatch(raw):  # not int(): it also takes " 5", "+5" and "5_0"
        raise BadRequest(f"{name} must be an integer", {name: raw[:50]})
    v = int(raw)
    if not lo <= v <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}", {name: v})
    return v


_RFC3339 = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$")


def _instant_param(raw: str | None, name: str) -> datetime:
    """An RFC 3339 instant with its offset, 1970 to 9000; absent: now. Present but empty is a 400 (the
    schema says a date-time; an empty value is not one)."""
    if raw is None:
        return datetime.now(UTC)
    if not _RFC3339.fullmatch(raw):
        raise BadRequest(f"{name} must be an RFC 3339 instant with its UTC offset (2026-12-03T10:00:00Z)",
                         {name: raw[:60] or "empty"})
    try:
        dt = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
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
    v = raw.strip().removeprefix("W/")
    v = v[1:-1] if len(v) > 1 and v[0] == v[-1] == '"' else v  # a quoted or a bare version (IF_MATCH in openapi)
    if not _VERSION.fullmatch(v):
        raise BadRequest("If-Match must be the job's version, as in its ETag", {"If-Match": raw[:40]})
    return int(v)


def label_selector(request: web.Request) -> Selector | None:
    """``?label=`` selectors (repeatable: all must hold), and the token's own selector, if it has one."""
    selector = request.get("selector")
    for raw in request.query.getall("label", []):
        try:
            selector = parse_selector(raw) & selector
        except LabelError as e:
            raise BadRequest(str(e), {"label": raw[:100]}) from None
    return selector


# ---- handlers --------------------------------------------------------------------

async def list_crons(request: web.Request) -> web.Response:
    r = rt(request)
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
    cursor = _int_param(request, "cursor", 0, 0, 2**62) or None
    q = request.query.get("q") or None
    if q is not None and (len(q) > 200 or "\x00" in q):
        raise BadRequest("q must be at most 200 characters", {"q": "too long or contains NUL"})
    state = request.query.get("state")
    if state not in (None, "all", "paused", "active", "failing"):
        raise BadRequest("state must be all, active, paused or failing", {"state": state[:30]})
    selector = label_selector(request)
    found = await r.store.jobs.search(limit=limit + 1, cursor=cursor, q=q,
                                      paused={"paused": True, "active": False}.get(state or "all"),
                                      failing=state == "failing", selector=selector, budget=r.settings.search_budget)
    jobs = found.jobs[:limit]
    headers = {}
    nxt = jobs[-1].seq if len(found.jobs) > limit else found.resume
    if found.resume is not None:  # a search that read part of the table within its budget: go on from there
        headers["X-Search-Progress"] = f"{found.progress:.3f}"
    if nxt is not None:
        headers["X-Next-Cursor"] = str(nxt)
        query = dict(request.query)
        query["cursor"] = str(nxt)
        headers["Link"] = f'<{request.rel_url.with_query(query)}>; rel="next"'
    return web.json_response(await enrich(r, jobs), headers=headers, dumps=fastjson.dumps)


async def create_cron(request: web.Request) -> web.Response:
    r = rt(request)
    created = await actions.create_job(r, await read_json(request), actor_of(request))
    (body,) = await enrich(r, [created])
    if notes := warnings(created):
        body["warnings"] = notes
    return web.json_response(body, status=201, headers={"ETag": f'"{created.version}"',
                                                        "Location": f"/api/crons/{created.id}"})


async def get_cron(request: web.Request) -> web.Response:
    r = rt(request)
    job, last = await r.store.jobs.get_and_last(request.match_info["id"])
    if not actor_of(request).sees(job.labels):
        raise NotFound(job.id)
    (body,) = await enrich(r, [job], {job.id: last} if last else {})
    return web.json_response(body, headers={"ETag": f'"{job.version}"'}, dumps=fastjson.dumps)


async def update_cron(request: web.Request) -> web.Response:
    r = rt(request)
    if_version = _if_match(request)
    updated = await actions.update_job(r, request.match_info["id"], await read_json(request), if_version,
                                       actor_of(request))
    (body,) = await enrich(r, [updated])
    if notes := warnings(updated):
        body["warnings"] = notes
    return web.json_response(body, headers={"ETag": f'"{updated.version}"'})


async def delete_cron(request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    await actions.delete_job(rt(request), job_id, _if_match(request), actor_of(request))
    return web.json_response({"id": job_id, "deleted": True})


async def pause_cron(request: web.Request) -> web.Response:
    return await _set_paused(request, True)


async def resume_cron(request: web.Request) -> web.Response:
    return await _set_paused(request, False)


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    """Pause ``{"note": "...", "until": T}`` (a body is optional: the seed's clients send none); resume ``{"note"}``."""
    r = rt(request)
    payload = await read_json(request) if request.can_read_body else None
    note, until = actions.pause_request(payload, resume=not paused)
    job = await actions.set_paused(r, request.match_info["id"], paused, actor_of(request), note=note, until=until,
                                   given=payload is not None)
    (body,) = await enrich(r, [job])
    return web.json_response(body)


async def skip_cron(request: web.Request) -> web.Response:
    """The next ``count`` due instants, or every instant up to ``until``, are not sent (skipped by request)."""
    r = rt(request)
    job = await actions.skip_job(r, request.match_info["id"], await read_json(request), actor_of(request))
    (body,) = await enrich(r, [job])
    return web.json_response(body, headers={"ETag": f'"{job.version}"'})


async def run_cron(request: web.Request) -> web.Response:
    job_id = request.match_info["id"]
    execution_id = await actions.run_now(rt(request), job_id, caller(request), actor_of(request))
    return web.json_response({"executionId": execution_id, "jobId": job_id}, status=202)


async def list_executions(request: web.Request) -> web.Response:
    r = rt(request)
    job_id = request.match_info["id"]
    await actions.visible_job(r, job_id, actor_of(request), include_deleted=True)
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
    before = _instant_param(request.query["before"], "before") if "before" in request.query else None
    rows = await r.store.history.executions(job_id, limit=limit, before=before)
    return web.json_response([execution_view(e) for e in rows])


TICKS_LIMIT = 10_000


async def job_ticks(request: web.Request) -> web.Response:
    """The tick ledger: every scheduled instant in [from, to) with its fate (why did or didn't it run?)."""
    r = rt(request)
    job_id = request.match_info["id"]
    await actions.visible_job(r, job_id, actor_of(request), include_deleted=True)
    end = _instant_param(request.query.get("to"), "to")
    start = _instant_param(request.query["from"], "from") if "from" in request.query else end - timedelta(hours=1)
    if start >= end:
        raise BadRequest("from must be before to", {"from": rfc3339(start), "to": rfc3339(end)})
    limit = _int_param(request, "limit", TICKS_LIMIT, 1, TICKS_LIMIT)
    try:
        book = await ledger(r, job_id, start, end, limit=limit)
    except ScheduleTooCostly as e:
        raise BadRequest(str(e), {"from": rfc3339(start), "to": rfc3339(end)}) from None
    return web.json_response({"jobId": job_id, "from": rfc3339(start), "to": rfc3339(end), **book.to_api()})


async def cluster_pulse(request: web.Request) -> web.Response:
    """Every node's pulse over the last 15 minutes: runs ended by state and lateness p50/p99/max per 10-second slot
    (the cluster page's charts); a node that died keeps its points until they age out."""
    return web.json_response(await pulse_view(rt(request)))


async def get_forecast(request: web.Request) -> web.Response:
    """How many requests the jobs will send in each slot of a window (``step`` seconds), from their schedules, and
    the busiest slots with the schedules behind them (scheduling/forecast.py)."""
    q = request.query
    now = datetime.now(UTC)
    start = _instant_param(q["from"], "from") if "from" in q else None
    end = _instant_param(q["to"], "to") if "to" in q else None
    step = _int_param(request, "step", 60, 1, 86_400)
    try:
        window = fc.Window.of(start, end, step, now=now)
    except fc.ForecastError as e:
        raise BadRequest(str(e), {k: q[k][:60] for k in ("from", "to", "step") if k in q}) from None
    result = await forecasts.forecast(rt(request), window, request.get("selector"), now=now, caller=caller(request))
    return web.json_response(result.to_api())


def _bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return False
    if raw not in ("true", "false", "1", "0"):
        raise BadRequest(f"{name} must be true or false", {name: raw[:20]})
    return raw in ("true", "1")


async def preview_cron(request: web.Request) -> web.Response:
    r = rt(request)
    job = await actions.visible_job(r, request.match_info["id"], actor_of(request))
    count = _int_param(request, "count", 10, 1, MAX_PREVIEW)
    start = _instant_param(request.query.get("from"), "from")
    tt = job.timetable(r.catalogue.calendars)
    return web.json_response({"schedule": job.schedule, "schedules": list(job.schedules), "timeZone": job.time_zone,
                              **await _preview_body(tt, start, count, _bool_param(request, "excluded"))})


async def _preview_body(tt: Timetable, start: datetime, count: int, excluded: bool) -> dict[str, Any]:
    try:
        fires = await preview(tt, start, count, excluded=excluded)
    except ScheduleTooCostly as e:
        raise BadRequest(str(e), {"count": count, "from": rfc3339(start)}) from None
    end = datetime.fromisoformat(fires[-1]["utc"].replace("Z", "+00:00")) if fires else start
    body: dict[str, Any] = {"fires": fires, "transitions": transitions(tt, start, max(end, start + timedelta(days=1)))}
    resolved = [s.resolved for s in tt.schedules if s.resolved]
    if resolved:
        body["resolved"] = resolved  # H resolved with the job's id
    return body


PREVIEW_FIELDS = ("schedule", "schedules", "timeZone", "dstPolicy", "jitterSeconds", "startAt", "endAt",
                  "excludeCalendars")


async def preview_schedule(request: web.Request) -> web.Response:
    """An unsaved definition's next fire times: the form's live preview. ``id`` (an existing job's) resolves H
    as that job's; without it, H resolves with an empty seed (the job's id decides once it exists)."""
    r = rt(request)
    payload = await read_json(request)
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    unknown = set(payload) - {*PREVIEW_FIELDS, "count", "from", "id", "excluded"}
    if unknown:
        raise BadRequest("unknown fields", {str(k)[:60]: "unknown field" for k in unknown})
    if "schedule" not in payload and "schedules" not in payload:
        raise BadRequest("invalid input", {"schedule": "is required and must be a string"})
    sched = payload.get("schedule")
    if sched is not None and not isinstance(sched, str):
        raise BadRequest("invalid input", {"schedule": "is required and must be a string"})
    zone = payload.get("timeZone", "UTC")
    if not isinstance(zone, str):
        raise BadRequest("invalid input", {"timeZone": "must be a string"})
    seed = payload.get("id", "")
    if not isinstance(seed, str) or not re.fullmatch(r"[0-9a-f]{0,32}", seed):
        raise BadRequest("invalid input", {"id": "must be a job id"})
    count = payload.get("count", 10)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PREVIEW:
        raise BadRequest("invalid input", {"count": f"must be an integer between 1 and {MAX_PREVIEW}"})
    frm = payload.get("from")
    if frm is not None and not isinstance(frm, str):
        raise BadRequest("invalid input", {"from": "must be an RFC 3339 string"})
    excluded = payload.get("excluded", False)
    if not isinstance(excluded, bool):
        raise BadRequest("invalid input", {"excluded": "must be true or false"})
    start = _instant_param(frm, "from")
    definition = {k: payload[k] for k in PREVIEW_FIELDS if k in payload}
    definition.setdefault("uri", "http://preview.invalid/")
    if "schedule" not in definition:
        definition["schedule"] = (payload.get("schedules") or [""])[0] if isinstance(payload.get("schedules"), list) else ""
    try:  # the job's own rules for every field (the schema publishes them for each)
        job = jobmod.validate(definition, now=start if frm is not None else datetime.now(UTC))
    except jobmod.ValidationError as e:
        raise BadRequest("invalid input", e.details) from None
    missing = [n for n in job.exclude_calendars if n not in r.catalogue.calendars]
    if missing:
        raise BadRequest("invalid input", {"excludeCalendars": f"no such calendar: {', '.join(missing)}"})
    tt = replace(job, id=seed).timetable(r.catalogue.calendars)
    body = await _preview_body(tt, start, count, excluded)
    return web.json_response({"schedule": job.schedule, "schedules": list(job.schedules), "timeZone": zone,
                              "description": describe(job.schedule), **body,
                              **({"warnings": notes} if (notes := warnings(job)) else {})})


async def bulk_action(request: web.Request) -> web.Response:
    """``POST /api/crons/{pause|resume|run|delete}`` with a label selector (and/or ids): the jobs it touched."""
    action = request.path.rsplit("/", 1)[1]
    result = await actions.bulk(rt(request), action, await read_json(request), actor_of(request), caller(request))
    return web.json_response(result)


async def apply_crons(request: web.Request) -> web.Response:
    """``POST /api/crons/apply``: a batch of creates and updates, all written or none (400/403 with the items that
    failed). Its body may be larger than other requests' (CRONRING_MAX_APPLY_BODY_BYTES): up to 1,000 jobs."""
    r = rt(request)
    payload = await read_json(request, max_bytes=max(r.settings.max_apply_body_bytes, r.settings.max_body_bytes),
                              max_values=max(APPLY_VALUES, 2 * r.settings.max_job_body_bytes))
    try:
        result = await actions.apply_jobs(r, payload, actor_of(request))
    except BatchRefused as e:
        return web.json_response({"error": e.message, "details": e.details, "items": e.items}, status=e.status)
    return web.json_response(result)


# ---- versions and the audit log ------------------------------------------------------


async def list_versions(request: web.Request) -> web.Response:
    """A job's versions, newest first, each with the change that made it (who, how, what)."""
    r = rt(request)
    job_id = request.match_info["id"]
    await actions.visible_job(r, job_id, actor_of(request), include_deleted=True)
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
    before = _int_param(request, "before", 0, 0, 2**31) or None
    versions = await r.store.history.versions(job_id, limit=limit, before=before)
    made = await r.store.audit.of_versions(job_id, [v.version for v in versions])
    out = []
    for v in versions:
        body = v.to_api()
        change = made.get(v.version)
        body["change"] = change.to_api() if change else None
        out.append(body)
    return web.json_response(out)


async def get_version(request: web.Request) -> web.Response:
    r = rt(request)
    job_id = request.match_info["id"]
    await actions.visible_job(r, job_id, actor_of(request), include_deleted=True)
    v = await r.store.history.version(job_id, int(request.match_info["v"]))
    if v is None:
        raise NotFound(f"{job_id} version {request.match_info['v']}")
    made = await r.store.audit.of_versions(job_id, [v.version])
    return web.json_response({**v.to_api(), "change": made[v.version].to_api() if v.version in made else None})


async def restore_cron(request: web.Request) -> web.Response:
    r = rt(request)
    job = await actions.restore_job(r, request.match_info["id"], await read_json(request), actor_of(request))
    (body,) = await enrich(r, [job])
    return web.json_response(body, headers={"ETag": f'"{job.version}"'})


AUDIT_ACTIONS = frozenset(str(a) for a in AuditAction)


async def audit_log(request: web.Request) -> web.Response:
    """The audit log, newest first: ``jobId``, ``actor``, ``action`` filter; ``before`` pages on (a row's id, or an
    RFC 3339 instant)."""
    r = rt(request)
    q = request.query
    job_id = q.get("jobId")
    if job_id is not None and not re.fullmatch(r"[0-9a-f]{1,32}", job_id):
        raise BadRequest("jobId must be a job id", {"jobId": job_id[:40]})
    actor = q.get("actor")
    if actor is not None and not ACTOR_NAME.fullmatch(actor):
        raise BadRequest("actor must be a token's name, anonymous or cronring", {"actor": actor[:70]})
    action = q.get("action")
    if action is not None and action not in AUDIT_ACTIONS:
        raise BadRequest(f"action must be one of {', '.join(sorted(AUDIT_ACTIONS))}", {"action": action[:40]})
    limit = _int_param(request, "limit", 100, 1, MAX_PAGE)
    before_raw = q.get("before")
    before_id = before = None
    if before_raw is not None:
        if _VERSION.fullmatch(before_raw):
            before_id = int(before_raw)
        else:
            before = _instant_param(before_raw, "before")
    rows = await r.store.audit.query(job_id=job_id, actor=actor, action=action, limit=limit, before_id=before_id,
                                     before=before, selector=request.get("selector"))
    headers = {}
    if len(rows) == limit:
        headers["X-Next-Cursor"] = str(rows[-1].id)
    return web.json_response([row.to_api() for row in rows], headers=headers)


ALERT_TYPES = frozenset(str(t) for t in AlertType)


async def list_alerts(request: web.Request) -> web.Response:
    """Alerts, newest first, with how far each got (pending, sent, failed, unrouted)."""
    r = rt(request)
    q = request.query
    job_id = q.get("jobId")
    if job_id is not None and not re.fullmatch(r"[0-9a-f]{1,32}", job_id):
        raise BadRequest("jobId must be a job id", {"jobId": job_id[:40]})
    kind = q.get("type")
    if kind is not None and kind not in ALERT_TYPES:
        raise BadRequest(f"type must be one of {', '.join(sorted(ALERT_TYPES))}", {"type": kind[:40]})
    before = _instant_param(q["before"], "before") if "before" in q else None
    limit = _int_param(request, "limit", 100, 1, MAX_PAGE)
    rows = await r.store.alerts.recent(limit=limit, type_=kind, job_id=job_id, before=before,
                                       selector=request.get("selector"))
    return web.json_response([a.to_api() for a in rows])


# ---- backfills ---------------------------------------------------------------------


async def create_backfill(request: web.Request) -> web.Response:
    b = await actions.create_backfill(rt(request), request.match_info["id"], await read_json(request), actor_of(request))
    return web.json_response({"id": b.id, "ticks": b.total, **b.to_api()}, status=202,
                             headers={"Location": f"/api/crons/{b.job_id}/backfills/{b.id}"})


async def list_backfills(request: web.Request) -> web.Response:
    r = rt(request)
    job_id = request.match_info["id"]
    await actions.visible_job(r, job_id, actor_of(request), include_deleted=True)
    return web.json_response([b.to_api() for b in await r.store.backfills.of_job(job_id)])


async def get_backfill(request: web.Request) -> web.Response:
    await actions.visible_job(rt(request), request.match_info["id"], actor_of(request), include_deleted=True)
    b = await rt(request).store.backfills.get(request.match_info["id"], request.match_info["bid"])
    return web.json_response(b.to_api())


async def cancel_backfill(request: web.Request) -> web.Response:
    b = await actions.cancel_backfill(rt(request), request.match_info["id"], request.match_info["bid"], actor_of(request))
    return web.json_response(b.to_api())


# ---- calendars --------------------------------------------------------------------


_NAME = "{name:[a-z0-9][-a-z0-9_.]{0,62}}"


async def list_calendars(request: web.Request) -> web.Response:
    r = rt(request)
    return web.json_response([c.to_api() for c in await r.store.calendars.all()])


async def get_calendar(request: web.Request) -> web.Response:
    cal = await rt(request).store.calendars.get(request.match_info["name"])
    return web.json_response(cal.to_api(), headers={"ETag": f'"{cal.version}"'})


async def put_calendar(request: web.Request) -> web.Response:
    r = rt(request)
    cal, created = await actions.put_calendar(r, request.match_info["name"], await read_json(request),
                                              _if_match(request), actor_of(request))
    return web.json_response(cal.to_api(), status=201 if created else 200, headers={"ETag": f'"{cal.version}"'})


async def delete_calendar(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await actions.delete_calendar(rt(request), name, _if_match(request), actor_of(request))
    return web.json_response({"name": name, "deleted": True})


async def cluster(request: web.Request) -> web.Response:
    return web.json_response(await scoped_cluster_view(rt(request), request.get("selector")))


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
            total = await r.store.jobs.count()
        except Exception:
            total = None
    ok = db_ok and redis_ok
    body = {
        "status": "healthy" if ok else "unhealthy", "instanceId": r.settings.node_id,
        "redis": "connected" if redis_ok else "disconnected", "database": "connected" if db_ok else "disconnected",
        "totalCronsDB": total, "activeCronsInstance": len(r.ownership.owned), "epoch": r.membership.view.epoch,
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
    app.router.add_get("/api/crons/{id:[0-9a-f]{1,32}}/versions", list_versions)
    app.router.add_get("/api/crons/{id:[0-9a-f]{1,32}}/versions/{v:[0-9]{1,9}}", get_version)
    app.router.add_post("/api/crons/{id:[0-9a-f]{1,32}}/restore", restore_cron)
    app.router.add_get("/api/audit", audit_log)
    for name in actions.BULK_ACTIONS:
        app.router.add_post(f"/api/crons/{name}", bulk_action)
    app.router.add_post("/api/crons/apply", apply_crons)
    app.router.add_get("/api/alerts", list_alerts)
    app.router.add_post("/api/crons/{id:[0-9a-f]{1,32}}/skip", skip_cron)
    app.router.add_post("/api/crons/{id:[0-9a-f]{1,32}}/backfill", create_backfill)
    app.router.add_get("/api/crons/{id:[0-9a-f]{1,32}}/backfills", list_backfills)
    app.router.add_get("/api/crons/{id:[0-9a-f]{1,32}}/backfills/{bid:[0-9a-f]{16}}", get_backfill)
    app.router.add_delete("/api/crons/{id:[0-9a-f]{1,32}}/backfills/{bid:[0-9a-f]{16}}", cancel_backfill)
    app.router.add_get("/api/calendars", list_calendars)
    app.router.add_get(f"/api/calendars/{_NAME}", get_calendar)
    app.router.add_put(f"/api/calendars/{_NAME}", put_calendar)
    app.router.add_delete(f"/api/calendars/{_NAME}", delete_calendar)
    app.router.add_get("/api/cluster", cluster)
    app.router.add_get("/api/forecast", get_forecast)
    app.router.add_get("/api/cluster/pulse", cluster_pulse)
    app.router.add_get("/api/health", health)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/api/openapi.json", openapi)

