"""Ownership as a state machine, against in-memory fakes of Redis locks, MariaDB fences and membership.

A hypothesis stateful test drives several nodes through random interleavings of joins, graceful leaves,
lapses, lock/release/takeover failures, edits, pauses, deletes and passes, and checks after every step:

* at most one node with a fresh lease owns a job (the lock rule makes a second owner impossible);
* after a pass that met no failure, the node holds no lock for a job it does not own;
* once faults stop, a few passes settle every active job on its ring owner (nothing stuck, no lock kept
  by a node that no longer wants it — the "Redis stall during a scale-up" bug);
* the definition an owner fires is the catalogue's latest (an edit in the same pass as a ring change
  reaches the owner).

The fakes are the Protocols of ``node/ownership.py``; the real Redis/MariaDB implementations are
exercised by the integration and fault suites.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from node.cluster.catalogue import Catalogue
from node.cluster.messages import JobEvent
from node.cluster.ring import Ring, covers, merge, point
from node.model.errors import StoreUnavailable
from node.model.executions import Liveness, Takeover
from node.model.jobs import Job, JobSummary
from node.scheduling import ownership as ownership_module
from node.scheduling.ownership import JobState, Owned, Ownership, SharedInstants

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Fault(Exception):
    pass


class World:
    """Shared state: Redis locks and members, MariaDB jobs and fences."""

    def __init__(self) -> None:
        self.members: set[str] = set()
        self.locks: dict[str, str] = {}
        self.jobs: dict[str, Job] = {}
        self.deleted: set[str] = set()
        self.fail: dict[tuple[str, str], int] = {}  # (node, op) -> failures to inject
        self.release2 = False  # a release-2 node in the ring (handover_ok false)
        self.eager: list[bool] = []  # each take_over: were its fences written at once
        self.reseeds = 0

    def maybe_fail(self, node: str, op: str, *, after: bool = False) -> None:
        n = self.fail.get((node, op), 0)
        if n:
            self.fail[(node, op)] = n - 1
            raise (StoreUnavailable if op in ("take_over", "get_jobs") else Fault)(f"{op} failed")


class FakeLocks:
    def __init__(self, world: World, node: str) -> None:
        self.w, self.node = world, node

    async def acquire(self, job_ids: Sequence[str]) -> list[str]:
        got = []
        for j in job_ids:
            holder = self.w.locks.get(j)
            if holder is None or holder == self.node or holder not in self.w.members:
                self.w.locks[j] = self.node
                got.append(j)
        # a reply lost after the script ran: the locks are taken, the caller sees an error
        self.w.maybe_fail(self.node, "acquire")
        return got

    async def set_fences(self, fences: dict[str, int]) -> None:
        self.w.maybe_fail(self.node, "set_fences")

    async def release(self, job_ids: Sequence[str]) -> int:
        self.w.maybe_fail(self.node, "release")
        n = 0
        for j in job_ids:
            if self.w.locks.get(j) == self.node:
                del self.w.locks[j]
                n += 1
        return n

    async def holders(self, job_ids: Sequence[str]) -> dict[str, str | None]:
        return {j: self.w.locks.get(j) for j in job_ids}

    async def held_by_me(self) -> list[str]:
        self.w.maybe_fail(self.node, "scan")
        return [j for j, h in self.w.locks.items() if h == self.node]


class FakeStore:
    def __init__(self, world: World, node: str) -> None:
        self.w, self.node = world, node

    async def take_over(self, job_ids: Sequence[str], node: str, live: Liveness | None = None, *,
                        eager: bool = False) -> list[Takeover]:
        self.w.maybe_fail(self.node, "take_over")
        self.w.eager.append(eager)
        out = []
        for j in job_ids:
            if j in self.w.jobs and j not in self.w.deleted:
                job = self.w.jobs[j]
                job = Job(**{**_fields(job), "fence": job.fence + 1, "owner": node})
                self.w.jobs[j] = job
                out.append(Takeover(job=job, fence=job.fence, last_tick=None))
        return out

    async def reseed_epochs(self) -> None:
        self.w.reseeds += 1

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        self.w.maybe_fail(self.node, "get_jobs")
        return [self.w.jobs[j] for j in job_ids if j in self.w.jobs and j not in self.w.deleted]

    async def job_history(self, job_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        return {j: [] for j in job_ids}  # the gap filling itself is covered against MariaDB

    async def gap_anchors(self, job_ids: Sequence[str]) -> dict[str, tuple[int, datetime | None]]:
        return {}  # (a paused job's gap: covered by the claim path's tests and against MariaDB)

    async def refused(self, node: str, claims: Sequence[Any]) -> set[str]:
        return set()


def _fields(job: Job) -> dict[str, Any]:
    return {f: getattr(job, f) for f in job.__dataclass_fields__}


class FakeLease:
    def __init__(self, world: World, node: str) -> None:
        self.w, self.node = world, node
        self.is_fresh = True

    @property
    def ring(self) -> Ring:
        return Ring(self.w.members)

    @property
    def epoch(self) -> int:
        return len(self.w.members)

    @property
    def handover_ok(self) -> bool:
        return not self.w.release2

    def fresh(self) -> bool:
        return self.is_fresh and self.node in self.w.members


class FakeCatalogue:
    def __init__(self) -> None:
        self.jobs: dict[str, JobSummary] = {}
        self.changed_ids: set[str] = set()
        self.calendars: dict = {}
        self.calendars_seen = 0

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

    def apply(self, s: JobSummary) -> None:
        cur = self.jobs.get(s.id)
        if cur is None or cur.version < s.version:
            self.jobs[s.id] = s
            self.changed_ids.add(s.id)


class Hooks:
    def __init__(self) -> None:
        self.abandoned: list[str] = []

    def took(self, o: Owned, redeliver: tuple = (), buffered: tuple = ()) -> None:
        pass

    def reloaded(self, o: Owned) -> None:
        pass

    def abandon_pending(self, o: Owned, reason: str) -> None:
        self.abandoned.append(o.job.id)

    def handover(self, direction: str, job_ids: list[str]) -> None:
        pass

    def liveness(self) -> Liveness:
        return Liveness(claimer="fake")

    async def record_running(self, o: Owned) -> None:
        pass


class Node:
    def __init__(self, world: World, name: str) -> None:
        self.name = name
        self.catalogue = FakeCatalogue()
        self.lease = FakeLease(world, name)
        self.tasks: list[Any] = []
        store = FakeStore(world, name)
        self.own = Ownership(node_id=name, takeovers=store, definitions=store, history=store,
                             locks=FakeLocks(world, name), lease=self.lease, catalogue=self.catalogue, hooks=Hooks(),
                             member_ttl=3.0, tasks=self, clock=lambda: 0.0)

    def spawn(self, coro: Any) -> None:
        self.tasks.append(coro)

    async def settle_tasks(self) -> None:
        while self.tasks:
            tasks, self.tasks = self.tasks, []
            for t in tasks:
                await t


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class OwnershipMachine(RuleBasedStateMachine):
    node_class = Node

    def __init__(self) -> None:
        super().__init__()
        self.w = World()
        self.nodes: dict[str, Node] = {}
        self.n_nodes = 0
        self.n_jobs = 0

    def _publish(self, job: Job, *, deleted: bool = False) -> None:
        s = JobSummary(id=job.id, version=job.version, paused=job.paused, deleted=deleted)
        for n in self.nodes.values():
            n.catalogue.apply(s)

    @initialize(n=st.integers(1, 3), jobs=st.integers(1, 8))
    def setup(self, n: int, jobs: int) -> None:
        for _ in range(n):
            self.join()
        for _ in range(jobs):
            self.create()

    @rule()
    def create(self) -> None:
        self.n_jobs += 1
        job = Job(id=f"job{self.n_jobs:03d}", schedule="* * * * *", uri="http://x/", version=1,
                  active_since=T0)
        self.w.jobs[job.id] = job
        self._publish(job)

    @precondition(lambda self: len(self.nodes) < 5)
    @rule()
    def join(self) -> None:
        self.n_nodes += 1
        node = self.node_class(self.w, f"n{self.n_nodes}")
        if isinstance(node.catalogue, FakeCatalogue):  # (a real one reads its share when the ring gives it one)
            for j in self.w.jobs.values():
                node.catalogue.apply(JobSummary(id=j.id, version=j.version, paused=j.paused,
                                                deleted=j.id in self.w.deleted))
        self.nodes[node.name] = node
        self.w.members.add(node.name)

    def _pick(self, data: Any, pool: list[str]) -> str:
        return data.draw(st.sampled_from(sorted(pool)))

    @precondition(lambda self: len(self.nodes) > 1)
    @rule(data=st.data())
    def leave_gracefully(self, data: Any) -> None:
        node = self.nodes.pop(self._pick(data, list(self.nodes)))
        node.own.stopping = True
        try:
            run(node.own.release_all())
        except Fault:
            pass  # the lock stays; the node is gone from the member set, so peers may take it
        self.w.members.discard(node.name)

    @precondition(lambda self: len(self.nodes) > 0)
    @rule(data=st.data())
    def lapse(self, data: Any) -> None:
        """Paused or cut off past member_ttl: peers expire it; it drops everything and rejoins."""
        node = self.nodes[self._pick(data, list(self.nodes))]
        node.lease.is_fresh = False
        self.w.members.discard(node.name)

    @precondition(lambda self: any(not n.lease.is_fresh for n in self.nodes.values()))
    @rule(data=st.data())
    def rejoin_after_lapse(self, data: Any) -> None:
        node = self.nodes[self._pick(data, [k for k, n in self.nodes.items() if not n.lease.is_fresh])]
        node.own.drop_all("own heartbeat lapsed")
        node.lease.is_fresh = True
        self.w.members.add(node.name)

    @precondition(lambda self: len(self.nodes) > 0)
    @rule(data=st.data(), op=st.sampled_from(["acquire", "release", "take_over", "get_jobs", "set_fences", "scan"]),
          times=st.integers(1, 3))
    def inject_failure(self, data: Any, op: str, times: int) -> None:
        self.w.fail[(self._pick(data, list(self.nodes)), op)] = times

    def _live_jobs(self) -> list[str]:
        return [j for j in self.w.jobs if j not in self.w.deleted]

    @precondition(lambda self: any(j not in self.w.deleted for j in self.w.jobs))
    @rule(data=st.data(), what=st.sampled_from(["edit", "pause", "resume", "delete"]))
    def user_action(self, data: Any, what: str) -> None:
        j = self._pick(data, self._live_jobs())
        job = self.w.jobs[j]
        fields = _fields(job)
        fields["version"] = job.version + 1
        if what == "edit":
            fields["uri"] = f"http://x/v{job.version + 1}"
        elif what in ("pause", "resume"):
            fields["paused"] = what == "pause"
        job = Job(**fields)
        self.w.jobs[j] = job
        if what == "delete":
            self.w.deleted.add(j)
        self._publish(job, deleted=what == "delete")

    @precondition(lambda self: len(self.nodes) > 0)
    @rule(data=st.data())
    def reconcile_pass(self, data: Any) -> None:
        node = self.nodes[self._pick(data, list(self.nodes))]
        failures_before = sum(self.w.fail.values())

        async def one_pass() -> None:
            try:
                await node.own.reconcile()
            except (Fault, StoreUnavailable):
                return  # the real loop logs it and runs another pass
            await node.settle_tasks()

        run(one_pass())
        if sum(self.w.fail.values()) == failures_before and node.lease.fresh():
            # a pass that met no failure leaves no stray lock behind
            assert not node.own.stray_locks(), (node.name, node.own.stray_locks())

    @invariant()
    def at_most_one_fresh_owner(self) -> None:
        for j in self.w.jobs:
            owners = [n.name for n in self.nodes.values() if n.lease.fresh() and j in n.own.owned]
            assert len(owners) <= 1, (j, owners)

    @invariant()
    def an_owner_holds_the_lock(self) -> None:
        for n in self.nodes.values():
            if n.lease.fresh():
                for j in n.own.owned:
                    assert self.w.locks.get(j) == n.name, (j, n.name, self.w.locks.get(j))

    def teardown(self) -> None:
        """Faults stop; every node heals; a few passes settle every active job on its ring owner."""
        self.w.fail.clear()
        for n in self.nodes.values():
            if not n.lease.is_fresh:
                n.own.drop_all("own heartbeat lapsed")
                n.lease.is_fresh = True
                self.w.members.add(n.name)
        if not self.nodes:
            return

        async def passes() -> None:
            for _ in range(4):
                for n in self.nodes.values():
                    for o in list(n.own.owned.values()):
                        n.own.maybe_finish_release(o)  # in-flight work is done by now
                    await n.own.reconcile()
                    await n.settle_tasks()

        run(passes())
        ring = Ring(self.w.members)
        for j, job in self.w.jobs.items():
            holders = [n.name for n in self.nodes.values() if j in n.own.owned]
            if j in self.w.deleted or job.paused:
                assert not holders, (j, holders)
                # a lock left by a node that is gone is harmless (anyone may take it); a live one is not
                assert self.w.locks.get(j) not in self.w.members, (j, self.w.locks.get(j))
            else:
                assert holders == [ring.owner(j)], (j, holders, ring.owner(j))
                owned = self.nodes[holders[0]].own.owned[j]
                assert owned.job.version == job.version, (j, owned.job.version, job.version)
                assert self.nodes[holders[0]].own.state(j) is JobState.OWNED
        for n in self.nodes.values():
            assert not n.own.stray_locks() and not n.own.stuck


TestOwnership = OwnershipMachine.TestCase
TestOwnership.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


class _WorldFeed:
    """MariaDB's jobs table as the real catalogue reads it: a share's read includes its recent deletes."""

    def __init__(self, w: World) -> None:
        self.w = w

    async def changed_since(self, watermark: datetime | None, arcs: Sequence[Any] | None = None
                            ) -> tuple[list[JobSummary], datetime | None]:
        from node.cluster.ring import covers, merge, point
        return [JobSummary(id=j.id, version=j.version, paused=j.paused, deleted=j.id in self.w.deleted)
                for j in self.w.jobs.values() if (arcs is not None or j.id not in self.w.deleted)
                and (arcs is None or covers(merge(arcs), point(j.id)))], datetime.now(UTC)

    async def share_digest(self, arcs: Sequence[Any]) -> tuple[int, int, datetime | None]:
        return 0, 0, None


class ShareNode(Node):
    """A node whose catalogue is the real one, holding its share of the ring alone: the ownership then wants the
    catalogue's active jobs as a live view, no set of its own (issue 22, memory per owned job)."""

    def __init__(self, world: World, name: str) -> None:
        from node.cluster.catalogue import Catalogue
        super().__init__(world, name)
        self.catalogue = Catalogue(_WorldFeed(world), 5.0, node_id=name)  # type: ignore[assignment]
        self.own.catalogue = self.catalogue


