"""The tick ledger served and audited: a job's definition history and execution rows, read from
MariaDB, given to the pure ``node.ledger.account``.

* ``job_ledger`` answers ``GET /api/crons/{id}/ticks``: why did or didn't it run?
* ``Auditor`` runs on every node: a few seconds after each minute it accounts for the last
  completed minute of every job it owns (and has planned past that minute), counts the fates in
  ``cronring_ticks_total{fate}``, and logs each ``unaccounted`` instant as an error: an instant
  that was due, is not paused, and has no row. That is a bug in cronring, never a policy outcome,
  so ``cronring_ticks_unaccounted_total`` (and ``/api/health``'s ``unaccountedTicks``) should stay 0.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, Protocol

import structlog

from .. import metrics
from ..aio import Slices, raise_if_cancelling
from ..batching import AUDIT_JOBS, chunks
from ..model.calendars import Calendar
from ..model.errors import StoreUnavailable
from ..model.executions import Execution, Fate
from ..model.schedule import Budget, ScheduleError
from ..model.times import rfc3339
from ..model.timetable import Timetable
from .ledger import Book, Ledger, TickEntry, account, entries, segments
from .ownership import Owned


class LedgerSource(Protocol):
    """What the ledger is built from (store/history.py): definitions, rows of the window, retention's mark."""

    async def ledger_inputs(self, job_ids: Sequence[str], start: datetime, end: datetime
                            ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[Execution]],
                                       dict[str, datetime | None]]: ...

log = structlog.get_logger("audit")

AUDIT_DELAY = 5.0  # seconds after a minute ends before it is audited (outcomes are written in batches)


def settle_for(member_ttl: float, heartbeat_interval: float, claim_ahead: float) -> timedelta:
    """How long an instant may stay without a row before it is a bug: a takeover, a claim batch,
    an outcome write."""
    return timedelta(seconds=member_ttl + heartbeat_interval + claim_ahead + 2)


LEDGER_STEPS = 200_000  # schedule steps one ledger read may spend (10,000 entries cost at most ~40,000)


async def job_ledger(source: LedgerSource, job_id: str, start: datetime, end: datetime, *, settle: timedelta,
                     limit: int, calendars: Mapping[str, Calendar] | None = None) -> Ledger:
    """One job's ledger for an API read or a page, built in slices (``Slices``): the loop is never held for
    more than a few milliseconds, whatever the window. Raises ``ScheduleTooCostly`` past LEDGER_STEPS."""
    history, rows, oldest = await source.ledger_inputs([job_id], start, end)
    book = Book(limit=limit, kept_from=oldest.get(job_id))
    slices = Slices()
    for entry in entries(segments(history[job_id], calendars), rows[job_id], start=start, end=end, now=datetime.now(UTC),
                         settle=settle, budget=Budget(LEDGER_STEPS)):
        if not book.add(entry):
            break
        await slices.pause()
    return book.ledger()


STRIP_SPANS = tuple(timedelta(seconds=s) for s in (30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600,
                                                   86_400, 2 * 86_400, 4 * 86_400, 7 * 86_400))
STRIP_STEPS = 2_000  # schedule steps one job's strip may spend (20-60 instants; an edit from every second to daily
# leaves days of instants in its span: that job gets no strip rather than ticks from days ago)


def strip_span(tt: Timetable | None, now: datetime, ticks: int) -> timedelta:
    """How far back a job's last ``ticks`` instants reach, about: ``ticks`` of its next gaps (a cron schedule's
    gaps repeat), rounded up to one of STRIP_SPANS so the rows of a page share a few reads; a week at most."""
    if tt is None:
        return STRIP_SPANS[-1]
    times = list(islice(tt.raw_after(now, Budget(ticks * 8 + 8)), ticks + 1)) if ticks else []
    if len(times) < 2:
        return STRIP_SPANS[-1]
    want = (times[-1] - times[0]) * ticks / (len(times) - 1)
    return next((s for s in STRIP_SPANS if s >= want), STRIP_SPANS[-1])


