"""Every node's in-memory catalogue of jobs: a load at start, job events, periodic re-sync.

Pub/sub is lossy; the re-sync from MariaDB heals a missed event within
``resync_interval``. After a Redis reconnect the whole catalogue is reloaded.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog

from node.aio import wait_event
from node.jobs import JobSummary
from node.messages import JobEvent, Record
from node.store import Store, StoreUnavailable

log = structlog.get_logger("catalogue")

# Rows committed a little after their updated_at are still picked up.
WATERMARK_OVERLAP = timedelta(seconds=5)
FULL_SYNC_EVERY = 30  # incremental re-syncs between full ones


class Catalogue:
    def __init__(self, store: Store, resync_interval: float) -> None:
        self.store = store
        self.resync_interval = resync_interval
        self.jobs: dict[str, JobSummary] = {}
        self.watermark: datetime | None = None
        self.changed_ids: set[str] = set()
        self.changed = asyncio.Event()
        self.loaded = asyncio.Event()
        self.full_pending = False
        self._wake = asyncio.Event()

    def active_ids(self) -> list[str]:
        return [j.id for j in self.jobs.values() if not j.paused and not j.deleted]

    def apply(self, s: JobSummary) -> None:
        cur = self.jobs.get(s.id)
        if cur is not None and cur.version >= s.version:
            return
        if s.deleted:
            if cur is None:
                return
            del self.jobs[s.id]
        else:
            self.jobs[s.id] = s
        self.changed_ids.add(s.id)
        self.changed.set()

    def on_record(self, record: Record) -> None:
        if isinstance(record, JobEvent):
            self.apply(JobSummary(id=record.id, version=record.version, paused=record.paused,
                                  deleted=record.op == "deleted"))

    async def full_sync(self) -> None:
        summaries, now = await self.store.changed_since(None)
        fresh = {s.id: s for s in summaries}
        gone = set(self.jobs) - set(fresh)
        changed = {i for i, s in fresh.items() if self.jobs.get(i) != s} | gone
        self.jobs = fresh
        self.watermark = now - WATERMARK_OVERLAP if now else None
        if changed:
            self.changed_ids |= changed
            self.changed.set()
        self.loaded.set()
        log.info("catalogue loaded", jobs=len(fresh))

    async def incremental(self) -> None:
        summaries, now = await self.store.changed_since(self.watermark)
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
                if not self.loaded.is_set() or self.full_pending or n % FULL_SYNC_EVERY == 0:
                    self.full_pending = False
                    await self.full_sync()
                else:
                    await self.incremental()
                n += 1
                delay = self.resync_interval
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as e:
                log.warning("re-sync failed", error=str(e))
                delay = min(self.resync_interval, 1.0)
            except Exception:
                log.exception("re-sync failed")
                delay = min(self.resync_interval, 1.0)
            self._wake.clear()
            await wait_event(self._wake, delay)
