"""The pure tick planner: a table of cases, bounded work on long gaps, DST, and an accounting property."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import islice, takewhile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.model.calendars import Calendar
from node.model.executions import OVERLAP_REASON as OVERLAP
from node.model.jobs import MisfirePolicy
from node.model.schedule import Budget, Schedule, parse
from node.model.timetable import Timetable
from node.scheduling.planning import Plan, plan

SKIP, ONCE, ALL = MisfirePolicy.SKIP, MisfirePolicy.FIRE_ONCE, MisfirePolicy.FIRE_ALL
T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def sec(n: float) -> timedelta:
    return timedelta(seconds=n)


def ten_seconds(path: str) -> Schedule:
    """Every 10 s, planned by arithmetic ("every") or by enumerating ("enum"): both must give the same plans."""
    s = parse("*/10 * * * * *", "UTC")
    return s if path == "every" else replace(s, every_seconds=0)


def run(s: Schedule, anchor: datetime, now: datetime = T0, *, ahead: float = 5, policy: MisfirePolicy = ONCE,
        grace: float = 60, busy: bool = False, forbid: bool = False, catchup_cap: int = 100) -> Plan:
    return plan(s, anchor, now, now + sec(ahead), policy=policy, grace=sec(grace), busy=busy, forbid=forbid,
                catchup_cap=catchup_cap)


def between(s: Schedule, after: datetime, until: datetime) -> list[datetime]:
    """The reference: the schedule's instants in ``(after, until]``."""
    return list(takewhile(lambda t: t <= until, s.iter_after(after)))


def runs(p: Plan) -> list[tuple[datetime, str]]:
    return [(r.scheduled_at, str(r.kind)) for r in p.runs]


def ranges(p: Plan) -> list[tuple[datetime, datetime, int, str]]:
    return [(m.first, m.last, m.count, str(m.fate)) for m in p.missed]


PATHS = pytest.mark.parametrize("path", ["every", "enum"])


# ---------------------------------------------------------------- table


@PATHS
def test_on_time_only(path: str) -> None:
    s = ten_seconds(path)
    p = run(s, T0 - sec(10), ahead=20)  # the tick at the anchor is excluded, the one at the horizon included
    assert runs(p) == [(T0, "tick"), (T0 + sec(10), "tick"), (T0 + sec(20), "tick")]
    assert p.missed == () and p.skips == () and p.complete and p.anchor == T0 + sec(20)


@PATHS
def test_nothing_due_keeps_the_anchor(path: str) -> None:
    s = ten_seconds(path)
    p = run(s, T0 + sec(1), ahead=5)
    assert p == Plan(runs=(), skips=(), missed=(), anchor=T0 + sec(1), complete=True)
    assert run(s, T0 + sec(30), ahead=5).anchor == T0 + sec(30)  # a horizon before the anchor plans nothing


@PATHS
def test_a_tick_just_inside_late_after_is_on_time(path: str) -> None:
    p = run(ten_seconds(path), T0 - sec(5), T0 + sec(1))  # T0 is exactly now - late_after
    assert runs(p) == [(T0, "tick")] and p.missed == ()


# A gap of three ticks inside the grace (T0-30, T0-20, T0-10), then T0 on time.
@PATHS
@pytest.mark.parametrize(("policy", "expected_runs", "expected_ranges", "reason"), [
    (SKIP, [(T0, "tick")], [(T0 - sec(30), T0 - sec(10), 3, "skipped")], "skipped by misfire policy"),
    (ONCE, [(T0 - sec(10), "catchup"), (T0, "tick")], [(T0 - sec(30), T0 - sec(20), 2, "missed")],
     "coalesced into one catch-up run"),
    (ALL, [(T0 - sec(30), "catchup"), (T0 - sec(20), "catchup"), (T0 - sec(10), "catchup"), (T0, "tick")], [], ""),
])
def test_small_gap_within_grace(path: str, policy: MisfirePolicy, expected_runs: list[tuple[datetime, str]],
                                expected_ranges: list[tuple[datetime, datetime, int, str]], reason: str) -> None:
    p = run(ten_seconds(path), T0 - sec(35), policy=policy)
    assert runs(p) == expected_runs
    assert ranges(p) == expected_ranges
    assert [m.reason for m in p.missed] == ([reason] if reason else [])
    assert p.anchor == T0 and p.complete


