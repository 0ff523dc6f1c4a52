"""The forecast: how many requests the jobs will send in each slot of a window, computed from their schedules, so
an operator sees a thundering herd coming (2,000 jobs on ``0 * * * *``) and spreads it with ``H`` or a jitter.

Jobs that fire at the same instants are counted once, as a group: every job with the same plain schedule and zone
(MariaDB groups them: ``store.jobs.forecast_inputs``), every ``H`` job whose ``H`` resolves alike, and each other
job (calendars, bounds, a jitter, skips, a run limit) alone. Each group's instants are walked in slices under a
step budget, so a forecast never holds the event loop and never runs away: a group past its share of the budget
is listed in ``uncounted`` instead (a seconds-field schedule over a week), and the counts say so (``complete``).

A jittered job is counted at its send times (the instant plus its offset): the slot its request lands in. A paused
job counts nothing (a pause with ``until`` is not forecast to resume).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..aio import Slices
from ..model.calendars import Calendar
from ..model.jobs import Job
from ..model.schedule import Budget, ScheduleError, ScheduleTooCostly, parse, resolve_h
from ..model.times import rfc3339
from ..model.timetable import Timetable

# A step is about an instant: 20-60 µs of croniter here. A forecast is computed once a minute at most while no job
# changes (web/forecasts.py), one at a time per node, in slices: the worst one costs ~10 s of one core, never the loop.
FORECAST_STEPS = 300_000  # schedule steps one forecast may spend in all
GROUP_STEPS = 60_000  # ... and one group of jobs (a cron of seconds every 7 s over a day is 12,343)
MAX_BUCKETS = 10_080  # a week of minutes, or ten minutes of tenths of seconds
MAX_SPAN = timedelta(days=7)
BUSIEST = 10  # the busiest slots listed, each with its heaviest groups
GROUPS_PER_SLOT = 5
UNCOUNTED_SHOWN = 20  # groups listed as not counted (their jobs are all counted in ``uncountedJobs``)
_TINY = timedelta(microseconds=1)


class ForecastError(ValueError):
    """A window that cannot be forecast as asked (the API's 400)."""


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    step: int  # seconds

    @property
    def buckets(self) -> int:
        return int((self.end - self.start).total_seconds()) // self.step  # (whole slots: ``of`` makes them so)

    def index(self, t: datetime) -> int:
        return int((t - self.start).total_seconds()) // self.step

    @classmethod
    def of(cls, start: datetime | None, end: datetime | None, step: int | None, *, now: datetime) -> Window:
        """The window asked for: ``step`` seconds a slot (60 by default), from ``start`` (now by default) down to
        its slot (a multiple of ``step`` seconds since the epoch: every request of a minute asks for the same
        window) to ``end`` (24 hours later by default) up to its slot: at most a week, and MAX_BUCKETS slots."""
        step = 60 if step is None else step
        if not 1 <= step <= 86_400:
            raise ForecastError("step must be between 1 and 86400 seconds")
        if end is not None and start is not None and end <= start:
            raise ForecastError("to must be after from")
        first = int((start or now).timestamp() // step * step)
        start = datetime.fromtimestamp(first, UTC)
        end = end if end is not None else start + timedelta(days=1)
        if end - start > MAX_SPAN:
            raise ForecastError("a forecast spans at most 7 days")
        slots = max(1, -(-int((end - start).total_seconds() * 1000) // (step * 1000)))
        w = cls(start, start + timedelta(seconds=slots * step), step)
        if w.buckets > MAX_BUCKETS:
            raise ForecastError(f"{w.buckets} slots: at most {MAX_BUCKETS} (a longer step, or a shorter range)")
        return w


@dataclass(slots=True)
class Group:
    """Jobs that fire at the same instants: how many, and one of them to show."""

    schedule: str  # as written (H unresolved)
    time_zone: str
    jobs: int
    example: str  # a job's id
    name: str = ""
    resolved: str = ""  # H resolved, when the group's schedules share it
    job: Job | None = None  # a job counted alone (its calendars, bounds, jitter, skips or run limit)
    timetable: Timetable | None = None
    slots: Counter[int] = field(default_factory=Counter)  # requests by slot (jobs included)

    def view(self, n: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"schedule": self.schedule, "timeZone": self.time_zone, "jobs": self.jobs,
                               "example": {"id": self.example, "name": self.name}}
        if self.resolved:
            out["resolved"] = self.resolved
        if n is not None:
            out["fires"] = n
        return out


@dataclass(slots=True)
class Forecast:
    """A forecast as served: the counts, the busiest slots with their heaviest groups, and what was not counted
    (the first UNCOUNTED_SHOWN groups, and how many jobs in all). Built once by ``compute``; holds no group."""

    window: Window
    counts: list[int]
    busiest: list[dict[str, Any]]
    uncounted: list[dict[str, Any]]
    uncounted_jobs: int
    groups: int
    jobs: int
    computed_at: datetime
    seconds: float = 0.0
    api: dict[str, Any] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        if not self.api:
            w = self.window
            total = sum(self.counts)
            self.api = {
                "from": rfc3339(w.start), "to": rfc3339(w.end), "step": w.step, "counts": self.counts,
                "total": total, "peak": max(self.counts, default=0),
                "mean": round(total / len(self.counts), 3) if self.counts else 0,
                "jobs": self.jobs, "groups": self.groups, "busiest": self.busiest,
                "complete": not self.uncounted_jobs, "uncounted": self.uncounted,
                "uncountedJobs": self.uncounted_jobs,
                "computedAt": rfc3339(self.computed_at), "seconds": round(self.seconds, 3),
            }
        return self.api


def plain_group(schedule: str, time_zone: str, jobs: int, example: str, name: str = "") -> Group | None:
    """Jobs with one plain schedule (no H) and zone; None when it does not parse (a row older than a rule)."""
    try:
        s = parse(schedule, time_zone)
    except ScheduleError:
        return None
    return Group(schedule, time_zone, jobs, example, name, timetable=Timetable(schedules=(s,)))


class HGroups:
    """Plain jobs whose schedule has H, grouped by what H resolves to (a hash per H field: cheap, a job at a time)."""

    def __init__(self) -> None:
        self.by: dict[tuple[str, str], Group] = {}

    def add(self, job_id: str, name: str, schedule: str, zone: str) -> None:
        try:
            resolved = resolve_h(schedule, job_id)
        except ScheduleError:
            return
        g = self.by.get((resolved, zone))
        if g is None:
            try:
                s = parse(resolved, zone)
            except ScheduleError:
                return
            self.by[(resolved, zone)] = Group(schedule, zone, 1, job_id, name, resolved=resolved,
                                              timetable=Timetable(schedules=(s,)))
        else:
            g.jobs += 1
            if g.schedule != schedule:
                g.schedule = resolved  # (H written differently, resolved alike: the plain form names them)

    def groups(self) -> list[Group]:
        return list(self.by.values())


def h_groups(rows: Sequence[tuple[str, str, str, str]]) -> list[Group]:
    """(id, name, schedule, zone) of plain jobs whose schedule has H, grouped by what H resolves to."""
    hs = HGroups()
    for row in rows:
        hs.add(*row)
    return hs.groups()


def job_group(job: Job, calendars: Mapping[str, Calendar]) -> Group | None:
    if not job.active:
        return None
    try:
        tt = job.timetable(calendars)
    except ScheduleError:
        return None
    return Group(job.schedule, job.time_zone, 1, job.id, job.name, job=job, timetable=tt)


async def compute(groups: Sequence[Group], window: Window, *, now: datetime,
                  steps: int = FORECAST_STEPS, group_steps: int = GROUP_STEPS) -> Forecast:
    """Count each group's requests by slot of ``window`` (instants before ``now`` are not forecast), then find
    the busiest slots and their heaviest groups, in slices."""
    started = datetime.now(UTC)
    n = window.buckets
    counts = [0] * n
    total = Budget(steps)
    slices = Slices()
    counted: list[Group] = []
    uncounted: list[dict[str, Any]] = []
    uncounted_jobs = 0
    for g in groups:
        tt = g.timetable
        g.slots = Counter()
        if tt is None:
            continue
        try:
            if total.left <= 0:
                raise ScheduleTooCostly("the forecast's budget is spent")
            budget = Budget(min(group_steps, total.left))
            try:
                await _count(g, tt, window, now, budget, slices)
            finally:
                total.left -= budget.limit - max(budget.left, 0)
        except ScheduleTooCostly:
            g.slots = Counter()
            uncounted_jobs += g.jobs
            if len(uncounted) < UNCOUNTED_SHOWN:
                uncounted.append(g.view())
            await slices.pause()
            continue
        for i, c in g.slots.items():
            counts[i] += c
        counted.append(g)
    top = sorted((i for i, c in enumerate(counts) if c), key=lambda i: (-counts[i], i))[:BUSIEST]
    heavy: dict[int, list[Group]] = {i: [] for i in top}
    for g in counted:
        for i in top:
            if g.slots.get(i):
                heavy[i].append(g)
        await slices.pause()
    busiest = []
    for i in top:
        best = sorted(heavy[i], key=lambda g: -g.slots[i])[:GROUPS_PER_SLOT]
        busiest.append({"at": rfc3339(window.start + timedelta(seconds=i * window.step)), "fires": counts[i],
                        "groups": [g.view(g.slots[i]) for g in best]})
    jobs = sum(g.jobs for g in counted) + uncounted_jobs
    return Forecast(window, counts, busiest, uncounted, uncounted_jobs, len(counted), jobs, computed_at=now,
                    seconds=(datetime.now(UTC) - started).total_seconds())


async def _count(g: Group, tt: Timetable, window: Window, now: datetime, budget: Budget, slices: Slices) -> None:
    job = g.job
    lo = max(window.start, now)
    n = window.buckets
    if tt.every_seconds and tt.start_at is None and tt.end_at is None and (job is None or _no_limits(job)):
        # arithmetic, a slot at a time (every-N-seconds: the instants are the multiples of N)
        s = tt.schedules[0]
        first = window.index(lo) if lo > window.start else 0
        for i in range(first, n):
            a = max(window.start + timedelta(seconds=i * window.step), lo)
            b = min(window.start + timedelta(seconds=(i + 1) * window.step), window.end)
            k = s.count_between(a - _TINY, b - _TINY)
            if k:
                g.slots[i] += k * g.jobs
            budget.spend()
            await slices.pause()
        return
    skip_until = job.skip_until if job is not None else None
    runs_left = job.remaining_runs if job is not None else None
    # A run limit is spent from now on: the runs before the window use it up too (they are walked, not counted).
    walk_from = now if runs_left is not None and now < lo else lo
    for t in tt.iter_after(walk_from - _TINY, budget):  # (one croniter walk: due_after starts one per instant)
        await slices.pause()  # (first: an instant a calendar excludes or a skip covers is a step all the same; a
        # pause only after the counted ones held a node's loop 1.2-1.9 s when a calendar excluded the whole window)
        if t >= window.end or (runs_left is not None and runs_left <= 0):
            break
        if tt.calendars and tt.excluded(t) is not None:
            continue  # (not due: a calendar names it)
        if skip_until is not None and t <= skip_until:
            continue  # (skipped by request: not a run)
        if runs_left is not None:
            runs_left -= 1
        send = tt.fire_at(t)
        if t >= lo and send < window.end and 0 <= (i := window.index(send)) < n:
            g.slots[i] += g.jobs


def _no_limits(job: Job) -> bool:
    return job.skip_until is None and job.max_runs is None
