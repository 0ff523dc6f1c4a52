"""Records as the API and the pages show them: shared by ``web/api.py`` and ``dashboard/``, so a page never
imports a handler. Schedule work here (previews, next fire times) runs in slices with a step budget."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from ..aio import Slices
from ..cluster.messages import MembershipEvent, PulseEvent, unpack
from ..cluster.redisconn import SentinelURL, is_sentinel
from ..model.calendars import Calendar
from ..model.executions import FAILED_STATES, OPEN_STATES, Execution
from ..model.jobs import Job
from ..model.labels import Selector
from ..model.schedule import Budget, ScheduleError, has_h, zone_transitions
from ..model.times import rfc3339
from ..model.timetable import Timetable
from ..scheduling.audit import job_ledger, recent_ticks, settle_for
from ..scheduling.ledger import Ledger
from ..scheduling.pulse import PULSE_KEPT, PULSE_SECONDS
from .runtime import Runtime

BODY_READ_SECONDS = 10  # a request body (API or form) must arrive within this long (else 408)


PREVIEW_STEPS = 4_000  # schedule steps one preview may spend (100 fires cost at most ~400)


def _offset(local: datetime) -> str:
    return _fmt_offset(local.utcoffset() or timedelta(0))


def _fmt_offset(off: timedelta) -> str:
    minutes = int(off.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"

async def preview(tt: Timetable, start: datetime, count: int, *, excluded: bool = False) -> list[dict[str, Any]]:
    """The next ``count`` fire times, computed in slices (never holding the loop) within PREVIEW_STEPS
    (``ScheduleTooCostly`` past it). Fewer when the schedule ends. Each with its UTC offset, its send time when
    the job has a jitter, and what a DST transition did to it; with ``excluded``, the instants a calendar or a
    bound excludes are listed too, with the reason (else they are skipped)."""
    out: list[dict[str, Any]] = []
    slices = Slices()
    budget = Budget(PREVIEW_STEPS)
    zone = tt.zone
    it = tt.raw_after(start, budget) if excluded else tt.due_after(start, budget)
    for t in it:
        if len(out) >= count:
            break
        local = t.astimezone(zone)
        fire: dict[str, Any] = {"utc": rfc3339(t) or "", "local": local.isoformat(), "offset": _offset(local)}
        if tt.jitter:
            fire["sendAt"] = rfc3339(tt.fire_at(t))
        if (dst := dst_note(tt, t)) is not None:
            fire["dst"] = dst
        if excluded and (why := tt.bound(t) or tt.excluded(t)) is not None:
            fire["excluded"] = why
        out.append(fire)
        await slices.pause()
    return out


def dst_note(tt: Timetable, t: datetime) -> str | None:
    """What a DST transition did to this fire of a fixed-time schedule (None: nothing)."""
    fixed = [s for s in tt.schedules if not s.interval and s.at is None]
    if not fixed:
        return None
    zone = tt.zone
    local = t.astimezone(zone)
    wall = local.replace(tzinfo=None)
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() != second.utcoffset() and first.astimezone(UTC) != second.astimezone(UTC):
        which = "second" if local.fold else "first"
        return f"{wall:%H:%M} occurs twice today (DST ends): its {which} occurrence (overlap: {fixed[0].dst.overlap})"
    before = (t - timedelta(microseconds=1)).astimezone(zone).utcoffset()
    if before is not None and local.utcoffset() is not None and before < local.utcoffset():  # type: ignore[operator]
        return (f"the first instant after a DST gap ({_offset(t.astimezone(zone))}): wall times the gap swallowed "
                f"fire here (gap: {fixed[0].dst.gap})")
    return None


def transitions(tt: Timetable, start: datetime, end: datetime) -> list[dict[str, str]]:
    """The DST transitions of the job's zone in ``[start, end]`` and what its policy does at each."""
    zone = tt.zone
    out: list[dict[str, str]] = []
    fixed = [s for s in tt.schedules if not s.interval and s.at is None]
    for at, before, after in zone_transitions(zone, start, end):
        gap = after > before
        if not fixed:
            what = "an interval schedule follows real time: " + (
                "the hour the clock skips has no fires" if gap else "the repeated hour fires again")
        elif gap:
            what = {"shift": "a wall time the gap swallows fires once, at the gap's end",
                    "skip": "a wall time the gap swallows does not fire"}[str(fixed[0].dst.gap)]
        else:
            what = {"first": "a wall time that occurs twice fires at its first occurrence",
                    "second": "a wall time that occurs twice fires at its second occurrence",
                    "both": "a wall time that occurs twice fires at both occurrences"}[str(fixed[0].dst.overlap)]
        out.append({"at": rfc3339(at) or "", "kind": "gap" if gap else "overlap",
                    "from": _fmt_offset(before), "to": _fmt_offset(after),
                    "policy": what})
    return out


