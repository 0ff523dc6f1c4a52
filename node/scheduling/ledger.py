"""The tick ledger: why did, or didn't, each scheduled instant of a job run?

``account(segments, rows, start=, end=, now=, settle=)`` is pure (no I/O, no clock). It lists every scheduled
instant of one job in the window ``[start, end)``, under the definition in force at that instant, in increasing
order and each exactly once, with a ``Fate``, the execution that accounts for it and a short detail for an operator.
The API serves it (``GET /api/crons/{id}/ticks``); each owner audits its jobs' last completed minute with it and
counts the fates (``unaccounted`` is a bug).

Segments (the job's definition history: consecutive, ordered, not overlapping):
  * A segment's instants are its schedule's instants ``t`` with ``segment.start < t <= segment.end`` (``end=None``:
    still in force). The start is exclusive, like ``Schedule.iter_after``: an instant exactly at an edit belongs to
    the definition in force up to and including it, the one being replaced.
  * ``schedule=None``: the job did not exist then (before creation, after deletion): no instants.
  * ``paused``: its instants are listed with fate ``paused`` (not due), unless a row accounts for them.

Rows (the job's execution rows overlapping the window) become fates in one place, the tables below:
  * ``kind_cover``: which instants a row of a kind accounts for, from the vocabulary's sets
    (``model/executions.py``). ``ONE_INSTANT_KINDS`` (tick, catchup): the one instant at their ``scheduled_at`` (a
    run). ``RANGE_KINDS`` (misfire, overlap): every instant in ``[missed_from, scheduled_at]`` (a run of consecutive
    ticks not run is one row). ``manual`` (run now), ``backfill`` and kinds this release does not know: no scheduled
    instant, ever.
  * ``ROW_FATES``: (cover, state) -> fate; a pair not in the table is ``unaccounted``, with the state in the detail.
  * ``REASON_FATES``: a range row's reason refines its fate (misfire rows are written ``missed`` whatever the policy;
    "skipped by misfire policy" makes them ``skipped``).
For one instant the first that applies wins: a one-instant row at exactly that instant (what happened beats what
should have happened, e.g. a tick claimed ahead just before a pause), a range row covering it, the segment's pause,
then ``pending`` when the instant is later than ``now - settle`` (not due yet, or due but not claimed yet) and
``unaccounted`` otherwise.

A ``tick``/``catchup`` row in the window at an instant of no definition (claimed ahead, then the schedule was edited)
is listed too, in order, with its own fate and a detail saying so: what ran is never hidden.

Bounded work: instants are enumerated from ``max(segment.start, start)``, never from a segment's beginning, and at
most ``limit + 1`` entries are produced (the extra one only tells ``truncated`` and ``next_from``), so a huge window or
a long gap costs at most ``limit`` schedule steps. One-instant rows are matched by a merge with the (increasing)
instants and range rows by bisection: O((instants + rows) log rows).

A segment's instants are its timetable's (``model/timetable.py``: its schedules merged, bounds ignored), so an
instant outside ``startAt``/``endAt`` is listed ``excluded`` with the bound in its detail, and one after the job
completed (``maxRuns``) ``completed``; both come from the definition, as ``paused`` does. Instants an exclusion
calendar names, or a skip request covers, are recorded as range rows when they come (``excluded``, ``skipped``);
a pending one the calendars or a skip will exclude is listed so already.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

from ..model.calendars import Calendar
from ..model.executions import (
    ONE_INSTANT_KINDS,
    RANGE_KINDS,
    SKIP_REASON,
    Execution,
    ExecutionKind,
    ExecutionState,
    Fate,
)
from ..model.jobs import scheduling_from_spec
from ..model.schedule import Budget, Schedule, ScheduleError, parse
from ..model.times import rfc3339
from ..model.timetable import Timetable

DEFAULT_LIMIT = 10_000
ERROR_CHARS = 200  # a row's error quoted in a detail is cut to this many characters
_TINY = timedelta(microseconds=1)

Row = Execution  # the ledger reads execution rows: scheduled_at, kind, state, missed_from, error, ...


class Cover(StrEnum):
    """Which scheduled instants one execution row accounts for."""

    ONE = "one"  # the instant at its scheduled_at (a run)
    RANGE = "range"  # every instant in [missed_from, scheduled_at] (not run)
    NONE = "none"  # none: not a scheduled instant


def kind_cover(row: Row) -> Cover:
    """From the vocabulary's sets: a run of one instant, a range not run, or no instant (run-now, backfill,
    and a kind this release does not know)."""
    if row.kind in ONE_INSTANT_KINDS:
        return Cover.ONE
    if row.kind in RANGE_KINDS:
        return Cover.RANGE
    return Cover.NONE


S, F = ExecutionState, Fate
ROW_FATES: dict[tuple[Cover, str], Fate] = {
    (Cover.ONE, S.SUCCEEDED): F.DELIVERED,
    (Cover.ONE, S.FAILED): F.FAILED,
    (Cover.ONE, S.TIMED_OUT): F.FAILED,
    (Cover.ONE, S.ABANDONED): F.ABANDONED,
    (Cover.ONE, S.CLAIMED): F.RUNNING,
    (Cover.ONE, S.RUNNING): F.RUNNING,
    (Cover.ONE, S.SKIPPED): F.SKIPPED,
    (Cover.ONE, S.MISSED): F.MISSED,
    (Cover.ONE, S.CANCELLED): F.CANCELLED,
    (Cover.ONE, S.BUFFERED): F.BUFFERED,
    (Cover.RANGE, S.SKIPPED): F.SKIPPED,
    (Cover.RANGE, S.MISSED): F.MISSED,
    (Cover.RANGE, S.EXCLUDED): F.EXCLUDED,
}  # a pair not listed: Fate.UNACCOUNTED

REASON_FATES: tuple[tuple[str, Fate], ...] = (
    ("skipped by misfire policy", Fate.SKIPPED),
)  # (reason prefix, fate) for range rows, first match wins


def row_fate(row: Row) -> Fate:
    """The fate of the instants a row accounts for (``unaccounted`` for a state the tables do not know)."""
    cover = kind_cover(row)
    fate = ROW_FATES.get((cover, row.state), Fate.UNACCOUNTED)
    if cover is Cover.RANGE and fate is not Fate.UNACCOUNTED:
        reason = row.error or ""
        fate = next((f for prefix, f in REASON_FATES if reason.startswith(prefix)), fate)
    return fate


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    """One definition of a job, in force for instants in ``(start, end]``."""

    start: datetime
    end: datetime | None  # None: still in force
    schedule: Schedule | Timetable | None  # None: the job did not exist (before creation, after deletion)
    paused: bool = False
    version: int = 0
    completed: bool = False  # the job had completed: its instants are not due
    max_runs: int | None = None
    skip_until: datetime | None = None

    @property
    def timetable(self) -> Timetable | None:
        s = self.schedule
        return s if s is None or isinstance(s, Timetable) else Timetable(schedules=(s,))


@dataclass(frozen=True, slots=True, kw_only=True)
class TickEntry:
    scheduled_at: datetime
    fate: Fate
    execution_id: str | None = None
    redelivered: bool = False
    detail: str = ""

    def to_api(self) -> dict[str, Any]:
        return {"scheduledAt": rfc3339(self.scheduled_at), "fate": str(self.fate), "executionId": self.execution_id,
                "redelivered": self.redelivered, "detail": self.detail}


@dataclass(frozen=True, slots=True, kw_only=True)
class Ledger:
    ticks: list[TickEntry]
    truncated: bool  # more entries follow in the window
    counts: dict[str, int]  # by fate, every fate present (0 when none)
    next_from: datetime | None = None  # when truncated: the first entry not listed (ask again from here)

    def to_api(self) -> dict[str, Any]:
        return {"ticks": [t.to_api() for t in self.ticks], "truncated": self.truncated,
                "nextFrom": rfc3339(self.next_from), "counts": self.counts}


def account(segments: Sequence[Segment], rows: Iterable[Row], *, start: datetime, end: datetime, now: datetime,
            settle: timedelta, limit: int = DEFAULT_LIMIT, kept_from: datetime | None = None,
            budget: Budget | None = None) -> Ledger:
    """Every scheduled instant in ``[start, end)`` with its fate; at most ``limit`` of them (see the module doc).
    ``kept_from``: the job's oldest execution row; an instant before it without a row was trimmed, not lost.
    ``budget``: a cap on the schedule steps spent (``ScheduleTooCostly`` past it)."""
    book = Book(limit=limit, kept_from=kept_from)
    for entry in entries(segments, rows, start=start, end=end, now=now, settle=settle, budget=budget):
        if not book.add(entry):
            break
    return book.ledger()


def entries(segments: Sequence[Segment], rows: Iterable[Row], *, start: datetime, end: datetime, now: datetime,
            settle: timedelta, budget: Budget | None = None) -> Iterator[TickEntry]:
    """The entries of the window, in order, one at a time: a caller on an event loop pulls them in slices."""
    return _Accountant(segments, rows, start=start, end=end, now=now, settle=settle, budget=budget).entries()


class Book:
    """Collects entries into a ``Ledger``: at most ``limit``, the first one past it kept as ``next_from``."""

    __slots__ = ("kept_from", "limit", "next_from", "ticks")

    def __init__(self, *, limit: int, kept_from: datetime | None) -> None:
        self.limit, self.kept_from = limit, kept_from
        self.ticks: list[TickEntry] = []
        self.next_from: datetime | None = None

    def add(self, entry: TickEntry) -> bool:
        """False once the book is full (``entry`` is then where the next page starts)."""
        if len(self.ticks) >= self.limit:
            self.next_from = entry.scheduled_at
            return False
        if entry.fate is Fate.UNACCOUNTED and self.kept_from is not None and entry.scheduled_at < self.kept_from \
                and entry.execution_id is None:
            entry = replace(entry, fate=Fate.TRIMMED,
                            detail="older than the oldest execution kept (CRONRING_HISTORY_PER_JOB)")
        self.ticks.append(entry)
        return True

    def ledger(self) -> Ledger:
        counts = dict.fromkeys(map(str, Fate), 0)
        for entry in self.ticks:
            counts[str(entry.fate)] += 1
        return Ledger(ticks=self.ticks, truncated=self.next_from is not None, counts=counts, next_from=self.next_from)


def instants(segments: Sequence[Segment], start: datetime, end: datetime,
             budget: Budget | None = None) -> Iterator[tuple[datetime, Segment]]:
    """The scheduled instants in ``[start, end)`` with the segment in force at each, strictly increasing."""
    floor = start - _TINY  # instants are strictly after the floor: >= start, and never one twice
    for seg in segments:
        tt = seg.timetable
        if tt is None or seg.start >= end or (seg.end is not None and seg.end < start):
            continue
        for t in tt.raw_after(max(seg.start, floor), budget):
            if t >= end or (seg.end is not None and t > seg.end):
                break
            yield t, seg
            floor = t


class _Accountant:
    """The rows of one job, indexed, and the entries they make for the window."""

    def __init__(self, segments: Sequence[Segment], rows: Iterable[Row], *, start: datetime, end: datetime,
                 now: datetime, settle: timedelta, budget: Budget | None) -> None:
        self.segments, self.start, self.end, self.now, self.cut = segments, start, end, now, now - settle
        self.budget = budget
        ones: list[tuple[datetime, int, Row]] = []
        spans: list[tuple[datetime, datetime, int, Row]] = []
        self.others: dict[datetime, Row] = {}  # rows that cover no instant, for the unaccounted hint
        self.backfilled: dict[datetime, Row] = {}  # the instant a backfill sent -> its best row (delivered first)
        for i, row in enumerate(rows):
            at = row.scheduled_at
            if row.kind == ExecutionKind.BACKFILL and row.instant is not None:
                seen = self.backfilled.get(row.instant)
                if seen is None or _rank(row) > _rank(seen):
                    self.backfilled[row.instant] = row
                continue
            cover = kind_cover(row)
            if cover is Cover.ONE:
                if start <= at < end:
                    ones.append((at, i, row))
            elif cover is Cover.RANGE:
                first = row.missed_from
                first = first if first is not None and first <= at else at
                spans.append((first, at, i, row))
            else:
                self.others.setdefault(at, row)
        ones.sort(key=lambda x: (x[0], x[1]))
        spans.sort(key=lambda x: (x[0], x[2]))
        self.ones = [(at, row) for at, _, row in ones]
        self.firsts = [s[0] for s in spans]
        self.lasts = [s[1] for s in spans]
        self.spans = [s[3] for s in spans]
        self.reach: list[datetime] = []  # reach[i]: the latest instant any of spans[:i + 1] covers
        for last in self.lasts:
            self.reach.append(max(last, self.reach[-1]) if self.reach else last)
        self.starts = [s.start for s in segments]
        self.explained: dict[int, tuple[Fate, str]] = {}  # by id(row): a range row's 100 instants share one detail

    def entries(self) -> Iterator[TickEntry]:
        ones, j = self.ones, 0
        # instants a backfill sent that no definition had (before the job existed, under an earlier schedule)
        extra = sorted(t for t in self.backfilled if self.start <= t < self.end)
        k = 0
        for t, seg in instants(self.segments, self.start, self.end, self.budget):
            while j < len(ones) and ones[j][0] < t:
                yield self._stray(*ones[j])
                j += 1
            while k < len(extra) and extra[k] < t:
                yield self._backfill_only(extra[k])
                k += 1
            if k < len(extra) and extra[k] == t:
                k += 1
            row = None
            while j < len(ones) and ones[j][0] == t:  # two rows for one instant cannot pass the UNIQUE key: first wins
                row = row or ones[j][1]
                j += 1
            entry = self._entry(t, seg, row)
            yield self._with_backfill(entry) if self.backfilled else entry
        for at, row in ones[j:]:
            yield self._stray(at, row)
        for t in extra[k:]:
            yield self._backfill_only(t)

    def _backfill_only(self, t: datetime) -> TickEntry:
        seg = self.segments[0] if self.segments else None
        why = "before the job existed" if seg is not None and t <= seg.start else \
            "not an instant of the definition then in force"
        return self._with_backfill(TickEntry(scheduled_at=t, fate=Fate.PENDING, detail=why), was=f" ({why})")

    def _entry(self, t: datetime, seg: Segment, row: Row | None) -> TickEntry:
        """The instant's fate: a row at it, a range row covering it, its definition (a bound, a completion, a
        pause), or by the clock (pending, or unaccounted: a bug)."""
        tt = seg.timetable
        if row is not None:
            return self._from_row(t, row, "; claimed before the pause" if seg.paused else "")
        if (span := self._span(t)) is not None:
            return self._from_row(t, span)
        if tt is not None and (bound := tt.bound(t)) is not None:
            return TickEntry(scheduled_at=t, fate=Fate.EXCLUDED, detail=f"excluded: {bound} (version {seg.version})")
        if seg.completed:
            runs = f" after {seg.max_runs} run{'' if seg.max_runs == 1 else 's'}" if seg.max_runs else ""
            return TickEntry(scheduled_at=t, fate=Fate.COMPLETED, detail=f"the job had completed{runs}")
        if seg.paused:
            return TickEntry(scheduled_at=t, fate=Fate.PAUSED, detail=f"paused (version {seg.version})")
        due = tt.fire_at(t) if tt is not None else t
        if due <= self.cut:
            return TickEntry(scheduled_at=t, fate=Fate.UNACCOUNTED, detail=self._no_row(t))
        if seg.skip_until is not None and t <= seg.skip_until:
            return TickEntry(scheduled_at=t, fate=Fate.SKIPPED, detail=f"{SKIP_REASON} (until {rfc3339(seg.skip_until)})")
        if tt is not None and tt.calendars and (why := tt.excluded(t)) is not None:
            return TickEntry(scheduled_at=t, fate=Fate.EXCLUDED, detail=why)
        return TickEntry(scheduled_at=t, fate=Fate.PENDING, detail="not due yet" if due > self.now else "due, not claimed yet")

    def _with_backfill(self, entry: TickEntry, was: str | None = None) -> TickEntry:
        """An instant a backfill sent: delivered by it (whatever befell its tick), in flight, or the tick's fate with
        the backfill's failure said."""
        b = self.backfilled.get(entry.scheduled_at)
        if b is None or entry.fate is Fate.DELIVERED:
            return entry
        was = was if was is not None else f" (its tick: {entry.fate})"
        if b.state == ExecutionState.SUCCEEDED:
            return TickEntry(scheduled_at=entry.scheduled_at, fate=Fate.DELIVERED, execution_id=b.id,
                             redelivered=b.redelivered, detail=f"delivered by backfill {b.backfill}: {_delivered(b)}{was}")
        if b.state in (ExecutionState.CLAIMED, ExecutionState.RUNNING):
            return TickEntry(scheduled_at=entry.scheduled_at, fate=Fate.RUNNING, execution_id=b.id,
                             detail=f"backfill {b.backfill} in flight{was}")
        return replace(entry, detail=f"{entry.detail}; backfill {b.backfill}: {_clip(b.error or b.state)}")

    def _span(self, t: datetime) -> Row | None:
        """The range row covering ``t`` (ranges do not overlap; if they did, any covering one)."""
        i = bisect_right(self.firsts, t) - 1
        while i >= 0 and self.reach[i] >= t:
            if self.lasts[i] >= t:
                return self.spans[i]
            i -= 1
        return None

    def _from_row(self, t: datetime, row: Row, note: str = "") -> TickEntry:
        explained = self.explained.get(id(row))
        if explained is None:
            explained = self.explained[id(row)] = _explain(row)
        fate, detail = explained
        return TickEntry(scheduled_at=t, fate=fate, execution_id=row.id, redelivered=row.redelivered,
                         detail=detail + note)

    def _stray(self, at: datetime, row: Row) -> TickEntry:
        """A run row at an instant of no definition: listed, and said so."""
        i = bisect_left(self.starts, at) - 1  # the segment with start < at
        seg = self.segments[i] if i >= 0 else None
        if seg is not None and seg.schedule is not None and (seg.end is None or at <= seg.end):
            note = f"; not an instant of version {seg.version}'s schedule (claimed under an earlier definition)"
        else:
            note = "; the job had no schedule then"
        return self._from_row(at, row, note)

    def _no_row(self, t: datetime) -> str:
        other = self.others.get(t)
        if other is not None:
            return f"no tick row; a {other.kind} row ({other.id}) holds this instant: a bug, please report"
        return "no execution row: a bug, please report"