# An hour's gap (T0-3600 ... T0-10: 360 late ticks), grace 60 s: T0-60 ... T0-10 are within it.
@PATHS
@pytest.mark.parametrize(("policy", "grace", "expected_runs", "expected_range", "reasons"), [
    (SKIP, 60, [(T0, "tick")], (T0 - sec(3600), T0 - sec(10), 360, "skipped"), ["skipped by misfire policy"]),
    (ONCE, 60, [(T0 - sec(10), "catchup"), (T0, "tick")], (T0 - sec(3600), T0 - sec(20), 359, "missed"),
     ["past the misfire grace (60 s)", "coalesced into one catch-up run"]),
    (ONCE, 5, [(T0, "tick")], (T0 - sec(3600), T0 - sec(10), 360, "missed"), ["past the misfire grace (5 s)"]),
    (ALL, 60, [(T0 - sec(60 - 10 * i), "catchup") for i in range(6)] + [(T0, "tick")],
     (T0 - sec(3600), T0 - sec(70), 354, "missed"), ["past the misfire grace (60 s)"]),
])
def test_gap_past_grace(path: str, policy: MisfirePolicy, grace: float, expected_runs: list[tuple[datetime, str]],
                        expected_range: tuple[datetime, datetime, int, str], reasons: list[str]) -> None:
    p = run(ten_seconds(path), T0 - sec(3605), policy=policy, grace=grace)
    assert runs(p) == expected_runs
    assert ranges(p) == [expected_range]
    assert all(r in p.missed[0].reason for r in reasons)
    assert ("coalesced" in p.missed[0].reason) == any("coalesced" in r for r in reasons)


@PATHS
def test_fire_all_runs_only_the_last_cap_within_grace(path: str) -> None:
    # 720 late ticks (T0-7200 ... T0-10), 360 of them within the hour's grace: the last 100 run
    p = run(ten_seconds(path), T0 - sec(7205), policy=ALL, grace=3600, catchup_cap=100)
    assert runs(p) == [(T0 - sec(1000 - 10 * i), "catchup") for i in range(100)] + [(T0, "tick")]
    assert ranges(p) == [(T0 - sec(7200), T0 - sec(1010), 620, "missed")]
    assert p.missed[0].reason == "past the misfire grace (3600 s); over the catch-up cap (100 runs)"


@PATHS
@pytest.mark.parametrize("policy", [ONCE, ALL])
def test_forbid_while_busy_skips_every_run(path: str, policy: MisfirePolicy) -> None:
    p = run(ten_seconds(path), T0 - sec(35), policy=policy, forbid=True, busy=True)
    assert p.runs == ()
    expected = [T0 - sec(10), T0] if policy is ONCE else [T0 - sec(30), T0 - sec(20), T0 - sec(10), T0]
    assert [k.scheduled_at for k in p.skips] == expected and {k.reason for k in p.skips} == {OVERLAP}
    assert run(ten_seconds(path), T0 - sec(35), policy=policy, forbid=False, busy=True).skips == ()  # allow


@PATHS
def test_forbid_keeps_the_first_run_only(path: str) -> None:
    p = run(ten_seconds(path), T0 - sec(35), ahead=20, policy=ALL, forbid=True)
    assert runs(p) == [(T0 - sec(30), "catchup")]
    assert [k.scheduled_at for k in p.skips] == [T0 - sec(20), T0 - sec(10), T0, T0 + sec(10), T0 + sec(20)]


# ---------------------------------------------------------------- long gaps: exact and bounded


