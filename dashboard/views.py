"""Server-rendered pages (jinja2, autoescaped). Reading and forms work without JavaScript;
a little plain JavaScript adds live updates from the stream and the schedule preview."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from markupsafe import Markup

from ..aio import Slices
from ..model.alerts import AlertType
from ..model.audit import ACTOR_NAME, AuditAction, job_changes
from ..model.calendars import Calendar, CalendarError
from ..model.errors import Conflict, NotFound, StoreUnavailable, VersionConflict
from ..model.jobs import METHODS, ConcurrencyPolicy, Delivery, Job, MisfirePolicy, ValidationError
from ..model.labels import LabelError, parse_selector
from ..model.schedule import Budget, ScheduleError, describe, has_h
from ..model.times import rfc3339
from ..scheduling import forecast as fc
from ..scheduling.outbound import OutboundDenied
from ..web import actions, forecasts
from ..web.auth import (
    COOKIE,
    SESSION_SECONDS,
    THROTTLE,
    actor_of,
    caller,
    client_address,
    csrf_for_session,
    scope_of,
    session_value,
)
from ..web.errors import ApiError, Busy, TooManyRequests
from ..web.presentation import (
    BODY_READ_SECONDS,
    STRIP_TICKS,
    enrich,
    execution_view,
    ledger,
    preview,
    pulse_view,
    scoped_cluster_view,
    strips,
)
from ..web.runtime import RUNTIME, Runtime
from .charts import STYLES, charts, lateness, timeline

HERE = Path(__file__).parent
CSRF_COOKIE = "cronring_csrf"
PAGE = 50
STRIP_SPAN = timedelta(minutes=10)  # the job page's tick strip: the last ten minutes ...
STRIP_MAX = 600  # ... at most this many instants (the newest)

FIELDS = ["name", "uri", "httpMethod", "headers", "body", "bodyType", "schedule", "timeZone", "paused", "timeoutMs",
          "retries", "retryBackoffMs", "retryMaxBackoffMs", "expectStatus", "misfirePolicy", "misfireGraceSeconds",
          "concurrencyPolicy", "followRedirects", "delivery"]
INT_FIELDS = ("timeoutMs", "retries", "retryBackoffMs", "retryMaxBackoffMs", "misfireGraceSeconds", "jitterSeconds",
              "pauseAfterFailures")


def is_https(request: web.Request) -> bool:
    """Behind Traefik the node speaks http; the proxy says what the browser used."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def csrf_token(request: web.Request) -> str:
    """Bound to the login session when there is one (derived from its HttpOnly cookie, so a token a
    sibling site planted cannot match); else a random per-browser cookie (no tokens configured)."""
    session = request.cookies.get(COOKIE)
    if session and request.app[RUNTIME].settings.api_tokens:
        return csrf_for_session(session)
    tok = request.cookies.get(CSRF_COOKIE)
    if not tok or len(tok) != 32:
        tok = request.get("new_csrf") or secrets.token_hex(16)
        request["new_csrf"] = tok
    return tok


@web.middleware
async def csrf_cookie_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    resp = await handler(request)
    tok = request.get("new_csrf")
    if tok and not resp.prepared:
        resp.set_cookie(CSRF_COOKIE, tok, httponly=True, samesite="Strict", path="/", secure=is_https(request))
    return resp


async def check_csrf(request: web.Request) -> dict[str, str]:
    try:
        async with asyncio.timeout(BODY_READ_SECONDS):
            form = await request.post()
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the form did not arrive in time") from None
    sent = str(form.get("csrf", ""))
    session = request.cookies.get(COOKIE)
    if session and request.app[RUNTIME].settings.api_tokens and request.path != "/login":
        have = csrf_for_session(session)
    else:
        have = request.cookies.get(CSRF_COOKIE, "")
    if not have or not sent or not hmac.compare_digest(sent, have):
        raise web.HTTPForbidden(text="CSRF check failed: reload the page and try again")
    # one string a field; a field sent several times (a multiple select) as its values, one a line
    return {k: "\n".join(str(v) for v in form.getall(k)) for k in form}


def render(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    r = request.app[RUNTIME]
    base = {"csrf": csrf_token(request), "node_id": r.settings.node_id, "path": request.path,
            "auth": bool(r.settings.api_tokens)}
    text = _templates().get_template(template).render({**base, **ctx})
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


_env: list[Any] = []


def _templates() -> Any:
    """The pages' jinja2 environment, made on the first page a node renders: jinja2 is ~4 MB of a node's RSS, and
    most nodes of a cluster never render one (a node owning 100,000 jobs: issue 22's 110 MB)."""
    if not _env:
        import jinja2

        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                                 autoescape=jinja2.select_autoescape(default=True, default_for_string=True))
        env.filters["when"] = ago
        env.filters["at"] = at
        _env.append(env)
    return _env[0]


def at(value: str | None, zone: str | None = None) -> Markup:
    """An instant in the page's text, as ``when`` writes it (UTC), inside a ``<time>`` the page's script shows in
    the reader's zone, the job's (``zone``) or UTC, as the reader chose (without JavaScript: UTC)."""
    if not value:
        return Markup("—")
    zone_attr = Markup(' data-zone="{}"').format(zone) if zone else Markup("")
    return Markup('<time datetime="{}"{}>{}</time>').format(value, zone_attr, ago(value))


