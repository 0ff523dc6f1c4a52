"""Records as the API and the pages show them: shared by ``web/api.py`` and ``dashboard/``, so a page never
imports a handler. Schedule work here (previews, next fire times) runs in slices with a step budget."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from itertools import islice
from typing import Any, cast

from ..aio import Slices
from ..cluster.messages import MembershipEvent, unpack
from ..cluster.redisconn import SentinelURL, is_sentinel
from ..model.executions import FAILED_STATES, OPEN_STATES, Execution
from ..model.jobs import Job
from ..model.schedule import Budget, ScheduleError, parse
from ..model.times import rfc3339
from ..scheduling.audit import job_ledger, settle_for
from ..scheduling.ledger import Ledger
from .runtime import Runtime

BODY_READ_SECONDS = 10  # a request body (API or form) must arrive within this long (else 408)


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

    PAUSED = "paused"
    RUNNING = "running"
    FAILING = "failing"
    WAITING = "waiting"


def job_state(job: Job, last: Execution | None) -> JobState:
    if job.paused:
        return JobState.PAUSED
    if last is not None and last.state in OPEN_STATES:
        return JobState.RUNNING
    if last is not None and last.state in FAILED_STATES:
        return JobState.FAILING
    return JobState.WAITING


async def enrich(r: Runtime, jobs: list[Job], last: dict[str, Execution] | None = None) -> list[dict[str, Any]]:
    """The API's view of jobs: their last execution (read here unless given), owner, state, next run."""
    ids = [j.id for j in jobs]
    if last is None:
        last = await r.store.history.last_executions(ids)
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
    return await job_ledger(r.store.history, job_id, start, end, limit=limit,
                            settle=settle_for(s.member_ttl, s.heartbeat_interval, s.claim_ahead))


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
