"""The claim rules, once, against MariaDB and against the in-memory store the unit tests use
(``tests/memory_store.py``): whatever the fast tests prove with the fake holds for the real thing only
as long as both answer these the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from node.model.errors import NotFound, RunInFlight
from node.model.executions import Claim, Execution, ExecutionKind, ExecutionState, Liveness, new_execution_id
from node.model.jobs import Job, validate
from node.store import Store
from tests.memory_store import MemoryStore

A, B, C = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"  # claimer ids of three processes


@dataclass
class World:
    """One store behind the claim path's Protocols, and how a test makes and reads its jobs."""

    name: str
    claims: Any  # Claims + Takeovers + OutcomeSink
    store: Any

    async def job(self, **fields: Any) -> Job:
        spec = validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * * *", **fields})
        if isinstance(self.store, MemoryStore):
            return self.store.add_job(replace(spec, id=new_execution_id()[:16]))
        created: Job = await self.store.jobs.create(spec, 1000)
        return created

    async def pause(self, job: Job) -> None:
        if isinstance(self.store, MemoryStore):
            self.store.edit(job.id, paused=True, schedule_changed=False)
        else:
            await self.store.jobs.set_paused(job.id, True)

    async def rows(self, job: Job) -> dict[str, Execution]:
        if isinstance(self.store, MemoryStore):
            return {e.id: e for e in self.store.executions(job.id)}
        return {e.id: e for e in await self.store.history.all_executions([job.id])}


@pytest.fixture(params=["memory", "mariadb"])
async def world(request: pytest.FixtureRequest, store: Store) -> AsyncIterator[World]:
    if request.param == "memory":
        mem = MemoryStore()
        yield World("memory", mem, mem)
    else:
        yield World("mariadb", store.executions, store)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _claim(job: Job, fence: int, at: datetime, **kw: Any) -> Claim:
    return Claim(id=new_execution_id(), job_id=job.id, scheduled_at=at, fence=fence, **kw)


async def _running(w: World, c: Claim, node: str, claimer: str) -> None:
    await w.claims.record([c.execution(state=ExecutionState.RUNNING, node=node, claimer=claimer, attempts=1)])


async def test_one_execution_per_instant_under_the_current_fence(world: World) -> None:
    job = await world.job()
    (a,) = await world.claims.take_over([job.id], "node-a", Liveness(claimer=A))
    t0 = _now()
    first = _claim(job, a.fence, t0)
    assert (await world.claims.claim("node-a", [first], Liveness(claimer=A))).won == {first.id}
    again = await world.claims.claim("node-a", [first], Liveness(claimer=A))
    assert again.won == {first.id}  # the same claim once more (a statement run again): still ours
    other = _claim(job, a.fence, t0)
    got = await world.claims.claim("node-a", [other], Liveness(claimer=A))
    assert (got.won, got.taken) == (set(), {other.id})  # the instant has its row: accounted for, not a fence loss
    (b,) = await world.claims.take_over([job.id], "node-b", Liveness(claimer=B))
    stale = _claim(job, a.fence, t0 + timedelta(seconds=1))
    got = await world.claims.claim("node-a", [stale], Liveness(claimer=A))
    assert (got.won, got.taken) == (set(), set())  # refused: the fence moved on
    fresh = _claim(job, b.fence, t0 + timedelta(seconds=1))
    assert (await world.claims.claim("node-b", [fresh], Liveness(claimer=B))).won == {fresh.id}
    assert await world.claims.existing([first.id, stale.id, fresh.id]) == {first.id, fresh.id}
    await world.pause(job)
    paused = _claim(job, b.fence, t0 + timedelta(seconds=2))
    assert not (await world.claims.claim("node-b", [paused], Liveness(claimer=B))).won


async def test_the_anchor_is_the_last_scheduled_instant_and_lost_rows_are_settled(world: World) -> None:
    once, least = await world.job(), await world.job(delivery="at_least_once")
    t0 = _now()
    for job in (once, least):
        (a,) = await world.claims.take_over([job.id], "node-a", Liveness(claimer=A))
        ticks = [_claim(job, a.fence, t0 + timedelta(seconds=i)) for i in range(3)]
        assert len((await world.claims.claim("node-a", ticks, Liveness(claimer=A))).won) == 3
        await _running(world, ticks[0], "node-a", A)
        await world.claims.claim_run_now(job.id, "node-a", new_execution_id(), t0 + timedelta(seconds=9), claimer=A)
        (b,) = await world.claims.take_over([job.id], "node-b", Liveness(claimer=B))  # node-a was lost
        assert b.last_tick == t0 + timedelta(seconds=2)  # a run-now never moves the anchor
        rows = await world.rows(job)
        if job is least:
            # every open row of the lost claimer, its run-now too, is the new owner's to send again
            assert sorted(r.id for r in b.redeliver) == sorted(rows)
            assert all(r.state == ExecutionState.CLAIMED and r.redelivered and r.claimer == B and r.fence == b.fence
                       for r in rows.values())
        else:
            assert not b.redeliver and {r.state for r in rows.values()} == {ExecutionState.ABANDONED}