def ago(value: str | None) -> str:
    if not value:
        return "—"
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


UPCOMING_MAX = 30
UPCOMING_STEPS = 1_000
UPCOMING_WINDOW = timedelta(minutes=10)
_UPCOMING: dict[tuple[str, str], list[datetime]] = {}


async def upcoming(row: dict[str, Any], slices: Slices, job: Job, calendars: Mapping[str, Calendar]) -> str:
    """A row's next fire times for its live "Next run" cell: those in the next ten minutes (at
    most 30), and always at least the next one; the page advances through them each second and
    asks for the row again when they run out. Shared by rows with the same plain schedule and zone."""
    if not job.active:
        return ""
    now = datetime.now(UTC)
    tt = job.timetable(calendars)
    plain = tt.plain and not job.more_schedules and job.start_at is None and job.end_at is None and \
        not has_h(job.schedule)
    key = (job.schedule, job.time_zone) if plain else (job.id, str(job.version))
    times = _UPCOMING.get(key)
    if times is None or times[0] <= now:
        times = []
        try:
            for t in tt.due_after(now, Budget(UPCOMING_STEPS)):
                if len(times) >= UPCOMING_MAX or (times and t > now + UPCOMING_WINDOW):
                    break
                times.append(t)
                await slices.pause()
        except ScheduleError:
            pass
        if not times:
            return ""
        if len(_UPCOMING) > 10_000:
            _UPCOMING.clear()
        _UPCOMING[key] = times
    return " ".join(rfc3339(t) or "" for t in times if t > now)


TOTAL_FRESH = 5.0  # seconds the jobs page's total ("Jobs (1000000)") is served from its last count


class Totals:
    """The jobs page's total by selector: counted once, then served from the last count and counted again in the
    background when older than TOTAL_FRESH. At a million jobs a COUNT(*) took ~0.1 s of every page view (the
    page's target is 0.2 s at p99); the total is a figure in the heading, a few seconds behind at most."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[float, int]] = {}
        self.counting: dict[str, asyncio.Task[None]] = {}

    async def get(self, r: Runtime, selector: Any) -> int:
        key = str(selector or "")
        hit = self.known.get(key)
        if hit is None:
            n = await r.store.jobs.count(selector)
            self.known[key] = (time.monotonic(), n)
            return n
        if time.monotonic() - hit[0] > TOTAL_FRESH and key not in self.counting:
            self.counting[key] = asyncio.create_task(self._count(r, key, selector))
        return hit[1]

    async def _count(self, r: Runtime, key: str, selector: Any) -> None:
        try:
            self.known[key] = (time.monotonic(), await r.store.jobs.count(selector))
        except StoreUnavailable:
            pass  # (the last count stays; the next view asks again)
        finally:
            self.counting.pop(key, None)
            if len(self.known) > 1_000:  # (one entry a token's selector: a bound all the same)
                self.known.clear()


_TOTALS: dict[int, Totals] = {}  # by the node's store (one per process; tests may run several)


async def jobs_page(request: web.Request) -> web.Response:
    r = request.app[RUNTIME]
    q = request.query.get("q", "")[:200] or None
    state = request.query.get("state") or "all"
    if state not in ("all", "active", "paused", "failing"):
        state = "all"
    try:
        cursor = int(request.query.get("cursor", "0")) or None
    except ValueError:
        cursor = None
    label = request.query.get("label", "").strip()
    selector = request.get("selector")
    label_error = None
    if label:
        try:
            selector = parse_selector(label) & selector
        except LabelError as e:
            label_error = str(e)
    try:
        found = await r.store.jobs.search(limit=PAGE + 1, cursor=cursor, q=q,
                                          paused={"paused": True, "active": False}.get(state),
                                          failing=state == "failing", selector=selector,
                                          budget=r.settings.search_budget)
        total = await _TOTALS.setdefault(id(r.store), Totals()).get(r, request.get("selector"))
    except StoreUnavailable:
        return render(request, "error.html", {"message": "The database is unavailable; this page will work again when it returns."}, 503)
    jobs, more = found.jobs[:PAGE], len(found.jobs) > PAGE
    rows = await enrich(r, jobs)
    try:
        ticks = await strips(r, jobs)
    except StoreUnavailable:
        ticks = {}
    slices = Slices()
    for row, job in zip(rows, jobs, strict=True):
        row["describe"] = describe(row["schedule"])
        row["upcoming"] = await upcoming(row, slices, job, r.catalogue.calendars)
        row["ticks"] = ticks.get(job.id)
    return render(request, "jobs.html", {"rows": rows, "q": q or "", "strip_ticks": STRIP_TICKS, "state": state, "total": total, "label": label,
                                         "label_error": label_error, "scope": str(request.get("selector") or ""),
                                         "next_cursor": jobs[-1].seq if more and jobs else found.resume,
                                         "searched": found.progress,
                                         "first_page": cursor is None and not q and state == "all" and not label})


async def job_row(request: web.Request) -> web.Response:
    """One table row, for the live jobs page to insert or refresh."""
    r = request.app[RUNTIME]
    job = await actions.visible_job(r, request.match_info["id"], actor_of(request))
    (row,) = await enrich(r, [job])
    row["describe"] = describe(row["schedule"])
    row["upcoming"] = await upcoming(row, Slices(), job, r.catalogue.calendars)
    row["ticks"] = (await strips(r, [job])).get(job.id)
    return render(request, "_row.html", {"row": row})


async def job_page(request: web.Request) -> web.Response:
    r = request.app[RUNTIME]
    try:
        job = await actions.visible_job(r, request.match_info["id"], actor_of(request))
    except NotFound:
        return render(request, "error.html", {"message": "No such job (it may have been deleted)."}, 404)
    (row,) = await enrich(r, [job])
    row["describe"] = describe(job.schedule)
    try:
        fires = [] if not job.active else await preview(job.timetable(r.catalogue.calendars), datetime.now(UTC), 10)
    except ScheduleError:
        fires = []
    history = [execution_view(e) for e in await r.store.history.executions(job.id, limit=50)]
    now = datetime.now(UTC)
    strip = await ledger(r, job.id, now - STRIP_SPAN, now, limit=STRIP_MAX)
    resolved = [x.resolved for x in job.parsed_schedules() if x.resolved]
    backfills = [b.to_api() for b in await r.store.backfills.of_job(job.id, limit=10)]
    versions, diff = await _versions(r, job, request.query)
    span = request.query.get("span", "hour")
    span = span if span in TIMELINE_SPANS else "hour"
    tl = await _timeline(r, job, span, now)
    alerts = [a.to_api() for a in await r.store.alerts.recent(limit=10, job_id=job.id)]
    return render(request, "job.html", {"job": row, "fires": fires, "history": history, "ledger": strip,
                                        "tl": tl, "spans": TIMELINE_SPANS, "alerts": alerts,
                                        "resolved": resolved, "backfills": backfills, "versions": versions,
                                        "diff": diff,
                                        "strip_seconds": int(STRIP_SPAN.total_seconds()), "strip_max": STRIP_MAX,
                                        "body_json": json.dumps(job.body, indent=2) if job.body is not None and not isinstance(job.body, str) else job.body})


async def job_history(request: web.Request) -> web.Response:
    """The job page's history rows, as the page renders them: the live page swaps them in when executions end."""
    r = request.app[RUNTIME]
    job = await actions.visible_job(r, request.match_info["id"], actor_of(request))
    history = [execution_view(e) for e in await r.store.history.executions(job.id, limit=50)]
    return render(request, "_history.html", {"history": history, "zone": job.time_zone})