async def recent_ticks(source: LedgerSource, timetables: Mapping[str, Timetable | None], *, ticks: int,
                       settle: timedelta, calendars: Mapping[str, Calendar] | None = None,
                       now: datetime | None = None) -> dict[str, list[TickEntry] | None]:
    """Each job's last ``ticks`` instants (up to now) with their fates: the jobs page's strips. The jobs are read
    by span (a read of definitions and rows for the jobs whose last ticks reach as far back), the ledger built in
    slices under one step budget; a job whose schedule is too costly to walk gets what was found."""
    now = now or datetime.now(UTC)
    by_span: dict[timedelta, list[str]] = {}
    for job_id, tt in timetables.items():
        try:
            span = strip_span(tt, now - STRIP_SPANS[-1], ticks)  # (None: the widest)
        except ScheduleError:
            span = STRIP_SPANS[-1]
        by_span.setdefault(span, []).append(job_id)
    out: dict[str, list[TickEntry] | None] = {}
    slices = Slices()
    while by_span:
        wider: dict[timedelta, list[str]] = {}
        for span, ids in sorted(by_span.items()):
            history, rows, oldest = await source.ledger_inputs(ids, now - span, now)
            for job_id in ids:
                last: deque[TickEntry] = deque(maxlen=ticks)
                book = Book(limit=STRIP_STEPS, kept_from=oldest.get(job_id))  # (it marks what retention trimmed)
                try:
                    for entry in entries(segments(history[job_id], calendars), rows[job_id], start=now - span,
                                         end=now, now=now, settle=settle, budget=Budget(STRIP_STEPS)):
                        if not book.add(entry):
                            raise ScheduleError("more entries than a strip walks")
                        last.append(book.ticks[-1])
                        await slices.pause()
                except ScheduleError:
                    out[job_id] = None
                    continue
                if not last and span < STRIP_SPANS[-1]:  # none in its span (a business-hours job at night)
                    wider.setdefault(min(span * 16, STRIP_SPANS[-1]), []).append(job_id)
                out[job_id] = list(last)
        by_span = wider
    return out


class Auditor:
    def __init__(self, source: LedgerSource, owned: Callable[[], Mapping[str, Owned]], *,
                 clock: Callable[[], float] = time.time,
                 calendars: Callable[[], Mapping[str, Calendar]] = dict) -> None:
        self.source = source
        self.owned = owned
        self.calendars = calendars
        self.clock = clock
        self.unaccounted = 0  # since this node started
        self.last_minute: datetime | None = None
        # (job id, its first unaccounted instant of the minute, how many): the ticks.unaccounted alert
        self.on_unaccounted: Callable[[str, datetime, int], Awaitable[None]] | None = None

    async def audit(self, minute_end: datetime) -> dict[str, int]:
        """Account for ``[minute_end - 60 s, minute_end)`` of every owned job planned past it."""
        start = minute_end - timedelta(minutes=1)
        ids = Owned.planned_past(list(self.owned().values()), minute_end)
        totals = dict.fromkeys(map(str, Fate), 0)
        now = datetime.now(UTC)
        slices = Slices()
        for chunk in chunks(ids, AUDIT_JOBS):
            history, rows, oldest = await self.source.ledger_inputs(chunk, start, minute_end)
            for j in chunk:
                ledger = account(segments(history[j], self.calendars()), rows[j], start=start, end=minute_end, now=now,
                                 settle=timedelta(0), kept_from=oldest.get(j))
                for fate, n in ledger.counts.items():
                    totals[fate] += n
                lost = [t for t in ledger.ticks if t.fate is Fate.UNACCOUNTED]
                for t in lost:
                    log.error("unaccounted tick: due, not paused, and no execution row", job=j,
                              tick=rfc3339(t.scheduled_at), detail=t.detail)
                if lost and self.on_unaccounted is not None:
                    try:
                        await self.on_unaccounted(j, lost[0].scheduled_at, len(lost))
                    except StoreUnavailable as e:
                        log.warning("ticks.unaccounted alert not recorded", job=j, error=str(e))
                await slices.pause()
            await asyncio.sleep(0)
        for fate, n in totals.items():
            if n:
                metrics.ticks(fate).inc(n)
        if totals[str(Fate.UNACCOUNTED)]:
            self.unaccounted += totals[str(Fate.UNACCOUNTED)]
            metrics.TICKS_UNACCOUNTED.inc(totals[str(Fate.UNACCOUNTED)])
        self.last_minute = minute_end
        return totals

    async def run(self) -> None:
        while True:
            now = self.clock()
            minute_end = (now - AUDIT_DELAY) // 60 * 60 + 60  # the next minute end to audit
            await asyncio.sleep(max(0.0, minute_end + AUDIT_DELAY - now))
            try:
                await self.audit(datetime.fromtimestamp(minute_end, UTC))
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as e:
                raise_if_cancelling()
                log.warning("tick audit skipped: MariaDB unavailable", error=str(e))
