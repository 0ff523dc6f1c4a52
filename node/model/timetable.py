"""A job's timetable: every instant it is scheduled for, and which of them are due. Pure: no I/O, no clock.

A job has one or more schedules (``schedule``, or ``schedules``: up to ten expressions whose instants are merged;
an instant two of them share is one instant), optional bounds (``startAt`` inclusive, ``endAt`` exclusive),
exclusion calendars, and a jitter. The timetable answers, for any instant:

* ``raw_after``: the merged instants of the schedules, increasing, bounds ignored (the tick ledger lists them all);
* ``iter_after``: the same within the bounds (what planning considers);
* ``bound(t)`` / ``excluded(t)``: why an instant is not due (a bound, or a calendar), or None;
* ``next_after``: the first instant that is due (nextRunAt, previews); excluded spans are jumped over, never walked;
* ``offset(t)``: the jitter, a deterministic function of (job id, instant) in ``[0, jitterSeconds)``, so every
  node computes the same one; the request is sent at ``t + offset(t)`` and still says ``t`` in
  ``X-Cron-Scheduled-At``.

The job's DST policy and ``H`` seed are in each ``Schedule`` (``model/schedule.py``).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .calendars import Calendar
from .schedule import Budget, Schedule, ScheduleExhausted
from .times import rfc3339

_TINY = timedelta(microseconds=1)
MAX_SCHEDULES = 10
MAX_JUMPS = 10_000  # excluded spans jumped over while looking for the next due instant
HORIZON = timedelta(days=366 * 10)  # no due instant within ten years: none (as a schedule that never fires)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timetable:
    schedules: tuple[Schedule, ...]
    start_at: datetime | None = None
    end_at: datetime | None = None
    calendars: tuple[Calendar, ...] = ()
    jitter: int = 0  # seconds
    seed: str = ""  # the job's id: the jitter's seed

    @property
    def zone(self) -> Any:
        return self.schedules[0].zone

    @property
    def expression(self) -> str:
        return self.schedules[0].expression

    @property
    def plain(self) -> bool:
        """One schedule and nothing else: the instants are the schedule's."""
        return len(self.schedules) == 1 and not self.calendars and not self.jitter

    @property
    def every_seconds(self) -> int:
        """Planning's arithmetic path: one every-N-seconds schedule, no calendar, no jitter."""
        return self.schedules[0].every_seconds if self.plain else 0

    @property
    def interval(self) -> bool:
        return all(s.interval for s in self.schedules)

    # ---- instants ---------------------------------------------------------------------------------------

    def raw_after(self, instant: datetime, budget: Budget | None = None) -> Iterator[datetime]:
        """Every instant of the schedules strictly after ``instant``, merged, increasing, bounds ignored."""
        if len(self.schedules) == 1:
            yield from self.schedules[0].iter_after(instant, budget)
            return
        last = None
        for t in heapq.merge(*(s.iter_after(instant, budget) for s in self.schedules)):
            if t != last:
                last = t
                yield t

    def iter_after(self, instant: datetime, budget: Budget | None = None) -> Iterator[datetime]:
        """The instants within the bounds, strictly after ``instant`` (excluded ones included)."""
        if self.start_at is not None and instant < self.start_at:
            instant = self.start_at - _TINY
        for t in self.raw_after(instant, budget):
            if self.end_at is not None and t >= self.end_at:
                return
            yield t

    def bound(self, t: datetime) -> str | None:
        if self.start_at is not None and t < self.start_at:
            return f"before startAt {_iso(self.start_at)}"
        if self.end_at is not None and t >= self.end_at:
            return f"at or after endAt {_iso(self.end_at)}"
        return None

    def excluded(self, t: datetime) -> str | None:
        """The first calendar that excludes ``t``, as a reason, or None."""
        for c in self.calendars:
            if c.excludes(t):
                return c.reason(t)
        return None

    def exclusion_end(self, t: datetime) -> datetime:
        """For an excluded ``t``: every instant in ``[t, exclusion_end)`` is excluded too."""
        return max(c.next_change(t) for c in self.calendars if c.excludes(t))

    def next_after(self, instant: datetime, budget: Budget | None = None) -> datetime:
        """The first due instant strictly after ``instant``: within the bounds and excluded by no calendar.
        ``ScheduleExhausted`` when there is none."""
        if self.plain and self.start_at is None and self.end_at is None:
            return self.schedules[0].next_after(instant, budget)  # (every-N-seconds: arithmetic)
        lo, horizon = instant, instant + HORIZON
        for _ in range(MAX_JUMPS):
            t = next(self.iter_after(lo, budget), None)
            if t is None or t > horizon:
                break
            if not self.calendars or self.excluded(t) is None:
                return t
            lo = max(t, self.exclusion_end(t) - _TINY)
        raise ScheduleExhausted(f"schedule {self.expression!r} has no due instant after {instant.isoformat()}")

    def due_after(self, instant: datetime, budget: Budget | None = None) -> Iterator[datetime]:
        """The due instants after ``instant``, in order (previews, upcoming fires)."""
        lo = instant
        while True:
            try:
                t = self.next_after(lo, budget)
            except ScheduleExhausted:
                return
            yield t
            lo = t

    def count_between(self, after: datetime, until: datetime) -> int:
        """Instants (excluded ones included) in ``(after, until]`` within the bounds."""
        if self.plain and self.start_at is None and self.end_at is None:
            return self.schedules[0].count_between(after, until)
        n = 0
        for t in self.iter_after(after):
            if t > until:
                break
            n += 1
        return n

    # ---- jitter -----------------------------------------------------------------------------------------

    def offset(self, t: datetime) -> timedelta:
        """How long after ``t`` its request is sent: ``[0, jitter)`` seconds, to the millisecond, the same on
        every node (a hash of the job's id and the instant)."""
        if not self.jitter:
            return timedelta(0)
        h = int.from_bytes(hashlib.sha256(f"{self.seed}|{t.timestamp():.3f}".encode()).digest()[:8], "big")
        return timedelta(milliseconds=h % (self.jitter * 1000))

    def fire_at(self, t: datetime) -> datetime:
        return t + self.offset(t) if self.jitter else t


def _iso(t: datetime) -> str:
    return rfc3339(t) or ""


def shortest_interval(timetable: Timetable, after: datetime, *, samples: int = 200) -> timedelta | None:
    """The shortest gap between consecutive instants among the next ``samples`` (None: fewer than two)."""
    prev = None
    best: timedelta | None = None
    for k, t in enumerate(timetable.raw_after(after, Budget(samples * 8))):
        if prev is not None:
            gap = t - prev
            best = gap if best is None or gap < best else best
        prev = t
        if k >= samples:
            break
    return best
