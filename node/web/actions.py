"""What a user can do to a job, shared by the API and the dashboard's forms.

Each action validates, writes MariaDB, and tells the cluster (a job event on
Redis; our own catalogue first, so this node needs no round trip).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from ..aio import Slices
from ..cluster.bus import Bus
from ..cluster.catalogue import Catalogue
from ..cluster.keys import Keys
from ..cluster.messages import CalendarEvent, CancelEvent, JobEvent
from ..model import calendars
from ..model import jobs as jobmod
from ..model.audit import Actor, AuditAction, AuditEntry, job_changes
from ..model.backfills import DEFAULT_PER_SECOND, MAX_INSTANTS, MAX_PER_SECOND, Backfill, BackfillPolicy
from ..model.calendars import Calendar
from ..model.errors import (
    Conflict,
    LeaseNotFresh,
    NotFound,
    RunInFlight,
    StoreUnavailable,
    UnknownCalendars,
    VersionConflict,
)
from ..model.jobs import Job
from ..model.labels import LabelError, parse_selector
from ..model.schedule import Budget, ScheduleError, ScheduleTooCostly
from ..scheduling.ledger import missed_in_gap
from ..scheduling.outbound import OutboundDenied
from ..store.backfills import Backfills
from ..store.bulk import JobEdit, NewJob, StaleJobs
from ..store.jobs import Jobs, new_id
from .errors import ApiError, BadRequest, BatchRefused, Forbidden, PreconditionFailed, TooManyRequests
from .presentation import PREVIEW_STEPS
from .runtime import Runtime

log = structlog.get_logger("actions")


async def publish_job(r: Runtime, op: str, job_id: str, version: int, paused: bool = False, name: str = "",
                      completed: bool = False) -> None:
    await announce(r.catalogue, r.bus, r.keys, JobEvent(op=op, id=job_id, version=version, paused=paused,
                                                        origin=r.settings.node_id, name=name, completed=completed))


async def announce(catalogue: Catalogue, bus: Bus, keys: Keys, ev: JobEvent) -> None:
    """Our own catalogue first (this node needs no round trip), then the cluster."""
    catalogue.on_record(ev)
    with contextlib.suppress(Exception):  # peers heal within resync_interval
        await bus.publish(keys.jobs_channel, ev)


class ClusterCancels:
    """The scheduler's ``Cancels``: tell every node (the one sending them acts) to abort these runs."""

    def __init__(self, bus: Bus, keys: Keys, node_id: str) -> None:
        self.bus, self.keys, self.node_id = bus, keys, node_id

    async def cancel(self, execution_ids: list[str], reason: str) -> None:
        await self.bus.publish(self.keys.jobs_channel, CancelEvent(execution_ids=execution_ids, reason=reason,
                                                                   origin=self.node_id))


class JobCompletions:
    """The scheduler's ``Completions``: the store marks the job completed under the owner's fence, and the
    cluster is told (its catalogues stop counting it active; the owner releases it)."""

    def __init__(self, jobs: Jobs, backfills: Backfills, catalogue: Catalogue, bus: Bus, keys: Keys,
                 node_id: str) -> None:
        self.jobs, self.backfills, self.catalogue, self.bus, self.keys = jobs, backfills, catalogue, bus, keys
        self.node_id = node_id

    async def complete(self, job_id: str, fence: int, at: datetime, *, version: int) -> int | None:
        new = await self.jobs.complete(job_id, fence, at, version=version)
        if new is not None:
            # its backfills end with it (a completed job has no owner to run them): reopen it and ask again
            await self.backfills.end_all(job_id, "stopped: the job completed (reopen it to backfill again)")
            await announce(self.catalogue, self.bus, self.keys, JobEvent(
                op="completed", id=job_id, version=new, origin=self.node_id, completed=True))
        return new


def require_release(r: Runtime, what: str) -> None:
    """Refuse (409) what a member on an older release would not obey (a rolling upgrade is under way)."""
    older = r.membership.older_members()
    if older:
        names = ", ".join(f"{n} (release {v or '2 or older'})" for n, v in sorted(older.items()))
        raise Conflict(f"{what} needs every node on release 3; still older: {names}. Finish the upgrade first "
                       "(an older node would fire the job as plain cron)", {"olderNodes": sorted(older)})


def _timetable_changed(a: Job, b: Job) -> bool:
    """Do the two definitions have different instants? (Their calendars, end, jitter or run cap aside: those
    act on the same instants, from whatever the owner has planned.)"""
    return (a.schedules, a.time_zone, a.start_at, a.dst_policy) != (b.schedules, b.time_zone, b.start_at, b.dst_policy)


def can_fire_again(job: Job, calendars: Mapping[str, Calendar], now: datetime) -> bool:
    """Has the definition a run left and a due instant after ``now``?"""
    if job.max_runs is not None and job.runs >= job.max_runs:
        return False
    try:
        job.timetable(calendars).next_after(now, Budget(PREVIEW_STEPS))
    except ScheduleError:
        return False
    return True


