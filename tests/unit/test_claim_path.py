"""The claim path, fast and deterministic: the real ``Scheduler``, ``Ownership`` and ``Outcomes`` of several
nodes against the in-memory store (``tests/memory_store.py``, held to MariaDB's rules by
``tests/integration/test_claim_contract.py``), in-memory locks and membership, a target whose requests stay
in flight until the test ends them, and a virtual clock (every timer the scheduler sets is the test's).

Deterministic scenarios: the claim cycle, a takeover with a gap, a redelivery, and the hand-over that no
longer waits for a slow run (allow and forbid). Then a hypothesis stateful test drives joins, graceful
leaves, kills, slow and quick requests, edits and time, and checks after every step that no instant is
sent twice, that a forbid job never has two requests in flight, and, once things settle, that every
instant has its fate.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from node.aio import Tasks
from node.cluster.ring import Ring
from node.model.errors import StoreUnavailable
from node.model.executions import OPEN_STATES, Claim, ExecutionKind, ExecutionState, Fate, Liveness, new_execution_id
from node.model.jobs import Job, JobSummary, validate
from node.scheduling.firing import Result
from node.scheduling.ledger import account, segments
from node.scheduling.outcomes import Outcomes
from node.scheduling.ownership import DELETED_WHILE_LOST, PAUSED_WHILE_LOST, Ownership
from node.scheduling.scheduler import Scheduler
from tests.memory_store import MemoryStore

T0 = 1_800_000_000.0  # a whole second, far from any DST question (UTC jobs)
CLAIM_AHEAD = 0.5
SETTLE = timedelta(seconds=6)  # an instant may lack a row this long (a takeover, a claim batch)


class Clock:
    """Virtual wall-clock seconds and the timers set against them."""

    def __init__(self) -> None:
        self.now = T0
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def later(self, delay: float, fn: Callable[..., None], *args: Any) -> Timer:
        timer = Timer(fn, args)
        heapq.heappush(self._timers, (self.now + max(0.0, delay), next(self._seq), timer))
        return timer

    def fire_due(self) -> None:
        while self._timers and self._timers[0][0] <= self.now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.fn(*timer.args)

    def dt(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


@dataclass
class Timer:
    fn: Callable[..., None]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Request:
    """One request that reached the target: in flight until ended."""

    node: str
    job: str
    execution: str
    scheduled_at: datetime
    fence: int
    done: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class World:
    """Redis (members, claimer ids, locks), MariaDB (the memory store), the target, and time."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(now=self.clock.dt)
        self.members: dict[str, str] = {}  # node -> its claimer id (live members only)
        self.draining: dict[str, Node] = {}  # left the ring and the member set; its claimer live until its runs end
        self.ring_members: set[str] = set()  # who the ring is made of (a leaving node is out of it first)
        self.locks: dict[str, str] = {}
        self.requests: list[Request] = []
        self.quick: set[str] = set()  # jobs whose target answers at once
        self.nodes: dict[str, Node] = {}
        self.ids = itertools.count()
        self.may_send: dict[str, Callable[[], bool]] = {}  # by execution: the firer's check before each attempt

    def in_flight(self) -> list[Request]:
        return [r for r in self.requests if not r.done.done()]


class Lease:
    """One node's membership (the scheduler's ClusterLease)."""

    def __init__(self, world: World, node: str) -> None:
        self.w, self.node = world, node
        self.claimer = f"{node:>16}"[-16:]  # deterministic (the stateful test replays), unique per node
        self.lapsed, self.changed, self.claimers_changed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @property
    def ring(self) -> Ring:
        return Ring(self.w.ring_members)

    @property
    def epoch(self) -> int:
        return len(self.w.ring_members)

    @property
    def handover_ok(self) -> bool:
        return True

    def fresh(self) -> bool:
        return self.w.members.get(self.node) == self.claimer

    def lease_left(self) -> float:
        return 2.0 if self.fresh() else 0.0

    def live_claimers(self) -> set[str]:
        return set(self.w.members.values()) | {n.lease.claimer for n in self.w.draining.values()}

    async def log_handover(self, direction: str, job_ids: list[str]) -> None:
        pass


class Locks:
    """Fencing locks: free, ours, or held by a node that is no longer a member."""

    def __init__(self, world: World, node: str) -> None:
        self.w, self.node = world, node

    async def acquire(self, job_ids: Sequence[str]) -> list[str]:
        got = [j for j in job_ids if self.w.locks.get(j) in (None, self.node) or self.w.locks[j] not in self.w.members]
        for j in got:
            self.w.locks[j] = self.node
        return got

    async def set_fences(self, fences: dict[str, int]) -> None:
        pass

    async def release(self, job_ids: Sequence[str]) -> int:
        mine = [j for j in job_ids if self.w.locks.get(j) == self.node]
        for j in mine:
            del self.w.locks[j]
        return len(mine)

    async def holders(self, job_ids: Sequence[str]) -> dict[str, str | None]:
        return {j: self.w.locks.get(j) for j in job_ids}

    async def held_by_me(self) -> list[str]:
        return [j for j, h in self.w.locks.items() if h == self.node]


class Catalogue:
    def __init__(self) -> None:
        self.jobs: dict[str, JobSummary] = {}
        self.changed_ids: set[str] = set()
        self.calendars: dict = {}
        self.calendars_seen = 0
        self.changed = asyncio.Event()

    def version_of(self, job_id: str) -> int | None:
        s = self.jobs.get(job_id)
        return None if s is None else s.version

    def active_ids(self) -> list[str]:
        return [j.id for j in self.jobs.values() if j.active]

    async def sync_calendars(self) -> None:
        pass

    holds_share = False  # (every job: the ownership filters by the ring)

    async def focus(self, ring: Any, still: Any = None, each: Any = None) -> bool:
        return True  # holds every job: the ownership filters by the ring

    def sync(self, summaries: list[JobSummary]) -> None:
        for s in summaries:
            cur = self.jobs.get(s.id)
            if cur is None or cur.version < s.version:
                self.jobs[s.id] = s
                self.changed_ids.add(s.id)

    def request_full(self) -> None:
        pass