class ShareOwnershipMachine(OwnershipMachine):
    """The same machine with every node holding only its share (events outside it are not held): what the ring
    gives a node, and what it releases as jobs pause, resume, delete and the ring moves, comes from the view."""

    node_class = ShareNode

    def _publish(self, job: Job, *, deleted: bool = False) -> None:
        from node.cluster.messages import JobEvent
        ev = JobEvent(op="deleted" if deleted else "updated", id=job.id, version=job.version, paused=job.paused)
        for n in self.nodes.values():
            n.catalogue.on_record(ev)


TestShareOwnership = ShareOwnershipMachine.TestCase
TestShareOwnership.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)


# ---- deterministic cases ----------------------------------------------------------------------


def _world(*names: str, jobs: int = 6) -> tuple[World, dict[str, Node]]:
    w = World()
    nodes = {}
    for name in names:
        nodes[name] = Node(w, name)
        w.members.add(name)
    for i in range(jobs):
        job = Job(id=f"job{i:03d}", schedule="* * * * *", uri="http://x/", version=1, active_since=T0)
        w.jobs[job.id] = job
        for n in nodes.values():
            n.catalogue.apply(JobSummary(id=job.id, version=1, paused=False, deleted=False))
    return w, nodes


async def _pass(*nodes: Node) -> None:
    for n in nodes:
        await n.own.reconcile()
        await n.settle_tasks()