async def visible_job(r: Runtime, job_id: str, actor: Actor, *, include_deleted: bool = False) -> Job:
    """The job, if this actor may see it (a token limited to a selector sees only the jobs it matches: any other
    is not found, as if it did not exist)."""
    job = await r.store.jobs.get(job_id, include_deleted=include_deleted)
    if not actor.sees(job.labels):
        raise NotFound(job_id)
    return job


def _may_hold(actor: Actor, job: Job, what: str) -> None:
    """A scoped token may not create or change a job into one outside its selector (403 naming it)."""
    if not actor.sees(job.labels):
        raise Forbidden(f"this token is limited to jobs matching {actor.selector}: {what} would be outside it "
                        "(set labels that match)", {"selector": str(actor.selector), "labels": job.labels})


def refuse_scoped(actor: Actor, what: str) -> None:
    """What is cluster-wide (calendars) is not for a token limited to some jobs."""
    if actor.selector is not None:
        raise Forbidden(f"{what} is cluster-wide: a token limited to jobs matching {actor.selector} cannot change it",
                        {"selector": str(actor.selector)})


def _check_targets(r: Runtime, job: Job) -> None:
    r.firer.check_target(job.uri)
    if job.alert_uri:
        try:
            r.firer.check_target(job.alert_uri)
        except OutboundDenied as e:
            raise BadRequest("invalid input", {"alertUri": str(e)}) from None


async def create_job(r: Runtime, payload: Any, actor: Actor) -> Job:
    now = datetime.now(UTC)
    job = jobmod.validate(payload, max_body_bytes=r.settings.max_job_body_bytes, now=now)
    _may_hold(actor, job, "the new job")
    if job.uses_release_3_scheduling:
        require_release(r, "this job's scheduling")
    _check_targets(r, job)
    if job.paused:
        job = replace(job, paused_by=actor.name, paused_at=now)
    created = await r.store.jobs.create(job, r.settings.max_jobs, audit=AuditEntry(
        actor, AuditAction.CREATE, job_changes(None, job)))
    await publish_job(r, "created", created.id, created.version, created.paused, created.name)
    return created


async def update_job(r: Runtime, job_id: str, payload: Any, if_version: int | None, actor: Actor) -> Job:
    current = await visible_job(r, job_id, actor)
    if if_version is not None and if_version != current.version:
        raise PreconditionFailed("version mismatch: reload and retry", {"currentVersion": current.version})
    now = datetime.now(UTC)
    new = jobmod.validate(payload, base=current, max_body_bytes=r.settings.max_job_body_bytes, now=now)
    return await _save(r, current, new, actor, AuditAction.UPDATE, now)


async def _save(r: Runtime, current: Job, new: Job, actor: Actor, action: AuditAction, now: datetime,
                note: str | None = None) -> Job:
    """Write an edited definition (an update, a restore) over ``current``, audited."""
    job_id = current.id
    _may_hold(actor, new, "the job as changed")
    if new.uses_release_3_scheduling and new.spec() != current.spec():
        require_release(r, "this job's scheduling")
    _check_targets(r, new)
    if new.paused and not current.paused:  # paused by this edit: by whom, since when (a restore keeps its own)
        new = replace(new, paused_by=new.paused_by if action is AuditAction.RESTORE else actor.name,
                      paused_at=new.paused_at if action is AuditAction.RESTORE and new.paused_at else now)
    elif not new.paused:
        new = replace(new, paused_reason=None, paused_by=None, paused_at=None, paused_until=None)
    # New instants (a schedule, a zone, a start, a DST policy), or a resume, take force now: instants before
    # it are not the new definition's (a resume through PUT used to catch up the paused period, as set_paused
    # never did). A completed job the edit lets fire again is reopened.
    changed = _timetable_changed(new, current) or (current.paused and not new.paused)
    reopen = current.completed and can_fire_again(new, r.catalogue.calendars, now)
    updated = await r.store.jobs.update(job_id, new, if_version=current.version, schedule_changed=changed,
                                        reopen=reopen, audit=AuditEntry(actor, action, job_changes(current, new),
                                                                        note))
    await publish_job(r, "updated", updated.id, updated.version, updated.paused, updated.name, updated.completed)
    if updated.paused and not current.paused:
        await _record_gap(r, job_id)
    return updated


MAX_SKIP_COUNT = 10_000


