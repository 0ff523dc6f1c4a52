"""The pure tick ledger: a table of fates, definition history (edit, pause, create, delete), DST, ranges, bounded
work, and an accounting property."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.model.executions import Execution, ExecutionKind, ExecutionState, Fate
from node.model.schedule import parse
from node.scheduling.ledger import Ledger, Segment, TickEntry, account

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
OVERLAP = "previous run still in flight (concurrencyPolicy forbid)"


def sec(n: float) -> timedelta:
    return timedelta(seconds=n)


def mins(n: float) -> timedelta:
    return timedelta(minutes=n)


def seg(start: datetime, end: datetime | None = None, expr: str | None = "* * * * *", *, zone: str = "UTC",
        paused: bool = False, version: int = 1) -> Segment:
    return Segment(start=start, end=end, schedule=None if expr is None else parse(expr, zone), paused=paused,
                   version=version)


ALWAYS = seg(T0 - timedelta(days=365))  # every minute, since long before the window, still in force


def ex(fields: dict[str, Any]) -> Execution:
    """An execution row as the store reads it (fence and node are not the ledger's concern)."""
    return Execution(**{"job_id": "j", "fence": 1, "node": "", **fields,
                        "kind": ExecutionKind(fields["kind"]), "state": ExecutionState(fields["state"])})


def row(at: datetime, kind: str = "tick", state: str = "succeeded", **kw: Any) -> Execution:
    return ex({"id": f"{kind}-{at:%H%M%S}", "scheduled_at": at, "kind": kind, "state": state, "missed_from": None,
               "missed_count": 0, "error": None, "attempts": 1, **kw})


def ledger(rows: list[Execution], segments: tuple[Segment, ...] = (ALWAYS,), *, start: datetime = T0,
           end: datetime = T0 + mins(5), now: datetime = T0 + mins(60), settle: timedelta = sec(60),
           limit: int = 10_000) -> Ledger:
    return account(segments, rows, start=start, end=end, now=now, settle=settle, limit=limit)


def fates(led: Ledger) -> list[tuple[datetime, str]]:
    return [(e.scheduled_at, str(e.fate)) for e in led.ticks]


def at_(led: Ledger, t: datetime) -> TickEntry:
    (entry,) = [e for e in led.ticks if e.scheduled_at == t]
    return entry


# ---------------------------------------------------------------- one instant, one row: the table

T1 = T0 + mins(1)


@pytest.mark.parametrize(("r", "fate", "detail"), [
    (row(T1, status_code=200), Fate.DELIVERED, "HTTP 200 after 1 attempt"),
    (row(T1, "catchup", status_code=204, attempts=2, redelivered=True), Fate.DELIVERED,
     "HTTP 204 after 2 attempts (catch-up run, redelivered)"),
    (row(T1, state="failed", error="unexpected status 500", status_code=500, attempts=3), Fate.FAILED,
     "failed: unexpected status 500 (3 attempts)"),
    (row(T1, state="failed", error=None, status_code=503), Fate.FAILED, "failed: HTTP 503 (1 attempt)"),
    (row(T1, state="timed_out", error="timed out after 5000 ms"), Fate.FAILED,
     "failed: timed out after 5000 ms (1 attempt)"),
    (row(T1, state="abandoned", error="heartbeat lapsed", attempts=0), Fate.ABANDONED, "abandoned: heartbeat lapsed"),
    (row(T1, state="abandoned", attempts=0), Fate.ABANDONED, "abandoned: claimed, never sent"),
    (row(T1, state="claimed", node="n1:8080", attempts=0), Fate.RUNNING, "claimed by n1:8080"),
    (row(T1, state="claimed", attempts=0), Fate.RUNNING, "claimed, not sent yet"),
    (row(T1, state="running", node="n2:8080", attempts=2), Fate.RUNNING, "running on n2:8080, attempt 2"),
    (row(T1, "overlap", "skipped", missed_from=T1, missed_count=1, error=OVERLAP, attempts=0), Fate.SKIPPED,
     f"skipped: {OVERLAP}"),
    (row(T1, "misfire", "missed", missed_from=T1, missed_count=1, error="past the misfire grace", attempts=0),
     Fate.MISSED, "missed: past the misfire grace"),
    (row(T1, "misfire", "missed", missed_from=T1, missed_count=1, error="skipped by misfire policy", attempts=0),
     Fate.SKIPPED, "skipped by misfire policy"),
    (row(T1, "misfire", "missed", missed_from=T1, missed_count=1, error="coalesced into one catch-up run",
         attempts=0), Fate.MISSED, "missed: coalesced into one catch-up run"),
    (row(T1, state="exploded"), Fate.UNACCOUNTED,
     "execution row in unknown state 'exploded' (kind 'tick'): a bug, please report"),
    (row(T1, "misfire", "succeeded", missed_from=T1), Fate.UNACCOUNTED,
     "execution row in unknown state 'succeeded' (kind 'misfire'): a bug, please report"),
])
def test_row_fates(r: Execution, fate: Fate, detail: str) -> None:
    e = at_(ledger([r]), T1)
    assert (e.fate, e.detail, e.execution_id) == (fate, detail, r.id)
    assert e.redelivered is r.redelivered


@pytest.mark.parametrize(("now", "settle", "fate", "detail"), [
    (T0 + mins(60), sec(60), Fate.UNACCOUNTED, "no execution row: a bug, please report"),
    (T1 + sec(30), sec(60), Fate.PENDING, "due, not claimed yet"),
    (T1 - sec(1), sec(60), Fate.PENDING, "not due yet"),
    (T1 + sec(60), sec(60), Fate.UNACCOUNTED, "no execution row: a bug, please report"),  # exactly now - settle
])
def test_instants_without_rows(now: datetime, settle: timedelta, fate: Fate, detail: str) -> None:
    e = at_(ledger([], now=now, settle=settle), T1)
    assert (e.fate, e.detail, e.execution_id, e.redelivered) == (fate, detail, None, False)


def test_window_is_half_open_and_counted() -> None:
    led = ledger([row(T0), row(T0 + mins(2), state="failed", error="boom")], now=T0 + mins(3))
    assert fates(led) == [(T0, "delivered"), (T0 + mins(1), "unaccounted"), (T0 + mins(2), "failed"),
                          (T0 + mins(3), "pending"), (T0 + mins(4), "pending")]  # T0 + 5 min is the end: excluded
    assert led.counts == {**dict.fromkeys(map(str, Fate), 0), "delivered": 1, "failed": 1, "unaccounted": 1,
                          "pending": 2}
    assert not led.truncated and led.next_from is None


def test_to_api() -> None:
    r = row(T1, status_code=200, redelivered=True)
    led = ledger([r], end=T0 + mins(2))
    assert led.ticks[1].to_api() == {"scheduledAt": "2026-05-04T12:01:00.000Z", "fate": "delivered",
                                     "executionId": r.id, "redelivered": True,
                                     "detail": "HTTP 200 after 1 attempt (redelivered)"}
    api = led.to_api()
    assert api["truncated"] is False and api["nextFrom"] is None and api["counts"]["delivered"] == 1
    assert [t["fate"] for t in api["ticks"]] == ["unaccounted", "delivered"]


# ---------------------------------------------------------------- range rows


def test_misfire_row_covering_100_instants() -> None:
    every_second = (seg(T0 - timedelta(days=1), expr="* * * * * *"),)
    first, last = T0 + sec(10), T0 + sec(109)
    rows = [row(first - sec(1)),
            row(last, "misfire", "missed", missed_from=first, missed_count=100, error="past the misfire grace (60 s)",
                attempts=0),
            row(last + sec(1), "catchup", status_code=200)]
    led = ledger(rows, every_second, start=T0, end=T0 + sec(120), now=T0 + mins(10))
    by_fate = [e for e in led.ticks if e.fate is Fate.MISSED]
    assert [e.scheduled_at for e in by_fate] == [first + sec(i) for i in range(100)]
    assert {e.execution_id for e in by_fate} == {rows[1].id}
    assert {e.detail for e in by_fate} == {"missed: past the misfire grace (60 s); 100 ticks from 12:00:10Z"}
    assert led.counts["missed"] == 100 and led.counts["delivered"] == 2 and led.counts["unaccounted"] == 18


def test_range_detail_shapes() -> None:
    rows = [row(T0 + mins(3), "misfire", "missed", missed_from=T0, missed_count=4, error="past the misfire grace",
                attempts=0)]
    assert at_(ledger(rows), T0).detail == "missed: past the misfire grace (4 ticks from 12:00:00Z)"
    rows[0] = replace(rows[0], missed_from=T0 - timedelta(days=1))  # began the day before: the range reaches into the window
    e = at_(ledger(rows, start=T0, end=T0 + mins(4)), T0)
    assert e.fate is Fate.MISSED and e.detail == "missed: past the misfire grace (4 ticks from 2026-05-03T12:00:00.000Z)"


def test_overlap_rows_fold_into_a_range() -> None:
    """The scheduler folds repeated overlap skips into one row (missed_from stays, scheduled_at moves)."""
    rows = [row(T0, state="running", node="n1", attempts=1),
            row(T0 + mins(3), "overlap", "skipped", missed_from=T0 + mins(1), missed_count=3, error=OVERLAP,
                attempts=0)]
    led = ledger(rows)
    assert fates(led)[:4] == [(T0, "running"), (T0 + mins(1), "skipped"), (T0 + mins(2), "skipped"),
                              (T0 + mins(3), "skipped")]
    assert at_(led, T0 + mins(2)).detail == f"skipped: {OVERLAP}; 3 ticks from 12:01:00Z"


def test_manual_backfill_and_unknown_kinds_are_not_instants() -> None:
    base = [row(T0), row(T0 + mins(1))]
    extra = [row(T0 + sec(17), "manual", status_code=200), row(T0 + mins(2) + sec(1), "backfill"),
             row(T0 + sec(30), "future-kind", "weird")]
    assert ledger(base + extra) == ledger(base)
    # A run-now that happens to sit on an instant does not account for it; the detail says what holds it.
    e = at_(ledger([row(T0 + mins(2), "manual", id="m1")]), T0 + mins(2))
    assert e.fate is Fate.UNACCOUNTED and e.execution_id is None
    assert e.detail == "no tick row; a manual row (m1) holds this instant: a bug, please report"


# ---------------------------------------------------------------- definition history


def test_edit_mid_window_changes_the_schedule() -> None:
    edit = T0 + mins(6)  # both schedules fire at 12:06: it belongs to the old definition, and is listed once
    segments = (seg(T0 - timedelta(days=1), edit, "*/2 * * * *", version=1), seg(edit, None, "*/3 * * * *", version=2))
    led = ledger([], segments, end=T0 + mins(16))
    assert [e.scheduled_at for e in led.ticks] == [T0 + mins(m) for m in (0, 2, 4, 6, 9, 12, 15)]


def test_a_tick_claimed_under_the_old_schedule_is_listed_and_explained() -> None:
    edit = T0 + mins(6) + sec(30)
    segments = (seg(T0 - timedelta(days=1), edit, "*/2 * * * *", version=1), seg(edit, None, "*/3 * * * *", version=2))
    stray = row(T0 + mins(8), status_code=200)  # claimed ahead under version 1, sent after the edit
    led = ledger([stray], segments, end=T0 + mins(10))
    assert [e.scheduled_at for e in led.ticks] == [T0 + mins(m) for m in (0, 2, 4, 6, 8, 9)]
    e = at_(led, T0 + mins(8))
    assert e.fate is Fate.DELIVERED and e.execution_id == stray.id
    assert e.detail == ("HTTP 200 after 1 attempt; not an instant of version 2's schedule"
                        " (claimed under an earlier definition)")


def test_pause_and_resume() -> None:
    pause, resume = T0 + mins(2) + sec(30), T0 + mins(5) + sec(30)
    segments = (seg(T0 - timedelta(days=1), pause, version=6), seg(pause, resume, paused=True, version=7),
                seg(resume, None, version=8))
    rows = [row(T0 + mins(m)) for m in (0, 1, 2, 6, 7)]
    rows.append(row(T0 + mins(3), status_code=200))  # claimed ahead, just before the pause reached the owner
    led = ledger(rows, segments, end=T0 + mins(8))
    assert fates(led) == [(T0, "delivered"), (T0 + mins(1), "delivered"), (T0 + mins(2), "delivered"),
                          (T0 + mins(3), "delivered"), (T0 + mins(4), "paused"), (T0 + mins(5), "paused"),
                          (T0 + mins(6), "delivered"), (T0 + mins(7), "delivered")]
    assert at_(led, T0 + mins(4)).detail == "paused (version 7)"
    assert at_(led, T0 + mins(3)).detail == "HTTP 200 after 1 attempt; claimed before the pause"


def test_paused_in_the_future_is_paused_not_pending() -> None:
    led = ledger([], (seg(T0 - timedelta(days=1), paused=True, version=3),), now=T0)
    assert {e.fate for e in led.ticks} == {Fate.PAUSED}


def test_created_mid_window() -> None:
    created = T0 + mins(3) + sec(30)
    segments = (seg(datetime(1970, 1, 1, tzinfo=UTC), created, None, version=0), seg(created, None, version=1))
    led = ledger([], segments, end=T0 + mins(10))
    assert [e.scheduled_at for e in led.ticks] == [T0 + mins(m) for m in range(4, 10)]


def test_deleted_mid_window() -> None:
    deleted = T0 + mins(5) + sec(30)
    segments = (seg(T0 - timedelta(days=1), deleted, version=4), seg(deleted, None, None, version=5))
    late = row(T0 + mins(7), state="abandoned", error="job deleted")  # cannot happen; if it does, it is shown
    led = ledger([late], segments, end=T0 + mins(10))
    assert [e.scheduled_at for e in led.ticks] == [T0 + mins(m) for m in (0, 1, 2, 3, 4, 5, 7)]
    assert at_(led, T0 + mins(7)).detail == "abandoned: job deleted (1 attempt); the job had no schedule then"


def test_lisbon_fall_back_daily_fixed_time_fires_once() -> None:
    # 2025-10-26: Lisbon falls back from WEST (UTC+1) to WET at 02:00 local; 01:30 local happens twice.
    segments = (seg(datetime(2025, 1, 1, tzinfo=UTC), None, "30 1 * * *", zone="Europe/Lisbon"),)
    start, end = datetime(2025, 10, 25, 12, tzinfo=UTC), datetime(2025, 10, 27, 12, tzinfo=UTC)
    led = ledger([], segments, start=start, end=end, now=end)
    assert [e.scheduled_at for e in led.ticks] == [datetime(2025, 10, 26, 0, 30, tzinfo=UTC),  # 01:30 WEST
                                                   datetime(2025, 10, 27, 1, 30, tzinfo=UTC)]  # 01:30 WET


# ---------------------------------------------------------------- bounded work


def test_truncated_at_limit() -> None:
    every_second = (seg(T0 - timedelta(days=1), expr="* * * * * *"),)
    far = T0 + timedelta(days=365 * 100)
    t = time.perf_counter()
    led = ledger([row(T0 + sec(2))], every_second, end=far, limit=5)
    assert time.perf_counter() - t < 1.0
    assert [e.scheduled_at for e in led.ticks] == [T0 + sec(i) for i in range(5)]
    assert led.truncated and led.next_from == T0 + sec(5) and sum(led.counts.values()) == 5
    exact = ledger([], every_second, end=T0 + sec(5), limit=5)
    assert len(exact.ticks) == 5 and not exact.truncated and exact.next_from is None


def test_a_stray_row_counts_against_the_limit() -> None:
    segments = (seg(T0 - timedelta(days=1), expr="*/2 * * * *"),)
    led = ledger([row(T0 + mins(1))], segments, end=T0 + mins(10), limit=2)
    assert [e.scheduled_at for e in led.ticks] == [T0, T0 + mins(1)] and led.next_from == T0 + mins(2)


def test_huge_gaps_are_not_walked() -> None:
    t = time.perf_counter()
    # A window decades after the job began: enumeration starts at the window, not at the segment's start.
    old = (seg(datetime(2000, 1, 1, tzinfo=UTC), expr="* * * * * *"),)
    start = datetime(2090, 1, 1, tzinfo=UTC)
    led = ledger([], old, start=start, end=start + timedelta(days=3650), now=start, limit=3)
    assert [e.scheduled_at for e in led.ticks] == [start + sec(i) for i in range(3)] and led.truncated
    # A job deleted long ago, asked about a century: nothing after the deletion is walked.
    gone = (seg(T0 - mins(1), T0 + sec(3), "* * * * * *"), seg(T0 + sec(3), None, None))
    led = ledger([], gone, start=datetime(1970, 1, 1, tzinfo=UTC), end=datetime(2100, 1, 1, tzinfo=UTC))
    assert len(led.ticks) == 63 and not led.truncated  # T0 - 59 s .. T0 + 3 s
    assert time.perf_counter() - t < 3.0


def test_empty_window_and_no_segments() -> None:
    assert ledger([row(T0)], start=T0, end=T0).ticks == []
    assert ledger([], ()).ticks == []


# ---------------------------------------------------------------- property: every instant accounted for once

BASE = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)  # Lisbon springs forward at 01:00 UTC
EXPRS = ["*/15 * * * * *", "* * * * *", "7,31 * * * * *", None]
TICK_STATES = ["succeeded", "failed", "timed_out", "abandoned", "claimed", "running"]
EXPECTED = {"succeeded": "delivered", "failed": "failed", "timed_out": "failed", "abandoned": "abandoned",
            "claimed": "running", "running": "running"}