async def test_an_edit_in_the_same_pass_as_a_ring_change_reaches_the_owner() -> None:
    w, nodes = _world("a", "b", jobs=12)
    await _pass(*nodes.values())
    a = nodes["a"]
    kept = next(j for j in a.own.owned if Ring(["a", "b", "c"]).owner(j) == "a")
    # in one pass: the ring changes (c joins) and the job is edited
    w.members.add("c")
    w.jobs[kept] = Job(**{**_fields(w.jobs[kept]), "uri": "http://x/v2", "version": 2})
    a.catalogue.apply(JobSummary(id=kept, version=2, paused=False, deleted=False))
    await _pass(a)
    assert a.own.owned[kept].job.uri == "http://x/v2"


async def test_a_ring_change_looks_at_every_owned_job_and_keeps_none_of_their_ids() -> None:
    """A ring change checks every owned job's version once; a set of all their ids kept its table once emptied
    (~40 bytes an owned job for good: the memory bench's 100,000 jobs)."""
    w, nodes = _world("a", jobs=3000)
    a = nodes["a"]
    await _pass(a)
    behind = next(j for j in sorted(a.own.owned) if Ring(["a", "b"]).owner(j) == "a")
    w.jobs[behind] = Job(**{**_fields(w.jobs[behind]), "uri": "http://x/v2", "version": 2})
    a.catalogue.jobs[behind] = JobSummary(id=behind, version=2, paused=False, deleted=False)  # (no change event)
    w.members.add("b")

    class Widest(set[str]):
        most = 0

        def add(self, j: str) -> None:
            super().add(j)
            Widest.most = max(Widest.most, len(self))

        def update(self, *more: Any) -> None:
            super().update(*more)
            Widest.most = max(Widest.most, len(self))

    a.own._stale = Widest()
    await _pass(a)
    assert Widest.most == 1  # only the job behind its catalogue version, never every owned id
    assert a.own.owned[behind].job.version == 2  # the look at every owned job found the one behind
    assert len(a.own.owned) > 1000
    await _pass(a)  # (the reload done, the next pass lets the job go from the stale set)
    assert not a.own._stale and sys.getsizeof(a.own._stale) == sys.getsizeof(set())