def _rank(row: Row) -> int:
    """Which of several backfill rows of one instant speaks for it: delivered, then in flight, then the rest."""
    return 2 if row.state == ExecutionState.SUCCEEDED else 1 if row.state in (ExecutionState.CLAIMED,
                                                                                ExecutionState.RUNNING) else 0


def _explain(row: Row) -> tuple[Fate, str]:
    fate = row_fate(row)
    return fate, _DETAILS.get(fate, _named(fate))(row)


def _clip(text: object) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= ERROR_CHARS else s[:ERROR_CHARS - 1] + "…"


def _notes(row: Row, *, attempts: bool = True) -> str:
    notes = []
    n = row.attempts
    if attempts and n:
        notes.append(f"{n} attempt{'' if n == 1 else 's'}")
    if row.kind == ExecutionKind.CATCHUP:
        notes.append("catch-up run")
    if row.redelivered:
        notes.append("redelivered")
    return f" ({', '.join(notes)})" if notes else ""


def _delivered(row: Row) -> str:
    status = row.status_code
    n = row.attempts
    head = f"HTTP {status}" if status is not None else "delivered"
    if n:
        head += f" after {n} attempt{'' if n == 1 else 's'}"
    return head + _notes(row, attempts=False)


def _failed(row: Row) -> str:
    error = row.error
    if not error:
        status = row.status_code
        error = f"HTTP {status}" if status is not None else "timed out" if row.state == ExecutionState.TIMED_OUT else "?"
    return f"failed: {_clip(error)}" + _notes(row)