async def skip_job(r: Runtime, job_id: str, payload: Any, actor: Actor) -> Job:
    """The next ``count`` due instants, or every instant up to ``until``, are not sent (``skipped by request``);
    ``{"count": 0}`` or ``{"until": null}`` cancels a skip. Kept in the definition: it survives a hand-over."""
    if not isinstance(payload, dict) or len(payload) != 1 or not set(payload) <= {"count", "until"}:
        raise BadRequest("send {\"count\": n} or {\"until\": \"<RFC 3339 instant>\"}", {"body": "one of count, until"})
    job = await visible_job(r, job_id, actor)
    now = datetime.now(UTC)
    until: datetime | None
    if "count" in payload:
        n = payload["count"]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_SKIP_COUNT:
            raise BadRequest("invalid input", {"count": f"must be an integer between 0 and {MAX_SKIP_COUNT}"})
        until = None
        if n:
            # from claim_ahead on: an instant closer than that is claimed already and goes
            due: list[datetime] = []
            slices = Slices()
            ahead = timedelta(seconds=r.settings.claim_ahead)
            try:
                for t in job.timetable(r.catalogue.calendars).due_after(now + ahead, Budget(SKIP_STEPS)):
                    due.append(t)
                    if len(due) >= n:
                        break
                    await slices.pause()  # (calendars are read per instant: never hold the loop)
            except ScheduleTooCostly as e:
                raise BadRequest(str(e), {"count": n}) from None
            if not due:
                raise BadRequest("invalid input", {"count": "the job has no instant left to skip"})
            until = due[-1]
    else:
        raw = payload["until"]
        if raw is None:
            until = None
        else:
            try:
                until = jobmod.check_instant(raw)
            except ValueError as e:
                raise BadRequest("invalid input", {"until": str(e)}) from None
            if until <= now:
                raise BadRequest("invalid input", {"until": "must be in the future"})
    if until is not None:
        require_release(r, "a skip")
    skipped = replace(job, skip_until=until)
    updated = await r.store.jobs.update(job_id, skipped, if_version=job.version, schedule_changed=False,
                                        audit=AuditEntry(actor, AuditAction.SKIP, job_changes(job, skipped)))
    await publish_job(r, "skipped", updated.id, updated.version, updated.paused, updated.name, updated.completed)
    return updated


SKIP_STEPS = 200_000  # schedule steps a skip of `count` instants may spend (10,000 instants cost ~40,000)


# ---- backfills ---------------------------------------------------------------------------


async def create_backfill(r: Runtime, job_id: str, payload: Any, actor: Actor) -> Backfill:
    """Send every due instant of the job in ``[from, to)`` again, idempotently (see model/backfills.py)."""
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    unknown = set(payload) - {"from", "to", "concurrencyPolicy", "maxPerSecond"}
    if unknown:
        raise BadRequest("unknown fields", {str(k)[:60]: "unknown field" for k in unknown})
    errors: dict[str, str] = {}
    bounds: dict[str, datetime] = {}
    for key in ("from", "to"):
        if key not in payload:
            errors[key] = "is required"
            continue
        try:
            bounds[key] = jobmod.check_instant(payload[key])
        except ValueError as e:
            errors[key] = str(e)
    now = datetime.now(UTC)
    if not errors:
        if bounds["from"] >= bounds["to"]:
            errors["from"] = errors["to"] = "from must be before to"
        elif bounds["to"] > now + timedelta(seconds=1):
            errors["to"] = "must not be in the future: instants to come fire on their own"
    raw_policy = payload.get("concurrencyPolicy", "forbid")
    policy = {"forbid": BackfillPolicy.FORBID, "skip": BackfillPolicy.FORBID, "allow": BackfillPolicy.ALLOW}.get(
        raw_policy if isinstance(raw_policy, str) else "")
    if policy is None:
        errors["concurrencyPolicy"] = "must be forbid (one instant at a time) or allow (side by side)"
    mps = payload.get("maxPerSecond", DEFAULT_PER_SECOND)
    if isinstance(mps, bool) or not isinstance(mps, int) or not 1 <= mps <= MAX_PER_SECOND:
        errors["maxPerSecond"] = f"must be an integer between 1 and {MAX_PER_SECOND}"
    if errors:
        raise BadRequest("invalid input", errors)
    job = await visible_job(r, job_id, actor)
    if job.completed:
        raise Conflict("the job has completed: it has no owner to run a backfill. Reopen it first (a higher "
                       "maxRuns, a later endAt), or create a job for these instants",
                       {"completedAt": job.completed_at.isoformat() if job.completed_at else None})
    tt = job.timetable(r.catalogue.calendars)
    total = 0
    slices = Slices()
    try:
        for t in tt.due_after(bounds["from"] - timedelta(microseconds=1), Budget(SKIP_STEPS)):
            if t >= bounds["to"]:
                break
            total += 1
            if total > MAX_INSTANTS:
                raise BadRequest("invalid input", {"to": f"the range holds more than {MAX_INSTANTS} instants of the "
                                                         "job; ask for a shorter one"})
            await slices.pause()
    except ScheduleTooCostly as e:
        raise BadRequest(str(e), {"from": payload["from"], "to": payload["to"]}) from None
    require_release(r, "a backfill")
    b = await r.store.backfills.create(Backfill(id="", job_id=job.id, start=bounds["from"], end=bounds["to"],
                                                policy=policy or BackfillPolicy.FORBID, max_per_second=mps,
                                                total=total),
                                       audit=AuditEntry(actor, AuditAction.BACKFILL, note=(
                                           f"{total} instants from {payload['from']} to {payload['to']}")))
    r.backfills.wake.set()
    return b


# ---- calendars ---------------------------------------------------------------------------