def test_shared_instants_give_one_object_for_equal_instants_and_never_another_value() -> None:
    shared = SharedInstants(size=3)

    def new(v: str) -> float:
        return float(v)  # (a new object each call: the equal literals of one function are one object)

    x = shared(new("1767225600.0"))
    assert shared(new("1767225600.0")) is x
    seen = [shared(new(v)) for v in ("1.5", "2.5", "3.5", "4.5", "1.5")]
    assert seen == [1.5, 2.5, 3.5, 4.5, 1.5]
    assert len(shared._kept) <= 3  # full: cleared (never more than its size), and sharing again among the new ones
    assert shared(new("4.5")) is seen[3] and shared(new("1.5")) is seen[4]


async def test_a_failed_release_is_retried_until_the_lock_is_gone() -> None:
    w, nodes = _world("a", jobs=8)
    a = nodes["a"]
    await _pass(a)
    assert len(a.own.owned) == 8
    w.members.add("b")
    b = Node(w, "b")
    for j in w.jobs:
        b.catalogue.apply(JobSummary(id=j, version=1, paused=False, deleted=False))
    w.fail[("a", "release")] = 2  # Redis stalls while a hands jobs to b
    for _ in range(4):
        await _pass(a, b)
    ring = Ring(["a", "b"])
    assert {j for j in w.jobs if ring.owner(j) == "b"} == set(b.own.owned)
    assert not a.own.stray_locks()


async def test_a_reload_that_fails_is_retried() -> None:
    w, nodes = _world("a", jobs=1)
    a = nodes["a"]
    await _pass(a)
    w.jobs["job000"] = Job(**{**_fields(w.jobs["job000"]), "uri": "http://x/v2", "version": 2})
    a.catalogue.apply(JobSummary(id="job000", version=2, paused=False, deleted=False))
    w.fail[("a", "get_jobs")] = 1
    await _pass(a)
    assert a.own.owned["job000"].job.version == 1
    await _pass(a)
    assert a.own.owned["job000"].job.version == 2