async def test_a_live_claimers_running_row_is_left_to_it(world: World) -> None:
    job = await world.job(delivery="at_least_once")
    (a,) = await world.claims.take_over([job.id], "node-a", Liveness(claimer=A))
    t0 = _now()
    running, unsent = _claim(job, a.fence, t0 - timedelta(seconds=2)), _claim(job, a.fence, t0 - timedelta(seconds=1))
    await world.claims.claim("node-a", [running, unsent], Liveness(claimer=A))
    await _running(world, running, "node-a", A)
    (b,) = await world.claims.take_over([job.id], "node-b", Liveness(claimer=B, others=frozenset({A})))
    assert [r.id for r in b.redeliver] == [unsent.id]  # a live claimer's claimed row is one it will not send
    rows = await world.rows(job)
    assert (rows[running.id].state, rows[running.id].fence) == (ExecutionState.RUNNING, a.fence)
    # its outcome lands under its old fence; the redelivered one is the new owner's alone
    await world.claims.record([running.execution(state=ExecutionState.SUCCEEDED, node="node-a", attempts=1),
                               unsent.execution(state=ExecutionState.FAILED, node="node-a", attempts=1)])
    rows = await world.rows(job)
    assert rows[running.id].state == ExecutionState.SUCCEEDED
    assert rows[unsent.id].state == ExecutionState.CLAIMED and rows[unsent.id].fence == b.fence
    # a process sending an execution itself keeps it too, whoever claimed it
    (c,) = await world.claims.take_over([job.id], "node-c", Liveness(claimer=C, sending=frozenset({unsent.id})))
    assert not c.redeliver and (await world.rows(job))[unsent.id].state == ExecutionState.CLAIMED


async def test_a_forbid_run_is_an_overlap_while_another_live_claimer_runs_the_job(world: World) -> None:
    job = await world.job(concurrencyPolicy="forbid")
    (a,) = await world.claims.take_over([job.id], "node-a", Liveness(claimer=A))
    t0 = _now()
    fence = await world.claims.claim_run_now(job.id, "node-b", "r" * 32, t0 - timedelta(seconds=3), claimer=B)
    assert fence == 0 < a.fence  # the job's fence as written: its owner's epoch goes with the owner's first write
    with pytest.raises(RunInFlight):
        await world.claims.claim_run_now(job.id, "node-b", "s" * 32, t0, forbid_overlap=True, claimer=B)
    tick = _claim(job, a.fence, t0, forbid=True)
    got = await world.claims.claim("node-a", [tick], Liveness(claimer=A, others=frozenset({B})))
    assert got.won == got.overlapped == {tick.id}  # claimed moments ago by a live claimer: in flight
    row = (await world.rows(job))[tick.id]
    assert (row.kind, row.state, row.missed_count, row.claimer) == (ExecutionKind.OVERLAP, ExecutionState.SKIPPED,
                                                                   1, A)
    later = _claim(job, a.fence, t0 + timedelta(seconds=1), forbid=True)
    got = await world.claims.claim("node-a", [later], Liveness(claimer=A))  # B is not live any more
    assert got.won == {later.id} and not got.overlapped
    allow = _claim(job, a.fence, t0 + timedelta(seconds=2))
    got = await world.claims.claim("node-a", [allow], Liveness(claimer=A, others=frozenset({B})))
    assert got.won == {allow.id} and not got.overlapped  # only forbid runs are checked
    with pytest.raises(NotFound):
        await world.claims.claim_run_now("0" * 16, "node-b", "t" * 32, t0, claimer=B)


async def test_orphans_of_a_gone_claimer(world: World) -> None:
    once, least = await world.job(), await world.job(delivery="at_least_once")
    takeovers = await world.claims.take_over([once.id, least.id], "node-b", Liveness(claimer=B))
    t0 = _now()
    ids = {}
    for t in takeovers:  # run-nows on node-a (claimer A), in flight when node-a dies
        ids[t.job.id] = new_execution_id()
        await world.claims.claim_run_now(t.job.id, "node-a", ids[t.job.id], t0, claimer=A)
    assert await world.claims.orphans([A], {}, "node-b", B) == {}  # owns nothing: settles nothing
    fences = {t.job.id: t.fence for t in takeovers}
    found = await world.claims.orphans([A], fences, "node-b", B)
    assert list(found) == [least.id] and [r.id for r in found[least.id]] == [ids[least.id]]
    assert (await world.rows(once))[ids[once.id]].state == ExecutionState.ABANDONED
    row = (await world.rows(least))[ids[least.id]]
    assert (row.state, row.claimer, row.redelivered, row.fence) == (ExecutionState.CLAIMED, B, True, fences[least.id])
    assert await world.claims.orphans([A], fences, "node-b", B) == {}