async def put_calendar(r: Runtime, name: str, payload: Any, if_version: int | None, actor: Actor
                       ) -> tuple[Calendar, bool]:
    refuse_scoped(actor, "a calendar")
    cal = calendars.validate(name, payload)
    stored, created = await r.store.calendars.put(cal, if_version=if_version,
                                                  audit=AuditEntry(actor, AuditAction.CALENDAR_PUT))
    await _calendar_changed(r, "put", stored.name, stored.version)
    return stored, created


async def delete_calendar(r: Runtime, name: str, if_version: int | None, actor: Actor) -> None:
    refuse_scoped(actor, "a calendar")
    version = await r.store.calendars.delete(name, if_version=if_version,
                                             audit=AuditEntry(actor, AuditAction.CALENDAR_DELETE))
    await _calendar_changed(r, "deleted", name, version)


async def _calendar_changed(r: Runtime, op: str, name: str, version: int) -> None:
    ev = CalendarEvent(op=op, name=name, version=version, origin=r.settings.node_id)
    try:
        await r.catalogue.sync_calendars()  # this node at once; the others on the event (or their next re-sync)
    except StoreUnavailable:
        r.catalogue.request_calendars()
    with contextlib.suppress(Exception):
        await r.bus.publish(r.keys.jobs_channel, ev)


async def delete_job(r: Runtime, job_id: str, if_version: int | None, actor: Actor) -> None:
    await visible_job(r, job_id, actor)
    version = await r.store.jobs.delete(job_id, if_version=if_version, audit=AuditEntry(actor, AuditAction.DELETE))
    await publish_job(r, "deleted", job_id, version)
    await _record_gap(r, job_id)


async def _record_gap(r: Runtime, job_id: str) -> None:
    """Instants due before a pause or a delete that nobody claimed (the owner was lost, or its lease
    lapsed, moments before): no owner will plan them now, so the node that paused or deleted the job
    records them as missed. (Claims after the change are refused, and one committed before it is
    seen here: the change's row lock orders them.)"""
    try:
        last = await r.store.history.last_scheduled_tick(job_id)
        history = (await r.store.history.job_history([job_id]))[job_id]
        if not history or not (history[-1]["deleted"] or history[-1]["paused"]):
            return
        start = last or history[0]["valid_from"]
        ranges = missed_in_gap(history, start, history[-1]["valid_from"])
        what = "deleted" if history[-1]["deleted"] else "paused"
        await r.store.executions.record_missed(job_id, r.settings.node_id, ranges,
                                    f"due before the job was {what}, while no node could claim it; not run")
    except StoreUnavailable as e:
        log.warning("could not record the missed ticks before a pause or delete", job=job_id, error=str(e))


MAX_NOTE = 500


def pause_request(payload: Any, *, resume: bool = False) -> tuple[str | None, datetime | None]:
    """A pause's ``{"note": "...", "until": T}`` (both optional; a resume takes a note): (note, until)."""
    if payload is None:
        return None, None
    allowed = {"note"} if resume else {"note", "until"}
    if not isinstance(payload, dict) or not set(payload) <= allowed:
        raise BadRequest("invalid input", {"body": f"a JSON object with {' and '.join(sorted(allowed))} (both optional)"
                                           if not resume else "a JSON object with an optional note"})
    note, until = payload.get("note"), payload.get("until")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE or any(
            ord(c) < 32 and c not in "\t" for c in note)):
        raise BadRequest("invalid input", {"note": f"must be a single-line string of at most {MAX_NOTE} characters"})
    when = None
    if until is not None:
        try:
            when = jobmod.check_instant(until)
        except ValueError as e:
            raise BadRequest("invalid input", {"until": str(e)}) from None
        if when <= datetime.now(UTC):
            raise BadRequest("invalid input", {"until": "must be in the future"})
    return note or None, when


async def set_paused(r: Runtime, job_id: str, paused: bool, actor: Actor, *, note: str | None = None,
                     until: datetime | None = None, given: bool = False) -> Job:
    """Pause (why, until when: it resumes by itself then) or resume. Pausing a paused job with a body (``given``)
    replaces its note and its end (no ``until``: no end); without one it changes nothing (the seed's clients
    pause twice); resuming an active one changes nothing."""
    before = await visible_job(r, job_id, actor)
    if paused and before.paused and given and (note, until) != (before.paused_reason, before.paused_until):
        new = replace(before, paused_reason=note, paused_until=until)
        updated = await r.store.jobs.update(job_id, new, if_version=before.version, schedule_changed=False,
                                            audit=AuditEntry(actor, AuditAction.PAUSE, job_changes(before, new), note))
        await publish_job(r, "paused", updated.id, updated.version, updated.paused, updated.name)
        return updated
    after = replace(before, paused=paused, paused_reason=note if paused else None, paused_until=until if paused else None,
                    paused_by=actor.name if paused else None, paused_at=None)
    changes = {k: v for k, v in job_changes(before, after).items() if k != "pausedAt"}
    changed = await r.store.jobs.set_paused(job_id, paused, reason=note, by=actor.name, until=until, audit=AuditEntry(
        actor, AuditAction.PAUSE if paused else AuditAction.RESUME, changes, note))
    job = await r.store.jobs.get(job_id)
    if changed:
        await publish_job(r, "paused" if paused else "resumed", job.id, job.version, job.paused, job.name)
    if paused and not before.paused:
        await _record_gap(r, job_id)
    return job