class Target:
    """The firer: every request reaches the target and stays in flight until the test ends it."""

    def __init__(self, world: World, node: str) -> None:
        self.w, self.node = world, node

    async def fire(self, job: Job, *, execution_id: str, scheduled_at: datetime, fence: int,
                   may_send: Callable[[], bool], lease_left: Callable[[], float], attempts_before: int = 0,
                   due_at: datetime | None = None) -> Result:
        started = self.w.clock.dt()
        if not may_send():
            return Result(state=ExecutionState.ABANDONED, attempts=attempts_before, status_code=None, duration_ms=0,
                          lateness_ms=0, error="lease lapsed", excerpt=None, started_at=started)
        req = Request(node=self.node, job=job.id, execution=execution_id, scheduled_at=scheduled_at, fence=fence)
        self.w.requests.append(req)
        self.w.may_send[execution_id] = may_send  # (what a retry of it would ask)
        if job.id in self.w.quick:
            req.done.set_result(200)
        status = await req.done
        return Result(state=ExecutionState.SUCCEEDED if status < 400 else ExecutionState.FAILED,
                      attempts=attempts_before + 1, status_code=status, duration_ms=1, lateness_ms=0, error=None,
                      excerpt=None, started_at=started)


class Quiet:
    def put(self, event: dict[str, Any]) -> None:
        pass


class Node:
    def __init__(self, world: World, name: str) -> None:
        self.w, self.name = world, name
        self.lease = Lease(world, name)
        self.catalogue = Catalogue()
        self.tasks = Tasks()
        self.ownership = Ownership(node_id=name, takeovers=world.store, definitions=world.store,
                                   history=world.store, locks=Locks(world, name), lease=self.lease,
                                   catalogue=self.catalogue, member_ttl=3.0, tasks=self.tasks,
                                   clock=lambda: world.clock.now)
        self.outcomes = Outcomes(world.store, Quiet(), node_id=name, claimer=lambda: self.lease.claimer)  # type: ignore[arg-type]
        self.scheduler = Scheduler(node_id=name, claims=world.store, ownership=self.ownership, outcomes=self.outcomes,
                                   firer=Target(world, name), membership=self.lease, catalogue=self.catalogue,
                                   tasks=self.tasks, claim_ahead=CLAIM_AHEAD, clock=lambda: world.clock.now,
                                   later=world.clock.later, plan_slice=float("inf"))
        self.ownership.hooks = self.scheduler
        world.nodes[name] = self
        world.members[name] = self.lease.claimer
        world.ring_members.add(name)

    def kill(self) -> None:
        """kill -9: gone at once; its requests end with it; its claimer id is dead (its rows are orphans)."""
        for t in self.tasks.running():
            t.cancel()
        for r in self.w.in_flight():
            if r.node == self.name:
                r.done.cancel()
        self.w.members.pop(self.name, None)
        self.w.ring_members.discard(self.name)
        del self.w.nodes[self.name]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def turn(w: World, seconds: float = 0.25) -> None:
    """Time moves on: every node syncs its catalogue, reconciles, settles orphans, claims what is due; the
    timers that came due fire; outcomes are written; a draining node whose runs have ended is gone."""
    w.clock.now += seconds
    for name, node in list(w.draining.items()):
        if not any(r.node == name for r in w.in_flight()):
            await settle()
            await node.outcomes.recorder.flush(everything=True)
            del w.draining[name]
    for node in list(w.nodes.values()):
        if node.name not in w.nodes:
            continue
        node.catalogue.sync(w.store.summaries())
        await node.ownership.reconcile()
        await node.scheduler.settle_orphans()
        await node.scheduler.step(w.clock.now)
        w.clock.fire_due()
        await settle()
        node.outcomes.recorder._promote(everything=True)
        await node.outcomes.recorder.flush()
    await settle()


async def run(w: World, seconds: float, step: float = 0.25) -> None:
    for _ in range(int(seconds / step)):
        await turn(w, step)


def job(w: World, schedule: str = "* * * * * *", **fields: Any) -> Job:
    spec = validate({"uri": "http://127.0.0.1:9/", "schedule": schedule, "misfirePolicy": "fire_all",
                     "misfireGraceSeconds": 120, **fields})
    return w.store.add_job(replace(spec, id=f"job{next(w.ids):013d}"))


def ledger_fates(w: World, job_id: str, start: datetime, end: datetime) -> dict[datetime, Fate]:
    history = w.store.history[job_id]
    rows = [e for e in w.store.executions(job_id)]
    led = account(segments(history), rows, start=start, end=end, now=w.clock.dt(), settle=SETTLE)
    return {t.scheduled_at: t.fate for t in led.ticks}


def sent_ticks(w: World, job_id: str) -> dict[datetime, set[str]]:
    out: dict[datetime, set[str]] = {}
    for r in w.requests:
        if r.job == job_id:
            out.setdefault(r.scheduled_at, set()).add(r.execution)
    return out


def owner(w: World, job_id: str) -> str | None:
    return next((n.name for n in w.nodes.values() if job_id in n.ownership.owned
                 and not n.ownership.owned[job_id].releasing), None)


def end_all(w: World, status: int = 200) -> None:
    for r in w.in_flight():
        r.done.set_result(status)


# ---------------------------------------------------------------------- scenarios


async def test_the_claim_cycle_sends_each_instant_once() -> None:
    w = World()
    j = job(w)
    w.quick.add(j.id)
    Node(w, "a")
    start = w.clock.dt()
    await run(w, 6)
    ticks = sent_ticks(w, j.id)
    assert len(ticks) >= 5 and all(len(ids) == 1 for ids in ticks.values())
    fates = ledger_fates(w, j.id, start, w.clock.dt() - timedelta(seconds=1))
    assert set(fates.values()) == {Fate.DELIVERED}, fates


@pytest.mark.parametrize("policy", ["buffer_all", "buffer_one"])
async def test_a_job_completes_only_once_its_buffered_ticks_and_last_run_have_gone(policy: str) -> None:
    """maxRuns reached with ticks waiting behind a slow run: they are sent before the job is completed (a
    completed job has no owner to send them), and the job completes when the last run has ended."""
    w = World()
    j = job(w, concurrencyPolicy=policy, maxRuns=3)
    a = Node(w, "a")
    a.scheduler.completions = w.store
    await run(w, 4)  # the first run hangs; the others wait behind it
    assert len(w.in_flight()) == 1
    assert w.store.jobs[j.id].completed_at is None
    for _ in range(4):
        end_all(w)
        await run(w, 1.5)
    ticks = sent_ticks(w, j.id)
    want = 3 if policy == "buffer_all" else 2  # buffer_one: one waits, the third is skipped (and counts no run)
    assert len(ticks) >= want and all(len(ids) == 1 for ids in ticks.values()), ticks
    assert not [e for e in w.store.executions(j.id) if e.state in OPEN_STATES]
    assert w.store.jobs[j.id].runs == 3
    end_all(w)
    await run(w, 3)
    assert w.store.jobs[j.id].completed_at is not None
    assert len(sent_ticks(w, j.id)) == 3


