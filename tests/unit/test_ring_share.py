"""A node's share of the ring: the arcs a member owns agree with who owns each job, a share is read in slices,
and the catalogue holds exactly its share through ring changes, events and re-syncs (a fake feed that selects by
ring point as MariaDB does; tests/integration/test_ring_store.py holds MariaDB to the same)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from uhashring import HashRing

from node.cluster.catalogue import SLICE, SLICE_ARCS, Catalogue, slices
from node.cluster.messages import CalendarEvent, JobEvent
from node.cluster.ring import SPACE, Arc, Ring, covers, merge, point, subtract
from node.model.calendars import Calendar
from node.model.jobs import JobSummary, summary_digest

IDS = [secrets.token_hex(8) for _ in range(3000)]


def test_the_owner_is_uhashrings() -> None:
    for n in range(1, 7):
        members = [f"node-{i}" for i in range(n)]
        ring, theirs = Ring(members), HashRing(nodes=members)
        assert all(ring.owner(j) == (theirs.get_node(j) if n > 1 else "node-0") for j in IDS)


def test_the_arcs_split_the_ring_between_the_members() -> None:
    for n in (1, 2, 5, 6):
        members = [f"node-{i}" for i in range(n)]
        ring = Ring(members)
        arcs = {m: ring.arcs(m) for m in members}
        assert sum(hi - lo for a in arcs.values() for lo, hi in a) == SPACE
        assert all(covers(arcs[m], point(j)) == (ring.owner(j) == m) for j in IDS[:500] for m in members)
    assert Ring(["a", "b"]).arcs("c") == ()


@settings(max_examples=200, deadline=None)
@given(a=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 20))), b=st.lists(st.tuples(st.integers(0, 60),
                                                                                         st.integers(1, 20))))
def test_subtract_is_set_difference(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    xs, ys = merge((lo, lo + w) for lo, w in a), merge((lo, lo + w) for lo, w in b)
    points = lambda arcs: {p for lo, hi in arcs for p in range(lo, hi)}  # noqa: E731
    out = subtract(xs, ys)
    assert points(out) == points(xs) - points(ys)
    assert list(out) == sorted(out) and all(lo < hi for lo, hi in out)


def test_slices_cover_the_share_in_bounded_reads() -> None:
    arcs = Ring([f"node-{i}" for i in range(5)]).arcs("node-2")
    parts = slices(arcs)
    assert merge(a for part in parts for a in part) == arcs
    assert all(sum(hi - lo for lo, hi in part) <= SLICE and len(part) <= SLICE_ARCS for part in parts)
    assert len(slices(((0, SPACE),))) == SPACE // SLICE


class Feed:
    """MariaDB's jobs table as the catalogue reads it: live jobs by ring point, changes since a watermark."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.rows = {j: JobSummary(id=j, version=1, paused=False, deleted=False) for j in ids}
        self.read = 0  # summaries returned

    async def changed_since(self, watermark: datetime | None, arcs: Sequence[Arc] | None = None
                            ) -> tuple[list[JobSummary], datetime | None]:
        # (with arcs, a share's read: the recent deletes too, as store/jobs.changed_since; here every delete is)
        out = [s for s in self.rows.values() if (not s.deleted or arcs is not None)
               and (arcs is None or covers(merge(arcs), point(s.id)))]
        self.read += len(out)
        return out, datetime.now(UTC)

    async def share_digest(self, arcs: Sequence[Arc]) -> tuple[int, int, datetime | None]:
        live = [s for s in self.rows.values() if not s.deleted and covers(merge(arcs), point(s.id))]
        x = 0
        for s in live:
            x ^= summary_digest(s)
        return len(live), x, datetime.now(UTC)