async def end_pauses(r: Runtime) -> int:
    """Resume the jobs whose ``pausedUntil`` has passed (every node sweeps; the store's condition lets one
    of them do each), audited as cronring."""
    n = 0
    for job_id in await r.store.jobs.pauses_ended():
        actor = Actor.system(r.settings.node_id)
        if await r.store.jobs.set_paused(job_id, False, expired=True, audit=AuditEntry(
                actor, AuditAction.RESUME, {"paused": [True, False]}, "the pause ended (pausedUntil)")):
            job = await r.store.jobs.get(job_id)
            await publish_job(r, "resumed", job.id, job.version, job.paused, job.name)
            n += 1
    return n


async def restore_job(r: Runtime, job_id: str, payload: Any, actor: Actor) -> Job:
    """A new version equal to an earlier one (every field of its definition; its runs and state stay)."""
    if not isinstance(payload, dict) or set(payload) != {"version"} or isinstance(payload["version"], bool) or \
            not isinstance(payload["version"], int) or payload["version"] < 1:
        raise BadRequest("invalid input", {"version": "send {\"version\": n}, a version of the job"})
    current = await visible_job(r, job_id, actor)
    old = await r.store.history.version(job_id, payload["version"])
    if old is None:
        raise NotFound(f"{job_id} version {payload['version']}")
    if old.spec_kept is False:
        raise Conflict(f"version {payload['version']} was written before release 3: its definition is not kept")
    target = replace(current, **{f: getattr(old.job, f) for f in RESTORED})
    if target.paused_until is not None and target.paused_until <= datetime.now(UTC):
        target = replace(target, paused_until=None)  # an end already past: paused, as it was, until resumed
    return await _save(r, current, target, actor, AuditAction.RESTORE, datetime.now(UTC),
                       note=f"restored version {payload['version']}")


# What a restore takes from the old version: the definition (its id, runs, completion and fence stay).
RESTORED = ("name", "schedule", "time_zone", "paused", "uri", "method", "headers", "body", "timeout_ms", "retries",
            "retry_backoff_ms", "retry_max_backoff_ms", "expect_status", "misfire_policy", "misfire_grace_seconds",
            "concurrency_policy", "follow_redirects", "delivery", "more_schedules", "start_at", "end_at", "max_runs",
            "jitter_seconds", "dst_policy", "exclude_calendars", "skip_until", "labels", "expect_body", "expect_json",
            "max_duration_ms", "pause_after_failures", "alert_uri",
            "paused_reason", "paused_by", "paused_at", "paused_until")


