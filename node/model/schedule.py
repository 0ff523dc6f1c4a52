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

A job may choose other rules for fixed-time schedules (``DstPolicy``): ``gap: skip`` fires nothing for a
wall time the gap swallows, ``overlap: second`` fires at the second occurrence, ``overlap: both`` at both.

croniter does the calendar field matching on naive local datetimes; this module
maps those wall-clock times to real instants with the rules above.

Beyond croniter's syntax (``L``, ``L5`` the last Friday, ``5#2`` the second Friday, ``15W``):

* Jenkins' ``H`` in any field: ``H``, ``H(0-29)``, ``H/15``, ``H(0-29)/10`` — a value derived from a seed
  (the job's id), fixed for the job, so a thousand ``H * * * *`` jobs spread over the hour. It is resolved
  into plain numbers at parse time (``Schedule.resolved``); the preview shows the result.
* Quartz's ``5L`` (the last Friday), read as croniter's ``L5``; ``LW`` (the last weekday of the month), a filter
  over days 26–31 (the last weekday is never earlier), with ``*`` as the day of the week.
* ``@at 2026-12-24T18:00:00`` (a local date-time in the zone, or with an explicit offset): one instant.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from itertools import takewhile
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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

_FIELD_OK = re.compile(r"^[0-9A-Za-z*/,\-?#LW()]+$")
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

# ---- Jenkins' H ---------------------------------------------------------------------------------------

# The range H picks from in each field, in croniter's order (minute, hour, day, month, weekday, second).
# Days stop at 28, as Jenkins does: an H day exists in every month.
_H_RANGES = ((0, 59), (0, 23), (1, 28), (1, 12), (0, 6), (0, 59))
_H_TOKEN = re.compile(r"^H(?:\((\d+)-(\d+)\))?(?:/(\d+))?$")


def _hash(seed: str, field: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{field}".encode()).digest()[:8], "big")


def _resolve_h(token: str, field: int, seed: str) -> str:
    """One ``H`` item as the plain numbers it stands for (``ScheduleError`` when malformed)."""
    m = _H_TOKEN.match(token)
    if m is None:
        raise ScheduleError(f"invalid H item {token!r}: use H, H(a-b), H/n or H(a-b)/n")
    lo, hi = _H_RANGES[field]
    if m[1] is not None:
        a, b = int(m[1]), int(m[2])
        if not lo <= a <= b <= hi:
            raise ScheduleError(f"H({a}-{b}) is outside {lo}-{hi}")
        lo, hi = a, b
    h = _hash(seed, field)
    if m[3] is None:
        return str(lo + h % (hi - lo + 1))
    step = int(m[3])
    if not 0 < step <= hi - lo + 1:
        raise ScheduleError(f"H/{step}: the step must be between 1 and {hi - lo + 1}")
    return f"{lo + h % step}-{hi}/{step}"


@lru_cache(maxsize=4096)
def has_h(expression: str) -> bool:
    """Does the expression use ``H`` (and so depend on the job's id)? (Cached: a takeover asks it for every job.)"""
    return any(_H_TOKEN.match(item) for f in expression.split() for item in f.split(","))


def resolve_h(expression: str, seed: str) -> str:
    """The expression with its H items resolved for ``seed`` (a job's id), in the user's field order, without
    parsing the rest: ``parse(expression, seed=seed).resolved`` for the price of a hash per H (the forecast groups
    a million H jobs by it). An expression without H is returned as it is."""
    if not has_h(expression):
        return expression
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ScheduleError("expected 5 or 6 fields")
    cron_fields = fields[1:] + fields[:1] if len(fields) == 6 else fields
    out = _expand_h(cron_fields, seed)
    return " ".join(out[-1:] + out[:-1] if len(fields) == 6 else out)


def _expand_h(cron_fields: list[str], seed: str) -> list[str]:
    return [",".join(_resolve_h(item, i, seed) if item.startswith("H") else item for item in f.split(","))
            for i, f in enumerate(cron_fields)]


# ---- DST policy ---------------------------------------------------------------------------------------


class GapPolicy(StrEnum):
    SHIFT = "shift"  # a wall time the gap swallows fires once, at the first instant after the gap
    SKIP = "skip"  # ... does not fire


class OverlapPolicy(StrEnum):
    FIRST = "first"  # a wall time that occurs twice fires at its first occurrence
    SECOND = "second"  # ... at its second
    BOTH = "both"  # ... at both


@dataclass(frozen=True, slots=True)
class DstPolicy:
    """What a fixed-time schedule does where the wall clock jumps (interval schedules follow real time)."""

    gap: GapPolicy = GapPolicy.SHIFT
    overlap: OverlapPolicy = OverlapPolicy.FIRST

    def to_api(self) -> dict[str, str]:
        return {"gap": str(self.gap), "overlap": str(self.overlap)}


DEFAULT_DST = DstPolicy()


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
    dst: DstPolicy = DEFAULT_DST  # fixed-time schedules only
    last_weekday: bool = False  # LW: of the days croniter matches (26-31), only the month's last weekday
    at: datetime | None = None  # @at: this one instant (UTC), nothing else
    resolved: str = ""  # the expression with H resolved, in the user's field order ("" when no H)

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
        if self.at is not None:
            if budget is not None:
                budget.spend()
            if self.at > instant:
                yield self.at
            return
        try:
            if self.last_weekday:
                yield from self._iter_last_weekday(instant, budget)
            elif self.interval:
                yield from self._iter_interval(instant, budget)
            else:
                yield from self._iter_fixed(instant, budget)
        except (CroniterBadDateError, OverflowError):  # no match within croniter's 50-year search, or past
            return  # year 9999: the schedule ends here
        except ValueError as e:  # croniter's "year 10000 is out of range" (and kin): the same end
            if "out of range" not in str(e) and "is not in list" not in str(e):
                raise
            return

    def _iter_days(self, instant: datetime, budget: Budget | None) -> Iterator[datetime]:
        return self._iter_interval(instant, budget) if self.interval else self._iter_fixed(instant, budget)

    def _iter_last_weekday(self, instant: datetime, budget: Budget | None) -> Iterator[datetime]:
        """LW: croniter matches days 26-31; a day that is not the month's last weekday is stepped over at once
        (the iteration starts again at the next local midnight), so a rejected day costs one step."""
        lo = instant
        while True:
            for t in self._iter_days(lo, budget):
                d = t.astimezone(self.zone).date()
                if _is_last_weekday(d):
                    yield t
                    continue
                nxt = datetime.combine(d + timedelta(days=1), datetime.min.time(), self.zone).astimezone(UTC)
                lo = max(nxt - _TINY, t)
                break

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

    # Fixed schedules: the wall clock; a gap's wall times fire at its end (``gap: shift``) or not at all
    # (``skip``); a wall time that occurs twice fires at its first occurrence, its second, or both. Instants
    # are yielded in real-time order: a fold's second occurrences wait in a small heap until no earlier one
    # can follow (a later wall time's first occurrence).
    def _iter_fixed(self, instant: datetime, budget: Budget | None) -> Iterator[datetime]:
        local = instant.astimezone(self.zone)
        wall = local.replace(tzinfo=None)
        overlap = self.dst.overlap
        if overlap is OverlapPolicy.FIRST:
            # A wall time before ``instant``'s own is either past or a second occurrence, never fired: a
            # start inside a fold's second pass starts from the fold's end.
            start = _fold_end(local) if local.fold else wall
        else:
            # In a fold's first pass, earlier wall times have their second occurrence still to come.
            delta = _fold_size(wall, self.zone)
            start = wall - delta if delta and not local.fold else wall
        it = croniter(self.croniter_expr, start)
        pending: list[datetime] = []
        last: datetime | None = None
        while True:
            if budget is not None:
                budget.spend()
            w: datetime = it.get_next(datetime)
            first = w.replace(tzinfo=self.zone, fold=0)
            now_due: list[datetime] = []
            if not _exists(first):
                end = _gap_end(first)
                if self.dst.gap is GapPolicy.SHIFT:
                    now_due.append(end)
                # the wall times the gap swallows are stepped over at once
                it = croniter(self.croniter_expr, end.astimezone(self.zone).replace(tzinfo=None) - _TINY)
            else:
                u0 = first.astimezone(UTC)
                u1 = w.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
                if u1 <= u0 or overlap is OverlapPolicy.FIRST:
                    now_due.append(u0)
                elif overlap is OverlapPolicy.SECOND:
                    now_due.append(u1)
                else:
                    now_due += [u0, u1]
            if not now_due:
                continue
            floor = min(now_due)
            for t in now_due:
                heapq.heappush(pending, t)
            if len(pending) > 64:  # never: a fold holds at most an hour or two of wall times
                raise ScheduleError(f"schedule {self.expression!r}: DST overlap bookkeeping overflowed")
            while pending and pending[0] <= floor:
                t = heapq.heappop(pending)
                if t > instant and (last is None or t > last):
                    last = t
                    yield t


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


def zone_transitions(zone: ZoneInfo, start: datetime, end: datetime, *, most: int = 50
                     ) -> list[tuple[datetime, timedelta, timedelta]]:
    """The UTC-offset changes of ``zone`` in ``(start, end]``: (instant, offset before, offset after), at most
    ``most`` (a week's step, then a binary search: transitions are months apart)."""
    out: list[tuple[datetime, timedelta, timedelta]] = []
    lo = start
    off = lo.astimezone(zone).utcoffset() or timedelta(0)
    while lo < end and len(out) < most:
        hi = min(lo + timedelta(days=7), end)
        if (hi.astimezone(zone).utcoffset() or timedelta(0)) == off:
            lo = hi
            continue
        lo_s, hi_s = int(lo.timestamp()) + 1, int(hi.timestamp())
        while lo_s < hi_s:  # the first second whose offset is not ``off``
            mid = (lo_s + hi_s) // 2
            if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() != off:
                hi_s = mid
            else:
                lo_s = mid + 1
        t = datetime.fromtimestamp(lo_s, UTC)
        after = t.astimezone(zone).utcoffset() or timedelta(0)
        out.append((t, off, after))
        lo, off = t, after
    return out


def _fold_size(wall: datetime, zone: ZoneInfo) -> timedelta:
    """How much earlier a wall time's second occurrence lies from its first (0 when it occurs once)."""
    a = wall.replace(tzinfo=zone, fold=0).utcoffset() or timedelta(0)
    b = wall.replace(tzinfo=zone, fold=1).utcoffset() or timedelta(0)
    return a - b if a > b else timedelta(0)


def _is_last_weekday(d: date) -> bool:
    """Is ``d`` the last Monday-to-Friday day of its month?"""
    if d.weekday() >= 5:
        return False
    nxt = d + timedelta(days=1 if d.weekday() < 4 else 3)
    return nxt.month != d.month


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


_AT = re.compile(r"^@at\s+(\S+)$", re.I)
_QUARTZ_LAST_WEEKDAY = re.compile(r"^([0-7])L$", re.I)  # Quartz's 5L: croniter's L5


def parse(expression: str, zone_name: str = "UTC", *, seed: str = "", dst: DstPolicy = DEFAULT_DST) -> Schedule:
    """Parse a cron expression: 5 fields, 6 with seconds first, an @alias, or ``@at <local date-time>``.
    ``seed`` (the job's id) resolves ``H``; ``dst`` applies to fixed-time schedules."""
    if not isinstance(expression, str):
        raise ScheduleError("schedule must be a string")
    # the cache is shared by every job: a seed matters only to an expression with H
    return _parse(expression, zone_name, seed if has_h(expression) else "", dst)


@lru_cache(maxsize=4096)
def _parse(expression: str, zone_name: str, seed: str, dst: DstPolicy) -> Schedule:
    zone = load_zone(zone_name)
    text = " ".join(expression.split())
    if not text:
        raise ScheduleError("schedule is empty")
    if len(text) > MAX_EXPRESSION_LEN:
        raise ScheduleError(f"schedule is longer than {MAX_EXPRESSION_LEN} characters")
    if (m := _AT.match(text)) is not None:
        return Schedule(expression=expression, zone=zone, croniter_expr="", has_seconds=True, interval=False,
                        at=parse_at(m[1], zone))
    if text.startswith("@"):
        alias = ALIASES.get(text.lower())
        if alias is None:
            raise ScheduleError(f"unknown alias {text!r}; use one of {', '.join(sorted(ALIASES))} or @at <date-time>")
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
    resolved = ""
    if has_h(text):
        cron_fields = _expand_h(cron_fields, seed)
        resolved = " ".join(cron_fields[-1:] + cron_fields[:-1] if has_seconds else cron_fields)
    cron_fields[4] = ",".join(_QUARTZ_LAST_WEEKDAY.sub(r"L\1", item) for item in cron_fields[4].split(","))
    last_weekday = cron_fields[2].upper() == "LW"
    if last_weekday:
        if cron_fields[4] not in ("*", "?"):
            raise ScheduleError("LW (the last weekday of the month) takes * as the day of the week")
        cron_fields[2] = "26-31"  # the last weekday of a month is never earlier; a filter keeps it alone
    elif "W" in cron_fields[2].upper() and "L" in cron_fields[2].upper():
        raise ScheduleError(f"invalid day of the month {cron_fields[2]!r}: use L, LW, a day, or nW")
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
    if has_seconds and cron_fields[:5] == ["*"] * 5 and not last_weekday:
        sec = cron_fields[5]
        if sec == "*":
            every = 1
        elif sec.startswith("*/") and sec[2:].isdigit() and 0 < int(sec[2:]) < 60 and 60 % int(sec[2:]) == 0:
            every = int(sec[2:])
    sched = Schedule(expression=expression, zone=zone, croniter_expr=cexpr, has_seconds=has_seconds,
                     interval=interval, every_seconds=every, dst=dst, last_weekday=last_weekday, resolved=resolved)
    try:
        # An expression can be syntactically valid and still never fire (Feb 30).
        croniter(cexpr, datetime(2026, 1, 1), max_years_between_matches=10).get_next(datetime)
    except Exception:
        raise ScheduleError(f"cron expression {expression!r} never fires") from None
    return sched


def parse_at(text: str, zone: ZoneInfo) -> datetime:
    """``@at``'s date-time: local in ``zone`` (a wall time a DST gap swallows is the gap's end; one that
    occurs twice, its first occurrence), or with an explicit offset or Z. Seconds at most: no fractions."""
    try:
        t = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ScheduleError(f"@at {text!r}: expected a date-time such as 2026-12-24T18:00:00") from None
    if "T" not in text.upper() and " " not in text:
        raise ScheduleError(f"@at {text!r}: give a time too (2026-12-24T18:00:00)")
    if t.microsecond:
        raise ScheduleError(f"@at {text!r}: whole seconds only")
    if not 1970 <= t.year <= 9000:
        raise ScheduleError(f"@at {text!r}: the year must be between 1970 and 9000")
    if t.tzinfo is not None:
        return t.astimezone(UTC)
    aware = t.replace(tzinfo=zone, fold=0)
    return aware.astimezone(UTC) if _exists(aware) else _gap_end(aware)


_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
            "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


@lru_cache(maxsize=4096)
def describe(expression: str) -> str:
    """The schedule in words, for the dashboard and the preview API (cron-descriptor, 24-hour clock):
    ``*/15 9-17 * * 1-5`` is "Every 15 minutes, between 09:00 and 17:59, Monday through Friday".
    The expression itself when it cannot be described."""
    from cron_descriptor import ExpressionDescriptor, Options  # (on first use: ~1 MB of a node that describes none)

    text = " ".join(expression.split())
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        return str(ExpressionDescriptor(_ALIASES.get(text.lower(), text), options).get_description())
    except Exception:  # cron-descriptor raises its own error types for what it cannot read
        return text