def _abandoned(row: Row) -> str:
    return f"abandoned: {_clip(row.error or 'claimed, never sent')}" + _notes(row)


def _running(row: Row) -> str:
    node = row.node
    if row.state == ExecutionState.CLAIMED:
        head = f"claimed by {node}" if node else "claimed, not sent yet"
        return head + _notes(row, attempts=False)
    n = row.attempts
    head = f"running on {node}" if node else "running"
    return head + (f", attempt {n}" if n else "") + _notes(row, attempts=False)


def _not_run(fate: Fate) -> Callable[[Row], str]:
    def detail(row: Row) -> str:
        reason = _clip(row.error or "not run")
        text = reason if reason.startswith(str(fate)) else f"{fate}: {reason}"
        count = row.missed_count
        first = row.missed_from
        if count > 1 and first is not None:
            span = f"{count} ticks from {_clock(first, row.scheduled_at)}"
            text += f"; {span}" if text.endswith(")") else f" ({span})"
        return text

    return detail


def _named(fate: Fate) -> Callable[[Row], str]:
    return lambda row: str(fate) + _notes(row)


def _unknown(row: Row) -> str:
    return f"execution row in unknown state {str(row.state)!r} (kind {str(row.kind)!r}): a bug, please report"


def _clock(t: datetime, ref: datetime) -> str:
    """``t`` as a time of day when it is on ``ref``'s UTC date, else in full."""
    t, ref = t.astimezone(UTC), ref.astimezone(UTC)
    if t.date() != ref.date():
        return rfc3339(t) or ""
    ms = f".{t.microsecond // 1000:03d}" if t.microsecond else ""
    return f"{t:%H:%M:%S}{ms}Z"