# A sliding minute, atomically, on Redis server time: at most N run-nows of a job in any 60 s
# (a fixed window let 2N through across a minute boundary).
_RUN_NOW_LUA = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - 60000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ms, ARGV[2])
redis.call('PEXPIRE', KEYS[1], 61000)
return 1
"""


async def run_now(r: Runtime, job_id: str, caller: str, actor: Actor) -> str:
    """A run now, within two sliding minutes on Redis server time (so across the cluster): per job, and
    per caller (a token or a session: one reader of many jobs must not make every target a flood)."""
    job = await visible_job(r, job_id, actor)
    s = r.settings
    for key, limit, what in ((r.keys.run_now_by(caller), s.run_now_per_token_per_minute, "per token"),
                             (f"{r.keys.run_now_prefix}{job.id}", s.run_now_per_minute, "per job")):
        if not await r.redis.eval(_RUN_NOW_LUA, 1, key, limit, secrets.token_hex(8)):
            raise TooManyRequests(f"run-now is limited to {limit} {what} in any 60 s")
    execution_id = await r.scheduler.run_now(job)
    try:  # after the claim (the scheduler's own transaction): a lost row here loses the record, never the run
        await r.store.audit.record(AuditEntry(actor, AuditAction.RUN, subject=execution_id), job.id)
    except StoreUnavailable as e:
        log.warning("run-now not audited", job=job.id, error=str(e))
    return execution_id


async def cancel_backfill(r: Runtime, job_id: str, backfill_id: str, actor: Actor) -> Backfill:
    await visible_job(r, job_id, actor, include_deleted=True)
    return await r.store.backfills.cancel(job_id, backfill_id, audit=AuditEntry(actor, AuditAction.BACKFILL_CANCEL))


# ---- bulk actions --------------------------------------------------------------------------

BULK_MAX = 1000
BULK_ACTIONS = ("pause", "resume", "run", "delete")


async def bulk(r: Runtime, action: str, payload: Any, actor: Actor, caller: str) -> dict[str, Any]:
    """One action on every job a label selector matches (and/or the ``ids`` listed), within the token's own
    selector: each job's action is its own, audited as any other; ``dryRun`` lists them and changes nothing."""
    if not isinstance(payload, dict) or not set(payload) <= {"selector", "ids", "dryRun", "note"}:
        raise BadRequest("invalid input", {"body": "an object with selector and/or ids, and optionally dryRun, note"})
    errors: dict[str, str] = {}
    selector = None
    raw = payload.get("selector")
    if "selector" in payload:
        try:
            if not isinstance(raw, str):
                raise LabelError("a selector is a string (team=billing)")
            selector = parse_selector(raw)
        except LabelError as e:
            errors["selector"] = str(e)
    ids = payload.get("ids")
    if "ids" in payload and (not isinstance(ids, list) or len(ids) > BULK_MAX or not all(
            isinstance(i, str) and re.fullmatch(r"[0-9a-f]{1,32}", i) for i in ids)):
        errors["ids"] = f"a list of at most {BULK_MAX} job ids"
    if "selector" not in payload and "ids" not in payload:
        errors["selector"] = "give a selector (team=billing), ids, or both"
    dry = payload.get("dryRun", False)
    if not isinstance(dry, bool):
        errors["dryRun"] = "must be true or false"
    note = payload.get("note")
    if "note" in payload and (action not in ("pause", "resume") or not isinstance(note, str)):
        errors["note"] = "a string, and only pause and resume take one"
    if errors:
        raise BadRequest("invalid input", errors)
    if note is not None:
        note, _ = pause_request({"note": note}, resume=True)
    scope = selector & actor.selector if selector is not None else actor.selector
    if ids is not None:
        jobs = [j for j in await r.store.jobs.get_many(ids) if scope is None or scope.matches(j.labels)]
    else:
        jobs = await r.store.jobs.page(limit=BULK_MAX + 1, cursor=None, q=None, paused=None, selector=scope)
        if len(jobs) > BULK_MAX:
            raise BadRequest(f"the selector matches more than {BULK_MAX} jobs: narrow it (or send ids)",
                             {"selector": str(selector)})
    out: list[dict[str, Any]] = []
    for job in jobs:
        row: dict[str, Any] = {"id": job.id, "name": job.name, "labels": job.labels}
        if not dry:
            try:
                if action == "delete":
                    await delete_job(r, job.id, None, actor)
                elif action == "run":
                    row["executionId"] = await run_now(r, job.id, caller, actor)
                else:
                    done = await set_paused(r, job.id, action == "pause", actor, note=note, given=note is not None)
                    row["version"] = done.version
                row["ok"] = True
            except asyncio.CancelledError:
                raise
            except Exception as e:  # each job's own outcome: one refused (a run in flight, a store away) stops none
                row["ok"], row["error"] = False, str(getattr(e, "message", e))[:300] or type(e).__name__
                if not isinstance(e, (ApiError, NotFound, Conflict, StoreUnavailable, VersionConflict, RunInFlight,
                                      LeaseNotFresh)):
                    log.exception("bulk action failed on a job", action=action, job=job.id)
        out.append(row)
    return {"action": action, "dryRun": dry, "selector": str(scope) if scope else None, "matched": len(out),
            "jobs": out}


# ---- bulk apply ----------------------------------------------------------------------------

APPLY_MAX = 1000  # jobs per POST /api/crons/apply
APPLY_ATTEMPTS = 3  # a batch whose jobs changed between its validation and its write is validated again
# A refused item names its first few fields (and how many more): 1,000 items of 100 unknown keys each were answered
# with 8 times the request, every reason twice over.
FIELDS_AN_ITEM = 5
REASON_CHARS = 300
EVENTS_A_PIPELINE = 250  # job events published per Redis round trip (packing more holds the loop longer)
_JOB_ID = re.compile(r"[0-9a-f]{1,32}")


@dataclass(slots=True)
class _Planned:
    """One item of a batch, validated: what it does (created, updated, unchanged), the definition it writes and what
    that changes (its audit row's)."""

    index: int
    result: str
    job: Job
    current: Job | None = None
    restart: bool = False  # its instants are new from the edit on (as _save's schedule_changed)
    reopen: bool = False
    changes: dict[str, list[Any]] | None = None