async def test_a_job_past_its_end_completes_on_its_next_owner_once_the_buffered_ticks_have_gone() -> None:
    """endAt passes while ticks wait behind a slow run; the owner dies: its successor sends them, then completes
    the job (a timetable with nothing left used to leave it owned and active for ever)."""
    w = World()
    end = w.clock.dt() + timedelta(seconds=3.5)
    j = job(w, concurrencyPolicy="buffer_all", endAt=end.isoformat().replace("+00:00", "Z"))
    a = Node(w, "a")
    a.scheduler.completions = w.store
    await run(w, 4)
    assert len(w.in_flight()) == 1 and w.store.jobs[j.id].completed_at is None
    a.kill()
    b = Node(w, "b")
    b.scheduler.completions = w.store
    for _ in range(4):
        await run(w, 2)
        end_all(w)
    await run(w, 2)
    ticks = sent_ticks(w, j.id)
    assert len(ticks) == 3 and all(len(ids) == 1 for ids in ticks.values()), ticks  # the first, then the two waiting
    assert w.store.jobs[j.id].completed_at is not None
    assert j.id not in b.ownership.owned


async def test_a_send_begun_before_a_lapse_never_sends_again_once_the_lease_is_fresh_under_a_new_id() -> None:
    """A retry asks the firer's may_send before each attempt. After a lapse the node drops everything and its lease
    is fresh again under a new claimer id; a send begun under the old id must stay stopped (the nemesis saw a
    backfill's second attempt leave 6 ms after its node had handled its lapse: a deposed owner's request)."""
    w = World()
    j = job(w)
    a = Node(w, "a")
    await run(w, 2)
    (req, *_) = [r for r in w.in_flight() if r.job == j.id]
    may_send = w.may_send[req.execution]
    assert may_send()
    a.lease.claimer = "lapsed-and-back1"  # membership._lapse: a new id; the next beat makes it a member again
    w.members["a"] = a.lease.claimer
    a.ownership.drop_all("own heartbeat lapsed")
    assert a.lease.fresh() and not may_send()


@pytest.mark.parametrize("policy", ["at_least_once", "buffer_all"])
async def test_a_deposed_owners_late_claim_is_sent_by_the_new_owner(policy: str) -> None:
    """A deposed owner's claim can land after the new owner's takeover (nothing written: the job had no open row)
    and before its first write. The new owner's claim of that instant finds the row, under a claimer that is gone:
    it takes it on as a takeover would (re-sent as the same execution, or queued), so the instant is delivered
    once (found by review: before, it was taken as accounted for and never sent)."""
    w = World()
    fields = {"delivery": "at_least_once"} if policy == "at_least_once" else {"concurrencyPolicy": "buffer_all"}
    j = job(w, "*/10 * * * * *", **fields)
    w.quick.add(j.id)
    a = Node(w, "a")
    await run(w, 14)  # (its run at :10 recorded: the takeover finds no open row, and writes nothing)
    assert sent_ticks(w, j.id)
    deposed, old_fence = a.lease.claimer, w.store.jobs[j.id].fence
    a.kill()
    due = datetime.fromtimestamp(T0 + 20, UTC)
    state = ExecutionState.CLAIMED if policy == "at_least_once" else ExecutionState.BUFFERED
    late = Claim(id=new_execution_id(), job_id=j.id, scheduled_at=due, fence=old_fence, state=state)
    claim = w.store.claim

    async def claim_after_the_late_one(node: str, claims: Sequence[Claim], live: Liveness | None = None) -> Any:
        if node == "b" and late.id not in w.store.rows:  # lands just before b's first write (b took the job over)
            assert w.store.jobs[j.id].fence == old_fence < b.ownership.owned[j.id].fence
            assert (await claim("a", [late], Liveness(claimer=deposed))).won == {late.id}
        return await claim(node, claims, live)

    w.store.claim = claim_after_the_late_one  # type: ignore[method-assign]
    b = Node(w, "b")
    await run(w, 12)
    assert late.id in w.store.rows
    ticks = sent_ticks(w, j.id)
    assert ticks[due] == {late.id}, ticks  # sent once, as the deposed owner's execution
    assert w.store.rows[late.id].state == ExecutionState.SUCCEEDED and all(len(v) == 1 for v in ticks.values())


async def test_a_run_now_claimed_before_a_lapse_is_not_sent_after_it() -> None:
    """The claimer id a send is judged by is the one its row was claimed under: a run-now whose claim was under way
    while the node's lapse was handled (a new id, the lease fresh again at once) is not sent; its row's claimer is
    gone, so another node would settle it (found by review: the send took the new id and went)."""
    w = World()
    j = job(w, "0 0 1 1 *")
    a = Node(w, "a")
    await run(w, 1)
    claim_run_now = w.store.claim_run_now

    async def lapse_meanwhile(*args: Any, **kw: Any) -> int:
        fence = await claim_run_now(*args, **kw)
        a.lease.claimer = "lapsed-and-back1"  # membership._lapse, then the next beat: a member again
        w.members["a"] = a.lease.claimer
        return fence

    w.store.claim_run_now = lapse_meanwhile  # type: ignore[method-assign]
    eid = await a.scheduler.run_now(w.store.jobs[j.id])
    await run(w, 1)
    assert a.lease.fresh() and not [r for r in w.requests if r.execution == eid]
    w.store.claim_run_now = claim_run_now  # type: ignore[method-assign]
    again = await a.scheduler.run_now(w.store.jobs[j.id])  # under the new id: sent
    await run(w, 1)
    assert [r.execution for r in w.requests if r.job == j.id] == [again]


async def test_a_job_whose_next_instant_is_far_away_is_kept_packed_and_fires_as_defined() -> None:
    """Memory at a million jobs: an owned job due in more than COOL_BEYOND keeps its definition packed; the timer
    unpacks it when it is due, it fires with every field it had, and it is packed again once its run has ended.
    A job due every second is never packed."""
    w = World()
    far = job(w, "*/5 * * * *", headers={"Authorization": "Bearer s3cret"}, labels={"team": "billing"})
    near = job(w)
    w.quick.update({far.id, near.id})
    a = Node(w, "a")
    fired: list[Job] = []
    fire = a.scheduler.firer.fire

    async def spy(job: Job, **kw: Any) -> Result:
        if job.id == far.id:
            fired.append(job)
        return await fire(job, **kw)

    a.scheduler.firer.fire = spy  # type: ignore[method-assign]
    await run(w, 2)
    owned = a.ownership.owned
    assert owned[far.id].cold and not owned[near.id].cold
    assert owned[far.id].peek() == owned[far.id].peek() and owned[far.id].cold  # (a look leaves it packed)
    assert owned[far.id].version == far.version
    await run(w, 290, step=10)
    assert owned[far.id].cold and not fired
    await run(w, 12)  # past T0 + 300 s, its instant
    assert [j.headers for j in fired] == [{"Authorization": "Bearer s3cret"}]
    # (as the takeover read it: every field but the bookkeeping times and the stored owner; its fence, as read
    # then: the owner's epoch was written with its claim)
    assert fired[0].fence == 0 and w.store.jobs[far.id].fence == owned[far.id].fence > 0
    assert fired[0] == replace(w.store.jobs[far.id], owner=None, created_at=None, updated_at=None, fence=0)
    assert list(sent_ticks(w, far.id)) == [datetime.fromtimestamp(T0 + 300, UTC)]
    assert owned[far.id].cold  # (its next instant is five minutes away again)
    assert not owned[near.id].cold and len(sent_ticks(w, near.id)) >= 300