_DETAILS: dict[Fate, Callable[[Row], str]] = {
    Fate.DELIVERED: _delivered,
    Fate.FAILED: _failed,
    Fate.ABANDONED: _abandoned,
    Fate.RUNNING: _running,
    Fate.SKIPPED: _not_run(Fate.SKIPPED),
    Fate.MISSED: _not_run(Fate.MISSED),
    Fate.EXCLUDED: _not_run(Fate.EXCLUDED),
    Fate.CANCELLED: lambda row: f"cancelled: {_clip(row.error or 'replaced by a later tick')}" + _notes(row),
    Fate.BUFFERED: lambda row: "buffered: waits for the run in flight" + _notes(row, attempts=False),
    Fate.UNACCOUNTED: _unknown,
}  # details of the fates a row gives; paused, pending and unaccounted without a row are written in entries()


# ---- definitions from the job's history ------------------------------------------


@lru_cache(maxsize=4096)
def _schedule(expression: str, zone: str) -> Schedule | None:
    try:
        return parse(expression, zone)
    except ScheduleError:
        return None


@lru_cache(maxsize=4096)
def _definition(job_id: str, expression: str, zone: str, spec: str, calendars: tuple[Calendar, ...]
                ) -> tuple[Timetable, dict[str, Any]] | None:
    """A history row's timetable (its schedules, bounds, DST policy, calendars) and its other scheduling fields."""
    fields = scheduling_from_spec(json.loads(spec))
    try:
        schedules = tuple(parse(e, zone, seed=job_id, dst=fields["dst_policy"])
                          for e in (expression, *fields["more_schedules"]))
    except ScheduleError:
        return None
    by_name = {c.name: c for c in calendars}
    tt = Timetable(schedules=schedules, start_at=fields["start_at"], end_at=fields["end_at"],
                   calendars=tuple(by_name[n] for n in fields["exclude_calendars"] if n in by_name),
                   jitter=fields["jitter_seconds"], seed=job_id)
    return tt, fields


