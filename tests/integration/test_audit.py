"""The tick ledger's inputs and the minute audit against a real MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from node import metrics
from node.model.executions import Claim, Execution, new_execution_id
from node.model.jobs import validate
from node.scheduling.audit import Auditor, job_ledger
from node.scheduling.ownership import Owned
from node.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def _backdate(store: Store, job_id: str, valid_from: datetime) -> None:
    await store.db.execute("UPDATE job_history SET valid_from=%s WHERE job_id=%s AND version=1",
                           (valid_from.replace(tzinfo=None), job_id))


def _tick(job_id: str, fence: int, at: datetime, **kw) -> Claim:
    return Claim(id=new_execution_id(), job_id=job_id, scheduled_at=at, fence=fence, **kw)


async def test_the_audit_accounts_for_every_instant_of_the_minute(store: Store) -> None:
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
    await _backdate(store, job.id, T0 - timedelta(minutes=1))
    (t,) = await store.executions.take_over([job.id], "node-a")
    at = [T0 + timedelta(seconds=i) for i in range(60)]
    claims = [_tick(job.id, t.fence, x) for x in at[:50]]
    misfire = _tick(job.id, t.fence, at[55], kind="misfire", state="missed", missed_count=6, missed_from=at[50],
                    error="past the misfire grace (60 s)")
    manual = _tick(job.id, t.fence, at[57] + timedelta(milliseconds=500), kind="manual")
    assert len((await store.executions.claim("node-a", [*claims, misfire, manual])).won) == 52
    await store.executions.record([Execution(id=c.id, job_id=job.id, scheduled_at=c.scheduled_at, fence=t.fence,
                                state="succeeded" if i < 40 else "failed", node="node-a", attempts=1)
                        for i, c in enumerate(claims[:45])])
    owned = {job.id: Owned.of(t.job, timetable=t.job.timetable(), fence=t.fence, anchor=at[-1] + timedelta(1))}
    auditor = Auditor(store.history, lambda: owned)
    before = metrics.TICKS_UNACCOUNTED._value.get()
    totals = await auditor.audit(T0 + timedelta(minutes=1))
    assert (totals["delivered"], totals["failed"], totals["running"], totals["missed"]) == (40, 5, 5, 6)
    assert totals["unaccounted"] == 4 and auditor.unaccounted == 4  # 56..59 have no row
    assert metrics.TICKS_UNACCOUNTED._value.get() - before == 4
    # a job not planned past the minute is not audited yet
    owned[job.id].anchor = at[10]
    assert sum((await auditor.audit(T0 + timedelta(minutes=1))).values()) == 0


async def test_the_ledger_follows_edits_pauses_and_deletes(store: Store) -> None:
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *"}), 100)
    created = datetime.now(UTC)
    await store.jobs.set_paused(job.id, True)
    await store.jobs.set_paused(job.id, False)
    await store.jobs.update(job.id, validate({"uri": "http://127.0.0.1:9/", "schedule": "*/5 * * * * *"}),
                           if_version=None, schedule_changed=True)
    await store.jobs.delete(job.id)
    history, _, _ = await store.history.ledger_inputs([job.id], created - timedelta(minutes=1), created + timedelta(minutes=1))
    rows = history[job.id]
    assert [(r["version"], bool(r["paused"]), bool(r["deleted"])) for r in rows] == [
        (1, False, False), (2, True, False), (3, False, False), (4, False, False), (5, False, True)]
    assert rows[3]["schedule"] == "*/5 * * * * *"
    assert all(a["valid_from"] <= b["valid_from"] for a, b in zip(rows, rows[1:], strict=False))
    # after the delete, the job has no instants; before it, nothing is unaccounted yet (all pending)
    ledger = await job_ledger(store.history, job.id, created - timedelta(seconds=5), created + timedelta(minutes=5),
                              settle=timedelta(minutes=10), limit=1000)
    assert ledger.counts["unaccounted"] == 0
    assert all(t.scheduled_at <= rows[-1]["valid_from"] for t in ledger.ticks)
