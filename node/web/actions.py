"""What a user can do to a job, shared by the API and the dashboard's forms.

Each action validates, writes MariaDB, and tells the cluster (a job event on
Redis; our own catalogue first, so this node needs no round trip).
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import structlog

from ..cluster.messages import JobEvent
from ..model import jobs as jobmod
from ..model.errors import StoreUnavailable
from ..model.jobs import Job
from ..scheduling.ledger import missed_in_gap
from .errors import PreconditionFailed, TooManyRequests
from .runtime import Runtime

log = structlog.get_logger("actions")


async def publish_job(r: Runtime, op: str, job_id: str, version: int, paused: bool = False, name: str = "") -> None:
    ev = JobEvent(op=op, id=job_id, version=version, paused=paused, origin=r.settings.node_id, name=name)
    r.catalogue.on_record(ev)
    with contextlib.suppress(Exception):  # peers heal within resync_interval
        await r.bus.publish(r.keys.jobs_channel, ev)


async def create_job(r: Runtime, payload: Any) -> Job:
    job = jobmod.validate(payload, max_body_bytes=r.settings.max_job_body_bytes)
    r.firer.check_target(job.uri)
    created = await r.store.jobs.create(job, r.settings.max_jobs)
    await publish_job(r, "created", created.id, created.version, created.paused, created.name)
    return created


async def update_job(r: Runtime, job_id: str, payload: Any, if_version: int | None) -> Job:
    current = await r.store.jobs.get(job_id)
    if if_version is not None and if_version != current.version:
        raise PreconditionFailed("version mismatch: reload and retry", {"currentVersion": current.version})
    new = jobmod.validate(payload, base=current, max_body_bytes=r.settings.max_job_body_bytes)
    r.firer.check_target(new.uri)
    # A new schedule or zone, or a resume, takes force now: instants before it are not the new
    # definition's (a resume through PUT used to catch up the paused period, as set_paused never did).
    changed = (new.schedule, new.time_zone) != (current.schedule, current.time_zone) or (
        current.paused and not new.paused)
    updated = await r.store.jobs.update(job_id, new, if_version=current.version, schedule_changed=changed)
    await publish_job(r, "updated", updated.id, updated.version, updated.paused, updated.name)
    if updated.paused and not current.paused:
        await _record_gap(r, job_id)
    return updated


async def delete_job(r: Runtime, job_id: str, if_version: int | None) -> None:
    version = await r.store.jobs.delete(job_id, if_version=if_version)
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


async def set_paused(r: Runtime, job_id: str, paused: bool) -> Job:
    before = await r.store.jobs.get(job_id)
    job = await r.store.jobs.set_paused(job_id, paused)
    await publish_job(r, "paused" if paused else "resumed", job.id, job.version, job.paused, job.name)
    if paused and not before.paused:
        await _record_gap(r, job_id)
    return job


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


async def run_now(r: Runtime, job_id: str, caller: str = "anonymous") -> str:
    """A run now, within two sliding minutes on Redis server time (so across the cluster): per job, and
    per caller (a token or a session: one reader of many jobs must not make every target a flood)."""
    job = await r.store.jobs.get(job_id)
    s = r.settings
    for key, limit, what in ((r.keys.run_now_by(caller), s.run_now_per_token_per_minute, "per token"),
                             (f"{r.keys.run_now_prefix}{job.id}", s.run_now_per_minute, "per job")):
        if not await r.redis.eval(_RUN_NOW_LUA, 1, key, limit, secrets.token_hex(8)):
            raise TooManyRequests(f"run-now is limited to {limit} {what} in any 60 s")
    return await r.scheduler.run_now(job)
