"""Planning: which ticks of one job to claim now, and how the missed ones are recorded.

``plan(schedule, anchor, now, horizon, ...)`` is pure (no I/O, no clock, no asyncio). It accounts for
every fire instant in ``(anchor, horizon]`` exactly once, as one of:

* a ``Run``: claim it and send it. ``tick`` when on time (at or after ``now - late_after``);
  ``catchup`` when late, within the misfire grace (at or after ``now - grace``), and run by policy;
* a ``Skip``: not run because the previous run is still in flight (concurrencyPolicy forbid);
* a place in one ``MissedRange``: consecutive instants not run, recorded as one row with an exact count.

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

from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..model.executions import OVERLAP_REASON, ExecutionKind, Fate
from ..model.jobs import MisfirePolicy
from ..model.schedule import Schedule

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


def plan(schedule: Schedule, anchor: datetime, now: datetime, horizon: datetime, *,
         policy: MisfirePolicy, grace: timedelta, busy: bool, forbid: bool,
         late_after: timedelta = LATE_AFTER, catchup_cap: int = CATCHUP_CAP, budget: int = BUDGET) -> Plan:
    """The plan for the instants in ``(anchor, horizon]`` as seen at ``now`` (``now <= horizon``)."""
    policy = MisfirePolicy(policy)
    late_line, grace_line = now - late_after, now - grace
    keep = {MisfirePolicy.SKIP: 0, MisfirePolicy.FIRE_ONCE: 1, MisfirePolicy.FIRE_ALL: max(0, catchup_cap)}[policy]

    # 1. every_seconds schedules: the late instants that cannot run, counted without enumerating them.
    head = _counted_head(schedule, anchor, horizon, late_line, keep)

    # 2. Enumerate the rest, at most budget + keep instants.
    limit = max(1, budget) + keep
    ticks: list[datetime] = []
    complete = True
    for t in schedule.iter_after(head.last):
        if t > horizon:
            break
        if len(ticks) == limit:
            complete = False
            break
        ticks.append(t)
    n_late = bisect_left(ticks, late_line)
    late, on_time = ticks[:n_late], ticks[n_late:]
    n_past = bisect_left(late, grace_line)  # late[:n_past] are past the grace, the rest within it
    if complete or on_time:  # every late instant is known: the last `keep` within the grace run
        n_run = min(keep, n_late - n_past)
        covered, catchup = late[:n_late - n_run], late[n_late - n_run:]
    else:  # more late instants may follow: leave the last `keep` within the grace for the next call
        covered, catchup = late[:max(n_past, n_late - keep)], []

    missed: tuple[MissedRange, ...] = ()
    if head.count or covered:
        first = head.first if head.count else covered[0]
        last = covered[-1] if covered else head.last
        fate = Fate.SKIPPED if policy is MisfirePolicy.SKIP else Fate.MISSED
        reason = _reason(policy, grace, catchup_cap, past=first < grace_line, in_grace=last >= grace_line)
        missed = (MissedRange(first=first, last=last, count=head.count + len(covered), fate=fate, reason=reason),)

    runs: list[Run] = []
    skips: list[Skip] = []
    for t, kind in [*((t, ExecutionKind.CATCHUP) for t in catchup), *((t, ExecutionKind.TICK) for t in on_time)]:
        if forbid and busy:
            skips.append(Skip(scheduled_at=t, reason=OVERLAP_REASON))
        else:
            runs.append(Run(scheduled_at=t, kind=kind))
            busy = True

    decided = [*covered, *catchup, *on_time]
    end = decided[-1] if decided else head.last
    return Plan(runs=tuple(runs), skips=tuple(skips), missed=missed, anchor=end, complete=complete)


@dataclass(frozen=True, slots=True)
class _Head:  # late instants counted, not enumerated; count 0: none (first and last are then the anchor)
    first: datetime
    last: datetime
    count: int


def _counted_head(schedule: Schedule, anchor: datetime, horizon: datetime, late_line: datetime, keep: int) -> _Head:
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


def missed_between(schedule: Schedule, start: datetime, end: datetime) -> list[MissedRange]:
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
