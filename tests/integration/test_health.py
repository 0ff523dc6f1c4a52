"""A job's health against real MariaDB: the failure streak in instant order, once per outcome, whatever the
batches; job.failing once per streak, job.recovered after one, auto-pause at pauseAfterFailures and not again
right after a resume; the alerts outbox leased one at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from node.model.alerts import AlertState
from node.model.audit import Actor, AuditAction, AuditEntry
from node.model.executions import Execution, ExecutionState
from node.model.jobs import validate
from node.store import Store

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def _job(store: Store, **fields: Any) -> str:
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *", **fields}), 100)
    # scheduled instants from T0 count (active_since is the creation's now: set it back)
    await store.db.execute("UPDATE jobs SET active_since = %s WHERE id = %s", (T0.replace(tzinfo=None), job.id))
    return job.id


def _run(job_id: str, second: int, ok: bool) -> Execution:
    return Execution(id=f"{job_id[:8]}{second:024d}", job_id=job_id, scheduled_at=T0 + timedelta(seconds=second),
                     state=ExecutionState.SUCCEEDED if ok else ExecutionState.FAILED, fence=1, node="n",
                     attempts=1, status_code=200 if ok else 500)


async def _outcomes(store: Store, job_id: str, runs: list[tuple[int, bool]]) -> list[str]:
    batch = [_run(job_id, s, ok) for s, ok in runs]
    await store.executions.record(batch)  # as the Recorder does: rows first, then the health step
    return await store.health.record(batch, "n")


async def _state(store: Store, job_id: str) -> tuple[int, bool, list[str]]:
    job = await store.jobs.get(job_id)
    alerts = [a.type for a in reversed(await store.alerts.recent(job_id=job_id))]
    return job.fail_streak, job.paused, alerts


async def test_a_streak_counts_in_instant_order_once(store: Store) -> None:
    jid = await _job(store, pauseAfterFailures=3)
    # failures then successes in one batch (buffered through an outage): the job recovered, no streak, no pause
    assert await _outcomes(store, jid, [(1, False), (2, False), (3, False), (4, True), (5, True)]) == []
    assert await _state(store, jid) == (0, False, [])
    # a failure recorded after a later success already was: history, not the job's state
    assert await _outcomes(store, jid, [(6, True)]) == []
    assert await _outcomes(store, jid, [(5, False)]) == []
    assert (await _state(store, jid))[0] == 0
    # a real streak: one job.failing, at its first failure; the same batch again counts nothing more
    await _outcomes(store, jid, [(7, False), (8, False)])
    assert await _state(store, jid) == (2, False, ["job.failing"])
    await store.health.record([_run(jid, 7, False), _run(jid, 8, False)], "n")
    assert (await _state(store, jid))[0] == 2
    # the third pauses it (audited as cronring), with a job.paused alert
    assert await _outcomes(store, jid, [(9, False)]) == [jid]
    streak, paused, alerts = await _state(store, jid)
    assert (streak, paused, alerts) == (3, True, ["job.failing", "job.paused"])
    (row,) = await store.audit.query(job_id=jid, action="auto-pause")
    assert row.actor == "cronring" and "3 consecutive failed runs" in (row.note or "")
    job = await store.jobs.get(jid)
    assert job.paused_by == "cronring" and job.fail_streak == 3 and job.failing_since == T0 + timedelta(seconds=7)


async def test_a_resume_gives_the_job_its_allowance_again(store: Store) -> None:
    jid = await _job(store, pauseAfterFailures=2)
    assert await _outcomes(store, jid, [(1, False), (2, False)]) == [jid]
    assert await store.jobs.set_paused(jid, False, audit=AuditEntry(Actor("ops", "api", "n"), AuditAction.RESUME))
    await store.db.execute("UPDATE jobs SET active_since = %s WHERE id = %s",
                           ((T0 + timedelta(seconds=3)).replace(tzinfo=None), jid))
    # a run scheduled before the resume that fails afterwards: the old definition's, not counted
    assert await _outcomes(store, jid, [(2, False)]) == []
    # one new failure after the resume: the streak goes on (3), no pause yet (its allowance is 2 new ones)
    assert await _outcomes(store, jid, [(4, False)]) == []
    assert await _state(store, jid) == (3, False, ["job.failing", "job.paused"])
    assert await _outcomes(store, jid, [(5, False)]) == [jid]
    # then a success: recovered, with the whole streak
    await store.jobs.set_paused(jid, False)
    await store.db.execute("UPDATE jobs SET active_since = %s WHERE id = %s",
                           ((T0 + timedelta(seconds=6)).replace(tzinfo=None), jid))
    await _outcomes(store, jid, [(7, True)])
    streak, paused, alerts = await _state(store, jid)
    assert (streak, paused) == (0, False) and alerts[-1] == "job.recovered"
    (rec,) = await store.alerts.recent(job_id=jid, type_="job.recovered")
    assert rec.payload["streak"] == 4 and rec.payload["failingSince"] == "2030-01-01T00:00:01.000Z"


async def test_the_outbox_leases_one_alert_at_a_time(store: Store) -> None:
    for i in range(3):
        assert await store.alerts.add(f"k{i}", "node.down", None, {"node": f"x{i}"})
    assert not await store.alerts.add("k0", "node.down", None, {"node": "x0"})  # once per event
    a = await store.alerts.claim("c1", lease_seconds=30, limit=1)
    b = await store.alerts.claim("c2", lease_seconds=30, limit=1)
    assert len(a) == len(b) == 1 and a[0].id != b[0].id
    await store.alerts.finish(a[0].id, "c1", AlertState.SENT, node="n1", status=200)
    await store.alerts.finish(a[0].id, "c2", AlertState.FAILED, node="n2", error="not its lease")  # ignored
    (sent,) = [x for x in await store.alerts.recent() if x.id == a[0].id]
    assert sent.state == AlertState.SENT and sent.node == "n1"


async def test_a_pause_after_its_end_passed_pauses_anew(store: Store) -> None:
    """Paused until a moment now past, not yet swept: a pause (no body) pauses it again, with no end; it is not
    lost to the sweep that comes next."""
    jid = await _job(store)
    assert await store.jobs.set_paused(jid, True, until=datetime.now(UTC) + timedelta(seconds=30))
    await store.db.execute("UPDATE jobs SET paused_until = NOW(3) - INTERVAL 1 SECOND WHERE id = %s", (jid,))
    assert await store.jobs.pauses_ended() == [jid]
    assert await store.jobs.set_paused(jid, True, reason="again")  # applies: a fresh pause
    assert await store.jobs.pauses_ended() == []
    job = await store.jobs.get(jid)
    assert job.paused and job.paused_until is None and job.paused_reason == "again"
    assert not await store.jobs.set_paused(jid, True)  # a pause of a paused job (no end) changes nothing