async def test_a_calendar_change_rebuilds_only_the_timetables_that_name_one_and_unpacks_nothing_else() -> None:
    """A calendar created or edited anywhere makes every node look at its owned jobs: the ones naming a calendar get
    a new timetable; the others are read off the record, their packed definitions left unread (unpacking 100k of
    them held the loop ~4 s, longer than a member's TTL: found by review)."""
    from node.model.calendars import Calendar
    from node.scheduling import ownership as ownership_mod

    w = World()
    plain = [job(w, "0 0 1 1 *").id for _ in range(300)]
    named = job(w, "0 0 1 1 *", excludeCalendars=["holidays"])
    a = Node(w, "a")
    a.catalogue.calendars["holidays"] = Calendar(name="holidays", weekdays=frozenset({0}))
    await run(w, 2)
    owned = a.ownership.owned
    assert all(owned[j].cold for j in [*plain, named.id]) and owned[named.id].calendars == ("holidays",)
    before = owned[named.id].timetable
    unpacked: list[bytes] = []
    real = ownership_mod.unpack_job

    def counting(packed: bytes) -> Job:
        unpacked.append(packed)
        return real(packed)

    ownership_mod.unpack_job = counting  # type: ignore[assignment]
    try:
        a.catalogue.calendars["holidays"] = Calendar(name="holidays", weekdays=frozenset({0, 6}), version=2)
        a.catalogue.calendars_seen += 1
        await a.ownership.reconcile()
    finally:
        ownership_mod.unpack_job = real  # type: ignore[assignment]
    assert len(unpacked) == 1  # the one job that names the calendar
    assert owned[named.id].timetable is not before and owned[named.id].timetable.calendars[0].weekdays == {0, 6}
    assert all(owned[j].cold for j in [*plain, named.id])


async def test_a_calendar_edit_reaches_the_claims_before_any_ownership_pass() -> None:
    """The claim cycle plans a job that names a calendar with the calendars as the node last read them, not as
    the last ownership pass saw them: a pass taking 25,000 jobs over takes seconds, and the nemesis with 100,000
    jobs loaded saw ticks the calendar excluded sent up to 10 s after the edit's reply (a pass rebuilt them)."""
    from node.model.calendars import Calendar

    w = World()
    j = job(w, excludeCalendars=["quiet"])
    w.quick.add(j.id)
    a = Node(w, "a")
    a.catalogue.calendars["quiet"] = Calendar(name="quiet")
    await run(w, 2)
    assert sent_ticks(w, j.id), "the job fires before the edit"
    edited = w.clock.dt()
    local = edited.replace(tzinfo=None)
    a.catalogue.calendars["quiet"] = Calendar(name="quiet", ranges=((local, local + timedelta(minutes=1)),), version=2)
    a.catalogue.calendars_seen += 1
    for _ in range(16):  # 4 s of claims and sends, and no ownership pass
        w.clock.now += 0.25
        await a.scheduler.step(w.clock.now)
        w.clock.fire_due()
        await settle()
    late = [t for t in sent_ticks(w, j.id) if t > edited + timedelta(seconds=CLAIM_AHEAD + 0.25)]
    assert not late, f"sent inside the calendar's new range: {late}"


async def test_a_new_definition_that_cannot_be_loaded_leaves_the_job_firing_as_it_was() -> None:
    """A reload that raises (a definition this release cannot read) must not hold the job back for good: the claim
    cycle waits for a newer definition's reload, and the version that failed is not waited for (found by review:
    the job sent nothing after a name-only edit whose read raised)."""
    w = World()
    j = job(w)
    w.quick.add(j.id)
    a = Node(w, "a")
    await run(w, 2)
    get_many = w.store.get_many

    async def unreadable(job_ids: Any) -> Any:
        raise ValueError("a definition this release cannot read")

    w.store.get_many = unreadable  # type: ignore[method-assign]
    w.store.edit(j.id, schedule_changed=False, name="renamed")
    edited = w.clock.dt()
    await run(w, 3)
    assert a.ownership.owned[j.id].version == 1
    sent = [t for t in sent_ticks(w, j.id) if t > edited + timedelta(seconds=1)]
    assert len(sent) >= 2, sent
    w.store.get_many = get_many  # type: ignore[method-assign]
    w.store.edit(j.id, schedule_changed=False, name="again")
    await run(w, 2)
    assert a.ownership.owned[j.id].version == 3


async def test_an_edit_before_the_owners_first_write_is_reloaded_not_taken_for_a_lost_fence() -> None:
    """Fences are epochs written with the owner's first write (store/executions.write_fences): a job edited before
    its owner claimed anything has a lower fence in the store than its owner's epoch. That is not a fence that
    moved on (only a higher one is): the owner reloads it, keeps it, and its first claim writes the epoch."""
    w = World()
    j = job(w, "0 0 1 1 *")  # (yearly: nothing is claimed for a long while)
    a = Node(w, "a")
    await run(w, 2)
    o = a.ownership.owned[j.id]
    assert w.store.jobs[j.id].fence == 0 < o.fence  # taken over, nothing written
    w.store.edit(j.id, schedule="* * * * * *")
    w.quick.add(j.id)
    await run(w, 3)
    assert a.ownership.owned[j.id] is o and o.version == 2
    assert sent_ticks(w, j.id) and w.store.jobs[j.id].fence == o.fence  # its first claim wrote the epoch
    assert all(e.fence == o.fence for e in w.store.executions(j.id))