class Counting:
    """Counts the instants the planner pulls from ``Schedule.iter_after``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pulled = 0
        original = Schedule.iter_after

        def iter_after(s: Schedule, instant: datetime, budget: Budget | None = None) -> Iterator[datetime]:
            for t in original(s, instant, budget):
                self.pulled += 1
                yield t

        monkeypatch.setattr(Schedule, "iter_after", iter_after)


def catch_up(s: Schedule, anchor: datetime, now: datetime, counter: Counting, *, policy: MisfirePolicy,
             grace: float, budget: int = 5000, catchup_cap: int = 100) -> tuple[list[Plan], int]:
    """Plan from ``anchor`` until complete, as the scheduler does; the plans and the most instants one call pulled."""
    plans: list[Plan] = []
    most = 0
    while not plans or not plans[-1].complete:
        counter.pulled = 0
        plans.append(plan(s, plans[-1].anchor if plans else anchor, now, now + sec(2), policy=policy,
                          grace=sec(grace), busy=False, forbid=False, budget=budget, catchup_cap=catchup_cap))
        most = max(most, counter.pulled)
    return plans, most


# now = T0, late_after 1 s, grace 60 s: the last late tick runs as a catch-up, T0 itself on time
@pytest.mark.parametrize(("expr", "gap", "budget", "n_ticks", "catchup", "last_missed"), [
    ("* * * * *", timedelta(days=3), 5000, 3 * 1440, T0 - sec(60), T0 - sec(120)),  # one call
    ("* * * * *", timedelta(days=3), 1000, 3 * 1440, T0 - sec(60), T0 - sec(120)),  # five calls
    ("*/7 * * * * *", timedelta(days=1), 5000, 1440 * 9, T0 - sec(4), T0 - sec(11)),  # :00, :07 ... :56
])
def test_long_gap_is_exact_and_bounded(monkeypatch: pytest.MonkeyPatch, expr: str, gap: timedelta, budget: int,
                                       n_ticks: int, catchup: datetime, last_missed: datetime) -> None:
    s, counter = parse(expr, "UTC"), Counting(monkeypatch)
    plans, most = catch_up(s, T0 - gap, T0, counter, policy=ONCE, grace=60, budget=budget)
    assert len(plans) <= n_ticks // budget + 2
    assert most <= budget + 2  # the budget, the one catch-up candidate, and the look past the end
    missed = [m for p in plans for m in p.missed]
    assert missed[0].first == s.next_after(T0 - gap)  # the first missed tick, not the first of the last N
    assert sum(m.count for m in missed) == n_ticks - 2  # all but the catch-up run and the on-time tick at T0
    assert all(s.next_after(a.last) == b.first for a, b in zip(missed, missed[1:], strict=False))  # consecutive
    assert missed[-1].last == last_missed
    assert [r for p in plans for r in runs(p)] == [(catchup, "catchup"), (T0, "tick")]


@pytest.mark.parametrize("policy", [SKIP, ONCE, ALL])
def test_every_seconds_counts_a_month_without_enumerating(monkeypatch: pytest.MonkeyPatch,
                                                          policy: MisfirePolicy) -> None:
    s, counter = parse("*/5 * * * * *", "Europe/Lisbon"), Counting(monkeypatch)
    anchor = T0 - timedelta(days=30) + timedelta(microseconds=1)  # the tick at T0-30d itself is not after it
    plans, most = catch_up(s, anchor, T0, counter, policy=policy, grace=3600)
    assert len(plans) == 1 and most <= 100 + 2
    n_late = 30 * 86400 // 5 - 1  # T0 itself is on time
    n_run = {SKIP: 0, ONCE: 1, ALL: 100}[policy]
    (m,) = plans[0].missed
    assert (m.first, m.count) == (T0 - timedelta(days=30) + sec(5), n_late - n_run)
    assert m.last == T0 - sec(5 * (n_run + 1))
    assert len(plans[0].runs) == n_run + 1


def test_a_small_budget_never_loses_a_catch_up_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # fire_all's last 100 within the grace must run even when the budget cuts the gap into many slices
    s, counter = replace(parse("*/10 * * * * *", "UTC"), every_seconds=0), Counting(monkeypatch)
    plans, most = catch_up(s, T0 - sec(7205), T0, counter, policy=ALL, grace=3600, budget=7, catchup_cap=100)
    assert most <= 7 + 100 + 1
    assert [r for p in plans for r in runs(p)] == [(T0 - sec(1000 - 10 * i), "catchup") for i in range(100)] + [
        (T0, "tick")]
    assert sum(m.count for p in plans for m in p.missed) == 620


# ---------------------------------------------------------------- DST (Europe/Lisbon)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(("expr", "anchor", "now", "first", "last", "count"), [
    # fixed 01:30 across the fall back (2026-10-25 02:00 WEST -> 01:00 WET): once that day, at its first occurrence
    ("30 1 * * *", "2026-10-23T12:00:00+00:00", "2026-10-27T12:00:00+00:00",
     "2026-10-24T01:30:00+01:00", "2026-10-27T01:30:00+00:00", 4),
    # fixed 01:30 across the spring forward (2026-03-29 01:00 WET -> 02:00 WEST): at the end of the gap
    ("30 1 * * *", "2026-03-28T00:00:00+00:00", "2026-03-30T12:00:00+00:00",
     "2026-03-28T01:30:00+00:00", "2026-03-30T01:30:00+01:00", 3),
    # interval: the repeated hour fires twice, 25 ticks on the fall-back day
    ("30 * * * *", "2026-10-24T23:00:00+00:00", "2026-10-26T00:00:00+00:00",
     "2026-10-25T00:30:00+01:00", "2026-10-25T23:30:00+00:00", 25),
    # interval: the missing hour does not fire, 23 ticks on the spring-forward day
    ("30 * * * *", "2026-03-29T00:00:00+00:00", "2026-03-29T23:00:00+00:00",
     "2026-03-29T00:30:00+00:00", "2026-03-29T23:30:00+01:00", 23),
    # seconds, interval: 25 real hours of ticks on the fall-back day (but the last :56), in slices of 1000
    ("*/7 * * * * *", "2026-10-24T22:59:59+00:00", "2026-10-25T23:59:52.500000+00:00",
     "2026-10-24T23:00:00+00:00", "2026-10-25T23:59:49+00:00", 25 * 60 * 9 - 1),
])
def test_dst_gap_counts(monkeypatch: pytest.MonkeyPatch, expr: str, anchor: str, now: str, first: str, last: str,
                        count: int) -> None:
    s, counter = parse(expr, "Europe/Lisbon"), Counting(monkeypatch)
    plans, _ = catch_up(s, utc(anchor), utc(now), counter, policy=SKIP, grace=0, budget=1000)
    missed = [m for p in plans for m in p.missed]
    assert (missed[0].first, missed[-1].last, sum(m.count for m in missed)) == (utc(first), utc(last), count)
    assert all(p.runs == () for p in plans)


def test_dst_on_time_in_the_repeated_hour() -> None:
    # Lisbon falls back at 02:00 WEST: 01:30 WEST (00:30Z) is a catch-up, 01:30 WET (01:30Z) is on time
    s = parse("30 * * * *", "Europe/Lisbon")
    p = plan(s, utc("2026-10-24T23:00:00+00:00"), utc("2026-10-25T01:30:00+00:00"),
             utc("2026-10-25T01:30:02+00:00"), policy=ONCE, grace=sec(3600), busy=False, forbid=False)
    assert runs(p) == [(utc("2026-10-25T01:30:00+01:00"), "catchup"), (utc("2026-10-25T01:30:00+00:00"), "tick")]
    assert ranges(p) == [(utc("2026-10-25T00:30:00+01:00"), utc("2026-10-25T00:30:00+01:00"), 1, "missed")]


def test_dst_spring_forward_fixed_runs_at_the_end_of_the_gap() -> None:
    s = parse("30 1 * * *", "Europe/Lisbon")  # 01:30 does not exist on 2026-03-29: it fires at 02:00 WEST
    p = plan(s, utc("2026-03-28T12:00:00+00:00"), utc("2026-03-29T01:00:00+00:00"),
             utc("2026-03-29T01:00:05+00:00"), policy=ONCE, grace=sec(60), busy=False, forbid=False)
    assert runs(p) == [(utc("2026-03-29T02:00:00+01:00"), "tick")] and p.missed == ()


# ---------------------------------------------------------------- properties

EXPRS = ["* * * * *", "*/5 * * * *", "30 1 * * *", "0 * * * *", "*/20 1,2 * * *", "15 */2 * * *",
         "*/30 * * * * *", "*/7 * * * * *", "* * * * * *", "0,20,40 * * * * *", "*/15 * * * * *", "@daily"]
ZONES = ["UTC", "Europe/Lisbon", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo"]
NEAR_DST = st.sampled_from([datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
                            datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2018, 11, 4, 2, 30, tzinfo=UTC),
                            datetime(2026, 4, 5, 2, 30, tzinfo=UTC)])
ANY_TIME = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 1, 1), timezones=st.just(UTC))
STEP = st.tuples(st.integers(0, 3 * 3600), st.integers(0, 120), st.booleans())  # advance, claim ahead, busy


@settings(max_examples=120, deadline=None)
@given(expr=st.sampled_from(EXPRS), zone=st.sampled_from(ZONES), start=st.one_of(NEAR_DST, ANY_TIME),
       jitter=st.integers(-5400, 5400), on_a_tick=st.booleans(), steps=st.lists(STEP, min_size=1, max_size=4),
       policy=st.sampled_from(list(MisfirePolicy)), grace=st.sampled_from([0, 1, 30, 60, 600, 7200]),
       late_after=st.sampled_from([0.0, 0.5, 1.0, 2.0]), forbid=st.booleans(), cap=st.integers(1, 4),
       budget=st.sampled_from([1, 5, 40, 5000]))
def test_every_instant_is_accounted_for_exactly_once(
        expr: str, zone: str, start: datetime, jitter: int, on_a_tick: bool, steps: list[tuple[int, int, bool]],
        policy: MisfirePolicy, grace: int, late_after: float, forbid: bool, cap: int, budget: int) -> None:
    s = parse(expr, zone)
    anchor = first_anchor = start + timedelta(seconds=jitter)
    if on_a_tick:  # anchors are usually the last claimed tick
        anchor = first_anchor = s.next_after(anchor)
    now, last_horizon = anchor, anchor
    seen: list[datetime] = []
    for advance, ahead, busy in steps:
        now += sec(advance)
        horizon = now + sec(ahead)
        last_horizon = max(last_horizon, horizon)
        planner = partial(plan, s, now=now, horizon=horizon, policy=policy, grace=sec(grace), forbid=forbid,
                          late_after=sec(late_after), catchup_cap=cap)
        whole = planner(anchor, busy=busy, budget=10**9)
        sliced: list[Plan] = []
        while not sliced or not sliced[-1].complete:
            at = sliced[-1].anchor if sliced else anchor
            busy_now = busy or any(p.runs for p in sliced)
            sliced.append(planner(at, busy=busy_now, budget=budget))
            assert sliced[-1].anchor >= at and (sliced[-1].anchor > at or sliced[-1].complete)
        assert whole.complete and whole.anchor == sliced[-1].anchor
        # slicing changes how many range rows there are, never what runs or is skipped
        assert [r for p in sliced for r in p.runs] == list(whole.runs)
        assert [k for p in sliced for k in p.skips] == list(whole.skips)
        assert sum(m.count for p in sliced for m in p.missed) == sum(m.count for m in whole.missed)
        assert len(whole.missed) <= 1
        assert not forbid or len(whole.runs) <= (0 if busy else 1)
        for p in sliced:
            for r in p.runs:
                assert (r.kind == "tick") == (r.scheduled_at >= now - sec(late_after))
                assert r.kind == "tick" or r.scheduled_at >= now - sec(grace)
            for m in p.missed:
                ticks = between(s, m.first - timedelta(microseconds=1), m.last)
                assert ticks[0] == m.first and len(ticks) == m.count and m.reason
                assert m.fate == ("skipped" if policy is SKIP else "missed")
                seen.extend(ticks)
            seen.extend(r.scheduled_at for r in p.runs)
            seen.extend(k.scheduled_at for k in p.skips)
        anchor = sliced[-1].anchor
    assert sorted(seen) == between(s, first_anchor, last_horizon)  # every instant once, nothing else


@settings(max_examples=150, deadline=None)
@given(expr=st.sampled_from(["* * * * * *", "*/5 * * * * *", "*/30 * * * * *"]), after=ANY_TIME,
       micros=st.integers(-10**6, 10**6), span=st.integers(-10**6, 10**8))
def test_count_between_is_exact(expr: str, after: datetime, micros: int, span: int) -> None:
    s = parse(expr, "UTC")
    after += timedelta(microseconds=micros)
    until = after + timedelta(microseconds=span)
    n = s.count_between(after, until)
    assert n == len(list(takewhile(lambda t: t <= until, islice(s.iter_after(after), n + 1))))
    assert s.next_after(after) == replace(s, every_seconds=0).next_after(after)


def test_a_missed_range_never_spans_an_excluded_instant() -> None:
    """Late minutes 01:07, 01:08 (a calendar excludes it) and 01:09 with ``skip``: two skipped ranges and the
    excluded one, so a range holds exactly the instants from its first to its last (found by hypothesis: one
    range 01:07-01:09 counting 2 accounted 01:08 twice)."""
    cal = Calendar(name="c", time_zone="UTC", dates=frozenset(), weekdays=frozenset(),
                   ranges=((datetime(2026, 10, 25, 1, 8), datetime(2026, 10, 25, 1, 9)),))
    tt = Timetable(schedules=(parse("* * * * *", "Europe/Lisbon"),), calendars=(cal,), seed="j")
    at = datetime(2026, 10, 25, 1, 6, tzinfo=UTC)
    p = plan(tt, at, at + sec(182), at + sec(182), policy=MisfirePolicy.SKIP, grace=sec(0), busy=False, forbid=False,
             budget=3)
    assert [(m.first.minute, m.last.minute, m.count) for m in p.missed] == [(7, 7, 1), (9, 9, 1)]
    assert [(x.first.minute, x.count, str(x.fate)) for x in p.excluded] == [(8, 1, "excluded")]


# ---------------------------------------------------------------- the timetable's rules


def _calendar(draw: st.DrawFn, start: datetime) -> Calendar:
    days = frozenset(start.date() + timedelta(days=draw(st.integers(-1, 2))) for _ in range(draw(st.integers(0, 2))))
    lo = (start + timedelta(minutes=draw(st.integers(-120, 240)))).replace(tzinfo=None, second=0, microsecond=0)
    ranges = ((lo, lo + timedelta(minutes=draw(st.integers(1, 180)))),) if draw(st.booleans()) else ()
    return Calendar(name="c", time_zone=draw(st.sampled_from(["UTC", "Europe/Lisbon"])), dates=days, ranges=ranges,
                    weekdays=frozenset(draw(st.sets(st.integers(0, 6), max_size=1))))


@settings(max_examples=150, deadline=None)
@given(expr=st.sampled_from(EXPRS), start=st.one_of(NEAR_DST, ANY_TIME), data=st.data(),
       steps=st.lists(STEP, min_size=1, max_size=3), policy=st.sampled_from(list(MisfirePolicy)),
       grace=st.sampled_from([0, 30, 600]), budget=st.sampled_from([3, 40, 5000]),
       runs_left=st.one_of(st.none(), st.integers(0, 5)), jitter=st.sampled_from([0, 0, 1, 20]))
def test_excluded_skipped_and_capped_instants_are_accounted_for_once(
        expr: str, start: datetime, data: st.DataObject, steps: list[tuple[int, int, bool]], policy: MisfirePolicy,
        grace: int, budget: int, runs_left: int | None, jitter: int) -> None:
    s = parse(expr, "Europe/Lisbon")
    gap = min((b - a for a, b in zip(list(islice(s.iter_after(start), 20)), list(islice(s.iter_after(start), 20))[1:],
                                     strict=False)), default=sec(3600))
    jitter = jitter if sec(jitter) < gap else 0
    start_at = start + sec(data.draw(st.integers(-600, 1800))) if data.draw(st.booleans()) else None
    end_at = start + sec(data.draw(st.integers(600, 4 * 3600))) if data.draw(st.booleans()) else None
    skip_until = start + sec(data.draw(st.integers(-60, 3600))) if data.draw(st.booleans()) else None
    cals = tuple(_calendar(data.draw, start) for _ in range(data.draw(st.integers(0, 2))))
    tt = Timetable(schedules=(s,), start_at=start_at, end_at=end_at, calendars=cals, jitter=jitter, seed="j")
    anchor = first = start
    now = start
    accounted: list[datetime] = []
    ran = 0
    done = False
    for advance, ahead, _ in steps:
        now += sec(advance)
        horizon = now + sec(ahead)
        while not done:
            p = plan(tt, anchor, now, horizon, policy=policy, grace=sec(grace), busy=False, forbid=False,
                     budget=budget, skip_until=skip_until, runs_left=None if runs_left is None else runs_left - ran)
            assert p.anchor >= anchor
            for r in p.runs:
                assert tt.excluded(r.scheduled_at) is None and (skip_until is None or r.scheduled_at > skip_until)
                assert tt.bound(r.scheduled_at) is None
                assert tt.fire_at(r.scheduled_at) <= horizon
            for x in p.excluded:  # a range holds exactly the instants it says, each not due for its reason
                inside = list(takewhile(lambda t, x=x: t <= x.last, tt.iter_after(x.first - timedelta(microseconds=1))))
                assert inside[0] == x.first and len(inside) == x.count, (x, inside)
                for t in inside:
                    if str(x.fate) == "excluded":
                        assert tt.excluded(t) == x.reason
                    else:
                        assert skip_until is not None and t <= skip_until
                accounted += inside
            for m in p.missed:
                accounted += list(takewhile(lambda t, m=m: t <= m.last, tt.iter_after(m.first - timedelta(microseconds=1))))
            accounted += [r.scheduled_at for r in p.runs] + [k.scheduled_at for k in p.skips]
            ran += len(p.runs)
            anchor = p.anchor
            if p.completed_at is not None:
                assert runs_left is not None and ran == runs_left and p.anchor == p.completed_at
                assert not p.runs or p.completed_at == p.runs[-1].scheduled_at
                done = True
            if p.complete:
                break
    assert runs_left is None or ran <= runs_left
    accounted.sort()
    assert len(accounted) == len(set(accounted)), "an instant accounted for twice"
    expected = list(takewhile(lambda t: t <= anchor, tt.iter_after(first)))
    assert accounted == expected  # every instant up to the anchor once (the capped tail is the job's completion)