async def test_the_catalogue_holds_its_share_through_ring_changes() -> None:
    feed = Feed(IDS)
    c = Catalogue(feed, 5.0, node_id="node-1")
    await c.full_sync()  # before any focus: nothing is this node's
    assert c.live_count() == 0
    three = Ring(["node-0", "node-1", "node-2"])
    assert await c.focus(three)
    assert set(c.active_ids()) == three.owned_by("node-1", IDS) and feed.read == len(c.jobs)
    four = Ring(["node-0", "node-1", "node-2", "node-3"])
    feed.read = 0
    assert await c.focus(four)
    assert set(c.active_ids()) == four.owned_by("node-1", IDS)
    assert feed.read == 0  # a share that only shrank reads nothing
    feed.read = 0
    assert await c.focus(three)  # node-3 left: only the arcs that came back are read
    assert set(c.active_ids()) == three.owned_by("node-1", IDS)
    assert feed.read == len(three.owned_by("node-1", IDS) - four.owned_by("node-1", IDS))


async def test_events_outside_the_share_are_not_held() -> None:
    ring = Ring(["node-0", "node-1", "node-2"])
    c = Catalogue(Feed([]), 5.0, node_id="node-1")
    await c.focus(ring)
    new = [secrets.token_hex(8) for _ in range(300)]
    for j in new:
        c.on_record(JobEvent(op="created", id=j, version=1, paused=False))
    assert set(c.active_ids()) == ring.owned_by("node-1", new)


async def test_a_focus_stopped_by_a_moving_ring_finishes_on_the_next() -> None:
    feed = Feed(IDS)
    c = Catalogue(feed, 5.0, node_id="node-0")
    alone = Ring(["node-0"])
    calls = {"n": 0}

    def still() -> bool:
        calls["n"] += 1
        return calls["n"] <= 3  # the ring moves on after three slices

    assert not await c.focus(alone, still)
    assert c.unread and 0 < c.live_count() < len(IDS)
    assert await c.focus(alone)
    assert c.unread == () and set(c.active_ids()) == set(IDS)


async def test_a_full_resync_tombstones_only_within_the_share() -> None:
    feed = Feed(IDS)
    ring = Ring(["node-0", "node-1"])
    c = Catalogue(feed, 5.0, node_id="node-0")
    await c.focus(ring)
    mine = sorted(ring.owned_by("node-0", IDS))
    gone = random.Random(7).sample(mine, 20)
    for j in gone:
        feed.rows[j] = JobSummary(id=j, version=2, paused=False, deleted=True)
    await c.full_sync()
    assert set(c.active_ids()) == set(mine) - set(gone)
    assert all(c.jobs[j].deleted for j in gone)


async def test_a_share_taken_over_brings_its_recent_deletes_as_tombstones() -> None:
    """A job deleted while its arc's ring owner was dying: the node the arc moves to learns of the delete from
    the share's read (an event for it came before the arc was this node's, and was ignored), so its ownership
    can record the instants due before the delete (scheduling/ownership._note_paused)."""
    feed = Feed(IDS)
    three, two = Ring(["node-0", "node-1", "node-2"]), Ring(["node-0", "node-1"])
    c = Catalogue(feed, 5.0, node_id="node-0")
    await c.focus(three)
    came = sorted(two.owned_by("node-0", IDS) - three.owned_by("node-0", IDS))
    deleted = came[:5]
    for j in deleted:
        feed.rows[j] = JobSummary(id=j, version=2, paused=False, deleted=True)
        c.on_record(JobEvent(op="deleted", id=j, version=2, paused=False))  # not this node's arc yet: ignored
    assert not any(j in c.jobs for j in deleted)
    c.changed_ids.clear()
    await c.focus(two)
    assert all(c.jobs[j].deleted for j in deleted) and set(deleted) <= c.changed_ids
    assert set(c.active_ids()) == two.owned_by("node-0", IDS) - set(deleted)
    assert c.live_count() == len(c.active_ids())