_NEXT_RUN: dict[tuple[str, str], datetime] = {}


def next_run(job: Job, calendars: Mapping[str, Calendar] | None = None) -> str | None:
    """The next fire time; a plain schedule's is shared by every job with the same schedule and zone until it
    passes (the others are computed: their calendars, bounds and seeds are their own)."""
    if not job.active:
        return None
    now = datetime.now(UTC)
    tt = job.timetable(calendars)
    if not (tt.plain and not job.more_schedules and job.start_at is None and job.end_at is None
            and not has_h(job.schedule)):
        try:
            return rfc3339(tt.next_after(now, Budget(PREVIEW_STEPS)))
        except ScheduleError:
            return None
    key = (job.schedule, job.time_zone)
    nxt = _NEXT_RUN.get(key)
    if nxt is None or nxt <= now:
        try:
            nxt = tt.next_after(now)
        except ScheduleError:
            return None
        if len(_NEXT_RUN) > 10_000:
            _NEXT_RUN.clear()
        _NEXT_RUN[key] = nxt
    return rfc3339(nxt)


def execution_view(e: Execution | None) -> dict[str, Any] | None:
    """An execution as the API and the pages show it (camelCase; the claimer is internal)."""
    if e is None:
        return None
    return {
        "id": e.id, "jobId": e.job_id, "scheduledAt": rfc3339(e.scheduled_at), "kind": str(e.kind),
        "state": str(e.state), "fence": e.fence, "node": e.node, "attempts": e.attempts,
        "statusCode": e.status_code, "durationMs": e.duration_ms, "latenessMs": e.lateness_ms,
        "error": e.error, "responseExcerpt": e.response_excerpt, "missedCount": e.missed_count,
        "missedFrom": rfc3339(e.missed_from), "claimedAt": rfc3339(e.claimed_at),
        "startedAt": rfc3339(e.started_at), "finishedAt": rfc3339(e.finished_at),
        "redelivered": e.redelivered,
    }


class JobState(StrEnum):
    """A job's state as the list and the pages show it (from its definition and its last execution)."""

    COMPLETED = "completed"
    PAUSED = "paused"
    RUNNING = "running"
    FAILING = "failing"
    WAITING = "waiting"


def job_state(job: Job, last: Execution | None) -> JobState:
    if job.completed:
        return JobState.COMPLETED
    if job.paused:
        return JobState.PAUSED
    if last is not None and last.state in OPEN_STATES:
        return JobState.RUNNING
    if last is not None and last.state in FAILED_STATES:
        return JobState.FAILING
    return JobState.WAITING


async def scoped_cluster_view(r: Runtime, selector: Selector | None) -> dict[str, Any]:
    """The cluster view, as a token limited to a selector may see it: the stuck jobs it lists are its own."""
    view = await cluster_view(r)
    if selector is not None and view.get("stuckJobs"):
        ids = [s["jobId"] for s in view["stuckJobs"]]
        mine = {j.id for j in await r.store.jobs.get_many(ids) if selector.matches(j.labels)}
        view["stuckJobs"] = [s for s in view["stuckJobs"] if s["jobId"] in mine]
    return view


HOLDERS_FOR = 1.0  # seconds a job's lock holder, read from Redis, is shown again without asking
_HOLDERS: dict[str, tuple[float, str | None]] = {}


async def _holders(r: Runtime, ids: list[str]) -> dict[str, str | None]:
    """Which node holds each job's lock, as read at most HOLDERS_FOR ago: a job read a thousand times a second
    costs one Redis round trip a second, not a thousand (a hand-over shows up within the second)."""
    now = time.monotonic()
    out: dict[str, str | None] = {}
    ask = []
    for i in ids:
        seen = _HOLDERS.get(i)
        if seen is not None and now - seen[0] < HOLDERS_FOR:
            out[i] = seen[1]
        else:
            ask.append(i)
    if ask:
        try:
            got = await r.locks.holders(ask)
        except Exception:
            return out  # Redis away: the owner is shown from the definition
        if len(_HOLDERS) > 50_000:
            _HOLDERS.clear()
        for i, h in got.items():
            _HOLDERS[i] = (now, h)
        out.update(got)
    return out


_VIEWS: dict[int, tuple[Job, dict[str, Any]]] = {}


def _api_view(j: Job) -> dict[str, Any]:
    """``j.to_api()``, made once per Job object: the store hands the same (frozen) Job for the same row
    (``codec.job_from_json``), so a page read again costs a dict copy per job. (The entry holds the Job,
    so its id is never another object's while the entry lives.)"""
    hit = _VIEWS.get(id(j))
    if hit is not None and hit[0] is j:
        return dict(hit[1])
    view = j.to_api()
    if len(_VIEWS) >= 1024:
        _VIEWS.clear()
    _VIEWS[id(j)] = (j, view)
    return dict(view)