VERSIONS_SHOWN = 30
TIMELINE_SPANS = {"hour": ("the last hour", timedelta(hours=1)), "day": ("the last day", timedelta(days=1)),
                  "week": ("the last week", timedelta(days=7))}
TIMELINE_INSTANTS = 5_000  # instants a timeline draws at most (more: a shorter span is drawn, and says why)


async def _timeline(r: Runtime, job: Job, span: str, now: datetime) -> dict[str, Any]:
    """The job's ledger over the span asked for (a shorter one when it holds more than TIMELINE_INSTANTS instants:
    an every-second job's day is 86,400), as timeline columns; and its runs' lateness, p50 and p99 a slot."""
    names = list(TIMELINE_SPANS)
    note = ""
    for k in range(names.index(span), -1, -1):
        label, length = TIMELINE_SPANS[names[k]]
        start = now - length
        try:
            book = await ledger(r, job.id, start, now, limit=TIMELINE_INSTANTS)
        except ScheduleError:
            book = None
        if book is not None and not book.truncated:
            break
        note = f"{label.capitalize()} holds more than {TIMELINE_INSTANTS:,} instants: "
    else:
        label, length = "the last 10 minutes", STRIP_SPAN
        start = now - length
        book = await ledger(r, job.id, start, now, limit=TIMELINE_INSTANTS)
    if note:
        note += f"{label} is drawn."
    ticks = [t.to_api() for t in book.ticks]
    runs = [(e.scheduled_at, e.lateness_ms) for e in await r.store.history.executions(job.id, limit=1_000)
            if e.lateness_ms is not None and e.kind in ("tick", "catchup")]
    return {"span": span, "label": label, "note": note, "from": start, "to": now, "counts": book.counts,
            "columns": timeline(ticks, start, now), "lateness": lateness(runs, start, now), "n": len(ticks)}