async def test_a_reloads_gap_accounts_for_the_instants_a_calendar_excluded_whatever_the_calendar_becomes() -> None:
    """The gap a reload records (instants due before an edit took force, not claimed) has a row for every instant,
    those a calendar excluded too: left without one, an instant is judged by the calendars as they are when the
    ledger is read, and once the calendar moved on it was unaccounted (the soak at 100,000 jobs: a delete's gap)."""
    from node.model.calendars import Calendar

    w = World()
    j = job(w, excludeCalendars=["quiet"])
    w.quick.add(j.id)
    a = Node(w, "a")
    await run(w, 2)
    local = w.clock.dt().replace(tzinfo=None)
    a.catalogue.calendars["quiet"] = Calendar(name="quiet", version=1,
                                              ranges=((local + timedelta(seconds=2), local + timedelta(seconds=4)),))
    a.catalogue.calendars_seen += 1
    claim, away = w.store.claim, [True]

    async def failing(node: str, claims: Any, live: Any = None) -> Any:
        if away[0]:
            raise StoreUnavailable("MariaDB away")
        return await claim(node, claims, live)

    start = w.clock.dt()
    w.store.claim = failing  # type: ignore[method-assign]
    await run(w, 6)
    w.store.edit(j.id, schedule="*/2 * * * * *")
    edited = w.clock.dt()
    away[0] = False
    await run(w, 3)
    fates = ledger_fates(w, j.id, start + timedelta(seconds=1), edited)  # (the ledger reads no calendar: moved on)
    assert fates and Fate.UNACCOUNTED not in fates.values(), fates


async def test_a_reloads_gap_is_recorded_when_a_calendar_excluded_every_instant_in_it() -> None:
    """As above, but the calendar excludes every instant of the gap: the reload asked the held timetable (calendars
    applied) whether the gap had instants, found none, and moved its anchor to the edit; the instants had no row
    (the 20-minute soak at 100,000 jobs, seed 20261208: a job created just before a MariaDB cut, under a calendar
    excluding the whole day, then edited)."""
    from node.model.calendars import Calendar

    w = World()
    j = job(w, excludeCalendars=["quiet"])
    w.quick.add(j.id)
    a = Node(w, "a")
    await run(w, 2)
    local = w.clock.dt().replace(tzinfo=None)
    a.catalogue.calendars["quiet"] = Calendar(name="quiet", version=1,
                                              ranges=((local, local + timedelta(seconds=60)),))
    a.catalogue.calendars_seen += 1
    claim, away = w.store.claim, [True]

    async def failing(node: str, claims: Any, live: Any = None) -> Any:
        if away[0]:
            raise StoreUnavailable("MariaDB away")
        return await claim(node, claims, live)

    start = w.clock.dt()
    w.store.claim = failing  # type: ignore[method-assign]
    await run(w, 6)
    w.store.edit(j.id, schedule="*/2 * * * * *")
    edited = w.clock.dt()
    away[0] = False
    await run(w, 3)
    fates = ledger_fates(w, j.id, start + timedelta(seconds=1), edited)
    assert fates and Fate.UNACCOUNTED not in fates.values(), fates


async def test_a_definition_the_owner_never_loaded_has_its_instants_in_the_gap() -> None:
    """A yearly job edited to every second, then edited again, while its owner could read nothing: the every-second
    definition's instants are recorded missed though the definition the owner held had none in the gap (found by
    review: left unaccounted)."""
    w = World()
    j = job(w, "0 0 1 1 *")
    a = Node(w, "a")
    await run(w, 2)
    get_many, away = w.store.get_many, [True]

    async def failing_get(job_ids: Any) -> Any:
        if away[0]:
            raise StoreUnavailable("MariaDB away")
        return await get_many(job_ids)

    w.store.get_many = failing_get  # type: ignore[method-assign]
    w.store.edit(j.id, schedule="* * * * * *")
    every_second = w.clock.dt()
    await run(w, 4)
    w.store.edit(j.id, schedule="0 0 1 1 *")
    again = w.clock.dt()
    away[0] = False
    await run(w, 2)
    assert a.ownership.owned[j.id].version == 3
    fates = ledger_fates(w, j.id, every_second + timedelta(seconds=1), again)
    assert fates and Fate.UNACCOUNTED not in fates.values() and Fate.MISSED in fates.values(), fates


async def test_a_takeover_with_a_gap_records_the_instants_nobody_claimed() -> None:
    w = World()
    j = job(w, "*/2 * * * * *")
    w.quick.add(j.id)
    a = Node(w, "a")
    await run(w, 3)
    a.kill()  # its job's ticks go unclaimed ...
    died = w.clock.dt()
    await asyncio.sleep(0)
    w.clock.now += 10
    w.store.edit(j.id, schedule="* * * * * *")  # ... and the job is edited before anyone takes it over
    edited = w.clock.dt()
    w.clock.now += 4
    Node(w, "b")
    await run(w, 3)
    fates = ledger_fates(w, j.id, died, edited)
    assert fates and set(fates.values()) == {Fate.MISSED}, fates  # due under the old definition, not run
    gap = [e for e in w.store.executions(j.id) if e.kind == ExecutionKind.MISFIRE and e.scheduled_at <= edited]
    assert gap and all("owner was lost" in (e.error or "") for e in gap)
    after = ledger_fates(w, j.id, edited + timedelta(seconds=1), w.clock.dt() - timedelta(seconds=1))
    assert Fate.UNACCOUNTED not in after.values() and Fate.DELIVERED in after.values()


async def test_a_takeovers_gap_is_recorded_at_once_when_the_new_schedule_is_months_away() -> None:
    """The gap's rows are written by the next claim: a takeover woke the job at its next instant, so a job edited
    to a leap-day schedule while its owner was lost left the gap unaccounted until 29 February (the 30-minute
    soak at 100,000 jobs: 15 instants of an every-second job edited to ``0 */12 29 2 *``)."""
    w = World()
    j = job(w, "* * * * * *")
    w.quick.add(j.id)
    a = Node(w, "a")
    await run(w, 3)
    a.kill()
    died = w.clock.dt()
    await asyncio.sleep(0)
    w.clock.now += 10
    w.store.edit(j.id, schedule="0 */12 29 2 *")
    edited = w.clock.dt()
    w.clock.now += 2
    Node(w, "b")
    await run(w, 2)
    assert owner(w, j.id) == "b"
    fates = ledger_fates(w, j.id, died + timedelta(seconds=1), edited)
    assert fates and set(fates.values()) == {Fate.MISSED}, fates