async def test_a_job_kept_by_a_live_peer_is_reported_with_its_holder() -> None:
    w, nodes = _world("a", "b", jobs=4)
    a, b = nodes["a"], nodes["b"]
    clock = [0.0]
    b.own.clock = lambda: clock[0]
    want = next(j for j in w.jobs if Ring(["a", "b"]).owner(j) == "b")
    w.locks[want] = "a"  # a predecessor of a (same node id, killed) kept it: a live holder, b may not take it
    await _pass(b)
    clock[0] = 10.0
    await _pass(b)
    assert b.own.stuck == {want: "a"}
    # a's next pass releases it (a stray: a does not own it), and b takes it
    await _pass(a)
    clock[0] = 11.0
    await _pass(b)
    assert want in b.own.owned and not b.own.stuck


def test_states_are_explicit() -> None:
    w, nodes = _world("a", jobs=1)
    a = nodes["a"]
    assert a.own.state("job000") is JobState.UNOWNED
    run(_pass(a))
    assert a.own.state("job000") is JobState.OWNED
    a.own.start_release("job000")  # nothing in flight: no longer owned, the lock held until the next pass
    assert "job000" not in a.own.owned and a.own.state("job000") is JobState.RELEASING
    run(_pass(a))  # the stray lock is released, and the ring (still a alone) gives the job back
    assert a.own.state("job000") is JobState.OWNED


async def test_a_release_is_cancelled_when_the_ring_gives_the_job_back() -> None:
    w, nodes = _world("a", jobs=6)
    a = nodes["a"]
    await _pass(a)
    moving = next(j for j in a.own.owned if Ring(["a", "b"]).owner(j) == "b")
    a.own.owned[moving].inflight = 1  # a run in flight: the release waits for it
    w.members.add("b")
    await _pass(a)
    assert a.own.state(moving) is JobState.RELEASING
    w.members.discard("b")  # b is gone again before the run ended
    await _pass(a)
    assert a.own.state(moving) is JobState.OWNED and w.locks[moving] == "a"


def test_a_tombstone_is_final() -> None:
    from node.cluster.catalogue import Catalogue

    c = Catalogue(feed=None, resync_interval=1.0)  # type: ignore[arg-type]
    c.apply(JobSummary(id="j", version=3, paused=False, deleted=False))
    c.apply(JobSummary(id="j", version=4, paused=False, deleted=True))
    c.apply(JobSummary(id="j", version=9, paused=False, deleted=False))  # a late or forged event
    assert c.jobs["j"].deleted and "j" not in c.active_ids()