async def _versions(r: Runtime, job: Job, query: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The job's last versions, each with the change that made it; and, when ``?a=&b=`` name two of its
    versions, the field-by-field difference between them (secrets masked; a changed secret listed)."""
    versions = await r.store.history.versions(job.id, limit=VERSIONS_SHOWN)
    made = await r.store.audit.of_versions(job.id, [v.version for v in versions])
    rows = [{"version": v.version, "at": rfc3339(v.at), "complete": v.spec_kept, "deleted": v.deleted,
             "change": made[v.version].to_api() if v.version in made else None} for v in versions]
    a, b = _number(str(query.get("a", ""))), _number(str(query.get("b", "")))
    if a is None or b is None:
        return rows, None
    va, vb = await r.store.history.version(job.id, a), await r.store.history.version(job.id, b)
    if va is None or vb is None:
        return rows, {"a": a, "b": b, "missing": True, "fields": {}}
    return rows, {"a": a, "b": b, "missing": False, "fields": job_changes(va.job, vb.job)}


async def restore_form(request: web.Request) -> web.StreamResponse:
    r = request.app[RUNTIME]
    form = await check_csrf(request)
    job_id = request.match_info["id"]
    try:
        await actions.restore_job(r, job_id, {"version": _number(form.get("version", "").strip())}, actor_of(request))
    except ApiError as e:
        return render(request, "error.html", {"message": f"Restore: {e.message}."}, e.status)
    raise web.HTTPSeeOther(f"/jobs/{job_id}")


async def bulk_form(request: web.Request) -> web.StreamResponse:
    """The jobs page's bulk action: on the rows ticked, or on every job its label filter matches. Without
    JavaScript (no confirm dialog) a page lists what it would touch and asks first."""
    r = request.app[RUNTIME]
    form = await check_csrf(request)
    action = form.get("action", "")
    if action not in actions.BULK_ACTIONS:
        return render(request, "error.html", {"message": "Choose pause, resume, run or delete."}, 400)
    payload: dict[str, Any] = {}
    if form.get("all") == "1":
        if not form.get("label", "").strip():
            return render(request, "error.html", {"message": "“Every matching job” needs a label filter."}, 400)
        payload["selector"] = form["label"].strip()
    else:
        ids = [i for i in form.get("ids", "").splitlines() if i]
        if not ids:
            return render(request, "error.html", {"message": "Tick the jobs to act on first."}, 400)
        payload["ids"] = ids
    confirmed = form.get("confirm") == "yes"
    try:
        result = await actions.bulk(r, action, {**payload, "dryRun": not confirmed}, actor_of(request),
                                    caller(request))
    except ApiError as e:
        details = "; ".join(f"{k}: {v}" for k, v in (e.details or {}).items()) if isinstance(e.details, dict) else ""
        return render(request, "error.html", {"message": f"{action}: {e.message}. {details}"}, e.status)
    return render(request, "bulk.html", {"result": result, "form": form, "confirmed": confirmed,
                                         "ids": payload.get("ids", [])})


AUDIT_PAGE = 100


async def audit_page(request: web.Request) -> web.Response:
    """The audit log with filters (job, actor, action) and an older-page link."""
    r = request.app[RUNTIME]
    q = request.query
    job_id = q.get("jobId", "").strip() or None
    actor = q.get("actor", "").strip() or None
    action = q.get("action", "").strip() or None
    problems = []
    if job_id is not None and not re.fullmatch(r"[0-9a-f]{1,32}", job_id):
        problems.append("a job id is up to 32 hex digits")
        job_id = None
    if actor is not None and not ACTOR_NAME.fullmatch(actor):
        problems.append("an actor is a token's name, anonymous or cronring")
        actor = None
    if action is not None and action not in {str(a) for a in AuditAction}:
        problems.append("unknown action")
        action = None
    before = _number(q.get("before", ""))
    try:
        rows = await r.store.audit.query(job_id=job_id, actor=actor, action=action, limit=AUDIT_PAGE,
                                         before_id=before, selector=request.get("selector"))
    except StoreUnavailable:
        return render(request, "error.html", {"message": "The database is unavailable; this page will work again when it returns."}, 503)
    return render(request, "audit.html", {"rows": [x.to_api() for x in rows], "jobId": job_id or "", "actor": actor or "",
                                          "action": action or "", "actions": [str(a) for a in AuditAction],
                                          "problems": problems,
                                          "older": rows[-1].id if len(rows) == AUDIT_PAGE else None})


def form_values(job: Job | None) -> dict[str, Any]:
    if job is None:
        return {"httpMethod": "POST", "timeZone": "UTC", "timeoutMs": 10000, "retries": 0, "retryBackoffMs": 1000,
                "retryMaxBackoffMs": 30000, "misfirePolicy": "fire_once", "misfireGraceSeconds": 60,
                "concurrencyPolicy": "allow", "delivery": "at_most_once", "bodyType": "json", "headers": "", "body": "",
                "expectStatus": "", "jitterSeconds": 0, "dstGap": "shift", "dstOverlap": "first", "excludeCalendars": [],
                "labels": "", "pauseAfterFailures": 0, "alertUri": "", "expectBody": "", "expectJson": "",
                "maxDurationMs": ""}
    d = job.to_api()  # secrets masked: a reader may open the form; a masked value sent back keeps the secret
    d["schedule"] = "\n".join(job.schedules)
    d["dstGap"], d["dstOverlap"] = str(job.dst_policy.gap), str(job.dst_policy.overlap)
    d["headers"] = "\n".join(f"{k}: {v}" for k, v in d["headers"].items())
    d["bodyType"] = "text" if isinstance(job.body, str) else "json"
    d["body"] = "" if job.body is None else (job.body if isinstance(job.body, str) else json.dumps(job.body, indent=2))
    d["expectStatus"] = ", ".join(str(s) for s in job.expect_status)
    d["labels"] = "\n".join(f"{k}={v}" for k, v in job.labels.items())
    d["alertUri"] = d["alertUri"] or ""
    d["expectBody"] = job.expect_body or ""
    d["expectJson"] = "\n".join(f"{p} = {json.dumps(v)}" for p, v in job.expect_json)
    d["maxDurationMs"] = job.max_duration_ms or ""
    return d


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def payload_from_form(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Form strings -> an API payload, with errors for what cannot even be converted."""
    errors: dict[str, str] = {}
    p: dict[str, Any] = {}
    for k in ("name", "uri", "httpMethod", "timeZone", "misfirePolicy", "concurrencyPolicy", "delivery"):
        if k in form:
            p[k] = form[k].strip() if k != "name" else form[k]
    if "schedule" in form:  # one expression per line
        lines = [x.strip() for x in form["schedule"].splitlines() if x.strip()]
        if len(lines) > 1:
            p["schedules"] = lines
        else:
            p["schedule"] = lines[0] if lines else ""
            p["schedules"] = None
    for k in ("startAt", "endAt"):
        if k in form:
            p[k] = form[k].strip() or None
    if "maxRuns" in form:
        raw = form["maxRuns"].strip()
        try:
            p["maxRuns"] = int(raw) if raw else None
        except ValueError:
            errors["maxRuns"] = "must be a whole number (or empty: no limit)"
    if "dstGap" in form or "dstOverlap" in form:
        p["dstPolicy"] = {"gap": form.get("dstGap", "shift"), "overlap": form.get("dstOverlap", "first")}
    if "excludeCalendars" in form or "_calendars" in form:  # (none selected sends nothing: the marker says so)
        p["excludeCalendars"] = [x for x in form.get("excludeCalendars", "").splitlines() if x]
    for k in INT_FIELDS:
        raw = form.get(k, "").strip()
        if raw:
            try:
                p[k] = int(raw)
            except ValueError:
                errors[k] = "must be a whole number"
    p["paused"] = form.get("paused") == "on"
    p["followRedirects"] = form.get("followRedirects") == "on"
    if "alertUri" in form:
        p["alertUri"] = form["alertUri"].strip() or None
    if "expectBody" in form:
        p["expectBody"] = form["expectBody"] or None
    if "maxDurationMs" in form:
        raw = form["maxDurationMs"].strip()
        try:
            p["maxDurationMs"] = int(raw) if raw else None
        except ValueError:
            errors["maxDurationMs"] = "must be a whole number of milliseconds (or empty: no limit)"
    if "expectJson" in form:  # one check a line: $.path = <JSON value>
        checks: list[dict[str, Any]] = []
        for line in form["expectJson"].splitlines():
            if not line.strip():
                continue
            path, sep, value = line.partition(" = ") if " = " in line else line.partition("=")
            try:
                if not sep:
                    raise ValueError
                checks.append({"path": path.strip(), "equals": json.loads(value.strip(), parse_constant=_no_constant)})
            except ValueError:
                errors["expectJson"] = f"each line must be '$.path = <JSON value>' (got {line[:40]!r})"
                break
        p["expectJson"] = checks or None
    if "labels" in form:  # one key=value a line
        labels: dict[str, str] = {}
        for line in form["labels"].splitlines():
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep:
                errors["labels"] = f"each line must be 'key=value' (got {line[:40]!r})"
                break
            labels[key.strip()] = value.strip()
        p["labels"] = labels
    headers: dict[str, str] = {}
    for line in form.get("headers", "").splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            errors["headers"] = f"each line must be 'Name: value' (got {line[:40]!r})"
            break
        headers[name.strip()] = value.strip()
    p["headers"] = headers
    body = form.get("body", "")
    if not body.strip():
        p["body"] = None
    elif form.get("bodyType", "json") == "json":
        try:
            p["body"] = json.loads(body, parse_constant=_no_constant)
        except ValueError as e:
            errors["body"] = f"not valid JSON ({e}); choose 'text' to send it as is"
    else:
        p["body"] = body
    raw = form.get("expectStatus", "").strip()
    if raw:
        try:
            p["expectStatus"] = [int(x) for x in raw.replace(" ", "").split(",") if x]
        except ValueError:
            errors["expectStatus"] = "a comma-separated list of status codes"
    else:
        p["expectStatus"] = []
    return p, errors


async def _form_page(request: web.Request, job: Job | None, values: dict[str, Any], errors: dict[str, str],
                     status: int = 200) -> web.Response:
    calendars = sorted(request.app[RUNTIME].catalogue.calendars)
    values.setdefault("excludeCalendars", [])
    return render(request, "form.html", {"job": job, "v": values, "errors": errors, "methods": METHODS,
                                         "misfire": [m.value for m in MisfirePolicy],
                                         "concurrency": [c.value for c in ConcurrencyPolicy],
                                         "deliveries": [d.value for d in Delivery], "calendars": calendars}, status)


async def new_form(request: web.Request) -> web.Response:
    return await _form_page(request, None, form_values(None), {})


async def edit_form(request: web.Request) -> web.Response:
    job = await actions.visible_job(request.app[RUNTIME], request.match_info["id"], actor_of(request))
    return await _form_page(request, job, form_values(job), {})


async def save_form(request: web.Request) -> web.StreamResponse:
    r = request.app[RUNTIME]
    form = await check_csrf(request)
    job_id = request.match_info.get("id")
    job = await actions.visible_job(r, job_id, actor_of(request)) if job_id else None
    payload, errors = payload_from_form(form)
    if not errors:
        try:
            if job is None:
                saved = await actions.create_job(r, payload, actor_of(request))
            else:
                version = _number(form.get("version", ""))
                saved = await actions.update_job(r, job.id, payload, version, actor_of(request))
            raise web.HTTPSeeOther(f"/jobs/{saved.id}")
        except ValidationError as e:
            errors = e.details
        except OutboundDenied as e:
            errors = {"uri": str(e)}
        except ScheduleError as e:
            errors = {"schedule": str(e)}
        except (VersionConflict, ApiError) as e:
            errors = {"form": str(e) if not isinstance(e, ApiError) else e.message}
    values = {**form, "paused": form.get("paused") == "on", "followRedirects": form.get("followRedirects") == "on",
              "excludeCalendars": form.get("excludeCalendars", "").splitlines()}
    return await _form_page(request, job, values, errors, 400)


async def job_action(request: web.Request) -> web.StreamResponse:
    r = request.app[RUNTIME]
    form = await check_csrf(request)
    job_id = request.match_info["id"]
    action = request.match_info["action"]
    if action == "delete":
        if form.get("confirm") != "yes":
            job = await actions.visible_job(r, job_id, actor_of(request))
            return render(request, "confirm.html", {"job": job})
        await actions.delete_job(r, job_id, None, actor_of(request))
        raise web.HTTPSeeOther("/")
    if action == "run":
        await actions.run_now(r, job_id, caller(request), actor_of(request))
    elif action == "backfill":
        payload: dict[str, Any] = {k: form.get(k, "").strip() for k in ("from", "to", "concurrencyPolicy")}
        raw = form.get("maxPerSecond", "").strip()
        payload["maxPerSecond"] = _number(raw) if _number(raw) is not None else raw or 10
        try:
            await actions.create_backfill(r, job_id, payload, actor_of(request))
        except ApiError as e:
            details = "; ".join(f"{k}: {v}" for k, v in (e.details or {}).items()) if isinstance(e.details, dict) else ""
            return render(request, "error.html", {"message": f"Backfill: {e.message}. {details}"}, e.status)
    elif action == "skip":
        count = _number(form.get("count", "1").strip())
        if count is None:
            return render(request, "error.html", {"message": "Skip: give how many instants (a whole number)."}, 400)
        await actions.skip_job(r, job_id, {"count": count}, actor_of(request))
    elif action in ("pause", "resume"):
        note = form.get("note", "").strip()
        try:
            note_, until = actions.pause_request({"note": note} if note else None, resume=action == "resume")
        except ApiError as e:
            details = "; ".join(f"{k}: {v}" for k, v in (e.details or {}).items()) if isinstance(e.details, dict) else ""
            return render(request, "error.html", {"message": f"Pause: {e.message}. {details}"}, e.status)
        await actions.set_paused(r, job_id, action == "pause", actor_of(request), note=note_, until=until,
                                 given=bool(note))
    else:
        raise web.HTTPNotFound()
    raise web.HTTPSeeOther(f"/jobs/{job_id}")


async def _charts_context(r: Runtime, c: dict[str, Any], selector: Any = None) -> dict[str, Any]:
    """The cluster page's live part: the charts of the last 15 minutes, the ring's shares, the unaccounted ticks."""
    members = [m["id"] for m in c["members"]]
    ch = charts(await pulse_view(r), c["recentHandovers"], members)
    owned = [(m["id"], m["owned"] or 0) for m in c["members"]]
    total = sum(n for _, n in owned)
    colors = {n["node"]: n["color"] for n in ch.get("nodes", [])}
    share, x = [], 0.0
    for k, (node, n) in enumerate(owned):
        w = 1000 * n / total if total else 0
        share.append({"node": node, "owned": n, "pct": round(100 * n / total) if total else 0, "x": round(x, 1),
                      "w": round(max(w - 2, 0), 1), "color": colors.get(node, STYLES[k % len(STYLES)][0])})
        x += w
    try:
        alerts_n, ticks = await r.store.alerts.tally(str(AlertType.TICKS_UNACCOUNTED),
                                                     datetime.now(UTC) - timedelta(days=1), selector)
    except StoreUnavailable:
        alerts_n, ticks = 0, 0
    return {"ch": ch, "share": share, "share_total": total, "unaccounted": {"ticks": ticks, "alerts": alerts_n},
            "c": c}


async def cluster_page(request: web.Request) -> web.Response:
    r = request.app[RUNTIME]
    try:
        alerts = [a.to_api() for a in await r.store.alerts.recent(limit=20, selector=request.get("selector"))]
        changes = [x.to_api() for x in await r.store.audit.query(limit=10, selector=request.get("selector"))]
    except StoreUnavailable:
        alerts, changes = [], []
    c = await scoped_cluster_view(r, request.get("selector"))
    return render(request, "cluster.html", {"c": c, "alerts": alerts, "changes": changes,
                                            **await _charts_context(r, c, request.get("selector"))})


async def cluster_charts(request: web.Request) -> web.Response:
    """The charts alone, for the live page to swap in when the nodes report (every 10 s)."""
    r = request.app[RUNTIME]
    c = await scoped_cluster_view(r, request.get("selector"))
    return render(request, "_charts.html", await _charts_context(r, c, request.get("selector")))


# The forecast page's views: (label, slot seconds, slots a row, rows, what a row is, what a cell is)
FORECAST_VIEWS = {
    "day": ("Next 24 hours, by the minute", 60, 60, 25, "hour", "minute"),
    "minutes": ("Next 10 minutes, by the second", 1, 60, 11, "minute", "second"),
    "week": ("Next 7 days, by the hour", 3600, 24, 8, "day", "hour"),
}
HEAT_LEVELS = 6  # colour steps of a cell (0: no request); each cell also says its count (its title, the table)


def heat_level(n: int, peak: int) -> int:
    """A slot's colour step: 0 for none, else 1..HEAT_LEVELS by its share of the peak."""
    return 0 if n <= 0 or peak <= 0 else max(1, min(HEAT_LEVELS, -(-n * HEAT_LEVELS // peak)))


async def forecast_page(request: web.Request) -> web.Response:
    """Scheduled requests per slot as a heatmap (rows: hours, minutes or days; cells: minutes, seconds or hours)
    drawn as SVG on the server, the busiest slots with the schedules behind them, and how to spread them."""
    r = request.app[RUNTIME]
    view = request.query.get("view", "day")
    if view not in FORECAST_VIEWS:
        view = "day"
    label, step, cols, rows, row_unit, cell_unit = FORECAST_VIEWS[view]
    now = datetime.now(UTC)
    align = {"day": 3600, "minutes": 60, "week": 86_400}[view]  # rows start on the clock: whole hours, minutes, days
    epoch = int(now.timestamp())
    start = datetime.fromtimestamp(epoch - epoch % align, UTC)
    window = fc.Window(start, start + timedelta(seconds=step * cols * rows), step)
    try:
        result = await forecasts.forecast(r, window, request.get("selector"), now=now, caller=caller(request))
    except Busy as e:
        return render(request, "error.html", {"message": f"{e.message}."}, 503)
    except TooManyRequests as e:
        return render(request, "error.html", {"message": f"{e.message}."}, 429)
    except StoreUnavailable:
        return render(request, "error.html", {"message": "The database is unavailable; this page will work again when it returns."}, 503)
    api = result.to_api()
    past = window.index(now) if now > window.start else 0  # cells wholly before now are not forecast
    cells = []
    for i, n in enumerate(result.counts):
        at = window.start + timedelta(seconds=i * step)
        cells.append({"i": i, "row": i // cols, "col": i % cols, "n": n, "level": heat_level(n, api["peak"]),
                      "past": i < past, "at": at})
    row_labels = [window.start + timedelta(seconds=k * step * cols) for k in range(rows)]
    return render(request, "forecast.html", {"f": api, "cells": cells, "view": view, "views": FORECAST_VIEWS,
                                             "label": label, "cols": cols, "rows": rows, "row_labels": row_labels,
                                             "row_unit": row_unit, "cell_unit": cell_unit, "step": step,
                                             "levels": HEAT_LEVELS, "scope": str(request.get("selector") or "")})


async def login_page(request: web.Request) -> web.Response:
    return render(request, "login.html", {"next": _safe_next(request.query.get("next")), "error": None})


def _safe_next(value: str | None) -> str:
    """A path on this node, checked as a browser will read it: browsers drop tabs and newlines from
    URLs and treat a backslash as a slash, so "/\t/evil.example" is "//evil.example"."""
    if not value or any(c in value for c in "\t\r\n\\") or any(ord(c) < 0x20 or ord(c) == 0x7f for c in value):
        return "/"
    if not value.startswith("/") or value.startswith("//"):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


async def login(request: web.Request) -> web.StreamResponse:
    r = request.app[RUNTIME]
    form = await check_csrf(request)
    token = form.get("token", "")
    nxt = _safe_next(form.get("next"))
    if not r.settings.api_tokens or scope_of(r.settings.api_tokens, token) is None:
        # failures only are throttled: a valid token always logs in, whatever its address did
        addr = client_address(request)
        wait = THROTTLE.retry_after(addr)
        if wait:
            return render(request, "login.html", {"next": nxt, "error": f"Too many failed attempts: wait {wait} s."},
                          429)
        THROTTLE.failed(addr)
        return render(request, "login.html", {"next": nxt, "error": "That token is not valid."}, 401)
    resp = web.HTTPSeeOther(nxt)
    resp.set_cookie(COOKIE, session_value(token), httponly=True, samesite="Strict", path="/", max_age=SESSION_SECONDS,
                    secure=is_https(request))
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    await check_csrf(request)
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


async def cancel_backfill_form(request: web.Request) -> web.StreamResponse:
    await check_csrf(request)
    job_id = request.match_info["id"]
    await actions.cancel_backfill(request.app[RUNTIME], job_id, request.match_info["bid"], actor_of(request))
    raise web.HTTPSeeOther(f"/jobs/{job_id}")


WEEKDAY_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


async def calendars_page(request: web.Request) -> web.Response:
    r = request.app[RUNTIME]
    try:
        cals = [c.to_api() for c in await r.store.calendars.all()]
        jobs = await r.store.jobs.calendar_users()
    except StoreUnavailable:
        return render(request, "error.html", {"message": "The database is unavailable; this page will work again when it returns."}, 503)
    return render(request, "calendars.html", {"calendars": cals, "users": jobs, "weekday_names": WEEKDAY_NAMES})


def _calendar_values(c: dict[str, Any] | None) -> dict[str, Any]:
    if c is None:
        return {"timeZone": "UTC", "weekdays": [], "dates": "", "ranges": ""}
    return {**c, "dates": "\n".join(c["dates"]), "ranges": "\n".join(f"{x['from']} {x['to']}" for x in c["ranges"])}


async def calendar_form(request: web.Request) -> web.Response:
    r = request.app[RUNTIME]
    name = request.match_info.get("name")
    if name is None:
        return render(request, "calendar.html", {"name": None, "version": None, "v": _calendar_values(None),
                                                 "errors": {}, "weekday_names": WEEKDAY_NAMES})
    try:
        cal = (await r.store.calendars.get(name)).to_api()
    except NotFound:
        return render(request, "error.html", {"message": "No such calendar (it may have been deleted)."}, 404)
    return render(request, "calendar.html", {"name": name, "version": cal["version"], "v": _calendar_values(cal),
                                             "errors": {}, "weekday_names": WEEKDAY_NAMES})


async def save_calendar(request: web.Request) -> web.StreamResponse:
    r = request.app[RUNTIME]
    form = await check_csrf(request)
    name = request.match_info.get("name") or form.get("name", "").strip()
    ranges = []
    for line in form.get("ranges", "").splitlines():
        parts = line.split()
        if parts:
            ranges.append({"from": parts[0], "to": parts[1] if len(parts) > 1 else ""})
    # (what is not a number goes to the API as typed: its 400 says what a weekday is)
    weekdays = [_number(w.strip()) if _number(w.strip()) is not None else w.strip()
                for w in form.get("weekdays", "").splitlines() if w.strip()]
    payload = {"timeZone": form.get("timeZone", "UTC").strip() or "UTC", "description": form.get("description", ""),
               "dates": [d.strip() for d in form.get("dates", "").splitlines() if d.strip()], "ranges": ranges,
               "weekdays": weekdays}
    version = _number(form.get("version", ""))
    try:
        await actions.put_calendar(r, name, payload, version, actor_of(request))
        raise web.HTTPSeeOther("/calendars")
    except CalendarError as e:
        errors = e.details
    except (VersionConflict, NotFound):
        errors = {"form": "the calendar changed meanwhile: reload and try again"}
    values = {**form, "weekdays": weekdays, "name": name}
    return render(request, "calendar.html", {"name": request.match_info.get("name"), "version": version, "v": values,
                                             "errors": errors, "weekday_names": WEEKDAY_NAMES}, 400)


async def delete_calendar_form(request: web.Request) -> web.StreamResponse:
    r = request.app[RUNTIME]
    await check_csrf(request)
    name = request.match_info["name"]
    try:
        await actions.delete_calendar(r, name, None, actor_of(request))
    except Conflict as e:
        users = ", ".join(j["name"] or j["id"] for j in (e.details or {}).get("jobs", []))  # type: ignore[union-attr]
        return render(request, "error.html", {"message": f"{e} ({users})."}, 409)
    raise web.HTTPSeeOther("/calendars")


def setup(app: web.Application) -> None:
    app.middlewares.append(csrf_cookie_middleware)
    app.router.add_get("/", jobs_page)
    app.router.add_get("/jobs/new", new_form)
    app.router.add_post("/jobs/new", save_form)
    app.router.add_get("/jobs/{id:[0-9a-f]{1,32}}", job_page)
    app.router.add_get("/jobs/{id:[0-9a-f]{1,32}}/row", job_row)
    app.router.add_get("/jobs/{id:[0-9a-f]{1,32}}/history", job_history)
    app.router.add_get("/jobs/{id:[0-9a-f]{1,32}}/edit", edit_form)
    app.router.add_post("/jobs/{id:[0-9a-f]{1,32}}/edit", save_form)
    app.router.add_post("/jobs/{id:[0-9a-f]{1,32}}/{action:run|pause|resume|delete|skip|backfill}", job_action)
    app.router.add_post("/jobs/{id:[0-9a-f]{1,32}}/backfills/{bid:[0-9a-f]{16}}/cancel", cancel_backfill_form)
    app.router.add_get("/cluster", cluster_page)
    app.router.add_get("/cluster/charts", cluster_charts)
    app.router.add_get("/audit", audit_page)
    app.router.add_get("/forecast", forecast_page)
    app.router.add_post("/jobs/bulk", bulk_form)
    app.router.add_post("/jobs/{id:[0-9a-f]{1,32}}/restore", restore_form)
    app.router.add_get("/calendars", calendars_page)
    app.router.add_get("/calendars/new", calendar_form)
    app.router.add_post("/calendars/new", save_calendar)
    app.router.add_get("/calendars/{name:[a-z0-9][-a-z0-9_.]{0,62}}", calendar_form)
    app.router.add_post("/calendars/{name:[a-z0-9][-a-z0-9_.]{0,62}}", save_calendar)
    app.router.add_post("/calendars/{name:[a-z0-9][-a-z0-9_.]{0,62}}/delete", delete_calendar_form)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_static("/static", HERE / "static", append_version=True)


def _number(raw: str) -> int | None:
    """A form's whole number (ASCII digits, at most 18: ``str.isdigit`` also takes "²", which ``int`` refuses)."""
    return int(raw) if re.fullmatch(r"[0-9]{1,18}", raw) else None
