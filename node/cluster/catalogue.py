"""Every node's in-memory catalogue of jobs: a load at start, job events, periodic re-sync.

Pub/sub is lossy; the re-sync from MariaDB heals a missed event within
``resync_interval``. After a Redis reconnect the whole catalogue is reloaded.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from .. import metrics
from ..aio import raise_if_cancelling, wait_event
from ..model.calendars import Calendar
from ..model.errors import StoreUnavailable
from ..model.jobs import JobSummary
from .messages import CalendarEvent, JobEvent, Record


class ChangeFeed(Protocol):
    """Job summaries changed since a watermark, and the database's now (store/jobs.py)."""

    async def changed_since(self, watermark: datetime | None) -> tuple[list[JobSummary], datetime | None]: ...


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


class Catalogue:
    """Job summaries by id, merged by version: an older summary never replaces a newer one,
    and a deleted job stays as a tombstone for a while, so neither a late event nor a full
    re-sync that read the table before an edit or delete can undo it."""

    def __init__(self, feed: ChangeFeed, resync_interval: float, calendar_feed: CalendarFeed | None = None) -> None:
        self.feed = feed
        self.calendar_feed: CalendarFeed = calendar_feed or _NoCalendars()
        self.resync_interval = resync_interval
        self.jobs: dict[str, JobSummary] = {}  # tombstones included (deleted=True)
        self.calendars: dict[str, Calendar] = {}  # by name, as last read (a change bumps calendars_seen)
        self.calendars_seen = 0  # how many times the calendars changed (owners rebuild their timetables)
        self.tombstoned: dict[str, float] = {}  # id -> monotonic time it became a tombstone
        self.watermark: datetime | None = None
        self.changed_ids: set[str] = set()
        self.changed = asyncio.Event()
        self.loaded = asyncio.Event()
        self.full_pending = False
        self.calendars_pending = False
        self._wake = asyncio.Event()
        self._touched: set[str] | None = None  # ids applied while a full re-sync's read was under way

    def active_ids(self) -> list[str]:
        return [j.id for j in self.jobs.values() if j.active]

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

    def _purge_tombstones(self) -> None:
        old = time.monotonic() - TOMBSTONE_KEEP
        for i in [i for i, t in self.tombstoned.items() if t < old]:
            del self.tombstoned[i]
            self.jobs.pop(i, None)

    def on_record(self, record: Record) -> None:
        if isinstance(record, JobEvent):
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
        self._wake.set()

    async def sync_calendars(self) -> None:
        self.calendars_pending = False
        self.set_calendars(await self.calendar_feed.all())

    async def full_sync(self) -> None:
        """Merge every live job by version; a job missing from the table (deleted, its tombstone
        purged) becomes a tombstone here unless an event about it arrived during the read."""
        self._touched = set()
        try:
            summaries, now = await self.feed.changed_since(None)
            touched = self._touched
        finally:
            self._touched = None
        fresh: set[str] = set()
        for s in summaries:
            fresh.add(s.id)
            self.apply(s)
        for i in [i for i, s in self.jobs.items() if not s.deleted and i not in fresh and i not in touched]:
            cur = self.jobs[i]
            self.apply(JobSummary(id=i, version=cur.version + 1, paused=cur.paused, deleted=True))
        self._purge_tombstones()
        self.watermark = now - WATERMARK_OVERLAP if now else None
        self.loaded.set()
        log.info("catalogue loaded", jobs=self.live_count())

    async def incremental(self) -> None:
        summaries, now = await self.feed.changed_since(self.watermark)
        for s in summaries:
            self.apply(s)
        if now:
            self.watermark = now - WATERMARK_OVERLAP

    def request_full(self) -> None:
        self.full_pending = True
        self._wake.set()

    async def run(self) -> None:
        n = 0
        while True:
            try:
                if self.calendars_pending and self.loaded.is_set() and not self.full_pending:
                    await self.sync_calendars()  # a calendar event: only the calendars, now
                elif not self.loaded.is_set() or self.full_pending or n % FULL_SYNC_EVERY == 0:
                    self.full_pending = False
                    await self.sync_calendars()
                    await self.full_sync()
                    n += 1
                else:
                    await self.incremental()
                    await self.sync_calendars()
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