@st.composite
def histories(draw: st.DrawFn) -> tuple[tuple[Segment, ...], datetime, datetime]:
    start = BASE + sec(draw(st.integers(0, 3600)))
    end = start + sec(draw(st.integers(60, 900)))
    cuts = sorted(set(draw(st.lists(st.integers(-30, int((end - start).total_seconds()) + 30), max_size=3))))
    starts = [BASE - mins(10), *(start + sec(c) for c in cuts)]
    ends: list[datetime | None] = [*starts[1:], None]
    zone = draw(st.sampled_from(["UTC", "Europe/Lisbon"]))
    segments = tuple(
        seg(lo, hi, draw(st.sampled_from(EXPRS)), zone=zone, paused=draw(st.booleans()), version=v)
        for v, (lo, hi) in enumerate(zip(starts, ends, strict=True), 1)
    )
    return segments, start, end


def reference(segments: tuple[Segment, ...], start: datetime, end: datetime) -> list[tuple[datetime, Segment]]:
    """The instants, walked from each segment's own start (the ledger starts at the window)."""
    out = []
    for s in segments:
        if s.schedule is None:
            continue
        for t in s.schedule.iter_after(s.start):
            if t >= end or (s.end is not None and t > s.end):
                break
            if t >= start:
                out.append((t, s))
    return out


