"""The pure schedule code: a table of DST cases and hypothesis properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from node.model.schedule import ScheduleError, describe, parse


def fires(expr: str, zone: str, start: str, n: int) -> list[str]:
    s = parse(expr, zone)
    t0 = datetime.fromisoformat(start).astimezone(UTC)
    return [t.astimezone(ZoneInfo(zone)).isoformat() for t in islice(s.iter_after(t0), n)]


DST_TABLE = [
    # Europe/Lisbon fall back 2026-10-25 02:00 WEST -> 01:00 WET: a fixed 01:30 fires once, at its first occurrence
    ("30 1 * * *", "Europe/Lisbon", "2026-10-24T00:00:00+00:00",
     ["2026-10-24T01:30:00+01:00", "2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"]),
    # Europe/Lisbon spring forward 2026-03-29 01:00 WET -> 02:00 WEST: 01:30 does not exist, fires at 02:00 WEST
    ("30 1 * * *", "Europe/Lisbon", "2026-03-28T00:00:00+00:00",
     ["2026-03-28T01:30:00+00:00", "2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]),
    # interval schedules follow real elapsed time: the repeated hour fires again
    ("30 * * * *", "Europe/Lisbon", "2026-10-24T23:00:00+00:00",
     ["2026-10-25T00:30:00+01:00", "2026-10-25T01:30:00+01:00", "2026-10-25T01:30:00+00:00", "2026-10-25T02:30:00+00:00"]),
    # ... and the missing hour is skipped, one hour of real time between fires
    ("30 * * * *", "Europe/Lisbon", "2026-03-28T23:40:00+00:00",
     ["2026-03-29T00:30:00+00:00", "2026-03-29T02:30:00+01:00", "2026-03-29T03:30:00+01:00"]),
    # America/Sao_Paulo 2018-11-04: DST began at midnight (00:00 -> 01:00): a midnight job fires at 01:00
    ("0 0 * * *", "America/Sao_Paulo", "2018-11-03T00:00:00-03:00",
     ["2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00"]),
    # America/Sao_Paulo 2019-02-17 fall back at midnight (00:00 -> 23:00 the day before): 23:30 fires once
    ("30 23 * * *", "America/Sao_Paulo", "2019-02-16T12:00:00-02:00",
     ["2019-02-16T23:30:00-02:00", "2019-02-17T23:30:00-03:00"]),
    # America/Havana: DST gap at midnight (2026-03-08 00:00 -> 01:00)
    ("15 0 * * *", "America/Havana", "2026-03-07T12:00:00-05:00",
     ["2026-03-08T01:00:00-04:00", "2026-03-09T00:15:00-04:00"]),
    # several fixed times inside one gap collapse into one fire at the end of the gap
    ("0,20,40 1 * * *", "Europe/Lisbon", "2026-03-29T00:00:00+00:00",
     ["2026-03-29T02:00:00+01:00", "2026-03-30T01:00:00+01:00"]),
    # 6 fields with seconds first
    ("*/30 * * * * *", "UTC", "2026-01-01T00:00:00+00:00",
     ["2026-01-01T00:00:30+00:00", "2026-01-01T00:01:00+00:00", "2026-01-01T00:01:30+00:00"]),
    ("@hourly", "Asia/Kolkata", "2026-01-01T00:10:00+05:30", ["2026-01-01T01:00:00+05:30"]),
    ("@daily", "America/New_York", "2026-11-01T00:00:00-04:00", ["2026-11-02T00:00:00-05:00"]),
    ("@weekly", "UTC", "2026-11-28T00:00:00+00:00", ["2026-11-29T00:00:00+00:00"]),
    ("@monthly", "UTC", "2026-11-28T00:00:00+00:00", ["2026-12-01T00:00:00+00:00"]),
    ("@yearly", "UTC", "2026-11-28T00:00:00+00:00", ["2027-01-01T00:00:00+00:00"]),
    # America/New_York fall back 2026-11-01 02:00 EDT -> 01:00 EST: fixed 01:30 once
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00-04:00",
     ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
]


@pytest.mark.parametrize(("expr", "zone", "start", "expected"), DST_TABLE)
def test_dst_table(expr: str, zone: str, start: str, expected: list[str]) -> None:
    assert fires(expr, zone, start, len(expected)) == expected


def test_lisbon_0130_fires_once_on_fall_back_day() -> None:
    s = parse("30 1 * * *", "Europe/Lisbon")
    day = [t for t in islice(s.iter_after(datetime(2026, 10, 24, 12, tzinfo=UTC)), 3)
           if t.astimezone(s.zone).date().isoformat() == "2026-10-25"]
    assert len(day) == 1


@pytest.mark.parametrize(("expr", "zone", "fragment"), [
    ("61 * * * *", "UTC", "invalid cron"),
    ("* * * *", "UTC", "expected 5 fields"),
    ("* * * * * * *", "UTC", "expected 5 fields"),
    ("", "UTC", "empty"),
    ("@sometimes", "UTC", "unknown alias"),
    ("* * * * *", "Mars/Olympus", "unknown time zone"),
    ("* * * * *", "../../etc/passwd", "unknown time zone"),
    ("0 0 30 2 *", "UTC", "never fires"),
    ("* * * * \x00", "UTC", "invalid field"),
    ("9" * 300, "UTC", "longer than"),
])
def test_invalid(expr: str, zone: str, fragment: str) -> None:
    with pytest.raises(ScheduleError, match=fragment):
        parse(expr, zone)


def test_describe() -> None:
    assert describe("*/30 * * * * *") == "Every 30 seconds"
    assert describe("30 1 * * *") == "At 01:30"
    assert describe("*/5 * * * *") == "Every 5 minutes"
    # common shapes the hand-written describer left as the raw expression
    assert describe("*/15 9-17 * * 1-5") == "Every 15 minutes, between 09:00 and 17:59, Monday through Friday"
    assert describe("0 9 * * 1") == "At 09:00, only on Monday"
    assert describe("@daily") == "At 00:00"
    assert describe("not a cron") == "not a cron"  # undescribable: the expression itself


ZONES = ["UTC", "Europe/Lisbon", "America/Sao_Paulo", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
         "America/Havana", "Pacific/Chatham"]
EXPRS = ["30 1 * * *", "0 2 * * *", "*/15 * * * *", "0 * * * *", "30 2 * * 0", "0 0 * * *", "45 23 * * *",
         "*/20 1,2 * * *", "0 */3 * * *", "30 * * * * *", "*/20 */7 * * * *", "15 */2 * * *", "*/7 * * * *"]


# starts near DST transitions, where the bugs live, as well as anywhere
NEAR_DST = st.sampled_from([datetime(2026, 10, 25, 0, 59, 57, tzinfo=UTC), datetime(2026, 3, 29, 0, 59, 30, tzinfo=UTC),
                            datetime(2026, 11, 1, 5, 59, 0, tzinfo=UTC), datetime(2018, 11, 4, 2, 59, 59, tzinfo=UTC),
                            datetime(2026, 4, 5, 2, 45, tzinfo=UTC)])
ANY_TIME = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 1, 1), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(expr=st.sampled_from(EXPRS), zone=st.sampled_from(ZONES),
       start=st.one_of(NEAR_DST, ANY_TIME), jitter=st.integers(min_value=-7200, max_value=7200))
def test_properties(expr: str, zone: str, start: datetime, jitter: int) -> None:
    start = start + timedelta(seconds=jitter)
    s = parse(expr, zone)
    times = list(islice(s.iter_after(start), 40))
    # strictly increasing, all after the start
    assert all(a < b for a, b in zip(times, times[1:], strict=False))
    assert times[0] > start
    if not s.interval:
        # a fixed-time job never fires twice for one local date-time
        locals_ = [t.astimezone(s.zone).replace(tzinfo=None, fold=0) for t in times]
        assert len(set(locals_)) == len(locals_)
    # interval schedules follow real time: every matching instant in the span is there, in order
    if s.interval and s.has_seconds:
        step = datetime.fromtimestamp(int(start.timestamp()) + 1, UTC)
        brute = []
        while len(brute) < 10:
            local = step.astimezone(s.zone)
            if croniter.match(s.croniter_expr, local.replace(tzinfo=None)):
                brute.append(step)
            step += timedelta(seconds=1)
        assert times[:10] == brute
    # resuming from any fire time continues the same sequence
    k = len(times) // 2
    assert list(islice(s.iter_after(times[k]), 5)) == times[k + 1 : k + 6]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_parser_never_crashes(text: str) -> None:
    try:
        parse(text, "UTC")
    except ScheduleError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_zone_parser_never_crashes(text: str) -> None:
    try:
        parse("* * * * *", text)
    except ScheduleError:
        pass


@pytest.mark.parametrize("expr", ["* * * * * *", "*/5 * * * * *", "*/30 * * * * *", "*/7 * * * * *"])
def test_every_seconds_fast_path_agrees_with_croniter(expr: str) -> None:
    fast = parse(expr, "Europe/Lisbon")
    t0 = datetime(2026, 10, 25, 0, 59, 57, 123000, tzinfo=UTC)
    from dataclasses import replace

    plain = replace(fast, every_seconds=0)
    assert list(islice(fast.iter_after(t0), 70)) == list(islice(plain.iter_after(t0), 70))
    assert fast.next_after(t0) == plain.next_after(t0)


@pytest.mark.parametrize(("expr", "same_as"), [
    ("5-5 * * * *", "5 * * * *"), ("0 0 3-3 * *", "0 0 3 * *"), ("1,5-5 * * * *", "1,5 * * * *"),
    ("0 0 * * mon-mon", "0 0 * * mon"), ("0 0 * jan-jan *", "0 0 * jan *"), ("10-10/5 * * * * *", "10 * * * * *"),
])
def test_a_range_with_equal_ends_is_its_one_value(expr: str, same_as: str) -> None:
    # croniter reads "5-5" as the whole cycle ("0 0 3-3 * *" fired every day); cron(8) reads it as 5
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert list(islice(parse(expr).iter_after(t0), 5)) == list(islice(parse(same_as).iter_after(t0), 5))
