"""Every node's in-memory catalogue of its share of the jobs: a read of its arcs of the ring, job events,
periodic re-sync.

A node holds only the jobs whose ring point lies in its arcs (``focus``: called by the ownership whenever the
ring changes; it drops what left and reads what came, in slices): a million jobs on five nodes cost each node a
fifth. Pub/sub is lossy; the re-sync from MariaDB heals a missed event within ``resync_interval``. After a Redis
reconnect the whole share is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, MutableMapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from .. import metrics
from ..aio import raise_if_cancelling, wait_event
from ..batching import chunks
from ..model.calendars import Calendar
from ..model.errors import StoreUnavailable
from ..model.jobs import JobSummary, digest_of
from .messages import CalendarEvent, JobEvent, Record
from .ring import SPACE, WHOLE, Arc, Ring, covers, point, subtract


def _quietly(f: asyncio.Future[Any]) -> None:
    if not f.cancelled():
        f.exception()  # (retrieved: a read ahead that failed after it was no longer wanted)


class ChangeFeed(Protocol):
    """Job summaries changed since a watermark (all live ones: None) whose ring point lies in ``arcs`` (None:
    every job), and the database's now (store/jobs.py)."""

    async def changed_since(self, watermark: datetime | None, arcs: Sequence[Arc] | None = None
                            ) -> tuple[list[JobSummary], datetime | None]: ...

    async def share_digest(self, arcs: Sequence[Arc]) -> tuple[int, int, datetime | None]:
        """How many live jobs in ``arcs``, the XOR of their summary_digest, and the database's now."""
        ...


class CalendarFeed(Protocol):
    """Every exclusion calendar (store/calendars.py): few and small, read whole at each re-sync."""

    async def all(self) -> list[Calendar]: ...


class _NoCalendars:
    async def all(self) -> list[Calendar]:
        return []

log = structlog.get_logger("catalogue")

# Rows committed a little after their updated_at are still picked up.
WATERMARK_OVERLAP = timedelta(seconds=5)
FULL_SYNC_EVERY = 30  # incremental re-syncs between full ones


TOMBSTONE_KEEP = 600.0  # seconds a deleted job's summary is kept, so a late event cannot revive it
SLICE = SPACE >> 6  # a read of the share takes at most this much of the ring per statement (1M jobs: ~16k rows)
SLICE_ARCS = 32  # ... and at most this many arcs


def slices(arcs: Sequence[Arc]) -> list[tuple[Arc, ...]]:
    """The arcs cut and grouped into reads of at most SLICE of the ring (and SLICE_ARCS arcs) each."""
    out: list[tuple[Arc, ...]] = []
    group: list[Arc] = []
    width = 0
    for lo, hi in arcs:
        while lo < hi:
            end = min(hi, lo + SLICE - width)
            group.append((lo, end))
            width += end - lo
            lo = end
            if width >= SLICE or len(group) >= SLICE_ARCS:
                out.append(tuple(group))
                group, width = [], 0
    if group:
        out.append(tuple(group))
    return out


_PAUSED, _DELETED, _COMPLETED, _FLAGS = 1, 2, 4, 3  # a summary as one int: version << 3 | these
_INACTIVE = _PAUSED | _DELETED | _COMPLETED