@settings(max_examples=120, deadline=None)
@given(histories(), st.data())
def test_every_instant_accounted_exactly_once(history: tuple[tuple[Segment, ...], datetime, datetime],
                                              data: st.DataObject) -> None:
    segments, start, end = history
    expected = reference(segments, start, end)
    now = start + sec(data.draw(st.integers(-60, int((end - start).total_seconds()) + 120), label="now"))
    settle = sec(data.draw(st.integers(0, 120), label="settle"))
    cut = now - settle

    # Account for every instant that is not paused: one row per tick, or consecutive ones grouped into range rows.
    rows: list[Execution] = []
    covered: list[list[datetime]] = []  # covered[i]: the instants rows[i] accounts for
    fate_of: dict[datetime, str] = {}
    runs: list[list[datetime]] = [[]]  # maximal runs of consecutive unpaused instants
    for t, s in expected:
        if s.paused:
            runs.append([])
            fate_of[t] = "paused"
        else:
            runs[-1].append(t)
    for run in runs:
        i = 0
        while i < len(run):
            kind = data.draw(st.sampled_from(["tick", "catchup", "overlap", "misfire"]))
            size = 1 if kind in ("tick", "catchup") else data.draw(st.integers(1, min(6, len(run) - i)))
            group = run[i:i + size]
            i += size
            rid = f"r{len(rows)}"
            if kind in ("tick", "catchup"):
                state = data.draw(st.sampled_from(TICK_STATES))
                rows.append(ex({"id": rid, "scheduled_at": group[0], "kind": kind, "state": state,
                                "missed_from": None, "missed_count": 0, "error": None, "attempts": 1}))
                fate_of[group[0]] = EXPECTED[state]
            else:
                reason = data.draw(st.sampled_from(["past the misfire grace", "skipped by misfire policy"]))
                reason = OVERLAP if kind == "overlap" else reason
                rows.append(ex({"id": rid, "scheduled_at": group[-1], "kind": kind,
                                "state": "skipped" if kind == "overlap" else "missed", "missed_from": group[0],
                                "missed_count": len(group), "error": reason, "attempts": 0}))
                fate_of.update(dict.fromkeys(group, "missed" if reason.startswith("past") else "skipped"))
            covered.append(group)
            if data.draw(st.booleans()):  # a run-now next to it: never an instant
                rows.append(ex({"id": f"m{len(rows)}", "scheduled_at": group[0] + timedelta(milliseconds=1),
                                "kind": "manual", "state": "succeeded", "missed_from": None, "missed_count": 0,
                                "error": None, "attempts": 1}))
                covered.append([])
    rows = data.draw(st.permutations(rows), label="row order")  # the store's order is not the ledger's concern
    covered_by_id = dict(zip([r.id for r in rows], [covered[int(r.id[1:])] for r in rows], strict=True))

    led = account(segments, rows, start=start, end=end, now=now, settle=settle)
    assert [e.scheduled_at for e in led.ticks] == [t for t, _ in expected]  # each once, in order
    assert all(a.scheduled_at < b.scheduled_at for a, b in zip(led.ticks, led.ticks[1:], strict=False))
    assert {e.scheduled_at: str(e.fate) for e in led.ticks} == fate_of
    assert not [e for e in led.ticks if e.fate in (Fate.UNACCOUNTED, Fate.PENDING) and e.scheduled_at <= cut]
    assert sum(led.counts.values()) == len(led.ticks) and not led.truncated

    # Remove one row: exactly the instants it accounted for lose their account.
    if not rows:
        return
    gone = data.draw(st.sampled_from(rows), label="removed")
    lost = set(covered_by_id[gone.id])
    after = account(segments, [r for r in rows if r is not gone], start=start, end=end, now=now, settle=settle)
    assert [e.scheduled_at for e in after.ticks] == [e.scheduled_at for e in led.ticks]
    for before, e in zip(led.ticks, after.ticks, strict=True):
        if e.scheduled_at in lost:
            assert (e.fate, e.execution_id) == (Fate.UNACCOUNTED if e.scheduled_at <= cut else Fate.PENDING, None)
        else:
            assert e == before