async def test_a_claim_refused_by_a_pause_that_came_while_it_was_held_up_records_its_instant_missed() -> None:
    """A claim held up (MariaDB away) past its instant, then refused because the job was paused meanwhile: the
    instant was due before the pause, so it gets a missed row, not "unaccounted" forever (the job, paused, is
    never taken over again to record the gap)."""
    w = World()
    j = job(w)
    w.quick.add(j.id)
    Node(w, "a")
    start = w.clock.dt()
    await run(w, 3)
    claim, held = w.store.claim, []

    async def held_up_then_paused(node: str, claims: Any, live: Any = None) -> Any:
        if not held:
            held.extend(claims)
            w.clock.now += 1.5  # the statement waited for MariaDB past its instants ...
            w.store.edit(j.id, schedule_changed=False, paused=True)  # ... and the job was paused meanwhile
        return await claim(node, claims, live)

    w.store.claim = held_up_then_paused  # type: ignore[method-assign]
    await run(w, 3)
    assert held and all(c.scheduled_at < w.store.history[j.id][-1]["valid_from"] for c in held)
    fates = ledger_fates(w, j.id, start, w.clock.dt() - timedelta(seconds=1))
    assert all(fates[c.scheduled_at] is Fate.MISSED for c in held), fates
    assert any(e.error == PAUSED_WHILE_LOST for e in w.store.executions(j.id))
    assert Fate.UNACCOUNTED not in fates.values() and Fate.PAUSED in fates.values(), fates


async def test_a_job_paused_while_its_owners_claims_failed_has_the_gap_before_the_pause_recorded() -> None:
    """Its owner's claims fail (MariaDB away) while its instants come due; the job is paused before they succeed.
    The owner learns of the pause and lets the job go without claiming again: the instants due before the pause
    are recorded as missed once it has gone."""
    w = World()
    j = job(w)
    w.quick.add(j.id)
    Node(w, "a")
    start = w.clock.dt()
    await run(w, 3)
    claim, away = w.store.claim, [True]

    async def failing(node: str, claims: Any, live: Any = None) -> Any:
        if away[0]:
            raise StoreUnavailable("MariaDB away")
        return await claim(node, claims, live)

    w.store.claim = failing  # type: ignore[method-assign]
    await run(w, 3)
    w.store.edit(j.id, schedule_changed=False, paused=True)
    away[0] = False
    await run(w, 3)
    fates = ledger_fates(w, j.id, start, w.clock.dt() - timedelta(seconds=1))
    assert Fate.UNACCOUNTED not in fates.values() and Fate.MISSED in fates.values() and Fate.PAUSED in fates.values(), fates


@pytest.mark.parametrize("seen", ["pause and resume", "only the resume"])
async def test_a_job_paused_and_resumed_while_its_owner_kept_it_and_its_claims_failed_accounts_for_every_instant(
        seen: str) -> None:
    """Its owner's claims fail while its instants come due; the job is paused and resumed meanwhile, and the owner
    keeps it throughout (its reload saw the pause, or saw only the resume). Once the claims succeed, the instants due
    before the pause are recorded missed, those within it paused (never missed), and none is left unaccounted: the
    reload computes the gap from the job's history, not from the definition it held (which crossed the pause, or,
    holding the pause, recorded nothing)."""
    w = World()
    j = job(w)
    w.quick.add(j.id)
    a = Node(w, "a")
    start = w.clock.dt()
    await run(w, 3)
    claim, away = w.store.claim, [True]

    async def failing(node: str, claims: Any, live: Any = None) -> Any:
        if away[0]:
            raise StoreUnavailable("MariaDB away")
        return await claim(node, claims, live)

    w.store.claim = failing  # type: ignore[method-assign]
    await run(w, 2)
    paused_at = w.store.edit(j.id, schedule_changed=False, paused=True).updated_at
    assert paused_at is not None
    if seen == "pause and resume":  # the reload sees the pause; the release never starts (one pass, no more)
        a.catalogue.sync(w.store.summaries())
        await a.ownership._reload_changed()
        await settle()
        assert a.ownership.owned[j.id].job.paused
    w.clock.now += 2.0
    resumed_at = w.store.edit(j.id, schedule_changed=True, paused=False).updated_at
    assert resumed_at is not None
    away[0] = False
    await run(w, 3)
    assert j.id in a.ownership.owned and not a.ownership.owned[j.id].releasing
    fates = ledger_fates(w, j.id, start, w.clock.dt() - timedelta(seconds=1))
    assert Fate.UNACCOUNTED not in fates.values(), fates
    assert {f for t, f in fates.items() if paused_at < t <= resumed_at} == {Fate.PAUSED}, fates
    assert Fate.MISSED in {f for t, f in fates.items() if t <= paused_at}, fates


async def test_a_job_paused_while_its_owner_was_lost_has_the_gap_before_the_pause_recorded() -> None:
    """Its owner dies, and the job is paused before a successor takes it over: nobody will ever take a paused job
    over to record the instants in between, so the successor, as the job's ring owner, records them as missed."""
    w = World()
    j = job(w)
    w.quick.add(j.id)
    Node(w, "a")
    Node(w, "b")
    start = w.clock.dt()
    await run(w, 3)
    lost = w.nodes[owner(w, j.id) or ""]
    lost.kill()
    died = w.clock.dt()
    w.clock.now += 5  # (no pass meanwhile: the successor is slow to take over) ...
    w.store.edit(j.id, schedule_changed=False, paused=True)  # ... and the job is paused first
    paused = w.clock.dt()
    await run(w, 3)
    gap = [e for e in w.store.executions(j.id) if e.error == PAUSED_WHILE_LOST]
    assert gap and min(e.missed_from or e.scheduled_at for e in gap) <= died + timedelta(seconds=1)
    assert max(e.scheduled_at for e in gap) <= paused  # (an instant at the pause itself was due: start < t <= end)
    fates = ledger_fates(w, j.id, start, w.clock.dt() - timedelta(seconds=1))
    assert Fate.UNACCOUNTED not in fates.values() and Fate.PAUSED in fates.values(), fates


async def test_a_job_deleted_while_its_owner_was_lost_has_the_gap_before_the_delete_recorded() -> None:
    """As for a pause: its owner dies and the job is deleted before a successor takes it over. The node that took
    the delete records the gap once, which a MariaDB cut can defeat (the 30-minute soak at scale: seven instants
    unaccounted); the job's ring owner records it as missed, retried until written."""
    w = World()
    j = job(w)
    w.quick.add(j.id)
    Node(w, "a")
    Node(w, "b")
    start = w.clock.dt()
    await run(w, 3)
    lost = w.nodes[owner(w, j.id) or ""]
    lost.kill()
    died = w.clock.dt()
    w.clock.now += 5  # (no pass meanwhile: the successor is slow to take over) ...
    w.store.delete(j.id)  # ... and the job is deleted first (its API node's own record of the gap failed)
    deleted = w.clock.dt()
    await run(w, 3)
    gap = [e for e in w.store.executions(j.id) if e.error == DELETED_WHILE_LOST]
    assert gap and min(e.missed_from or e.scheduled_at for e in gap) <= died + timedelta(seconds=1)
    assert max(e.scheduled_at for e in gap) <= deleted
    fates = ledger_fates(w, j.id, start, deleted)
    assert Fate.UNACCOUNTED not in fates.values(), fates