async def test_a_takeovers_gap_rows_are_there_before_its_first_claim() -> None:
    """Owner lost at T0+10 s, job edited at T0+20 s, successor takes over: the old definition's
    instants in between are the Owned's first rows when the timer first sees it (found by the nemesis:
    the gap was read after the job was owned, a later tick was claimed meanwhile, the node died, and
    the next successor saw no gap). A history that cannot be read leaves the job unowned this pass."""
    w, nodes = _world("a", jobs=1)
    a = nodes["a"]
    edit = T0.replace(second=20)
    w.jobs["job000"] = Job(**{**_fields(w.jobs["job000"]), "schedule": "* * * * * *", "active_since": edit})
    history = [{"valid_from": T0, "schedule": "*/2 * * * * *", "time_zone": "UTC", "paused": 0, "deleted": 0,
                "version": 1},
               {"valid_from": edit, "schedule": "* * * * * *", "time_zone": "UTC", "paused": 0, "deleted": 0,
                "version": 2}]
    store = a.own.takeovers
    reads = {"fail": 1}

    async def take_over(job_ids: Sequence[str], node: str, live: Liveness | None = None, **kw: Any) -> list[Takeover]:
        return [Takeover(job=w.jobs[j], fence=2, last_tick=T0.replace(second=10)) for j in job_ids]

    async def job_history(job_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        if reads["fail"]:
            reads["fail"] -= 1
            raise StoreUnavailable("history read failed")
        return {j: history for j in job_ids}

    store.take_over, store.job_history = take_over, job_history  # type: ignore[method-assign]
    seen: list[list[Any]] = []
    a.own.hooks.took = lambda o, redeliver=(), buffered=(): seen.append(list(o.extra))  # type: ignore[method-assign]
    await _pass(a)
    assert "job000" not in a.own.owned and not seen  # the gap could not be read: not owned yet
    for _ in range(3):
        await _pass(a)
    assert "job000" in a.own.owned
    (gap,) = seen[0]
    # */2 instants in (T0+10, T0+20]: 12, 14, 16, 18, 20
    assert (gap.kind, gap.state, gap.missed_count) == ("misfire", "missed", 5)
    assert (gap.missed_from, gap.scheduled_at) == (T0.replace(second=12), edit)


def test_a_job_never_changed_since_its_creation_has_no_gap_to_read() -> None:
    """A million new jobs taken over read no history (version 1: the definition in force since creation);
    an edited one that never had a tick claimed still does."""
    from node.scheduling.ownership import _has_gap

    new = Job(id="j", schedule="0 0 1 1 *", uri="http://127.0.0.1:9/", version=1, active_since=T0)
    assert not _has_gap(Takeover(job=new, fence=1, last_tick=None))
    edited = Job(**{**_fields(new), "version": 2})
    assert _has_gap(Takeover(job=edited, fence=1, last_tick=None))
    assert _has_gap(Takeover(job=new, fence=2, last_tick=T0.replace(year=T0.year - 1)))


async def test_an_edit_during_a_long_takeover_is_reloaded_between_its_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node taking thousands of jobs over (seconds, in chunks) reloads an owned job edited meanwhile between two
    chunks, not once the pass ends: a skip answered at once must reach the owner before its instant."""
    monkeypatch.setattr(ownership_module, "TAKEOVER_JOBS", 4)
    w, nodes = _world("a", jobs=1)
    a = nodes["a"]
    await _pass(a)
    for i in range(1, 13):
        job = Job(id=f"job{i:03d}", schedule="* * * * *", uri="http://x/", version=1, active_since=T0)
        w.jobs[job.id] = job
        a.catalogue.apply(JobSummary(id=job.id, version=1, paused=False, deleted=False))
    store, reloads_under_way = a.own.takeovers, []
    take_over = store.take_over

    async def taking_over(job_ids: Sequence[str], node: str, live: Liveness | None = None, **kw: Any) -> list[Takeover]:
        if not reloads_under_way:  # the first chunk: the owned job is edited meanwhile
            w.jobs["job000"] = Job(**{**_fields(w.jobs["job000"]), "uri": "http://x/v2", "version": 2})
            a.catalogue.apply(JobSummary(id="job000", version=2, paused=False, deleted=False))
        reloads_under_way.append(len(a.tasks))
        return await take_over(job_ids, node, live, **kw)

    store.take_over = taking_over  # type: ignore[method-assign]
    await a.own.reconcile()
    assert len(reloads_under_way) == 3 and reloads_under_way[1:] == [1, 1]  # spawned after the first chunk
    await a.settle_tasks()
    assert a.own.owned["job000"].job.uri == "http://x/v2" and len(a.own.owned) == 13


@pytest.mark.parametrize("during", ["fetch", "own"])
async def test_a_lapse_during_a_takeover_leaves_nothing_it_fetched_owned(monkeypatch: pytest.MonkeyPatch,
                                                                         during: str) -> None:
    """A takeover awaits its fetches and yields between jobs. A lapse handled meanwhile (drop_all; the lease is
    fresh again under a new claimer id at once) voids everything the takeover fetched before it: nothing of it is
    owned, its locks are strays, and the next pass takes the jobs over anew."""
    monkeypatch.setattr(ownership_module, "TAKEOVER_JOBS", 4)
    monkeypatch.setattr(ownership_module, "OWN_BETWEEN_YIELDS", 2)
    w, nodes = _world("a", jobs=12)
    a = nodes["a"]
    store, calls = a.own.takeovers, []
    take_over, own = store.take_over, a.own._own

    async def taking_over(job_ids: Sequence[str], node: str, live: Liveness | None = None, **kw: Any) -> list[Takeover]:
        calls.append(list(job_ids))
        out = await take_over(job_ids, node, live, **kw)
        if during == "fetch" and len(calls) == 2:
            a.own.drop_all("own heartbeat lapsed")
        return out

    def owning(t: Takeover, gap: Any) -> None:
        own(t, gap)
        if during == "own" and len(a.own.owned) == 6:  # (the scheduler's loop: it runs when the takeover yields)
            asyncio.get_running_loop().call_soon(a.own.drop_all, "own heartbeat lapsed")

    store.take_over = taking_over  # type: ignore[method-assign]
    a.own._own = owning  # type: ignore[method-assign]
    await a.own.reconcile()
    assert a.own.owned == {} and a.lease.fresh() and len(calls) == 2
    a.own._own = own  # type: ignore[method-assign]
    await _pass(a)
    assert len(a.own.owned) == 12


async def test_with_a_release_2_node_in_the_ring_fences_are_written_at_the_takeover_and_reseeded_after() -> None:
    """Release 2 bumps a job's fence by one at each takeover and knows no epochs. While one is in the ring, every
    takeover writes its fences (eager); once it has gone, the epoch counter is moved past every fence before the
    next takeover that writes none."""
    w, nodes = _world("a", jobs=4)
    a = nodes["a"]
    w.release2 = True
    await _pass(a)
    assert w.eager == [True] and w.reseeds == 0
    w.release2 = False
    a.own.drop_all("own heartbeat lapsed")  # (anything to take over again)
    await _pass(a)
    assert w.eager == [True, False] and w.reseeds == 1
    a.own.drop_all("own heartbeat lapsed")
    await _pass(a)
    assert w.eager == [True, False, False] and w.reseeds == 1  # once


async def test_a_paused_jobs_gap_is_not_waited_for_while_owned_and_is_forgotten_once_resumed() -> None:
    """The gaps of paused jobs are recorded once nobody here owns them: one still owned (releasing while a run
    ends) does not keep the loop passing at 5 Hz, and a job resumed meanwhile is no longer looked at."""
    w, nodes = _world("a", jobs=2)
    a = nodes["a"]
    await _pass(a)
    owned, resumed = sorted(a.own.owned)
    a.own._closing.add(owned)
    assert not a.own.needs_pass  # (the owned one is not waited for)
    del a.own.owned[resumed]
    a.own._closing.add(resumed)
    assert a.own.needs_pass
    a.catalogue.apply(JobSummary(id=resumed, version=3, paused=False, deleted=False))  # paused, then resumed
    await a.own._close_gaps()
    assert a.own._closing == set()  # the resumed one dropped; the owned one too (its summary is not paused)


class _ShareFeed:
    """MariaDB's jobs table as a share's read sees it: a slice's rows as they are when its statement runs."""

    def __init__(self, w: World) -> None:
        self.w = w

    async def changed_since(self, watermark: datetime | None, arcs: Sequence[Any] | None = None
                            ) -> tuple[list[JobSummary], datetime | None]:
        from node.cluster.ring import covers, merge, point
        out = [JobSummary(id=j.id, version=j.version, paused=j.paused, deleted=False) for j in self.w.jobs.values()
               if arcs is None or covers(merge(arcs), point(j.id))]
        await asyncio.sleep(0.001)  # (the statement's round trip: the snapshot is taken when it runs)
        return out, datetime.now(UTC)

    async def share_digest(self, arcs: Sequence[Any]) -> tuple[int, int, datetime | None]:
        return 0, 0, None


class _GapsSeen(FakeStore):
    def __init__(self, world: World, node: str) -> None:
        super().__init__(world, node)
        self.asked: set[str] = set()

    async def gap_anchors(self, job_ids: Sequence[str]) -> dict[str, tuple[int, datetime | None]]:
        self.asked.update(job_ids)
        return {}


async def test_a_pause_during_a_streamed_takeover_is_seen_from_the_catalogue_not_the_slice_read_before_it() -> None:
    """A share is taken over slice by slice while the next slice is read: a job paused after its slice's rows were
    read arrives as an event first. Its stale summary in the slice must not hide the pause: the job is not taken
    over, and the ring owner records its gap before the pause (the review of the streamed takeover)."""
    from node.cluster.catalogue import Catalogue, slices
    from node.cluster.messages import JobEvent

    w = World()
    w.members.add("a")
    for i in range(400):
        w.jobs[f"job{i:03d}"] = Job(id=f"job{i:03d}", schedule="* * * * *", uri="http://x/", version=1,
                                    active_since=T0)
    parts = slices(Ring(["a"]).arcs("a"))
    later = next(j for j in sorted(w.jobs) if any(lo <= _point(j) < hi for lo, hi in parts[1]))
    catalogue = Catalogue(_ShareFeed(w), 5.0, node_id="a")
    store = _GapsSeen(w, "a")
    paused = asyncio.Event()

    class Locks(FakeLocks):
        async def acquire(self, job_ids: Sequence[str]) -> list[str]:
            await asyncio.sleep(0.01)  # (the lock script's round trip: the next slice's read has run meanwhile)
            if not paused.is_set():  # the first slice being taken over: the user pauses a job of the next
                paused.set()
                w.jobs[later] = Job(**{**_fields(w.jobs[later]), "paused": True, "version": 2})
                catalogue.on_record(JobEvent(op="paused", id=later, version=2, paused=True))
            return await super().acquire(job_ids)

    tasks: list[Any] = []

    class Spawn:
        def spawn(self, coro: Any) -> None:
            tasks.append(coro)

    own = Ownership(node_id="a", takeovers=store, definitions=store, history=store, locks=Locks(w, "a"),
                    lease=FakeLease(w, "a"), catalogue=catalogue, hooks=Hooks(), member_ttl=3.0, tasks=Spawn(),
                    clock=lambda: 0.0)
    await own.reconcile()
    assert paused.is_set()
    assert later not in own.owned and later in store.asked
    assert len(own.owned) == len(w.jobs) - 1
    for t in tasks:
        t.close()


def _point(job_id: str) -> int:
    from node.cluster.ring import point
    return point(job_id)


async def test_a_streamed_takeover_tries_the_locks_still_held_again_before_the_share_ends() -> None:
    """A join: the old owner releases its jobs a few seconds after the ring changed, so the first slices find
    their locks held. They are tried again about once a second during the takeover, not only after the whole
    share (~16 s at a million jobs)."""
    from node.cluster.catalogue import Catalogue, slices

    w = World()
    w.members.update({"a", "old"})
    for i in range(600):
        w.jobs[f"job{i:03d}"] = Job(id=f"job{i:03d}", schedule="* * * * *", uri="http://x/", version=1,
                                    active_since=T0)
    w.members.discard("old")
    ring = Ring(["a"])
    parts = slices(ring.arcs("a"))
    first = [j for j in w.jobs if any(lo <= _point(j) < hi for lo, hi in parts[0])]
    for j in first:
        w.locks[j] = "old"  # the old owner has not released them yet
    w.members.add("old")  # ... and is alive, but no longer in this ring (its lease is kept for the test's fake)
    now = [0.0]
    calls: list[int] = []
    owned_first_before_last: list[bool] = []

    class Locks(FakeLocks):
        async def acquire(self, job_ids: Sequence[str]) -> list[str]:
            calls.append(len(job_ids))
            now[0] += 0.6
            if len(calls) == 2:
                for j in first:
                    w.locks.pop(j, None)  # the old owner released them
            if any(j in job_ids for j in w.jobs if any(lo <= _point(j) < hi for lo, hi in parts[-1])):
                owned_first_before_last.append(all(j in own.owned for j in first))
            return await super().acquire(job_ids)

    class Lease(FakeLease):
        @property
        def ring(self) -> Ring:
            return ring

    own = Ownership(node_id="a", takeovers=FakeStore(w, "a"), definitions=FakeStore(w, "a"),
                    history=FakeStore(w, "a"), locks=Locks(w, "a"), lease=Lease(w, "a"),
                    catalogue=Catalogue(_ShareFeed(w), 5.0, node_id="a"), hooks=Hooks(), member_ttl=3.0,
                    tasks=Node(w, "x"), clock=lambda: now[0])
    await own.reconcile()
    assert first and owned_first_before_last == [True]
    assert set(own.owned) == set(w.jobs)


# ---- a failed focus (review of the desired view) ------------------------------------------------


class _FailingFeed:
    def __init__(self, w: World) -> None:
        self.w = w
        self.fail = 0

    async def changed_since(self, watermark: datetime | None, arcs: Sequence[Any] | None = None
                            ) -> tuple[list[JobSummary], datetime | None]:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("MariaDB blip")
        return [JobSummary(id=j.id, version=j.version, paused=j.paused, deleted=j.id in self.w.deleted)
                for j in self.w.jobs.values() if (arcs is None or covers(merge(arcs), point(j.id)))], \
            datetime.now(UTC)

    async def share_digest(self, arcs: Sequence[Any]) -> tuple[int, int, datetime | None]:
        return 0, 0, None


def test_ring_back_after_a_failed_focus_keeps_every_job_of_the_share_owned() -> None:
    """The read of the arcs a node gains fails after its catalogue dropped the arcs it lost; the ring goes back
    before the pass is retried: the node focuses again (its desired set is a view of that catalogue: a fresh-eyes
    review of the view found the jobs of the lost arcs released and owned by nobody)."""
    async def main() -> None:
        w = World()
        for i in range(300):
            j = Job(id=f"job{i:03d}", schedule="* * * * *", uri="http://x/", version=1, active_since=T0)
            w.jobs[j.id] = j
        w.members = {"n1", "n2"}
        n1 = Node(w, "n1")
        feed = _FailingFeed(w)
        n1.catalogue = Catalogue(feed, 5.0, node_id="n1")  # type: ignore[assignment]
        n1.own.catalogue = n1.catalogue  # type: ignore[assignment]
        r1 = Ring(w.members)
        mine = {j for j in w.jobs if r1.owner(j) == "n1"}

        await n1.own.reconcile()
        assert set(n1.own.owned) == mine

        # n2 is replaced by n3 before n1's next pass; the read of the arcs n1 gains fails (MariaDB blip)
        w.members = {"n1", "n3"}
        feed.fail = 1
        try:
            await n1.own.reconcile()
        except StoreUnavailable:
            pass
        # ... and the ring goes back (n3 gone, n2 back) before the pass is retried
        w.members = {"n1", "n2"}
        for _ in range(3):
            await n1.own.reconcile()
        # one job of the share is paused: an ordinary event (one the catalogue still holds)
        some = sorted(j for j in mine if j in n1.catalogue.jobs)[0]
        w.jobs[some] = Job(**{**{f: getattr(w.jobs[some], f) for f in Job.__dataclass_fields__},
                              "paused": True, "version": 2})
        n1.catalogue.on_record(JobEvent(op="updated", id=some, version=2, paused=True))
        for _ in range(3):
            await n1.own.reconcile()
            await n1.settle_tasks()
        missing = sorted(mine - {some} - set(n1.own.owned))
        assert not missing, f"{len(missing)} active jobs the ring gives n1 are owned by nobody: {missing[:5]}"

    asyncio.run(main())


def test_ring_back_after_a_failed_focus_wants_no_job_of_another_node() -> None:
    """n2 lapses (n1's share grows to the whole ring), the read of n2's arcs fails, n2 rejoins at once: n1 wants
    (and takes, and never lets go of) n2's jobs, because its desired set is the catalogue of the whole ring."""
    async def main() -> None:
        w = World()
        for i in range(300):
            j = Job(id=f"job{i:03d}", schedule="* * * * *", uri="http://x/", version=1, active_since=T0)
            w.jobs[j.id] = j
        w.members = {"n1", "n2"}
        n1 = Node(w, "n1")
        feed = _FailingFeed(w)
        n1.catalogue = Catalogue(feed, 5.0, node_id="n1")  # type: ignore[assignment]
        n1.own.catalogue = n1.catalogue  # type: ignore[assignment]
        r1 = Ring(w.members)
        await n1.own.reconcile()
        w.members = {"n1"}
        feed.fail = 1
        try:
            await n1.own.reconcile()
        except StoreUnavailable:
            pass
        w.members = {"n1", "n2"}
        await n1.catalogue.full_sync()  # (the catalogue's periodic re-sync reads its share: now the whole ring)
        for _ in range(3):
            await n1.own.reconcile()
        others = sorted(j for j in n1.own.owned if r1.owner(j) != "n1")
        assert not others, f"n1 owns {len(others)} jobs the ring gives n2: {others[:5]}"

    asyncio.run(main())
