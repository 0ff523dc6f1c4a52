"""Retention: every 30 s, the jobs this node owns that have claimed a quarter of their allowance since the
last pass keep only their newest ``history_per_job`` executions, tombstones older than a week go with their
history, and backfills 30 days after they ended with their executions (``store/history.py`` says what is never
deleted: open rows, the takeover anchor, anything the audit still reads)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import structlog

from ..aio import raise_if_cancelling
from .ownership import Owned

log = structlog.get_logger("retention")

EVERY = 30.0  # seconds between passes


class HistoryUpkeep(Protocol):
    """What retention deletes (store/history.py)."""

    async def apply_retention(self, job_ids: Sequence[str], keep: int) -> int: ...
    async def purge_tombstones(self, older_than_days: int = 7) -> int: ...
    async def purge_backfills(self) -> int: ...


class Retention:
    def __init__(self, history: HistoryUpkeep, owned: Callable[[], Mapping[str, Owned]], *, keep: int) -> None:
        self.history, self.owned, self.keep = history, owned, keep

    async def pass_once(self) -> int:
        owned = self.owned()
        ids = [o.id for o in list(owned.values()) if o.claims_since_retention >= max(1, self.keep // 4)]
        deleted = 0
        if ids:
            deleted = await self.history.apply_retention(ids, self.keep)
            for j in ids:
                if j in owned:
                    owned[j].claims_since_retention = 0
            log.debug("retention", jobs=len(ids), deleted=deleted)
        await self.history.purge_tombstones()
        await self.history.purge_backfills()
        return deleted

    async def run(self) -> None:
        while True:
            await asyncio.sleep(EVERY)
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                raise_if_cancelling()
                log.warning("retention failed", error=str(e))