async def test_at_least_once_redelivers_a_lost_claimers_execution_as_itself() -> None:
    w = World()
    j = job(w, delivery="at_least_once")
    a = Node(w, "a")
    await run(w, 1.5)
    (first,) = [r for r in w.in_flight() if r.node == "a"][:1]
    a.kill()
    b = Node(w, "b")
    w.quick.add(j.id)
    await run(w, 2)
    again = [r for r in w.requests if r.execution == first.execution]
    assert [r.node for r in again] == ["a", "b"]  # the same execution, sent again by the new owner
    assert w.store.rows[first.execution].state == ExecutionState.SUCCEEDED and w.store.rows[first.execution].redelivered
    assert b.scheduler.owned and all(len(ids) == 1 for ids in sent_ticks(w, j.id).values())


async def _moving_job(w: World, names: list[str], joiner: str, **fields: Any) -> Job:
    """A job whose owner changes when ``joiner`` joins ``names``."""
    while True:
        j = job(w, **fields)
        if Ring(names).owner(j.id) != Ring([*names, joiner]).owner(j.id):
            return j
        w.store.delete(j.id)


@pytest.mark.parametrize("policy", ["allow", "forbid"])
async def test_a_hand_over_does_not_wait_for_a_slow_run(policy: str) -> None:
    w = World()
    j = await _moving_job(w, ["a", "b"], "c", concurrencyPolicy=policy)
    Node(w, "a"), Node(w, "b")
    await run(w, 1.5)
    old = owner(w, j.id)
    (slow,) = [r for r in w.in_flight() if r.job == j.id]  # one run in flight (forbid skips the later ticks)
    Node(w, "c")
    joined = w.clock.dt()
    await run(w, 4)
    assert owner(w, j.id) == "c" and slow.node == old and not slow.done.done()
    rows = w.store.executions(j.id)
    held = w.store.rows[slow.execution]
    assert held.state == ExecutionState.RUNNING and held.fence < w.store.jobs[j.id].fence  # left to its claimer
    later = [r for r in w.requests if r.job == j.id and r.scheduled_at > joined + timedelta(seconds=1)]
    if policy == "allow":
        # every instant after the hand-over sent once, on time, by the new owner: the slow run costs nothing
        due = {joined.replace(microsecond=0) + timedelta(seconds=k) for k in range(2, 4)}
        assert {r.node for r in later} == {"c"} and due <= {r.scheduled_at for r in later}
    else:
        assert not later  # the new owner sees the old run in flight ...
        skipped = [e for e in rows if e.kind == ExecutionKind.OVERLAP and e.node == "c"]
        assert skipped and all("in flight" in (e.error or "") for e in skipped)  # ... and records its ticks skipped
    slow.done.set_result(200)
    await run(w, 2)
    assert w.store.rows[slow.execution].state == ExecutionState.SUCCEEDED  # its outcome, under its old fence
    if policy == "forbid":
        assert [r for r in w.requests if r.job == j.id and r.node == "c"]  # the new owner sends once it has ended


# ---------------------------------------------------------------------- the stateful test


class ClaimPath(RuleBasedStateMachine):
    """Random joins, graceful leaves, kills, edits, slow and quick requests and time, on real schedulers."""

    def __init__(self) -> None:
        super().__init__()
        self.w = World()
        self.loop = asyncio.new_event_loop()
        self.names = (f"n{i}" for i in itertools.count())
        self.start = self.w.clock.dt()

    def teardown(self) -> None:
        for r in self.w.in_flight():
            r.done.cancel()
        for n in list(self.w.nodes.values()):
            for t in n.tasks.running():
                t.cancel()
        self.loop.run_until_complete(settle())
        self.loop.close()

    def go(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize(kinds=st.lists(st.sampled_from(["allow", "forbid", "once"]), min_size=2, max_size=4))
    def setup(self, kinds: list[str]) -> None:
        async def make() -> None:
            for k in kinds:
                fields = {"concurrencyPolicy": "forbid"} if k == "forbid" else {}
                if k == "once":
                    fields["delivery"] = "at_least_once"
                job(self.w, "*/2 * * * * *", **fields)
            Node(self.w, next(self.names))
            Node(self.w, next(self.names))

        self.go(make())

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0]))
    def time_passes(self, seconds: float) -> None:
        self.go(run(self.w, seconds, 0.5))

    @precondition(lambda self: len(self.w.nodes) < 4)
    @rule()
    def join(self) -> None:
        async def go() -> None:
            Node(self.w, next(self.names))
            await turn(self.w, 0.5)

        self.go(go())

    @precondition(lambda self: len(self.w.nodes) > 1)
    @rule(data=st.data())
    def leave_gracefully(self, data: st.DataObject) -> None:
        """As a SIGTERM does: out of the ring (its jobs are released, runs in flight stay with it), out of the
        member set, its claimer live while those runs drain (cluster.membership.Membership.leave)."""
        name = data.draw(st.sampled_from(sorted(self.w.nodes)))

        async def go() -> None:
            self.w.ring_members.discard(name)
            for _ in range(4):
                await turn(self.w, 0.5)
            node = self.w.nodes.get(name)
            if node is not None and not node.ownership.owned and not node.ownership.held:
                await node.outcomes.recorder.flush(everything=True)
                self.w.members.pop(name, None)
                del self.w.nodes[name]
                self.w.draining[name] = node

        self.go(go())

    @precondition(lambda self: len(self.w.nodes) > 1)
    @rule(data=st.data())
    def kill(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.w.nodes)))
        self.w.nodes[name].kill()
        self.go(settle())

    @precondition(lambda self: bool(self.w.in_flight()))
    @rule(data=st.data(), status=st.sampled_from([200, 200, 500]))
    def a_request_ends(self, data: st.DataObject, status: int) -> None:
        req = data.draw(st.sampled_from(self.w.in_flight()))
        req.done.set_result(status)
        self.go(settle())

    @rule(data=st.data())
    def target_speed(self, data: st.DataObject) -> None:
        j = data.draw(st.sampled_from(sorted(self.w.store.jobs)))
        self.w.quick.symmetric_difference_update({j})

    @rule(data=st.data(), schedule=st.sampled_from(["*/2 * * * * *", "* * * * * *", "*/3 * * * * *"]))
    def edit(self, data: st.DataObject, schedule: str) -> None:
        j = data.draw(st.sampled_from(sorted(self.w.store.jobs)))
        self.w.store.edit(j, schedule=schedule)

    @invariant()
    def no_instant_is_sent_twice(self) -> None:
        for j in self.w.store.jobs:
            for t, ids in sent_ticks(self.w, j).items():
                assert len(ids) == 1, (j, t, ids)  # (an at_least_once redelivery is the same id)

    @invariant()
    def a_forbid_job_has_one_request_in_flight_at_most(self) -> None:
        for j, spec in self.w.store.jobs.items():
            if spec.concurrency_policy == "forbid":
                flying = [r for r in self.w.in_flight() if r.job == j]
                assert len(flying) <= 1, flying

    @invariant()
    def one_execution_per_instant(self) -> None:
        seen: set[tuple[str, datetime]] = set()
        for e in self.w.store.rows.values():
            key = (e.job_id, e.scheduled_at)
            assert key not in seen
            seen.add(key)

    @rule()
    def everything_settles(self) -> None:
        """Requests end, the cluster runs on: every instant since the start has its fate."""
        async def go() -> None:
            for _ in range(3):
                end_all(self.w)
                await run(self.w, 2, 0.5)
            end_all(self.w)
            await run(self.w, 7, 0.5)
            end_all(self.w)
            await run(self.w, 1, 0.5)

        self.go(go())
        end = self.w.clock.dt() - SETTLE
        for j in self.w.store.jobs:
            fates = ledger_fates(self.w, j, self.start, end)
            bad = {t: f for t, f in fates.items() if f in (Fate.UNACCOUNTED, Fate.RUNNING)}
            assert not bad, (j, sorted(bad.items())[:5], [e for e in self.w.store.executions(j) if e.state in OPEN_STATES])