async def apply_jobs(r: Runtime, payload: Any, actor: Actor) -> dict[str, Any]:
    """``POST /api/crons/apply``: up to APPLY_MAX creates (a job spec) and updates (a spec with the ``id`` of a job:
    PUT's semantics, a field left out stays) validated as a whole and written in one transaction — all, or nothing
    and a ``BatchRefused`` naming each item that failed. Each job as the single routes would: the token's selector,
    the release check, the outbound policy, who paused it, versions, history, audit. An update equal to the stored
    definition is ``unchanged`` and writes nothing. ``dryRun``: the same answer, nothing written."""
    if not isinstance(payload, dict) or not set(payload) <= {"jobs", "dryRun"} or "jobs" not in payload:
        raise BadRequest("invalid input", {"body": "an object with jobs (a list of job specs) and optionally dryRun"})
    items, dry = payload["jobs"], payload.get("dryRun", False)
    if not isinstance(items, list):
        raise BadRequest("invalid input", {"jobs": "must be a list of job specs"})
    if len(items) > APPLY_MAX:
        raise BadRequest(f"at most {APPLY_MAX} jobs per request: send the others in further batches",
                         {"jobs": f"{len(items)} jobs; at most {APPLY_MAX}"})
    if not isinstance(dry, bool):
        raise BadRequest("invalid input", {"dryRun": "must be true or false"})
    for _ in range(APPLY_ATTEMPTS):
        plan = await _plan_batch(r, items, actor)
        if dry:  # the real run's answer, the job cap included (counted now: the real run counts under its lock)
            await r.store.bulk.check_room(sum(p.result == "created" for p in plan), max_jobs=r.settings.max_jobs)
            return _applied(plan, {}, dry=True)
        creates = [NewJob(id=new_id(), job=p.job, audit=AuditEntry(actor, AuditAction.CREATE, p.changes or {}))
                   for p in plan if p.result == "created"]
        edits = [JobEdit(id=p.current.id, job=p.job, version=p.current.version, restart=p.restart, reopen=p.reopen,
                         audit=AuditEntry(actor, AuditAction.UPDATE, p.changes or {}))
                 for p in plan if p.result == "updated" and p.current is not None]
        try:
            await r.store.bulk.apply(creates, edits, max_jobs=r.settings.max_jobs)
        except StaleJobs as e:
            log.info("bulk apply: jobs changed since the batch was validated; validating again", jobs=len(e.ids))
            continue
        except UnknownCalendars as e:  # deleted between the check and the write
            raise BatchRefused(_missing_calendars(items, plan, set(e.names)), len(items)) from None
        break
    else:
        raise Conflict(f"jobs of this batch were changed by others while it was written ({APPLY_ATTEMPTS} times): "
                       "nothing was written; retry")
    ids = iter(c.id for c in creates)
    created = {p.index: next(ids) for p in plan if p.result == "created"}
    events = [JobEvent(op="created", id=c.id, version=1, paused=c.job.paused, origin=r.settings.node_id,
                       name=c.job.name) for c in creates]
    events += [JobEvent(op="updated", id=e.id, version=e.version + 1, paused=e.job.paused, origin=r.settings.node_id,
                        name=e.job.name, completed=e.job.completed and not e.reopen) for e in edits]
    await _announce_all(r, events)
    for p in plan:
        if p.result == "updated" and p.current is not None and p.job.paused and not p.current.paused:
            await _record_gap(r, p.current.id)
    return _applied(plan, created, dry=False)


async def _plan_batch(r: Runtime, items: list[Any], actor: Actor) -> list[_Planned]:
    """Validate every item (in slices: the loop is never held for long), against the jobs as they are now."""
    wanted = [i["id"] for i in items if isinstance(i, dict) and isinstance(i.get("id"), str) and _JOB_ID.fullmatch(i["id"])]
    current = {j.id: j for j in await r.store.jobs.get_many(sorted(set(wanted)))} if wanted else {}
    calendar_names: set[str] | None = None  # read once, if a job of the batch names calendars
    now = datetime.now(UTC)
    plan: list[_Planned] = []
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    slices = Slices()
    for index, raw in enumerate(items):
        try:
            planned = _plan_item(r, index, raw, current, seen, actor, now)
            if planned.job.exclude_calendars and calendar_names is None:
                calendar_names = {c.name for c in await r.store.calendars.all()}
            if missing := [n for n in planned.job.exclude_calendars if n not in (calendar_names or ())]:
                raise BadRequest("invalid input", {"excludeCalendars": f"no such calendar: {', '.join(missing)}"})
            if planned.result != "unchanged":  # (its audit row's, computed here: in slices too)
                planned.changes = job_changes(planned.current, planned.job)
            plan.append(planned)
        except (jobmod.ValidationError, ApiError, Conflict, NotFound, OutboundDenied) as e:
            known = current.get(raw["id"]) if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
            errors.append(_item_error(index, raw, e, known.name if known and actor.sees(known.labels) else None))
        await slices.pause()
    if errors:
        raise BatchRefused(errors, len(items))
    return plan


def _plan_item(r: Runtime, index: int, raw: Any, current: dict[str, Job], seen: dict[str, int], actor: Actor,
               now: datetime) -> _Planned:
    """One item as create_job or update_job (its _save) would take it; raises what they would raise."""
    if not isinstance(raw, dict):
        raise BadRequest("invalid input", {"body": "each job must be a JSON object"})
    if "id" not in raw:
        job = jobmod.validate(raw, max_body_bytes=r.settings.max_job_body_bytes, now=now)
        _may_hold(actor, job, "the new job")
        if job.uses_release_3_scheduling:
            require_release(r, "this job's scheduling")
        _check_targets(r, job)
        if job.paused:
            job = replace(job, paused_by=actor.name, paused_at=now)
        return _Planned(index=index, result="created", job=job)
    job_id = raw["id"]
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise BadRequest("invalid input", {"id": "must be a job id (up to 32 hexadecimal digits)"})
    if job_id in seen:
        raise BadRequest(f"this job is also item {seen[job_id]} of the batch: one change per job", {"id": job_id})
    seen[job_id] = index
    old = current.get(job_id)
    if old is None or not actor.sees(old.labels):  # as visible_job: another token's job does not exist
        raise NotFound(job_id)
    new = jobmod.validate(raw, base=old, max_body_bytes=r.settings.max_job_body_bytes, now=now)
    _may_hold(actor, new, "the job as changed")
    if new.paused and not old.paused:
        new = replace(new, paused_by=actor.name, paused_at=now)
    elif not new.paused:
        new = replace(new, paused_reason=None, paused_by=None, paused_at=None, paused_until=None)
    if (new.name, new.schedule, new.time_zone, new.paused, new.spec()) == \
            (old.name, old.schedule, old.time_zone, old.paused, old.spec()):
        return _Planned(index=index, result="unchanged", job=old, current=old)
    if new.uses_release_3_scheduling and new.spec() != old.spec():
        require_release(r, "this job's scheduling")
    _check_targets(r, new)
    return _Planned(index=index, result="updated", job=new, current=old,
                    restart=_timetable_changed(new, old) or (old.paused and not new.paused),
                    reopen=old.completed and can_fire_again(new, r.catalogue.calendars, now))