async def test_each_slice_of_a_share_is_given_while_the_next_is_read() -> None:
    """A node joining takes its share over slice by slice as it is read (the ownership's ``each``), the next
    slice's read under way meanwhile: reading and taking over no longer add up."""
    feed = Feed(IDS)
    started: list[int] = []
    real = feed.changed_since

    async def counted(watermark: datetime | None, arcs: Sequence[Arc] | None = None
                      ) -> tuple[list[JobSummary], datetime | None]:
        started.append(len(started))
        await asyncio.sleep(0.001)
        return await real(watermark, arcs)

    feed.changed_since = counted  # type: ignore[method-assign]
    c = Catalogue(feed, 5.0, node_id="node-0")
    given_at: list[int] = []
    held: set[str] = set()

    async def each(summaries: list[JobSummary]) -> None:
        assert all(s.id in c.jobs for s in summaries)  # held before they are given
        held.update(s.id for s in summaries)
        await asyncio.sleep(0.005)  # (the takeover of a slice)
        given_at.append(len(started))

    alone = Ring(["node-0"])
    assert await c.focus(alone, each=each)
    n = len(slices(alone.arcs("node-0")))
    assert held == set(IDS) and len(given_at) == n
    assert given_at[:-1] == list(range(2, n + 1))  # slice k taken while slice k + 1 was read
    assert len(started) == n


async def test_a_full_resync_reads_the_share_only_when_its_digest_differs() -> None:
    feed = Feed(IDS)
    ring = Ring(["node-0", "node-1"])
    c = Catalogue(feed, 5.0, node_id="node-0")
    await c.full_sync()
    await c.focus(ring)
    feed.read = 0
    await c.full_sync()
    assert feed.read == 0  # the same as the table: nothing read
    j = sorted(c.active_ids())[0]
    feed.rows[j] = JobSummary(id=j, version=2, paused=True, deleted=False)  # a change whose event was lost
    await c.full_sync()
    assert feed.read == len(c.active_ids()) + 1 and c.jobs[j].version == 2 and c.jobs[j].paused
    feed.read = 0
    await c.full_sync()
    assert feed.read == 0


class SlowFeed(Feed):
    """A share read that takes as long as the test says (a sixth of a million jobs takes seconds)."""

    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(ids)
        self.gate = asyncio.Event()

    async def changed_since(self, watermark: datetime | None, arcs: Sequence[Arc] | None = None
                            ) -> tuple[list[JobSummary], datetime | None]:
        await self.gate.wait()
        return await super().changed_since(watermark, arcs)


class Calendars:
    def __init__(self) -> None:
        self.version = 1
        self.reads = 0

    async def all(self) -> list[Calendar]:
        self.reads += 1
        return [Calendar(name="quiet", weekdays=frozenset({0}), version=self.version)]


async def test_a_calendar_event_is_read_at_once_while_the_share_is_being_read() -> None:
    """The calendars are re-read in a loop of their own: an edit's event is never queued behind a read of the
    share (the nemesis at 100,000 jobs sent ticks a calendar excluded up to 10 s after the edit)."""
    feed, cals = SlowFeed(IDS[:50]), Calendars()
    c = Catalogue(feed, resync_interval=60.0, calendar_feed=cals, node_id="node-0")
    task = asyncio.create_task(c.run())
    try:
        async with asyncio.timeout(5):
            while c.calendars_seen < 1:
                await asyncio.sleep(0.01)
            assert not c.loaded.is_set()  # the share's read is held up
            cals.version = 2
            c.on_record(CalendarEvent(op="updated", name="quiet", version=2, origin="node-1"))
            while c.calendars["quiet"].version != 2:
                await asyncio.sleep(0.01)
            assert not c.loaded.is_set()
        feed.gate.set()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_older_calendar_read_that_ends_last_never_rolls_the_calendars_back() -> None:
    """Reads overlap (the loop's, a job naming a calendar not read yet, the API's): the one begun first may end
    last, with what was true before an edit (found by review)."""
    gates = [asyncio.Event(), asyncio.Event()]
    versions = [1, 2]

    class Overlapping:
        calls = 0

        async def all(self) -> list[Calendar]:
            k = Overlapping.calls
            Overlapping.calls += 1
            await gates[k].wait()
            return [Calendar(name="quiet", version=versions[k])]

    c = Catalogue(Feed(IDS[:5]), resync_interval=60.0, calendar_feed=Overlapping(), node_id="node-0")
    first = asyncio.create_task(c.sync_calendars())  # begun before the edit
    await asyncio.sleep(0)
    second = asyncio.create_task(c.sync_calendars())  # begun after it
    await asyncio.sleep(0)
    gates[1].set()
    await second
    assert c.calendars["quiet"].version == 2
    gates[0].set()
    await first
    assert c.calendars["quiet"].version == 2