TestClaimPath = ClaimPath.TestCase
TestClaimPath.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


async def test_a_node_that_stopped_keeps_its_runs_in_flight_its_own() -> None:
    """Found by the stateful test: a stopping node leaves the member set before its last runs end. Its
    claimer stays live while they drain, so the new owner of its forbid job skips meanwhile (and settles
    nothing as an orphan); once it is gone for good, what is still open is a lost claimer's."""
    w = World()
    j = job(w, concurrencyPolicy="forbid")
    a, b = Node(w, "a"), Node(w, "b")
    await run(w, 1.5)
    leaving = w.nodes[owner(w, j.id) or "a"]
    (slow,) = [r for r in w.in_flight() if r.job == j.id]
    w.ring_members.discard(leaving.name)  # SIGTERM: out of the ring, its jobs released ...
    await run(w, 1)
    w.members.pop(leaving.name)  # ... out of the member set, draining
    del w.nodes[leaving.name]
    w.draining[leaving.name] = leaving
    await run(w, 3)
    stayed = b if leaving is a else a
    assert owner(w, j.id) == stayed.name and not slow.done.done()
    assert not [r for r in w.requests if r.job == j.id and r.node == stayed.name]  # skipped while in flight
    assert w.store.rows[slow.execution].state == ExecutionState.RUNNING
    slow.done.set_result(200)
    await run(w, 2)
    assert w.store.rows[slow.execution].state == ExecutionState.SUCCEEDED and leaving.name not in w.draining
    assert [r for r in w.requests if r.job == j.id and r.node == stayed.name]


@pytest.mark.parametrize(("error", "cap"), [(StoreUnavailable("cut"), 0.5), (RuntimeError("redis"), 2.0)])
async def test_the_reconcile_loop_retries_within_half_a_second_while_mariadb_is_away(
        monkeypatch: pytest.MonkeyPatch, error: Exception, cap: float) -> None:
    """Failed passes back off, never a hot loop; with MariaDB away at most 0.5 s, so the edits it could not read
    reach their owner within half a second of its return (other failures: up to 2 s)."""
    w = World()
    a = Node(w, "a")
    passes, pauses = [0], []
    real_sleep = asyncio.sleep

    async def failing() -> None:
        passes[0] += 1
        a.ownership.wake.set()  # (the loop's wait returns at once: only the back-off is measured)
        if passes[0] > 10:
            raise asyncio.CancelledError
        raise error

    async def recorded(delay: float, *args: Any) -> Any:
        pauses.append(delay)
        return await real_sleep(0)

    monkeypatch.setattr(a.ownership, "reconcile", failing)
    monkeypatch.setattr(asyncio, "sleep", recorded)
    with pytest.raises(asyncio.CancelledError):
        await a.scheduler.run_reconcile()
    backoffs = [p for p in pauses if p > 0]
    assert len(backoffs) >= 9 and max(backoffs) == cap and backoffs == sorted(backoffs), backoffs


async def test_a_paused_job_whose_history_cannot_be_read_does_not_stop_the_others_gaps() -> None:
    """Two jobs paused while their owner was lost; one's history holds a definition this release cannot read: its
    gap is left (and said in the log), the other's is recorded, and the pass goes on."""
    w = World()
    bad, good = job(w), job(w)
    w.quick.update({bad.id, good.id})
    Node(w, "a")
    Node(w, "b")
    await run(w, 3)
    for name in {owner(w, bad.id), owner(w, good.id)}:
        w.nodes[name or ""].kill()
    w.clock.now += 5
    for j in (bad, good):
        w.store.edit(j.id, schedule_changed=False, paused=True)
    for h in w.store.history[bad.id]:
        h["spec"] = json.dumps({**json.loads(h["spec"]), "dst_policy": {"gap": "bogus", "overlap": "first"}})
    if not w.nodes:
        Node(w, "c")
    await run(w, 3)
    assert any(e.error == PAUSED_WHILE_LOST for e in w.store.executions(good.id))
    assert not any(e.error == PAUSED_WHILE_LOST for e in w.store.executions(bad.id))


async def test_a_definition_that_cannot_be_read_is_dropped_and_the_jobs_due_with_it_still_fire() -> None:
    """A packed definition is made into a Job only when due: one this release cannot read (a value a newer release
    wrote) drops that job alone; the others due in the same cycle are claimed and sent."""
    w = World()
    bad, good = job(w), job(w)
    w.quick.update({bad.id, good.id})
    a = Node(w, "a")
    await run(w, 2)
    a.ownership.owned[bad.id].definition = b"\x00 not a packed job"
    before = len(sent_ticks(w, good.id))
    await run(w, 3)
    assert len(sent_ticks(w, good.id)) >= before + 2