async def test_a_buffer_run_is_buffered_while_another_live_claimer_runs_the_job(world: World) -> None:
    job = await world.job(concurrencyPolicy="buffer_all")
    (a,) = await world.claims.take_over([job.id], "node-a", Liveness(claimer=A))
    t0 = _now()
    await world.claims.claim_run_now(job.id, "node-b", "r" * 32, t0 - timedelta(seconds=3), claimer=B)
    tick = _claim(job, a.fence, t0, buffer=True)
    got = await world.claims.claim("node-a", [tick], Liveness(claimer=A, others=frozenset({B})))
    assert got.won == got.buffered == {tick.id} and not got.overlapped
    row = (await world.rows(job))[tick.id]
    assert (row.kind, row.state, row.finished_at) == (ExecutionKind.TICK, ExecutionState.BUFFERED, None)
    assert [r[0] for r in await world.claims.in_flight(job.id, Liveness(claimer=A, others=frozenset({B})))] == ["r" * 32]
    # locally buffered (the claimer decided: its own run is in flight): inserted as it is, never guarded
    local = _claim(job, a.fence, t0 + timedelta(seconds=1), state=ExecutionState.BUFFERED)
    got = await world.claims.claim("node-a", [local], Liveness(claimer=A))
    assert got.won == {local.id} and not got.buffered
    # a dequeue under the current fence makes it a claim; under an old one it does nothing
    assert not await world.claims.dequeue(tick.id, a.fence - 1)
    assert await world.claims.dequeue(tick.id, a.fence)
    assert (await world.rows(job))[tick.id].state == ExecutionState.CLAIMED
    assert not await world.claims.dequeue(tick.id, a.fence)  # once
    # a takeover makes the remaining buffered tick the new owner's (never sent: safe to send), whoever buffered it
    (b,) = await world.claims.take_over([job.id], "node-b", Liveness(claimer=B))
    assert [x.id for x in b.buffered] == [local.id]
    row = (await world.rows(job))[local.id]
    assert (row.state, row.fence, row.claimer) == (ExecutionState.BUFFERED, b.fence, B)
    assert not await world.claims.dequeue(local.id, a.fence)  # the old owner can no longer send it
    assert await world.claims.dequeue(local.id, b.fence)


async def test_a_counted_run_adds_to_the_jobs_runs(world: World) -> None:
    job = await world.job(maxRuns=5)
    (a,) = await world.claims.take_over([job.id], "node-a", Liveness(claimer=A))
    t0 = _now()
    runs = [_claim(job, a.fence, t0 + timedelta(seconds=k), counted=True) for k in range(3)]
    got = await world.claims.claim("node-a", [*runs, _claim(job, a.fence, t0 + timedelta(seconds=9))],
                                   Liveness(claimer=A))
    assert len(got.won) == 4
    (b,) = await world.claims.take_over([job.id], "node-b", Liveness(claimer=B))
    assert b.job.runs == 3
    await world.claims.claim("node-b", [runs[0]], Liveness(claimer=B))  # a row that exists: not counted again
    (c,) = await world.claims.take_over([job.id], "node-c", Liveness(claimer=C))
    assert c.job.runs == 3


async def test_a_run_the_guard_buffers_counts_and_one_it_skips_does_not(world: World) -> None:
    """maxRuns: a tick buffered behind another node's run is a run (it goes later); a forbid tick recorded as an
    overlap is not. The count a takeover reads must be what the owner counted, or the next owner sends more."""
    job = await world.job(concurrencyPolicy="buffer_all", maxRuns=5)
    forbid = await world.job(concurrencyPolicy="forbid", maxRuns=5)
    ts = await world.claims.take_over([job.id, forbid.id], "node-a", Liveness(claimer=A))
    fence = {t.job.id: t.fence for t in ts}
    t0 = _now()
    for j in (job, forbid):
        await world.claims.claim_run_now(j.id, "node-b", ("r" if j is job else "s") * 32, t0 - timedelta(seconds=3),
                                         claimer=B)
    buffered = _claim(job, fence[job.id], t0, buffer=True, counted=True)
    skipped = _claim(forbid, fence[forbid.id], t0, forbid=True, counted=True)
    got = await world.claims.claim("node-a", [buffered, skipped], Liveness(claimer=A, others=frozenset({B})))
    assert got.buffered == {buffered.id} and got.overlapped == {skipped.id}
    runs = {t.job.id: t.job.runs for t in await world.claims.take_over([job.id, forbid.id], "node-c",
                                                                       Liveness(claimer=C))}
    assert runs == {job.id: 1, forbid.id: 0}