async def enrich(r: Runtime, jobs: list[Job], last: dict[str, Execution] | None = None) -> list[dict[str, Any]]:
    """The API's view of jobs: their last execution (read here unless given), owner, state, next run."""
    ids = [j.id for j in jobs]
    if last is None:
        last = await r.store.history.last_executions(ids)
    holders = await _holders(r, ids)
    out = []
    slices = Slices()  # a page of 500 jobs with rare schedules: their next fires are computed in slices
    for j in jobs:
        d = _api_view(j)
        le = last.get(j.id)
        d["owner"] = holders.get(j.id) or j.owner
        d["nextRunAt"] = next_run(j, r.catalogue.calendars)
        d["running"] = le is not None and le.state in OPEN_STATES
        d["lastExecutedAt"] = rfc3339(le.started_at or le.scheduled_at) if le else None
        d["isLocked"] = bool(holders.get(j.id))
        d["state"] = str(job_state(j, le))
        d["lastExecution"] = execution_view(le)
        out.append(d)
        await slices.pause()
    return out


async def ledger(r: Runtime, job_id: str, start: datetime, end: datetime, *, limit: int) -> Ledger:
    """A job's tick ledger over ``[start, end)`` (sliced; ``ScheduleTooCostly`` past its budget)."""
    s = r.settings
    return await job_ledger(r.store.history, job_id, start, end, limit=limit, calendars=r.catalogue.calendars,
                            settle=settle_for(s.member_ttl, s.heartbeat_interval, s.claim_ahead))


STRIP_TICKS = 20  # the jobs page's strips: each row's last twenty instants


async def strips(r: Runtime, jobs: list[Job]) -> dict[str, list[dict[str, Any]] | None]:
    """Each job's last STRIP_TICKS instants with their fates (the jobs page's strips), as the API shows ticks."""
    s = r.settings
    timetables: dict[str, Timetable | None] = {}
    for j in jobs:
        try:
            timetables[j.id] = j.timetable(r.catalogue.calendars)
        except ScheduleError:
            timetables[j.id] = None
    found = await recent_ticks(r.store.history, timetables, ticks=STRIP_TICKS, calendars=r.catalogue.calendars,
                               settle=settle_for(s.member_ttl, s.heartbeat_interval, s.claim_ahead))
    return {job_id: None if ticks is None else [t.to_api() for t in ticks] for job_id, ticks in found.items()}


async def pulse_view(r: Runtime, *, now: float | None = None) -> dict[str, Any]:
    """Every node's pulse over the last PULSE_KEPT seconds (what it sent each PULSE_SECONDS slot, and how late),
    from the pulse ZSET: a node that died keeps its points until they age out. ``slots``: the slots' starts."""
    now = time.time() if now is None else now
    last = int(now) // PULSE_SECONDS * PULSE_SECONDS - PULSE_SECONDS  # the newest slot that can be over
    first = last - PULSE_KEPT + PULSE_SECONDS
    nodes: dict[str, list[dict[str, Any]]] = {}
    for blob in await r.redis.zrangebyscore(r.keys.pulse, first, last):
        try:
            ev = unpack(cast(bytes, blob))
        except ValueError:
            continue
        if isinstance(ev, PulseEvent):
            nodes.setdefault(ev.node_id, []).append(
                {"at": ev.at, "states": ev.states, "p50Ms": ev.p50_ms, "p99Ms": ev.p99_ms, "maxMs": ev.max_ms})
    for points in nodes.values():
        points.sort(key=lambda p: p["at"])
    return {"seconds": PULSE_SECONDS, "slots": list(range(first, last + 1, PULSE_SECONDS)),
            "nodes": dict(sorted(nodes.items()))}


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
        "ownedHere": len(r.ownership.owned), "catalogueJobs": r.catalogue.live_count(),
        "heartbeatFresh": r.membership.fresh(),
        "heartbeatAgeMs": None if (age := r.membership.heartbeat_age()) is None else int(age * 1000),
        "memberTtlMs": int(r.settings.member_ttl * 1000), "heartbeatIntervalMs": int(r.settings.heartbeat_interval * 1000),
        "handoversIn": r.ownership.handovers_in, "handoversOut": r.ownership.handovers_out,
        "locksHeld": len(r.ownership.held),
        # jobs the ring gives this node whose lock another node has kept for longer than member_ttl
        "stuckJobs": [{"jobId": j, "lockHolder": h} for j, h in list(r.ownership.stuck.items())[:100]],
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
        "database": {"mode": "primary-switch" if r.store.db.multi_host else "single",
                     "hosts": [f"{h}:{p}" for h, p in url.hosts], "primary": r.store.db.primary_name,
                     "switches": r.store.db.switches},
    }