class Summaries(MutableMapping[str, JobSummary]):
    """Job summaries by id, each held as one int (``version << 3`` and three flags): a job at version < 32 costs
    its dict entry and nothing else (CPython keeps the ints below 256), where a JobSummary object is 72 bytes
    (memory per job, issue 22). Reads make the JobSummary; the catalogue's own passes read the ints."""

    __slots__ = ("raw", "active")

    def __init__(self) -> None:
        self.raw: dict[str, int] = {}
        self.active = 0  # how many are active (not paused, deleted or completed): ActiveIds' length

    @staticmethod
    def pack(s: JobSummary) -> int:
        return s.version << _FLAGS | s.paused * _PAUSED | s.deleted * _DELETED | s.completed * _COMPLETED

    @staticmethod
    def unpack(job_id: str, v: int) -> JobSummary:
        return JobSummary(id=job_id, version=v >> _FLAGS, paused=bool(v & _PAUSED), deleted=bool(v & _DELETED),
                          completed=bool(v & _COMPLETED))

    def __getitem__(self, job_id: str) -> JobSummary:
        return self.unpack(job_id, self.raw[job_id])

    def get(self, job_id: str, default: Any = None) -> Any:
        v = self.raw.get(job_id)
        return default if v is None else self.unpack(job_id, v)

    def __setitem__(self, job_id: str, s: JobSummary) -> None:
        v = self.pack(s)
        old = self.raw.get(job_id)
        self.raw[job_id] = v
        self.active += (not v & _INACTIVE) - (old is not None and not old & _INACTIVE)

    def __delitem__(self, job_id: str) -> None:
        v = self.raw.pop(job_id)
        self.active -= not v & _INACTIVE

    def drop(self, job_id: str) -> None:  # (no summary is made for a drop)
        v = self.raw.pop(job_id, None)
        if v is not None:
            self.active -= not v & _INACTIVE

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.raw

    def active_ids(self) -> list[str]:
        return [i for i, v in self.raw.items() if not v & _INACTIVE]


