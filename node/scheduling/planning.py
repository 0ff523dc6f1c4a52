"""Planning: which ticks of one job to claim now, and how the missed ones are recorded.

``plan(schedule, anchor, now, horizon, ...)`` is pure (no I/O, no clock, no asyncio). It accounts for
every fire instant in ``(anchor, horizon]`` exactly once, as one of:

* a ``Run``: claim it and send it. ``tick`` when on time (at or after ``now - late_after``);
  ``catchup`` when late, within the misfire grace (at or after ``now - grace``), and run by policy;
* a ``Skip``: not run because the previous run is still in flight (concurrencyPolicy forbid);
* a place in one ``MissedRange``: consecutive instants not run, recorded as one row with an exact count;
* a place in one range of ``excluded`` instants (an exclusion calendar names them: fate ``excluded``, the
  calendar in the reason) or of ``requested`` skips (instants up to the job's ``skip_until``: ``skipped``);
* nothing, after the last run ``max_runs`` allows: the plan says ``completed`` (the job completes there).

The instants are the job's timetable's (``model/timetable.py``): its schedules merged, within its bounds. With a
jitter, an instant is judged (on time, late, within the grace, due by the horizon) at its send time, the
instant plus its offset.

Late instants by misfire policy:
  skip       all of them form a range (fate ``skipped``);
  fire_once  the last one within the grace runs; the others form a range (fate ``missed``);
  fire_all   the last ``catchup_cap`` within the grace run; the earlier ones form a range.
With ``forbid``, a run while ``busy`` becomes a Skip, and the first run kept makes the job busy.

Bounded work, whatever the gap since the anchor:
  * ``every_seconds`` schedules count their late instants arithmetically (``Schedule.count_between``) and
    enumerate only what may run: the last ``catchup_cap`` late ones and the on-time ones.
  * Other schedules enumerate at most ``budget + catchup_cap`` instants per call. A longer gap is planned in
    slices: the plan records the late instants it has seen as a range, returns ``complete=False``, and the caller
    yields to the event loop and calls again from ``plan.anchor``. A slice decides only instants whose fate the
    unseen ones cannot change (it leaves the last ``catchup_cap`` in-grace instants it saw for the next call), so
    with the same ``now`` slicing changes how many range rows there are, never which instants run.

``plan.anchor`` is the last instant the plan accounts for (the old anchor if none): every instant in
``(anchor, plan.anchor]`` is in the plan, none after it is, and when ``complete`` there is none in
``(plan.anchor, horizon]``. An instant exactly at the anchor is not included; one exactly at the horizon is.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..model.executions import OVERLAP_REASON, SKIP_REASON, ExecutionKind, Fate
from ..model.jobs import MisfirePolicy
from ..model.schedule import Schedule
from ..model.timetable import Timetable

LATE_AFTER = timedelta(seconds=1)  # a tick first considered later than this is late: the misfire policy decides
CATCHUP_CAP = 100  # fire_all: at most this many catch-up runs per plan
BUDGET = 5000  # instants enumerated per call, beyond the catch-up window

_TINY = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    scheduled_at: datetime
    kind: ExecutionKind  # TICK on time; CATCHUP late but within the grace, run by the misfire policy


@dataclass(frozen=True, slots=True, kw_only=True)
class Skip:
    scheduled_at: datetime
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MissedRange:
    first: datetime  # the first instant of the range (missedFrom)
    last: datetime  # the last instant of the range (the row's scheduled_at)
    count: int  # exact number of schedule instants in [first, last]
    fate: Fate  # SKIPPED by misfirePolicy skip; MISSED past the grace, coalesced by fire_once, over fire_all's cap
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    runs: tuple[Run, ...]
    skips: tuple[Skip, ...]
    missed: tuple[MissedRange, ...]
    anchor: datetime  # the next plan starts here
    complete: bool  # False: the budget cut the plan short; call again (after yielding) from ``anchor``
    excluded: tuple[MissedRange, ...] = ()  # instants not due: a calendar (EXCLUDED) or a skip request (SKIPPED)
    completed_at: datetime | None = None  # the last run max_runs allows is in this plan: the job completes here


def plan(schedule: Schedule | Timetable, anchor: datetime, now: datetime, horizon: datetime, *,
         policy: MisfirePolicy, grace: timedelta, busy: bool, forbid: bool,
         late_after: timedelta = LATE_AFTER, catchup_cap: int = CATCHUP_CAP, budget: int = BUDGET,
         skip_until: datetime | None = None, runs_left: int | None = None) -> Plan:
    """The plan for the instants in ``(anchor, horizon]`` as seen at ``now`` (``now <= horizon``). ``skip_until``:
    instants up to it are skipped by request. ``runs_left``: at most this many runs (``max_runs``), then none."""
    tt = schedule if isinstance(schedule, Timetable) else Timetable(schedules=(schedule,))
    if runs_left is not None and runs_left <= 0:  # the runs were used up: the job completed where it stands
        return Plan(runs=(), skips=(), missed=(), anchor=anchor, complete=True, completed_at=anchor)
    policy = MisfirePolicy(policy)
    late_line, grace_line = now - late_after, now - grace
    keep = {MisfirePolicy.SKIP: 0, MisfirePolicy.FIRE_ONCE: 1, MisfirePolicy.FIRE_ALL: max(0, catchup_cap)}[policy]
    if tt.start_at is not None and anchor < tt.start_at - _TINY:
        anchor = tt.start_at - _TINY  # instants before startAt are not due (the ledger says so from the definition)
    if tt.end_at is not None and horizon >= tt.end_at:
        horizon = tt.end_at - _TINY

    # 1. every_seconds schedules: the late instants that cannot run, counted without enumerating them.
    head = _counted_head(tt, anchor, horizon, late_line, keep) if skip_until is None or skip_until <= anchor \
        else _Head(anchor, anchor, 0)

    # 2. Enumerate the rest, at most budget + keep instants; the ones not due (a calendar, a skip request) go
    # into ranges of their own and are not run.
    limit = max(1, budget) + keep
    ticks: list[datetime] = []
    fires: list[datetime] = []  # ticks' send times (the instant plus its jitter offset)
    not_due: list[tuple[datetime, Fate, str]] = []  # decided at once, whatever follows
    complete = True
    last_seen = head.last
    for t in tt.iter_after(head.last):
        fire = tt.fire_at(t)
        if fire > horizon:
            break
        if len(ticks) + len(not_due) >= limit:
            complete = False
            break
        last_seen = t
        if skip_until is not None and t <= skip_until:
            not_due.append((t, Fate.SKIPPED, SKIP_REASON))
            continue
        if tt.calendars and (reason := tt.excluded(t)) is not None:
            not_due.append((t, Fate.EXCLUDED, reason))
            continue
        ticks.append(t)
        fires.append(fire)
    n_late = bisect_left(fires, late_line)
    late, on_time = ticks[:n_late], ticks[n_late:]
    n_past = bisect_left(fires[:n_late], grace_line)  # late[:n_past] are past the grace, the rest within it
    cut: datetime | None = None  # the first instant left for the next call (none: every one seen is decided)
    if complete or on_time:  # every late instant is known: the last `keep` within the grace run
        n_run = min(keep, n_late - n_past)
        covered, catchup = late[:n_late - n_run], late[n_late - n_run:]
    else:  # more late instants may follow: leave the last `keep` within the grace for the next call
        covered, catchup = late[:max(n_past, n_late - keep)], []
        if len(covered) < n_late:
            cut = late[len(covered)]

    # The late instants that do not run, in ranges of consecutive instants: one not due (a calendar, a skip
    # request) between two of them ends a range, so a range holds exactly the instants from its first to its last.
    fate = Fate.SKIPPED if policy is MisfirePolicy.SKIP else Fate.MISSED
    spans: list[tuple[datetime, datetime, int]] = [(head.first, head.last, head.count)] if head.count else []
    not_due_at = [x[0] for x in not_due]
    for t in covered:
        if spans:
            first, last, count = spans[-1]
            i = bisect_right(not_due_at, last)
            if not (i < len(not_due_at) and not_due_at[i] < t):
                spans[-1] = (first, t, count + 1)
                continue
        spans.append((t, t, 1))
    missed = tuple(MissedRange(first=first, last=last, count=count, fate=fate,
                               reason=_reason(policy, grace, catchup_cap, past=first < grace_line,
                                              in_grace=last >= grace_line))
                   for first, last, count in spans)

    runs: list[Run] = []
    skips: list[Skip] = []
    completed_at: datetime | None = None
    for t, kind in [*((t, ExecutionKind.CATCHUP) for t in catchup), *((t, ExecutionKind.TICK) for t in on_time)]:
        if completed_at is not None:
            break  # the job completed with the last run allowed: the instants after it are not planned
        if forbid and busy:
            skips.append(Skip(scheduled_at=t, reason=OVERLAP_REASON))
        else:
            runs.append(Run(scheduled_at=t, kind=kind))
            busy = True
            if runs_left is not None and len(runs) >= runs_left:
                completed_at = t

    if completed_at is not None:  # nothing after the last run allowed is planned
        cut = completed_at + _TINY
        skips = [sk for sk in skips if sk.scheduled_at < completed_at]
        complete = True
    decided = [*covered, *catchup, *on_time]
    if cut is not None:
        not_due = [x for x in not_due if x[0] < cut]
        end = max([head.last, *(t for t in decided if t < cut), *(x[0] for x in not_due)])
    else:
        end = max(decided[-1] if decided else head.last, last_seen)
    return Plan(runs=tuple(runs), skips=tuple(skips), missed=missed, anchor=end, complete=complete,
                excluded=_ranges(not_due, ticks), completed_at=completed_at)


def _ranges(not_due: list[tuple[datetime, Fate, str]], due: list[datetime]) -> tuple[MissedRange, ...]:
    """Consecutive instants not due for the same reason, one range each (a due instant between two ends it)."""
    out: list[MissedRange] = []
    k = 0
    for t, fate, reason in not_due:
        while k < len(due) and due[k] < t:
            k += 1
        r = out[-1] if out else None
        if r is not None and r.fate is fate and r.reason == reason and not (k > 0 and due[k - 1] > r.last):
            out[-1] = MissedRange(first=r.first, last=t, count=r.count + 1, fate=fate, reason=reason)
        else:
            out.append(MissedRange(first=t, last=t, count=1, fate=fate, reason=reason))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Head:  # late instants counted, not enumerated; count 0: none (first and last are then the anchor)
    first: datetime
    last: datetime
    count: int


def _counted_head(schedule: Schedule | Timetable, anchor: datetime, horizon: datetime, late_line: datetime,
                  keep: int) -> _Head:
    """For every_seconds schedules, the late instants but the last ``keep`` (which alone may run), in O(1).
    Other schedules count nothing here."""
    none = _Head(anchor, anchor, 0)
    if not schedule.every_seconds:
        return none
    last_late = min(horizon, late_line - _TINY)  # instants < late_line are the ones <= late_line - 1 µs
    n = schedule.count_between(anchor, last_late) - keep
    if n <= 0:
        return none
    first = schedule.next_after(anchor)
    return _Head(first, first + (n - 1) * timedelta(seconds=schedule.every_seconds), n)


def _reason(policy: MisfirePolicy, grace: timedelta, catchup_cap: int, *, past: bool, in_grace: bool) -> str:
    if policy is MisfirePolicy.SKIP:
        return "skipped by misfire policy"
    parts = []
    if past:
        parts.append(f"past the misfire grace ({grace.total_seconds():g} s)")
    if in_grace:
        parts.append("coalesced into one catch-up run" if policy is MisfirePolicy.FIRE_ONCE
                     else f"over the catch-up cap ({catchup_cap} runs)")
    return "; ".join(parts)


def missed_between(schedule: Schedule | Timetable, start: datetime, end: datetime) -> list[MissedRange]:
    """Every instant of ``schedule`` in ``(start, end]`` as missed ranges (for instants nobody could
    claim: an owner lost before an edit, a pause or a delete). Bounded: planned in slices."""
    out: list[MissedRange] = []
    anchor = start
    for _ in range(1000):
        if anchor >= end:
            break
        p = plan(schedule, anchor, end + timedelta(days=1), end, policy=MisfirePolicy.SKIP, grace=timedelta(0),
                 busy=False, forbid=False)
        out += p.missed
        if p.complete or p.anchor <= anchor:
            break
        anchor = p.anchor
    return out
