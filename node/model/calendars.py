"""Exclusion calendars: named sets of local dates, date-time ranges and weekdays on which a job's instants are
not due. Pure: no I/O.

A calendar says, for an instant, whether it is excluded: the instant read on the calendar's own wall clock
(``timeZone``) falls on one of its ``dates``, on one of its ``weekdays`` (0 = Sunday … 6 = Saturday, cron's
numbering), or inside one of its ``ranges`` (local date-times, ``[from, to)``). Jobs name the calendars they
obey (``excludeCalendars``); an instant any of them excludes is recorded ``excluded`` with the calendar's name.

``next_change`` tells, for an excluded instant, the first instant the calendar may stop excluding (the next
local midnight, or a range's end), so planning jumps over a long exclusion instead of walking it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from .schedule import ScheduleError, load_zone

NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")  # a DNS-label-like name: it goes in URLs and files
MAX_DATES = 2_000
MAX_RANGES = 500
WEEKDAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


class CalendarError(ValueError):
    def __init__(self, details: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in details.items()))
        self.details = details


@dataclass(frozen=True, slots=True, kw_only=True)
class Calendar:
    name: str
    time_zone: str = "UTC"
    dates: frozenset[date] = frozenset()
    ranges: tuple[tuple[datetime, datetime], ...] = ()  # naive local date-times, [from, to), sorted
    weekdays: frozenset[int] = frozenset()  # 0 = Sunday
    description: str = ""
    version: int = 0
    updated_at: datetime | None = None
    _zone: Any = field(default=None, compare=False, repr=False)

    @property
    def zone(self) -> Any:
        return self._zone or load_zone(self.time_zone)

    def excludes(self, instant: datetime) -> bool:
        local = instant.astimezone(self.zone).replace(tzinfo=None)
        if local.date() in self.dates or (local.isoweekday() % 7) in self.weekdays:
            return True
        return any(lo <= local < hi for lo, hi in self.ranges)

    def reason(self, instant: datetime) -> str:
        """Why ``instant`` is excluded (it must be): the calendar and the rule."""
        local = instant.astimezone(self.zone).replace(tzinfo=None)
        if local.date() in self.dates:
            rule = f"date {local.date().isoformat()}"
        elif (local.isoweekday() % 7) in self.weekdays:
            rule = WEEKDAY_NAMES[local.isoweekday() % 7]
        else:
            lo, hi = next(((lo, hi) for lo, hi in self.ranges if lo <= local < hi), (local, local))
            rule = f"{lo.isoformat(timespec='minutes')} to {hi.isoformat(timespec='minutes')}"
        return f"excluded by calendar {self.name!r} ({rule})"

    def next_change(self, instant: datetime) -> datetime:
        """For an excluded ``instant``: a later instant up to which every instant is excluded too (exclusive),
        the end of the local day or of the range that excludes it."""
        zone = self.zone
        local = instant.astimezone(zone).replace(tzinfo=None)
        ends = []
        if local.date() in self.dates or (local.isoweekday() % 7) in self.weekdays:
            ends.append(datetime.combine(local.date() + timedelta(days=1), time()))
        ends += [hi for lo, hi in self.ranges if lo <= local < hi]
        end = max(ends) if ends else local + timedelta(seconds=1)
        out = _local_to_utc(end, zone)
        return out if out > instant else instant + timedelta(seconds=1)

    def to_api(self) -> dict[str, Any]:
        return {"name": self.name, "timeZone": self.time_zone, "description": self.description,
                "dates": sorted(d.isoformat() for d in self.dates),
                "ranges": [{"from": lo.isoformat(timespec="seconds"), "to": hi.isoformat(timespec="seconds")}
                           for lo, hi in self.ranges],
                "weekdays": sorted(self.weekdays), "version": self.version,
                "updatedAt": None if self.updated_at is None else
                self.updated_at.astimezone(UTC).isoformat(timespec="milliseconds")[:23] + "Z"}

    def spec(self) -> dict[str, Any]:
        """What is stored (everything but the name, the version and the time)."""
        api = self.to_api()
        return {k: api[k] for k in ("timeZone", "description", "dates", "ranges", "weekdays")}


def _local_to_utc(wall: datetime, zone: Any) -> datetime:
    aware = wall.replace(tzinfo=zone, fold=0)
    back = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if back != wall:  # inside a gap: the gap's end
        return wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return aware.astimezone(UTC)


def _local_dt(v: Any, what: str) -> datetime:
    if not isinstance(v, str) or len(v) > 40:
        raise ValueError(f"{what} must be a local date-time such as 2026-12-24T18:00:00")
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f"{what} must be a local date-time such as 2026-12-24T18:00:00") from None
    if t.tzinfo is not None:
        raise ValueError(f"{what} is a local date-time in the calendar's timeZone: no offset")
    if not 1970 <= t.year <= 9000:
        raise ValueError(f"{what}: the year must be between 1970 and 9000")
    return t


def validate(name: str, payload: Any, *, version: int = 0) -> Calendar:
    """A calendar from the API's JSON (``CalendarError`` with field-level details)."""
    errors: dict[str, str] = {}
    if not isinstance(name, str) or not NAME.match(name):
        errors["name"] = "must be 1-63 lower-case letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    if not isinstance(payload, dict):
        raise CalendarError({**errors, "body": "must be a JSON object"})
    known = {"timeZone", "dates", "ranges", "weekdays", "description", "name", "version", "updatedAt"}
    for k in payload:
        if k not in known:
            errors[str(k)[:60]] = "unknown field"
    if "name" in payload and payload["name"] != name:
        errors["name"] = "must match the name in the path"
    zone = payload.get("timeZone", "UTC")
    try:
        if not isinstance(zone, str):
            raise ScheduleError("must be a string")
        load_zone(zone)
    except ScheduleError as e:
        errors["timeZone"] = str(e)
    dates: set[date] = set()
    raw_dates = payload.get("dates", [])
    if not isinstance(raw_dates, list) or len(raw_dates) > MAX_DATES:
        errors["dates"] = f"must be a list of at most {MAX_DATES} dates (YYYY-MM-DD)"
    else:
        for d in raw_dates:
            try:
                if not isinstance(d, str) or len(d) != 10:
                    raise ValueError
                dates.add(date.fromisoformat(d))
            except ValueError:
                errors["dates"] = f"{str(d)[:40]!r} is not a date (YYYY-MM-DD)"
                break
    ranges: list[tuple[datetime, datetime]] = []
    raw_ranges = payload.get("ranges", [])
    if not isinstance(raw_ranges, list) or len(raw_ranges) > MAX_RANGES:
        errors["ranges"] = f"must be a list of at most {MAX_RANGES} {{from, to}} objects"
    else:
        for i, r in enumerate(raw_ranges):
            try:
                if not isinstance(r, dict) or set(r) != {"from", "to"}:
                    raise ValueError("must be an object with from and to")
                lo, hi = _local_dt(r["from"], "from"), _local_dt(r["to"], "to")
                if hi <= lo:
                    raise ValueError("to must be later than from")
                ranges.append((lo, hi))
            except ValueError as e:
                errors[f"ranges[{i}]"] = str(e)
                break
    weekdays = payload.get("weekdays", [])
    if not isinstance(weekdays, list) or len(weekdays) > 7 or not all(
            isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 6 for w in weekdays):
        errors["weekdays"] = "must be a list of weekdays 0-6 (0 = Sunday, 6 = Saturday)"
        weekdays = []
    description = payload.get("description", "")
    if not isinstance(description, str) or len(description) > 500 or any(ord(c) < 32 for c in description):
        errors["description"] = "must be a single-line string of at most 500 characters"
    if errors:
        raise CalendarError(errors)
    return Calendar(name=name, time_zone=zone, dates=frozenset(dates), ranges=tuple(sorted(ranges)),
                    weekdays=frozenset(weekdays), description=description, version=version)


def from_spec(name: str, spec: dict[str, Any], *, version: int = 0, updated_at: datetime | None = None) -> Calendar:
    """A stored calendar (``spec``) read back; it was validated when it was written."""
    c = validate(name, spec, version=version)
    return Calendar(name=c.name, time_zone=c.time_zone, dates=c.dates, ranges=c.ranges, weekdays=c.weekdays,
                    description=c.description, version=version, updated_at=updated_at, _zone=load_zone(c.time_zone))