class ActiveIds(Collection[str]):
    """The active jobs' ids of a ``Summaries``, live: what a node holding its share of the ring wants to own (the
    ownership's desired set). A set of its own cost 40-105 bytes an owned job (issue 22, memory per job); this
    view costs nothing a job. Iterate it without awaiting in between (it is the catalogue's dict)."""

    __slots__ = ("_s",)

    def __init__(self, summaries: Summaries) -> None:
        self._s = summaries

    def __contains__(self, job_id: object) -> bool:
        v = self._s.raw.get(job_id)  # type: ignore[call-overload]
        return v is not None and not v & _INACTIVE

    def __len__(self) -> int:
        return self._s.active

    def __iter__(self) -> Iterator[str]:
        return (i for i, v in self._s.raw.items() if not v & _INACTIVE)

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids not in the view, in one pass (no method call an id)."""
        get = self._s.raw.get
        return [i for i in ids if (v := get(i)) is None or v & _INACTIVE]


class Catalogue:
    """Job summaries by id, merged by version: an older summary never replaces a newer one,
    and a deleted job stays as a tombstone for a while, so neither a late event nor a full
    re-sync that read the table before an edit or delete can undo it."""

    def __init__(self, feed: ChangeFeed, resync_interval: float, calendar_feed: CalendarFeed | None = None,
                 node_id: str | None = None) -> None:
        self.feed = feed
        # node_id None: every job (tools, tests); else only this node's share of the ring (none before ``focus``)
        self.node_id = node_id
        self.share: tuple[Arc, ...] = WHOLE if node_id is None else ()
        self.holds_share = node_id is not None  # (the ownership's word for it: scheduling/ownership.JobIndex)
        self.unread: tuple[Arc, ...] = ()  # parts of the share not read yet (a focus that could not finish)
        self._reading = asyncio.Lock()  # one read of the table at a time: a focus never races a full re-sync
        self.calendar_feed: CalendarFeed = calendar_feed or _NoCalendars()
        self.resync_interval = resync_interval
        self.jobs = Summaries()  # tombstones included (deleted=True)
        self.calendars: dict[str, Calendar] = {}  # by name, as last read (a change bumps calendars_seen)
        self.calendars_seen = 0  # how many times the calendars changed (owners rebuild their timetables)
        self.tombstoned: dict[str, float] = {}  # id -> monotonic time it became a tombstone
        self.watermark: datetime | None = None
        self.changed_ids: set[str] = set()
        self.changed = asyncio.Event()
        self.loaded = asyncio.Event()
        self.full_pending = False
        self.calendars_pending = False
        self._calendar_reads = 0  # calendar reads begun
        self._calendars_applied = 0  # the number of the last one applied
        self._wake = asyncio.Event()
        self._calendars_wake = asyncio.Event()
        self._touched: set[str] | None = None  # ids applied while a full re-sync's read was under way

    def active_ids(self) -> list[str]:
        return self.jobs.active_ids()

    def active_view(self) -> ActiveIds:
        """The active ids held, as a live view (no copy)."""
        return ActiveIds(self.jobs)

    def version_of(self, job_id: str) -> int | None:
        v = self.jobs.raw.get(job_id)
        return None if v is None else v >> _FLAGS

    def live_count(self) -> int:
        return len(self.jobs) - len(self.tombstoned)

    def apply(self, s: JobSummary) -> None:
        cur = self.jobs.get(s.id)
        if cur is not None and (cur.version >= s.version or cur.deleted):
            return  # job ids are never reused: a tombstone is final
        if s.deleted and cur is None:
            return
        self.jobs[s.id] = s
        if s.deleted:
            self.tombstoned[s.id] = time.monotonic()
        if self._touched is not None:
            self._touched.add(s.id)
        self.changed_ids.add(s.id)
        self.changed.set()
        metrics.JOBS.set(self.live_count())

    def adopt_tombstone(self, s: JobSummary) -> None:
        """A job deleted a moment ago in arcs this node has just taken over (the share's read returns the
        recent deletes, store/jobs.RECENT_DELETES). Its instants due before the delete may have no rows, and
        the arc's ring owner then, the node that records them, may have died first (or been killed while
        MariaDB was cut). Held as a tombstone and marked changed, this node's ownership records them."""
        self.jobs[s.id] = s
        self.tombstoned[s.id] = time.monotonic()
        self.changed_ids.add(s.id)
        self.changed.set()

    def _purge_tombstones(self) -> None:
        old = time.monotonic() - TOMBSTONE_KEEP
        for i in [i for i, t in self.tombstoned.items() if t < old]:
            del self.tombstoned[i]
            self.jobs.drop(i)

    def mine(self, job_id: str) -> bool:
        return self.node_id is None or covers(self.share, point(job_id))

    def on_record(self, record: Record) -> None:
        if isinstance(record, JobEvent) and self.mine(record.id):
            self.apply(JobSummary(id=record.id, version=record.version, paused=record.paused,
                                  deleted=record.op == "deleted", completed=record.completed))
        elif isinstance(record, CalendarEvent):
            self.request_calendars()

    def set_calendars(self, calendars: list[Calendar]) -> None:
        """The calendars as read; owners are told when any changed (a version, or one added or deleted)."""
        new = {c.name: c for c in calendars}
        if {n: c.version for n, c in new.items()} != {n: c.version for n, c in self.calendars.items()}:
            self.calendars = new
            self.calendars_seen += 1
            self.changed.set()

    def request_calendars(self) -> None:
        """A calendar changed somewhere: read them at once (not at the next re-sync)."""
        self.calendars_pending = True
        self._calendars_wake.set()

    async def sync_calendars(self) -> None:
        """Read the calendars. Reads may overlap (the loop's, a job naming one not read yet, the API's own):
        a read that began before the last one applied is dropped, never rolling the calendars back."""
        self.calendars_pending = False
        self._calendar_reads += 1
        n = self._calendar_reads
        calendars = await self.calendar_feed.all()
        if n < self._calendars_applied:
            return
        self._calendars_applied = n
        self.set_calendars(calendars)

    async def _read(self, arcs: Sequence[Arc]) -> tuple[list[JobSummary], datetime | None]:
        """Every live job in ``arcs``, a slice per statement; the database's now before the first."""
        if self.node_id is None and tuple(arcs) == WHOLE:
            return await self.feed.changed_since(None)
        out: list[JobSummary] = []
        first: datetime | None = None
        for part in slices(arcs):
            summaries, now = await self.feed.changed_since(None, part)
            first = first or now
            out.extend(summaries)
        if first is None:  # no arcs: nothing to read, but a watermark all the same
            _, first = await self.feed.changed_since(None, ())
        return out, first

    async def _stream(self, arcs: Sequence[Arc], still: Callable[[], bool],
                      each: Callable[[list[JobSummary]], Awaitable[None]]) -> tuple[int, bool, datetime | None]:
        """Every live job in ``arcs`` given to ``each`` a slice at a time, while the next slice is read (a node
        joining a million jobs takes its share over as it is read: BENCHMARKS.md, seventh part); the slices are
        not kept. How many came, False if ``still`` turned false between slices, and the database's now before
        the first slice."""
        parts = slices(arcs)
        n = 0
        first: datetime | None = None
        ahead: asyncio.Future[tuple[list[JobSummary], datetime | None]] | None = None
        try:
            for k, part in enumerate(parts):
                if not still():
                    return n, False, first
                reading = ahead if ahead is not None else asyncio.ensure_future(self.feed.changed_since(None, part))
                ahead = None
                summaries, now = await reading
                first = first or now
                if k + 1 < len(parts) and still():
                    ahead = asyncio.ensure_future(self.feed.changed_since(None, parts[k + 1]))
                n += len(summaries)
                await each(summaries)
        finally:
            if ahead is not None:  # (stopped early, or failed: the read ahead ends unwanted; never cancelled
                ahead.add_done_callback(_quietly)  # mid-statement, which would cost the pool its connection)
        return n, True, first

    async def focus(self, ring: Ring, still: Callable[[], bool] = lambda: True,
                    each: Callable[[list[JobSummary]], Awaitable[None]] | None = None) -> bool:
        """Hold this node's share of ``ring``: drop the jobs that left it, read the arcs that came (in slices,
        stopping if ``still`` turns false: the ring moved on). True when the whole share is read. ``each`` is
        given the summaries of each slice once they are held, while the next slice is read."""
        if self.node_id is None:
            return True
        async with self._reading:
            share = ring.arcs(self.node_id)
            if share != self.share:
                kept_unread = subtract(self.unread, subtract(self.unread, share))
                self.unread = tuple(sorted(subtract(share, self.share) + kept_unread))
                self.share = share
                # (a point is an md5: 200k of them held the loop ~1 s on a loaded machine, and lapsed every
                # node when a sixth joined a million jobs; events for jobs outside the new share are ignored
                # from here on, so the snapshot stays true while this yields)
                gone: list[str] = []
                for part in chunks(list(self.jobs), 20_000):
                    gone.extend(i for i in part if not covers(share, point(i)))
                    await asyncio.sleep(0)
                for n, i in enumerate(gone):
                    self.jobs.drop(i)
                    self.tombstoned.pop(i, None)
                    self.changed_ids.discard(i)
                    if n % 20_000 == 19_999:
                        await asyncio.sleep(0)
                if gone:
                    log.info("share of the ring changed", left=len(gone), members=len(ring.members))
            if not self.unread:
                return True
            # none of the share is held (a start, or a join): not a focus stopped part way, whose slices are held
            fresh = not self.jobs and not subtract(self.share, self.unread)

            async def hold(summaries: list[JobSummary]) -> None:
                for k, s in enumerate(summaries):
                    if s.deleted and s.id not in self.jobs:
                        self.adopt_tombstone(s)
                    else:
                        self.apply(s)
                    if k % 20_000 == 19_999:
                        await asyncio.sleep(0)  # 200k jobs: never starve the heartbeat
                if each is not None:
                    await each(summaries)

            came, done, first = await self._stream(self.unread, still, hold)
            if done:
                self.unread = ()
                if fresh and first is not None and self.watermark is not None:
                    # The whole share was read from ``first`` on: the next incremental read need not go further
                    # back. From the watermark of before (a start's, with nothing held) it read again every job
                    # changed since, a whole share just applied in bulk: 100,000 rows in one result, ~40 MB of
                    # dicts and summaries at once, ~9 MB of which the node's RSS kept (issue 22, memory per job).
                    self.watermark = max(self.watermark, first - WATERMARK_OVERLAP)
                log.info("share of the ring read", came=came, jobs=self.live_count())
            metrics.JOBS.set(self.live_count())
            return done

    async def _digest(self) -> tuple[int, int]:
        # Off the packed ints, a list of the ids as the snapshot: a list of every JobSummary (~90 bytes each, all
        # alive at once) raised a node's RSS for good by ~9 MB at 100,000 jobs (pymalloc keeps the pools of the
        # arenas the summaries shared with live objects). A version moved between slices only makes a mismatch,
        # and a read.
        n = x = 0
        raw = self.jobs.raw
        for k, i in enumerate(list(raw)):
            v = raw.get(i)
            if v is not None and not v & _DELETED:
                n += 1
                x ^= digest_of(i, v >> _FLAGS, bool(v & _PAUSED), bool(v & _COMPLETED))
            if k % 20_000 == 19_999:
                await asyncio.sleep(0)
        return n, x

    async def full_sync(self) -> None:
        """Merge every live job of the share by version; a job missing from the table (deleted, its tombstone
        purged) becomes a tombstone here unless an event about it arrived during the read. Once loaded, the share's
        digest is compared first (MariaDB's from the index, ours from memory): the rows are read again only when
        they differ (a missed event), not every time (a fifth of a million jobs cost a node ~2 s of CPU a read)."""
        async with self._reading:
            share = self.share
            if self.node_id is not None and self.loaded.is_set() and not self.unread:
                n, x, now = await self.feed.share_digest(share)
                if (n, x) == await self._digest():
                    self._purge_tombstones()
                    self._set_watermark(now)
                    metrics.CATALOGUE_RESYNCS.labels("digest").inc()
                    return
                log.info("share differs from the table: reading it again", jobs=self.live_count(), table=n)
            metrics.CATALOGUE_RESYNCS.labels("read").inc()
            self._touched = set()
            try:
                summaries, now = await self._read(share)
                fresh: set[str] = set()
                for k, s in enumerate(summaries):
                    fresh.add(s.id)
                    self.apply(s)
                    if k % 20_000 == 19_999:
                        await asyncio.sleep(0)  # (events meanwhile are touched: never taken for deletions)
                touched = self._touched
                for i in [i for i, v in self.jobs.raw.items() if not v & _DELETED and i not in fresh and i not in touched]:
                    cur = self.jobs[i]
                    self.apply(JobSummary(id=i, version=cur.version + 1, paused=cur.paused, deleted=True))
            finally:
                self._touched = None
            self._purge_tombstones()
            if share == self.share:
                self.unread = ()
            self._set_watermark(now)
            self.loaded.set()
            log.info("catalogue loaded", jobs=self.live_count())

    def _set_watermark(self, now: datetime | None) -> None:
        if now:
            self.watermark = now - WATERMARK_OVERLAP

    async def incremental(self) -> None:
        async with self._reading:
            summaries, now = await self.feed.changed_since(self.watermark, None if self.node_id is None else self.share)
            for s in summaries:
                if self.mine(s.id):
                    self.apply(s)
            self._set_watermark(now)

    def request_full(self) -> None:
        self.full_pending = True
        self._wake.set()
        self.request_calendars()  # (events may have been lost: the calendars' too)

    async def run(self) -> None:
        """Re-sync the jobs, and the calendars in a loop of their own: a calendar event is read at once, never
        behind a read of the share (a sixth of a million jobs takes seconds, and holds ``_reading``)."""
        calendars = asyncio.create_task(self._run_calendars(), name="catalogue-calendars")
        try:
            await self._run_jobs()
        finally:
            calendars.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await calendars

    async def _run_calendars(self) -> None:
        while True:
            try:
                await self.sync_calendars()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                raise_if_cancelling()
                self.calendars_pending = True
                log.warning("reading the calendars failed", error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(min(self.resync_interval, 0.5))
                continue
            if self.calendars_pending:
                continue  # an event came during the read: read again
            self._calendars_wake.clear()
            await wait_event(self._calendars_wake, self.resync_interval)

    async def _run_jobs(self) -> None:
        n = 0
        while True:
            try:
                if not self.loaded.is_set() or self.full_pending or n % FULL_SYNC_EVERY == 0:
                    self.full_pending = False
                    await self.full_sync()
                    n += 1
                else:
                    await self.incremental()
                    n += 1
                delay = self.resync_interval
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as e:
                raise_if_cancelling()
                log.warning("re-sync failed", error=str(e))
                delay = min(self.resync_interval, 1.0)
            except Exception:
                raise_if_cancelling()
                log.exception("re-sync failed")
                delay = min(self.resync_interval, 1.0)
            self._wake.clear()
            await wait_event(self._wake, delay)
