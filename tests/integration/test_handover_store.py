"""Runs left in flight by a hand-over, against MariaDB: the claim statement's forbid check, a takeover that
leaves a live claimer's running rows alone, and the settling of rows whose claimer has gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from node.model.executions import Claim, Execution, Liveness, new_execution_id
from node.model.jobs import validate
from node.store import Store

A, B = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"  # claimer ids of two processes


async def _job(store: Store, **fields: object):
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *", **fields}), 100)
    (t,) = await store.executions.take_over([job.id], "node-a", Liveness(claimer=A))
    return job, t


async def _running(store: Store, node: str, claimer: str, claim: Claim) -> None:
    await store.executions.record([Execution(id=claim.id, job_id=claim.job_id, scheduled_at=claim.scheduled_at, fence=claim.fence,
                                state="running", node=node, attempts=1, claimer=claimer)])


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def test_forbid_run_is_skipped_while_another_live_claimer_runs_the_job(store: Store) -> None:
    job, t = await _job(store, concurrencyPolicy="forbid")
    t0 = _now()
    manual = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0 - timedelta(seconds=3), fence=t.fence)
    assert (await store.executions.claim("node-b", [manual], Liveness(claimer=B))).won == {manual.id}
    await _running(store, "node-b", B, manual)

    tick = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0, fence=t.fence, forbid=True)
    got = await store.executions.claim("node-a", [tick], Liveness(claimer=A, others=frozenset({B})))
    assert got.won == got.overlapped == {tick.id}
    (row,) = [r for r in await store.history.all_executions([job.id]) if r.id == tick.id]
    assert (row.kind, row.state, row.missed_count) == ("overlap", "skipped", 1)
    assert "in flight" in row.error and row.claimer == A

    # B is no longer a live claimer (its node died): the row does not hold the job back
    later = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0 + timedelta(seconds=1), fence=t.fence,
                  forbid=True)
    got = await store.executions.claim("node-a", [later], Liveness(claimer=A))
    assert got.won == {later.id} and not got.overlapped
    # nor does it hold back an allow job's tick: only forbid runs are checked
    allow = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0 + timedelta(seconds=2), fence=t.fence)
    got = await store.executions.claim("node-a", [allow], Liveness(claimer=A, others=frozenset({B})))
    assert got.won == {allow.id} and not got.overlapped


async def test_a_takeover_leaves_a_live_claimers_running_row_alone(store: Store) -> None:
    job, a = await _job(store, delivery="at_least_once")
    t0 = _now()
    running = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0 - timedelta(seconds=2), fence=a.fence)
    unsent = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t0 - timedelta(seconds=1), fence=a.fence)
    assert (await store.executions.claim("node-a", [running, unsent], Liveness(claimer=A))).won == {running.id, unsent.id}
    await _running(store, "node-a", A, running)

    # node-a handed the job over: its running row is in flight on a live claimer; its claimed row is not
    (b,) = await store.executions.take_over([job.id], "node-b", Liveness(claimer=B, others=frozenset({A})))
    assert [r.id for r in b.redeliver] == [unsent.id]
    rows = {r.id: r for r in await store.history.all_executions([job.id])}
    assert rows[running.id].state == "running" and rows[running.id].fence == a.fence
    assert rows[unsent.id].state == "claimed" and rows[unsent.id].fence == b.fence
    assert rows[unsent.id].claimer == B and rows[unsent.id].redelivered

    # the old owner's run ends: its outcome lands on its row, under its old fence
    await store.executions.record([Execution(id=running.id, job_id=job.id, scheduled_at=running.scheduled_at, fence=a.fence,
                                state="succeeded", node="node-a", attempts=1, status_code=200)])
    rows = {r.id: r for r in await store.history.all_executions([job.id])}
    assert rows[running.id].state == "succeeded"


async def test_a_takeover_settles_a_dead_claimers_rows(store: Store) -> None:
    job, a = await _job(store)
    c = Claim(id=new_execution_id(), job_id=job.id, scheduled_at=_now(), fence=a.fence)
    await store.executions.claim("node-a", [c], Liveness(claimer=A))
    await _running(store, "node-a", A, c)
    (b,) = await store.executions.take_over([job.id], "node-b", Liveness(claimer=B))  # A is not live
    (row,) = await store.history.all_executions([job.id])
    assert row.state == "abandoned" and not b.redeliver


async def test_orphans_of_a_gone_claimer_are_abandoned_or_redelivered(store: Store) -> None:
    once, _ = await _job(store)
    least, _ = await _job(store, delivery="at_least_once")
    (t1, t2) = await store.executions.take_over([once.id, least.id], "node-b", Liveness(claimer=B))
    t0 = _now()
    c1 = Claim(id=new_execution_id(), job_id=once.id, scheduled_at=t0, fence=t1.fence, kind="manual")
    c2 = Claim(id=new_execution_id(), job_id=least.id, scheduled_at=t0, fence=t2.fence, kind="manual")
    for c in (c1, c2):  # run-nows on node-a (claimer A), in flight when node-a dies
        await store.executions.claim("node-a", [c], Liveness(claimer=A))
        await _running(store, "node-a", A, c)
    assert await store.executions.orphans([A], {}, "node-b", B) == {}  # owns nothing: settles nothing
    fences = {once.id: t1.fence, least.id: t2.fence}
    found = await store.executions.orphans([A], fences, "node-b", B)
    assert list(found) == [least.id] and [r.id for r in found[least.id]] == [c2.id]
    rows = {r.id: r for r in await store.history.all_executions([once.id, least.id])}
    assert rows[c1.id].state == "abandoned"
    assert rows[c2.id].state == "claimed" and rows[c2.id].claimer == B and rows[c2.id].redelivered
    assert rows[c2.id].fence == t2.fence  # (the owner's epoch: its outcome is the one that counts)
    assert await store.executions.orphans([A], fences, "node-b", B) == {}  # once