class ClockedFeed(Feed):
    """Rows with the time of their last change, and the database's clock, a second on at each read of a share's
    slice: a read since a watermark returns only the rows changed at or after it (store/jobs.changed_since's
    ``updated_at >= %s``). ``during``: called at each slice's read (an edit while the share is read)."""

    def __init__(self, ids: Sequence[str], at: datetime) -> None:
        super().__init__(ids)
        self.now = at
        self.changed = dict.fromkeys(ids, at)
        self.slices_read = 0
        self.during: Callable[[int], None] = lambda k: None

    def edit(self, job_id: str) -> None:
        old = self.rows[job_id]
        self.rows[job_id] = JobSummary(id=job_id, version=old.version + 1, paused=True, deleted=False)
        self.changed[job_id] = self.now

    async def changed_since(self, watermark: datetime | None, arcs: Sequence[Arc] | None = None
                            ) -> tuple[list[JobSummary], datetime | None]:
        out, _ = await super().changed_since(None, arcs)
        kept = [s for s in out if watermark is None or self.changed[s.id] >= watermark]
        self.read -= len(out) - len(kept)  # (the base class counted every row of the arcs)
        now = self.now
        if watermark is None and arcs:
            self.slices_read += 1
            self.during(self.slices_read)
            self.now += timedelta(seconds=1)
        return kept, now


async def test_a_share_read_whole_moves_the_watermark_so_the_next_incremental_read_is_small() -> None:
    """A node starts a while after a bulk apply: its start's watermark (nothing held) is older than every row, so
    the first incremental read after the share's read returned the whole share again (100,000 rows at once, ~40 MB
    for a moment). Read whole from its first slice on, the share needs no read further back than that."""
    t0 = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    feed = ClockedFeed(IDS, t0)
    c = Catalogue(feed, 5.0, node_id="node-0")
    feed.now = t0 + timedelta(seconds=1)
    await c.full_sync()  # the start: nothing is this node's yet
    feed.now = t0 + timedelta(seconds=30)
    three = Ring(["node-0", "node-1", "node-2"])
    mine = sorted(three.owned_by("node-0", IDS))
    first_slice: list[str] = []
    c_read = c.apply

    def held(s: JobSummary) -> None:
        if feed.slices_read == 1:
            first_slice.append(s.id)
        c_read(s)

    c.apply = held  # type: ignore[method-assign]
    # an edit of a job of the first slice, made while the tenth is read: the slices' reads never see it
    feed.during = lambda k: feed.edit(first_slice[0]) if k == 10 else None
    assert await c.focus(three)
    assert len(slices(three.arcs("node-0"))) > 10 and not c.jobs[first_slice[0]].paused
    feed.read = 0
    await c.incremental()
    assert feed.read == 1 and c.jobs[first_slice[0]].paused  # (before: every job of the share, and this one)
    feed.read = 0
    feed.edit(mine[-1])
    await c.incremental()
    assert feed.read == 1 and c.jobs[mine[-1]].paused


async def test_a_share_partly_held_keeps_its_watermark() -> None:
    """A share that grows while part of it is held, or one read again after a focus the ring stopped part way
    (its slices are held): events for the held jobs may still be unread, so the watermark stays."""
    t0 = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    feed = ClockedFeed(IDS, t0)
    c = Catalogue(feed, 5.0, node_id="node-0")
    await c.full_sync()
    before = c.watermark
    feed.now = t0 + timedelta(seconds=60)
    calls = {"n": 0}

    def still() -> bool:
        calls["n"] += 1
        return calls["n"] <= 3

    alone = Ring(["node-0"])
    assert not await c.focus(alone, still)
    assert await c.focus(alone)  # the whole share is unread again, but three slices of it are held
    assert c.watermark == before
    c2 = Catalogue(feed, 5.0, node_id="node-0")
    await c2.full_sync()
    assert await c2.focus(Ring(["node-0", "node-1"]))
    moved = c2.watermark
    assert moved is not None and moved > before
    feed.now += timedelta(seconds=60)
    assert await c2.focus(alone)  # grew: half of it was held
    assert c2.watermark == moved
