"""Pure schedule maths: parse and validate, next fire instants, DST rules, missed ticks.

No I/O. Every function takes the clock as an argument.

DST rules (DESIGN.md, "Schedules and time"):

* A *fixed-time* schedule (the hour field names specific hours) is evaluated on
  the local wall clock. A local time that does not exist (spring forward) fires
  once, at the first valid instant after the gap; a local time that occurs twice
  (fall back) fires once, at its first occurrence.
* An *interval* schedule (hour field ``*`` or ``*/n``) follows real elapsed
  time: wall-clock times inside a gap do not exist and are not fired, and a
  repeated hour fires again in real time.

croniter does the calendar field matching on naive local datetimes; this module
maps those wall-clock times to real instants with the rules above.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import takewhile
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import ExpressionDescriptor, Options
from croniter import CroniterBadDateError, croniter

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELD_OK = re.compile(r"^[0-9A-Za-z*/,\-?#LW]+$")
_RANGE = re.compile(r"^([0-9A-Za-z]+)-([0-9A-Za-z]+)(/[0-9]+)?$")


def _equal_ranges(field: str) -> str:
    """``5-5`` (or ``5-5/2``, ``mon-mon``) as the one value it names, as cron(8) reads it: croniter reads a
    range whose ends are equal as the whole cycle (``0 0 3-3 * *`` would fire every day)."""
    items = field.split(",")
    for k, item in enumerate(items):
        m = _RANGE.match(item)
        if m and (m[1].lower() == m[2].lower() or (m[1].isdigit() and m[2].isdigit() and int(m[1]) == int(m[2]))):
            items[k] = m[1]
    return ",".join(items)
MAX_EXPRESSION_LEN = 200


class ScheduleError(ValueError):
    """A schedule or time zone that cannot be used; the message says why."""


class ScheduleExhausted(ScheduleError):
    """The schedule has no fire time after the instant asked (none within croniter's 50-year search)."""


class ScheduleTooCostly(ScheduleError):
    """A request would spend more schedule steps than its budget: "range too large for this schedule"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    expression: str  # as the user wrote it
    zone: ZoneInfo
    croniter_expr: str  # 5 fields, or 6 with seconds last (croniter's order)
    has_seconds: bool
    interval: bool  # hour field is * or */n: follow real elapsed time

    every_seconds: int = 0  # "*/n * * * * *" (n divides 60) or "* * * * * *": plain arithmetic, zone-free

    def next_after(self, instant: datetime, budget: Budget | None = None) -> datetime:
        """The first fire instant strictly after ``instant`` (aware, UTC). Raises ``ScheduleExhausted`` when
        there is none (croniter finds no match within 50 years)."""
        if self.every_seconds:
            step = timedelta(seconds=self.every_seconds)
            return EPOCH + (_as_utc(instant) - EPOCH) // step * step + step
        for t in self.iter_after(instant, budget):
            return t
        raise ScheduleExhausted(f"schedule {self.expression!r} has no fire time after {instant.isoformat()}")

    def count_between(self, after: datetime, until: datetime) -> int:
        """How many fire instants lie in ``(after, until]``.

        O(1) for ``every_seconds`` schedules (exact integer arithmetic on microseconds); other schedules are
        enumerated, so their callers keep the span small (see node/planning.py).
        """
        if until <= after:
            return 0
        if self.every_seconds:
            step = timedelta(seconds=self.every_seconds)
            return (_as_utc(until) - EPOCH) // step - (_as_utc(after) - EPOCH) // step
        return sum(1 for _ in takewhile(lambda t: t <= until, self.iter_after(after)))

    def iter_after(self, instant: datetime, budget: Budget | None = None) -> Iterator[datetime]:
        """Fire instants strictly after ``instant``, strictly increasing, in UTC.

        Each instant costs a bounded number of croniter steps whatever the expression (see ``_iter_interval``);
        ``budget``, when given, caps the steps of the whole iteration (``ScheduleTooCostly`` past it)."""
        instant = _as_utc(instant)
        if self.every_seconds:
            t = self.next_after(instant)
            step = timedelta(seconds=self.every_seconds)
            while True:
                if budget is not None:
                    budget.spend()
                yield t
                t += step
        try:
            if self.interval:
                yield from self._iter_interval(instant, budget)
            else:
                yield from self._iter_fixed(instant, budget)
        except CroniterBadDateError:  # no match within croniter's 50-year search: the schedule ends here
            return

    # Interval schedules: every real instant whose local wall clock matches. Time is cut into segments
    # of constant UTC offset (at most SEGMENT long); inside one, wall time and real time move together,
    # so croniter's wall-clock sequence maps to instants in order. A segment with no match jumps: its
    # croniter's first match beyond it (croniter jumps over whole months and days itself) says no wall
    # time matches before it, so the real instants up to JUMP_MARGIN before it are skipped at once (two
    # UTC offsets differ by less than that). A fire then costs a few segments, never one per two days
    # since the previous fire (``0 */12 29 2 *`` walked ~730 segments, 80 ms, per fire).
    def _iter_interval(self, instant: datetime, budget: Budget | None) -> Iterator[datetime]:
        lo = instant  # exclusive lower bound
        tiny = timedelta(microseconds=1)
        empty = 0  # segments since the last fire
        while True:
            empty += 1
            if empty > MAX_EMPTY_SEGMENTS:  # a bound the algorithm never reaches: never an unbounded walk
                raise ScheduleError(f"schedule {self.expression!r}: next fire not found within {MAX_EMPTY_SEGMENTS} steps")
            if budget is not None:
                budget.spend()
            off = (lo + tiny).astimezone(self.zone).utcoffset() or timedelta(0)
            hi = _next_transition(self.zone, lo, off)
            it = croniter(self.croniter_expr, (lo + off).replace(tzinfo=None))
            while True:
                wall: datetime = it.get_next(datetime)
                utc = (wall - off).replace(tzinfo=UTC)
                if utc >= hi:
                    break
                if budget is not None:
                    budget.spend()
                yield utc
                empty = 0
            jump = utc - JUMP_MARGIN
            # only after a segment without a transition: every real instant after it then has a wall time
            # past the segment's start (offsets differ by less than SEGMENT)
            lo = jump if hi == lo + SEGMENT and jump > hi else hi - tiny

    # Fixed schedules: wall clock, gap -> end of gap, fold -> first occurrence.
    def _iter_fixed(self, instant: datetime, budget: Budget | None) -> Iterator[datetime]:
        # No rewind needed: a wall time before ``instant``'s own is either in the past or a second
        # occurrence, which fixed schedules never fire. A start inside a fold's second pass starts from
        # the fold's end (every wall time before it is a first occurrence already past), and the wall
        # times a gap swallows, all fired at the gap's end, are stepped over at once.
        local = instant.astimezone(self.zone)
        it = croniter(self.croniter_expr, _fold_end(local) if local.fold else local.replace(tzinfo=None))
        last: datetime | None = None
        while True:
            if budget is not None:
                budget.spend()
            wall: datetime = it.get_next(datetime)
            aware = wall.replace(tzinfo=self.zone, fold=0)
            if _exists(aware):
                utc = aware.astimezone(UTC)
            else:
                utc = _gap_end(aware)
                it = croniter(self.croniter_expr, utc.astimezone(self.zone).replace(tzinfo=None))
            if utc <= instant or (last is not None and utc <= last):
                continue
            last = utc
            yield utc


class Budget:
    """A cap on the croniter steps one request may spend on schedules (the API's previews and ledgers)."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = self.left = limit

    def spend(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise ScheduleTooCostly(f"range too large for this schedule (more than {self.limit} schedule steps); "
                                    "ask for a shorter range or fewer fires")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _as_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("instants must be timezone-aware")
    return instant.astimezone(UTC)


SEGMENT = timedelta(days=2)  # DST transitions are months apart: at most one per segment
JUMP_MARGIN = timedelta(hours=36)  # more than any two UTC offsets differ (-12:00 to +14:00), less than SEGMENT
MAX_EMPTY_SEGMENTS = 64  # segments without a fire, between two fires (a jump makes it a handful)
_TINY = timedelta(microseconds=1)


def _next_transition(zone: ZoneInfo, lo: datetime, off: timedelta) -> datetime:
    """The first instant after ``lo`` whose UTC offset is not ``off``, or ``lo + SEGMENT``."""
    hi = lo + SEGMENT
    if hi.astimezone(zone).utcoffset() == off:
        return hi
    lo_s, hi_s = int(lo.timestamp()) + 1, int(hi.timestamp())
    while lo_s < hi_s:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() != off:
            hi_s = mid
        else:
            lo_s = mid + 1
    return datetime.fromtimestamp(lo_s, UTC)


def _fold_end(local: datetime) -> datetime:
    """For an aware local time in the second pass of a fold (``fold=1``): the naive wall time just before
    the fold ends, i.e. before the first wall time that occurs once again."""
    first = local.replace(fold=0).astimezone(UTC)  # the same wall time's first occurrence
    # the transition lies between the two occurrences: find it (first second with the later offset)
    after = local.utcoffset()
    lo_s, hi_s = int(first.timestamp()), int(local.timestamp()) + 1
    while lo_s < hi_s:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(local.tzinfo).utcoffset() == after:
            hi_s = mid
        else:
            lo_s = mid + 1
    before = first.astimezone(local.tzinfo).utcoffset() or timedelta(0)
    transition = datetime.fromtimestamp(lo_s, UTC)
    # the second pass ends at the transition's wall time read with the earlier offset
    return (transition + before).replace(tzinfo=None) - _TINY


def _exists(aware: datetime) -> bool:
    """False for a wall-clock time inside a DST gap."""
    back = aware.astimezone(UTC).astimezone(aware.tzinfo)
    return back.replace(tzinfo=None) == aware.replace(tzinfo=None)


def _gap_end(aware: datetime) -> datetime:
    """The first valid instant after the gap that swallowed ``aware``'s wall time."""
    # fold=1 reads the wall time with the post-transition offset (earlier in UTC),
    # fold=0 with the pre-transition offset (later in UTC): the transition is between.
    lo = aware.replace(fold=1).astimezone(UTC)
    hi = aware.replace(fold=0).astimezone(UTC)
    if lo > hi:
        lo, hi = hi, lo
    post = hi.astimezone(aware.tzinfo).utcoffset()
    # Binary search for the first second with the post-transition offset.
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    while lo_s < hi_s:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(aware.tzinfo).utcoffset() == post:
            hi_s = mid
        else:
            lo_s = mid + 1
    return datetime.fromtimestamp(lo_s, UTC)


@lru_cache(maxsize=1024)
def load_zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 64 or "\x00" in name:
        raise ScheduleError(f"unknown time zone {name!r}")
    if name.startswith("/") or ".." in name:
        raise ScheduleError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Lisbon'") from None


@lru_cache(maxsize=4096)
def parse(expression: str, zone_name: str = "UTC") -> Schedule:
    """Parse a cron expression: 5 fields, 6 with seconds first, or an @alias."""
    if not isinstance(expression, str):
        raise ScheduleError("schedule must be a string")
    zone = load_zone(zone_name)
    text = " ".join(expression.split())
    if not text:
        raise ScheduleError("schedule is empty")
    if len(text) > MAX_EXPRESSION_LEN:
        raise ScheduleError(f"schedule is longer than {MAX_EXPRESSION_LEN} characters")
    if text.startswith("@"):
        alias = ALIASES.get(text.lower())
        if alias is None:
            raise ScheduleError(f"unknown alias {text!r}; use one of {', '.join(sorted(ALIASES))}")
        text = alias
    fields = text.split(" ")
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"expected 5 fields (minute hour day month weekday) or 6 with seconds first, got {len(fields)}"
        )
    for f in fields:
        if not _FIELD_OK.match(f):
            raise ScheduleError(f"invalid field {f!r}")
    fields = [_equal_ranges(f) for f in fields]
    has_seconds = len(fields) == 6
    cron_fields = fields[1:] + fields[:1] if has_seconds else fields
    cexpr = " ".join(cron_fields)
    try:
        ok = croniter.is_valid(cexpr)
    except Exception:  # croniter raises assorted errors on odd input
        ok = False
    if not ok:
        raise ScheduleError(f"invalid cron expression {expression!r}")
    hour = cron_fields[1]
    interval = hour == "*" or hour.startswith("*/")
    every = 0
    if has_seconds and fields[1:] == ["*"] * 5:
        sec = fields[0]
        if sec == "*":
            every = 1
        elif sec.startswith("*/") and sec[2:].isdigit() and 0 < int(sec[2:]) < 60 and 60 % int(sec[2:]) == 0:
            every = int(sec[2:])
    sched = Schedule(expression=expression, zone=zone, croniter_expr=cexpr, has_seconds=has_seconds,
                     interval=interval, every_seconds=every)
    try:
        # An expression can be syntactically valid and still never fire (Feb 30).
        croniter(cexpr, datetime(2026, 1, 1), max_years_between_matches=10).get_next(datetime)
    except Exception:
        raise ScheduleError(f"cron expression {expression!r} never fires") from None
    return sched


_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
            "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


@lru_cache(maxsize=4096)
def describe(expression: str) -> str:
    """The schedule in words, for the dashboard and the preview API (cron-descriptor, 24-hour clock):
    ``*/15 9-17 * * 1-5`` is "Every 15 minutes, between 09:00 and 17:59, Monday through Friday".
    The expression itself when it cannot be described."""
    text = " ".join(expression.split())
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        return str(ExpressionDescriptor(_ALIASES.get(text.lower(), text), options).get_description())
    except Exception:  # cron-descriptor raises its own error types for what it cannot read
        return text