@pytest.mark.parametrize("delivery", ["at_most_once", "at_least_once", "buffered"])
async def test_a_deposed_owners_late_claim_is_settled_where_the_new_owner_claims(world: World, delivery: str) -> None:
    """Fences are written with an owner's first write: a deposed owner's claim that lands after the takeover (which
    found no open row, so wrote nothing) and before that first write still matches. Its row then holds the tick,
    under a claimer that is gone. Where the new owner claims that tick, its claim is taken, and the row is settled
    as a takeover would: re-sent by the new owner (at_least_once), its queue (buffered), else abandoned. Found by
    review: left alone, the tick was never delivered, and no takeover would come to it."""
    job = await world.job(delivery="at_least_once" if delivery == "at_least_once" else "at_most_once")
    (a,) = await world.claims.take_over([job.id], "node-a", Liveness(claimer=A))
    t0 = _now()
    first = _claim(job, a.fence, t0)
    assert (await world.claims.claim("node-a", [first], Liveness(claimer=A))).won == {first.id}
    await world.claims.record([first.execution(state=ExecutionState.SUCCEEDED, node="node-a", claimer=A, attempts=1)])
    (b,) = await world.claims.take_over([job.id], "node-b", Liveness(claimer=B))  # no open row: nothing written
    assert b.fence > a.fence and not b.redeliver and not b.buffered
    state = ExecutionState.BUFFERED if delivery == "buffered" else ExecutionState.CLAIMED
    late = _claim(job, a.fence, t0 + timedelta(seconds=1), state=state)
    assert (await world.claims.claim("node-a", [late], Liveness(claimer=A))).won == {late.id}  # (A, deposed)
    mine = _claim(job, b.fence, t0 + timedelta(seconds=1))
    got = await world.claims.claim("node-b", [mine], Liveness(claimer=B))  # A is not live any more
    assert got.taken == {mine.id} and not got.won
    row = (await world.rows(job))[late.id]
    if delivery == "at_least_once":
        assert [r.id for r in got.redeliver[job.id]] == [late.id] and not got.requeue
        assert (row.state, row.claimer, row.fence, row.redelivered) == (ExecutionState.CLAIMED, B, b.fence, True)
    elif delivery == "buffered":
        assert [r.id for r in got.requeue[job.id]] == [late.id] and not got.redeliver
        assert (row.state, row.claimer, row.fence) == (ExecutionState.BUFFERED, B, b.fence)
    else:
        assert not got.redeliver and not got.requeue
        assert row.state == ExecutionState.ABANDONED
    again = _claim(job, b.fence, t0 + timedelta(seconds=1))  # once settled: taken, nothing more to settle
    got = await world.claims.claim("node-b", [again], Liveness(claimer=B))
    assert got.taken == {again.id} and not got.redeliver and not got.requeue
    # a live claimer's open row is its own (a run-now on a live node): taken, left alone
    live_row = _claim(job, b.fence, t0 + timedelta(seconds=2))
    stale = _claim(job, a.fence, t0 + timedelta(seconds=2))
    assert (await world.claims.claim("node-a", [stale], Liveness(claimer=A))).won == set()  # (B's fence is written)
    assert (await world.claims.claim("node-b", [live_row], Liveness(claimer=B))).won == {live_row.id}


async def test_a_deposed_owner_settles_no_orphans_of_a_job_a_newer_owner_fenced(world: World) -> None:
    """orphans with the caller's fence: once a newer owner's epoch is on the job, the rows a gone claimer left are
    that owner's to settle; a deposed caller takes none on (it would send them under a fence it does not hold)."""
    least = await world.job(delivery="at_least_once")
    (b,) = await world.claims.take_over([least.id], "node-b", Liveness(claimer=B))
    (c,) = await world.claims.take_over([least.id], "node-c", Liveness(claimer=C))  # (no open row: none written)
    t0 = _now()
    run = new_execution_id()
    await world.claims.claim_run_now(least.id, "node-a", run, t0, claimer=A)  # in flight on node-a, which dies
    first = _claim(least, c.fence, t0 + timedelta(seconds=1))
    assert (await world.claims.claim("node-c", [first], Liveness(claimer=C))).won == {first.id}  # c's epoch written
    assert await world.claims.orphans([A], {least.id: b.fence}, "node-b", B) == {}
    row = (await world.rows(least))[run]
    assert row.state == ExecutionState.CLAIMED and row.claimer == A  # left for node-c
    found = await world.claims.orphans([A], {least.id: c.fence}, "node-c", C)
    assert [r.id for r in found[least.id]] == [run]