# ---------------------------------------------------------------- the timetable's rules in the ledger


def test_bounds_completion_calendars_skips_and_backfills_each_have_their_fate() -> None:
    from node.model.calendars import Calendar
    from node.model.timetable import Timetable

    cal = Calendar(name="lunch", ranges=((datetime(2026, 5, 4, 12, 1), datetime(2026, 5, 4, 12, 2)),))
    tt = Timetable(schedules=(parse("* * * * *"),), start_at=T0 + mins(1), end_at=T0 + mins(4), calendars=(cal,))
    segs = (Segment(start=T0 - mins(60), end=None, schedule=tt),)
    # before startAt and at endAt: excluded by the definition; 12:01 excluded by the calendar, predicted while
    # pending, recorded as a range row once planned
    led = ledger([], segs, now=T0 - mins(10))
    assert fates(led) == [(T0, "excluded"), (T0 + mins(1), "excluded"), (T0 + mins(2), "pending"),
                          (T0 + mins(3), "pending"), (T0 + mins(4), "excluded")]
    assert "before startAt" in led.ticks[0].detail and "calendar 'lunch'" in led.ticks[1].detail
    assert "endAt" in led.ticks[4].detail
    rows = [row(T0 + mins(1), kind="exclusion", state="excluded", missed_from=T0 + mins(1), missed_count=1,
                error="excluded by calendar 'lunch' (2026-05-04T12:01 to 2026-05-04T12:02)"),
            row(T0 + mins(2), kind="skip", state="skipped", missed_from=T0 + mins(2), missed_count=1,
                error="skipped by request"),
            row(T0 + mins(3), state="cancelled", error="replaced by a later tick (concurrencyPolicy replace)")]
    led = ledger(rows, segs)
    assert fates(led)[1:4] == [(T0 + mins(1), "excluded"), (T0 + mins(2), "skipped"), (T0 + mins(3), "cancelled")]
    # a completed segment: its instants are not due
    done = (Segment(start=T0 - mins(60), end=T0 + mins(2), schedule=parse("* * * * *")),
            Segment(start=T0 + mins(2), end=None, schedule=parse("* * * * *"), completed=True, max_runs=3))
    led = ledger([row(T0), row(T0 + mins(1)), row(T0 + mins(2))], done)
    assert fates(led) == [(T0, "delivered"), (T0 + mins(1), "delivered"), (T0 + mins(2), "delivered"),
                          (T0 + mins(3), "completed"), (T0 + mins(4), "completed")]
    assert "after 3 runs" in led.ticks[3].detail
    # a backfill's delivery speaks for a missed instant, and for one no definition had
    bf = [row(T0 + mins(5) + sec(30), kind="backfill", instant=T0 + mins(2), backfill="b1"),
          row(T0 + mins(6) + sec(30), kind="backfill", instant=T0 - mins(90), backfill="b1"),
          row(T0 + mins(2), kind="misfire", state="missed", missed_from=T0 + mins(2), missed_count=1, error="past")]
    led = ledger(bf, (Segment(start=T0 - mins(60), end=None, schedule=parse("* * * * *")),), start=T0 - mins(91))
    by = {e.scheduled_at: e for e in led.ticks}
    assert by[T0 + mins(2)].fate is Fate.DELIVERED and "backfill b1" in by[T0 + mins(2)].detail
    assert "its tick: missed" in by[T0 + mins(2)].detail
    assert by[T0 - mins(90)].fate is Fate.DELIVERED and "before the job existed" in by[T0 - mins(90)].detail