def _item_error(index: int, raw: Any, e: Exception, known_name: str | None = None) -> dict[str, Any]:
    """An item's refusal as the single route would answer it (status, ``error``, its ``details`` as ``fields``: the
    first FIELDS_AN_ITEM), its secrets masked; named by its ``name``, else (an update) by the name of the job it
    would change, if the token sees it."""
    status, message, fields = 400, "invalid input", {}
    if isinstance(e, jobmod.ValidationError):
        fields = e.details
    elif isinstance(e, OutboundDenied):
        fields = {"uri": str(e)}
    elif isinstance(e, NotFound):
        status, message, fields = 404, "not found", {"id": "no such job"}
    elif isinstance(e, Conflict):
        status, message = 409, str(e)
    elif isinstance(e, ApiError):
        status, message = e.status, e.message
        fields = e.details if isinstance(e.details, dict) and all(isinstance(v, str) for v in e.details.values()) else {}
    shown = _secrets_of(raw)
    named = list(fields.items())
    if len(named) > FIELDS_AN_ITEM:
        message = f"{message} (and {len(named) - FIELDS_AN_ITEM} more field(s))"
    item = raw if isinstance(raw, dict) else {}
    name, job_id = item.get("name"), item.get("id")
    return {"index": index, "name": name[:200] if isinstance(name, str) else known_name,
            "id": job_id[:40] if isinstance(job_id, str) else None, "status": status,
            "error": jobmod.redact(message, shown),
            "fields": {str(k)[:60]: (jobmod.redact(str(v), shown) or "")[:REASON_CHARS]
                       for k, v in named[:FIELDS_AN_ITEM]}}


def _secrets_of(raw: Any) -> list[str]:
    """The secrets an item carries (credential headers' values, a target's password or credential-named query
    values), as the single path masks them: never echoed in its errors."""
    if not isinstance(raw, dict):
        return []
    headers, uri, alert = raw.get("headers"), raw.get("uri"), raw.get("alertUri")
    probe = Job(schedule="", uri=uri if isinstance(uri, str) else "", alert_uri=alert if isinstance(alert, str) else None,
                headers={str(k): v for k, v in headers.items() if isinstance(v, str)} if isinstance(headers, dict) else {})
    try:
        return jobmod.secret_values(probe)
    except ValueError:  # a target urlsplit cannot read: its parts are not shown either
        return [v for v in (uri, alert) if isinstance(v, str)]


def _missing_calendars(items: list[Any], plan: list[_Planned], names: set[str]) -> list[dict[str, Any]]:
    return [_item_error(p.index, items[p.index], BadRequest("invalid input", {
        "excludeCalendars": f"no such calendar: {', '.join(n for n in p.job.exclude_calendars if n in names)}"}))
            for p in plan if names & set(p.job.exclude_calendars)]


def _applied(plan: list[_Planned], created: dict[int, str], *, dry: bool) -> dict[str, Any]:
    jobs = []
    for p in plan:
        version = 1 if p.result == "created" else (p.job.version + (p.result == "updated"))
        row: dict[str, Any] = {"index": p.index, "id": created.get(p.index) if p.current is None else p.current.id,
                               "name": p.job.name, "version": version, "result": p.result}
        if p.result != "unchanged" and (notes := jobmod.warnings(p.job)):
            row["warnings"] = notes
        jobs.append(row)
    return {"dryRun": dry, **{k: sum(p.result == k for p in plan) for k in ("created", "updated", "unchanged")},
            "jobs": jobs}


async def _announce_all(r: Runtime, events: list[JobEvent]) -> None:
    """``announce`` for a batch: our catalogue first, then the cluster, a round trip per EVENTS_A_PIPELINE events
    (a lost one heals at the catalogues' re-sync)."""
    for ev in events:
        r.catalogue.on_record(ev)
    try:
        await r.bus.publish_many(r.keys.jobs_channel, events, EVENTS_A_PIPELINE)
    except Exception as e:  # peers heal within resync_interval
        log.warning("bulk apply: job events not published", jobs=len(events), error=str(e))