def segments(history: Sequence[Mapping[str, Any]], calendars: Mapping[str, Calendar] | None = None) -> list[Segment]:
    """History rows (ordered by version) -> consecutive definitions, each in force until the next. ``calendars``:
    the exclusion calendars now (for instants not planned yet; the planned ones have their rows)."""
    out: list[Segment] = []
    for i, h in enumerate(history):
        end = history[i + 1]["valid_from"] if i + 1 < len(history) else None
        schedule: Schedule | Timetable | None = None
        extra: dict[str, Any] = {}
        if h["deleted"]:
            pass
        elif h.get("spec"):
            names = tuple(sorted(calendars or {}))
            found = _definition(h["job_id"], h["schedule"], h["time_zone"], h["spec"],
                                tuple(calendars[n] for n in names) if calendars else ())
            if found is not None:
                schedule, fields = found
                extra = {"max_runs": fields["max_runs"], "skip_until": fields["skip_until"]}
        else:  # a release-2 row: one expression, nothing else
            schedule = _schedule(h["schedule"], h["time_zone"])
        out.append(Segment(start=h["valid_from"], end=end, schedule=schedule, paused=bool(h["paused"]),
                           version=int(h["version"]), completed=bool(h.get("completed")), **extra))
    return out


def missed_in_gap(history: Sequence[Mapping[str, Any]], start: datetime, end: datetime) -> list[Any]:
    """The instants in (start, end] that were due under the definitions then in force (not paused, not
    deleted) — for a gap nobody could claim: the owner was lost and the job was then paused, edited
    or deleted before a successor planned it. Returned as planning.MissedRange (bounded slices).

    The exclusion calendars are not consulted: an instant one excluded gets a missed row too. Left out, it would
    have no row, and the ledger would judge it by the calendars as they are when it is read (they change: the
    soak at 100,000 jobs found two such instants unaccounted after the calendar moved on)."""
    from .planning import missed_between

    out: list[Any] = []
    for seg in segments(history):
        tt = seg.timetable
        if tt is None or seg.paused or seg.completed:
            continue
        hi = min(seg.end, end) if seg.end is not None else end
        out += missed_between(tt, max(seg.start, start), hi)
    return out
