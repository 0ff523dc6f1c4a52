"""The forecast's counting (scheduling/forecast.py), pure: windows, groups, H, jitter, skips, run limits, budgets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from node.model.calendars import Calendar
from node.model.jobs import Job
from node.model.schedule import ScheduleError, parse, resolve_h
from node.model.timetable import Timetable
from node.scheduling import forecast as fc

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def job(i: int, schedule: str, **kw) -> Job:  # type: ignore[no-untyped-def]
    return Job(id=f"{i:032x}", name=f"j{i}", uri="http://127.0.0.1:1/x", schedule=schedule, **kw)


def day() -> fc.Window:
    return fc.Window.of(None, None, None, now=NOW)


def test_the_default_window_is_the_next_24_hours_by_the_minute_from_the_current_slot() -> None:
    w = fc.Window.of(None, None, None, now=NOW + timedelta(seconds=42))
    assert (w.start, w.end, w.step, w.buckets) == (NOW, NOW + timedelta(days=1), 60, 1440)


@pytest.mark.parametrize(("start", "end", "step", "why"), [
    (NOW, NOW, 60, "after"), (NOW, NOW + timedelta(days=8), 3600, "7 days"),
    (NOW, NOW + timedelta(days=7), 1, "slots"), (None, None, 0, "step"), (None, None, 86_401, "step")])
def test_a_window_that_cannot_be_forecast_says_why(start, end, step, why) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(fc.ForecastError, match=why):
        fc.Window.of(start, end, step, now=NOW)


def test_two_thousand_jobs_on_the_hour_make_the_hottest_minutes_and_h_flattens_them() -> None:
    herd = fc.plain_group("0 * * * *", "UTC", 2000, "a")
    rest = fc.plain_group("*/5 * * * *", "UTC", 100, "b")
    assert herd is not None and rest is not None
    f = run(fc.compute([herd, rest], day(), now=NOW))
    api = f.to_api()
    assert api["peak"] == 2100 and api["total"] == 2000 * 24 + 100 * 288
    top = api["busiest"][0]
    assert top["at"] == "2026-12-07T10:00:00.000Z" and top["fires"] == 2100
    assert top["groups"][0] == {"schedule": "0 * * * *", "timeZone": "UTC", "jobs": 2000,
                                "example": {"id": "a", "name": ""}, "fires": 2000}
    spread = fc.h_groups([(f"{i:032x}", "", "H * * * *", "UTC") for i in range(2000)])
    assert sum(g.jobs for g in spread) == 2000 and len(spread) == 60  # every minute of the hour taken
    flat = run(fc.compute([*spread, rest], day(), now=NOW)).to_api()
    assert flat["total"] == api["total"]
    assert flat["peak"] < 100 + 2000 // 60 * 2  # ~33 a minute, not 2,000


def test_h_resolves_as_the_parser_does() -> None:
    for expr in ("H * * * *", "H H(0-5) * * 1-5", "H/15 * * * * *", "*/5 H * * *", "0 0 * * *"):
        for seed in ("a", "0" * 32, "ff" * 16):
            s = parse(expr, "UTC", seed=seed)
            assert resolve_h(expr, seed) == (s.resolved or expr)
    with pytest.raises(ScheduleError):
        resolve_h("H * *", "a")


def test_every_second_jobs_are_counted_by_arithmetic_not_walked() -> None:
    g = fc.plain_group("* * * * * *", "UTC", 300, "x")
    assert g is not None
    w = fc.Window.of(NOW, NOW + timedelta(days=7), 3600, now=NOW)
    f = run(fc.compute([g], w, now=NOW, steps=1000))  # 604,800 instants a job: arithmetic, a step a slot
    assert f.to_api()["complete"] and f.counts == [300 * 3600] * 168


def test_instants_before_now_are_not_forecast() -> None:
    g = fc.plain_group("* * * * *", "UTC", 1, "x")
    assert g is not None
    w = fc.Window.of(NOW, NOW + timedelta(hours=1), 60, now=NOW)
    f = run(fc.compute([g], w, now=NOW + timedelta(minutes=30, seconds=1)))
    assert f.counts == [0] * 31 + [1] * 29


def test_a_jittered_job_counts_at_its_send_times() -> None:
    j = job(1, "0 * * * *", jitter_seconds=3000)
    g = fc.job_group(j, {})
    assert g is not None
    f = run(fc.compute([g], day(), now=NOW))
    tt = j.timetable({})
    sends = [tt.fire_at(NOW + timedelta(hours=h)) for h in range(24)]
    assert f.counts == [sum(1 for s in sends if (s - NOW) // timedelta(minutes=1) == i) for i in range(1440)]
    assert sum(f.counts) == 24 and f.counts[0] <= 1  # spread over the hour, not all at :00


def test_skips_and_run_limits_and_bounds_are_forecast_as_planning_runs_them() -> None:
    limited = fc.job_group(job(1, "0 * * * *", max_runs=7, runs=2, skip_until=NOW + timedelta(hours=2)), {})
    ended = fc.job_group(job(2, "0 * * * *", end_at=NOW + timedelta(hours=5)), {})
    assert limited is not None and ended is not None
    run(fc.compute([limited, ended], day(), now=NOW))
    # 10:00, 11:00 and 12:00 skipped by request (not runs), then the 5 runs left: 13:00 to 17:00
    assert sorted(limited.slots) == [180, 240, 300, 360, 420]
    assert sorted(ended.slots) == [0, 60, 120, 180, 240]  # 10:00 to 14:00: endAt is exclusive


def test_a_group_past_its_budget_is_listed_uncounted_and_the_rest_still_counted() -> None:
    dense = fc.plain_group("*/7 * * * * *", "UTC", 3, "d")  # not a divisor of 60: walked instant by instant
    hourly = fc.plain_group("0 * * * *", "UTC", 1, "h")
    assert dense is not None and hourly is not None
    f = run(fc.compute([dense, hourly], day(), now=NOW, group_steps=1000))
    api = f.to_api()
    assert not api["complete"] and api["uncounted"][0]["schedule"] == "*/7 * * * * *"
    assert api["total"] == 24 and api["jobs"] == 4


def test_paused_and_unparsable_jobs_make_no_group() -> None:
    assert fc.job_group(job(1, "0 * * * *", paused=True), {}) is None
    assert fc.plain_group("not a schedule", "UTC", 1, "x") is None


def test_a_strip_reaches_back_about_twenty_of_the_jobs_gaps_rounded_to_a_shared_span() -> None:
    from node.scheduling.audit import STRIP_SPANS, strip_span

    def span(expr: str) -> timedelta:
        return strip_span(Timetable(schedules=(parse(expr, "UTC"),)), NOW, 20)

    assert span("* * * * * *") == timedelta(seconds=30)  # 20 s of every-second instants
    assert span("*/5 * * * * *") == timedelta(minutes=2)  # 100 s
    assert span("* * * * *") == timedelta(minutes=30)  # 20 minutes
    assert span("0 * * * *") == timedelta(days=1)  # 20 hours
    assert span("0 3 * * *") == span("@at 2026-12-08T00:00:00") == STRIP_SPANS[-1]  # a week at most
    assert strip_span(None, NOW, 20) == STRIP_SPANS[-1]


def test_a_window_is_whole_slots_whatever_its_ends() -> None:
    half = timedelta(milliseconds=500)
    w = fc.Window.of(NOW + timedelta(seconds=30), NOW + timedelta(minutes=1) + half, 60, now=NOW)
    assert (w.start, w.end, w.buckets) == (NOW, NOW + timedelta(minutes=2), 2)  # down, then up, to the slot
    g = fc.plain_group("* * * * *", "UTC", 1, "x")
    assert g is not None
    assert run(fc.compute([g], w, now=NOW - timedelta(hours=1))).counts == [1, 1]
    tiny = fc.Window.of(NOW, NOW + half, 1, now=NOW)
    assert tiny.buckets == 1 and run(fc.compute([g], tiny, now=NOW - timedelta(hours=1))).counts == [1]


def test_a_run_limit_is_spent_by_the_runs_before_a_later_window() -> None:
    limited = fc.job_group(job(1, "0 * * * *", max_runs=2), {})
    assert limited is not None
    later = fc.Window.of(NOW + timedelta(hours=2), NOW + timedelta(hours=6), 3600, now=NOW)
    f = run(fc.compute([limited], later, now=NOW + timedelta(minutes=5)))
    assert f.counts == [1, 0, 0, 0]  # 11:00 was the first run (before the window), 12:00 the last


def test_what_is_not_counted_is_listed_up_to_a_cap_and_counted_in_all() -> None:
    dense = [fc.plain_group("*/7 * * * * *", "UTC", 2, f"d{i}") for i in range(30)]
    f = run(fc.compute([g for g in dense if g], day(), now=NOW, group_steps=10)).to_api()
    assert not f["complete"] and len(f["uncounted"]) == fc.UNCOUNTED_SHOWN and f["uncountedJobs"] == 60


def test_a_walk_through_instants_a_calendar_excludes_still_yields_to_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every instant of the window excluded (a calendar naming every weekday): each is a step of the walk, and the
    walk pauses at each (a pause only after a counted instant held a node's loop 1.2-1.9 s in the nemesis)."""
    pauses = [0]

    class Counting(fc.Slices):
        async def pause(self) -> None:
            pauses[0] += 1
            await super().pause()

    monkeypatch.setattr(fc, "Slices", Counting)
    every_day = Calendar(name="every-day", weekdays=frozenset(range(7)))
    g = fc.job_group(job(1, "*/7 * * * * *", exclude_calendars=("every-day",)), {"every-day": every_day})
    assert g is not None
    f = run(fc.compute([g], day(), now=NOW))
    assert f.to_api()["total"] == 0
    assert pauses[0] >= 1000  # (before: none, however long the walk)
