"""The story of a tick: own → due → claim → fire → record → publish.

This is the one module that knows the whole sequence. The others each do one
step: ``ring`` says who should own a job, ``fencing`` takes its lock, ``store``
draws its fence and claims its ticks, ``firing`` sends the request, and the
``outcomes`` records what happened and tells the cluster.

Ownership of a job:
  desired (ring says me, job active) → lock acquired (Redis) → fence drawn
  (an epoch from MariaDB, written with the first claim) → ticks claimed under that fence → on ring change: finish what was
  claimed, compare-and-delete the lock.

A tick:
  ``claim_ahead`` seconds before it is due, a batch of due ticks is claimed in
  one statement; each won claim is sent at its instant, only while this node's
  heartbeat lease is fresh. A claim lost to a newer fence drops the job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol

import structlog

from .. import metrics
from ..aio import Tasks, raise_if_cancelling, wait_event
from ..batching import TAKEOVER_JOBS
from ..model.errors import LeaseNotFresh, StoreUnavailable
from ..model.executions import (
    BUFFER_FULL_REASON,
    BUFFER_LATE_REASON,
    OVERLAP_REASON,
    REPLACED_REASON,
    Claim,
    Claimed,
    ExecutionKind,
    ExecutionState,
    Fate,
    Liveness,
    Redelivery,
    new_execution_id,
)
from ..model.jobs import BUFFERING, ConcurrencyPolicy, Delivery, Job
from ..model.schedule import Schedule, ScheduleExhausted
from ..model.times import rfc3339
from ..model.timetable import Timetable
from . import planning
from .firing import Result
from .outcomes import Outcomes
from .ownership import NO_PENDING, Handle, Lease, Owned, Ownership, shared_instant
from .wakes import FAR, Wakes, bucket_of


class Sender(Protocol):
    """Sends one execution's request, attempts and retries included (firing.Firer)."""

    async def fire(self, job: Job, *, execution_id: str, scheduled_at: datetime, fence: int,
                   may_send: Callable[[], bool], lease_left: Callable[[], float], attempts_before: int = 0,
                   due_at: datetime | None = None) -> Result: ...


class ClusterLease(Lease, Protocol):
    """This node's membership as the scheduler needs it (cluster.membership.Membership): its lease, its
    claimer id and the live ones, the events that wake the reconcile loop, the hand-over log."""

    claimer: str
    lapsed: asyncio.Event
    changed: asyncio.Event
    claimers_changed: asyncio.Event

    def lease_left(self) -> float: ...
    def live_claimers(self) -> set[str]: ...
    async def log_handover(self, direction: str, job_ids: list[str]) -> None: ...


class ChangeNotices(Protocol):
    """The catalogue as the reconcile loop needs it (cluster.catalogue.Catalogue)."""

    changed: asyncio.Event

    def request_full(self) -> None: ...


Later = Callable[..., Handle]  # later(delay, fn, *args)


def _call_later(delay: float, fn: Callable[..., None], *args: object) -> Handle:
    return asyncio.get_running_loop().call_later(delay, fn, *args)


class Claims(Protocol):
    """The claim path (store/executions.py): what the scheduler writes before it sends anything."""

    async def claim(self, node: str, claims: Sequence[Claim], live: Liveness | None = None) -> Claimed: ...
    async def claim_run_now(self, job_id: str, node: str, execution_id: str, at: datetime, *,
                            forbid_overlap: bool = False, claimer: str | None = None) -> int: ...
    async def existing(self, execution_ids: Sequence[str]) -> set[str]: ...
    async def orphans(self, gone: Sequence[str], fences: Mapping[str, int], node: str, claimer: str
                      ) -> dict[str, list[Redelivery]]: ...
    async def dequeue(self, execution_id: str, fence: int) -> bool: ...
    async def in_flight(self, job_id: str, live: Liveness) -> list[tuple[str, str, str | None]]: ...


class Cancels(Protocol):
    """Tells the other nodes to abort runs they are sending (concurrencyPolicy replace; the bus)."""

    async def cancel(self, execution_ids: list[str], reason: str) -> None: ...


class _NoCancels:
    async def cancel(self, execution_ids: list[str], reason: str) -> None:
        return None


log = structlog.get_logger("scheduler")

PLAN_BUDGET = 1000  # schedule instants enumerated per plan (~20 ms); a longer gap is planned in slices
PLAN_SLICE = 0.05  # seconds of planning per claim cycle before the rest waits for the next cycle
COOL_BEYOND = 120.0  # seconds to an owned job's next instant beyond which its definition is kept packed
QUEUE_POLL = 1.0  # seconds between looks at a run in flight on another node that buffered ticks wait for
RELOAD_WAIT = 1.0  # seconds a due job whose newer definition is being reloaded waits at most (its reload pushes it)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@lru_cache(maxsize=65536)
def first_tick(schedule: Schedule, anchor: datetime) -> datetime:
    """The first tick after an anchor; jobs created together share the answer."""
    return schedule.next_after(anchor)


def next_wake(tt: Timetable, anchor: datetime) -> datetime | None:
    """When the first instant after the anchor is due to leave (its send time): excluded and skipped instants
    count, their rows are written when they come. None: the timetable has no instant left."""
    try:
        if tt.plain and tt.start_at is None and tt.end_at is None:
            return first_tick(tt.schedules[0], anchor)
    except ScheduleExhausted:
        return None
    t = next(tt.iter_after(anchor), None)
    return None if t is None else tt.fire_at(t)


class Completions(Protocol):
    """Marks a job completed (it can never fire again) under its owner's fence, and tells the cluster
    (store/jobs.py and the bus, put together by the composition root)."""

    async def complete(self, job_id: str, fence: int, at: datetime, *, version: int) -> int | None:
        """The job's new version, or None when it was not this owner's to complete at that version."""


class _NoCompletions:
    async def complete(self, job_id: str, fence: int, at: datetime, *, version: int) -> int | None:
        log.warning("job completed, but no completion service is wired", job=job_id)
        return version


class Scheduler:
    """Owns the timers of the jobs this node owns and tells each tick's story. Built by the composition
    root (``web/app.py``) with its collaborators: the ownership state machine (whose hooks it is), the
    outcomes, the claim path, the firer, the membership and the catalogue."""

    def __init__(self, *, node_id: str, claims: Claims, ownership: Ownership, outcomes: Outcomes, firer: Sender,
                 membership: ClusterLease, catalogue: ChangeNotices, tasks: Tasks, claim_ahead: float,
                 clock: Callable[[], float] = time.time, later: Later | None = None,
                 plan_slice: float = PLAN_SLICE, completions: Completions | None = None,
                 cancels: Cancels | None = None) -> None:
        self.node_id = node_id
        self.claims = claims
        self.ownership = ownership
        self.outcomes = outcomes
        self.firer = firer
        self.membership = membership
        self.catalogue = catalogue
        self.tasks = tasks
        self.claim_ahead = claim_ahead
        self.clock = clock  # wall-clock seconds (instants are compared with it)
        self.later = later or _call_later  # runs a callback that many seconds from now; returns a cancellable handle
        self.plan_slice = plan_slice  # seconds of planning per claim cycle (of the process's own time)
        self.completions: Completions = completions or _NoCompletions()
        self.cancels: Cancels = cancels or _NoCancels()
        self.running: dict[str, tuple[asyncio.Task[None], Owned]] = {}  # execution id -> its send, this node's
        self.cancelled: dict[str, str] = {}  # execution id -> why it is being aborted (replace)
        self.wakes = Wakes()  # when the timer next looks at each owned job
        self._wake = asyncio.Event()
        self.sending: dict[str, str] = {}  # execution id -> job id, for every request this node has in flight
        self._claimers_seen: set[str] = set()  # live claimer ids seen: one that goes leaves orphans to settle
        self._handovers: dict[str, list[str]] = {}

    @property
    def owned(self) -> dict[str, Owned]:
        return self.ownership.owned

    @property
    def stopping(self) -> bool:
        return self.ownership.stopping

    # ------------------------------------------------------------------ ownership hooks

    def took(self, o: Owned, redeliver: tuple[Redelivery, ...] = (), buffered: tuple[Redelivery, ...] = ()) -> None:
        # Wake for the first tick after the anchor: at once when ticks were missed since
        # (the misfire policy handles them), else claim_ahead before it is due.
        nxt = next_wake(o.timetable, o.anchor)
        if o.extra:  # rows for a gap (missed while the owner was lost): written now, not at the next instant,
            self._push(o, self.clock())  # which may be months away (a job edited to a leap-day schedule)
        elif nxt is not None:
            self._push(o, max(self.clock(), nxt.timestamp()))
        self._take_on(o, redeliver, buffered)
        if nxt is None and not o.extra:
            self._complete(o, o.anchor)  # (once what was redelivered or buffered has gone)

    def _take_on(self, o: Owned, redeliver: Sequence[Redelivery], buffered: Sequence[Redelivery]) -> None:
        """A lost claimer's executions, now this owner's: at_least_once ones sent again, buffered ticks queued (ours
        to send once no run of the job is in flight), in instant order with any already waiting."""
        self._redeliver(o, redeliver)
        if buffered:
            queued = [Claim(id=b.id, job_id=o.id, scheduled_at=b.scheduled_at, fence=o.fence, kind=b.kind,
                            state=ExecutionState.BUFFERED) for b in buffered]
            o.queue = sorted([*o.queue, *queued], key=lambda c: c.scheduled_at)
            self._poll_queue(o)

    def _complete(self, o: Owned, at: datetime) -> None:
        """The job can never fire again (its last run allowed is claimed, its @at has fired, its endAt has
        passed): completed at ``at``, under this owner's fence. The catalogue then releases it, and a completed
        job has no owner: nothing of it may be left to one. So its buffered ticks are sent and its last runs end
        first (``_maybe_complete`` as each ends); a kill meanwhile leaves the job active, and its next owner
        settles the rows and completes it."""
        if o.completing:
            return
        if o.queue or o.pending or o.inflight or o.claiming or o.polling:
            o.complete_at = at
            return
        o.complete_at = None
        o.completing = True
        at = max(at, o.job.end_at) if o.job.end_at is not None and o.job.end_at <= _utc(self.clock()) else at
        self.tasks.spawn(self._write_completion(o, at))

    def _maybe_complete(self, o: Owned) -> None:
        """A run of a job waiting to complete ended, or its buffer emptied: complete it now if nothing is left."""
        if o.complete_at is not None and self.owned.get(o.id) is o and not o.releasing:
            self._complete(o, o.complete_at)

    async def _write_completion(self, o: Owned, at: datetime) -> None:
        version = o.version
        for k in range(5):
            try:
                await self.outcomes.recorder.flush()  # its last outcomes first: no owner will settle its rows
                if await self.completions.complete(o.id, o.fence, at, version=version) is None:
                    o.completing = False  # an edit or a hand-over came first: the next plan decides again
                    return
                log.info("job completed", job=o.id, at=rfc3339(at), runs=o.runs)
                return
            except StoreUnavailable as e:
                log.warning("could not record a job's completion; retrying", job=o.id, error=str(e))
                await asyncio.sleep(min(5.0, 0.5 * 2 ** k))
        o.completing = False  # the next takeover or reload finds it again

    def liveness(self) -> Liveness:
        mine = self.membership.claimer
        return Liveness(claimer=mine, others=frozenset(self.membership.live_claimers() - {mine}),
                        sending=frozenset(self.sending))

    async def record_running(self, o: Owned) -> None:
        """Before a release with runs in flight: their running rows, written now (see Recorder)."""
        await self.outcomes.recorder.write_now({e for e, j in self.sending.items() if j == o.id})

    def _redeliver(self, o: Owned, redeliver: Sequence[Redelivery]) -> None:
        for r in redeliver:  # at_least_once: executions a lost owner claimed, sent again now
            claim = Claim(id=r.id, job_id=o.id, scheduled_at=r.scheduled_at, fence=o.fence, kind=r.kind,
                          attempts=r.attempts)
            log.info("redelivering", job=o.id, execution=r.id, tick=rfc3339(r.scheduled_at), fence=o.fence)
            metrics.REDELIVERIES.inc()
            # a tick claimed ahead waits for its send time
            delay = max(0.0, o.timetable.fire_at(r.scheduled_at).timestamp() - self.clock())
            o.pend(claim, self.later(delay, self._send_due, o, claim))

    def reloaded(self, o: Owned) -> None:
        self._push(o, self.clock())

    def abandon_pending(self, o: Owned, reason: str) -> None:
        for handle, claim in list(o.pending.values()):
            handle.cancel()
            self._not_sent(o, claim, reason)
        o.pending = NO_PENDING

    def _not_sent(self, o: Owned, claim: Claim, reason: str) -> None:
        """A claimed execution this node will not send. at_most_once: abandoned, never re-sent.
        at_least_once: left open; the job's next owner (maybe this node again) re-sends it."""
        if o.job.delivery is Delivery.AT_LEAST_ONCE or claim.kind == ExecutionKind.BACKFILL:
            # (a backfill's instant is sent again by its backfill when it resumes, as the same execution)
            log.info("claimed execution left for the next owner", job=o.id, kind=str(claim.kind),
                     execution=claim.id, tick=rfc3339(claim.scheduled_at), reason=reason)
            return
        self.outcomes.mark(claim, ExecutionState.ABANDONED, error=reason)
        metrics.ABANDONED.inc()

    def handover(self, direction: str, job_ids: list[str]) -> None:
        """Gathered per loop iteration: one log entry for a pass's hand-overs in each direction."""
        if not self._handovers:
            self.tasks.spawn(self._log_handovers())
        self._handovers.setdefault(direction, []).extend(job_ids)

    async def _log_handovers(self) -> None:
        await asyncio.sleep(0)
        batches, self._handovers = self._handovers, {}
        for direction, job_ids in batches.items():
            log.info("hand-over", direction=direction, jobs=len(job_ids), epoch=self.membership.epoch)
            await self.membership.log_handover(direction, job_ids)

    # ------------------------------------------------------------------ timers

    def _push(self, o: Owned, wake: float) -> None:
        now = self.clock()
        if wake - now > FAR:  # (a wake kept for hours is shared with the jobs that have it; a near one, often the
            wake = shared_instant(wake)  # clock's own, passes soon and would only crowd the table)
        o.wake = wake
        if self.wakes.push(wake, o.id, now):
            self._wake.set()
        self._maybe_cool(o)

    async def _ripen(self, now: float) -> None:
        """The jobs of the buckets that came within the hour join the heap (wakes.py); an id whose record's wake
        is no longer in its bucket was pushed again since, and is skipped."""
        for b, ids in self.wakes.ripe(now):
            for k, job_id in enumerate(ids):
                o = self.owned.get(job_id)
                if o is not None and bucket_of(o.wake) == b:
                    self.wakes.near(o.wake, job_id)
                if k % 5_000 == 4_999:
                    await asyncio.sleep(0)  # a million yearly jobs on one instant: never starve the heartbeat
            self._wake.set()

    def _maybe_cool(self, o: Owned) -> None:
        """Pack the definition of a job with nothing under way whose next instant is more than COOL_BEYOND away
        (memory: a million jobs on five nodes; the timer unpacks it when it is due). A definition that cannot be
        packed stays as it is: memory, never a job left unscheduled."""
        if (o.wake - self.clock() > COOL_BEYOND and not (o.busy or o.queue)
                and not (o.releasing or o.reloading or o.completing)):
            try:
                o.cool()
            except Exception as e:  # (marshal refuses what a definition should never hold; say so, keep it)
                log.warning("could not pack a job's definition; kept unpacked", job=o.id, error=repr(e))

    def _schedule_next(self, o: Owned) -> None:
        if o.releasing or self.owned.get(o.id) is not o:
            return
        nxt = next_wake(o.timetable, o.anchor)
        if nxt is None:
            self._complete(o, o.anchor)
        else:
            self._push(o, nxt.timestamp())

    async def run_timer(self) -> None:
        while True:
            if self.wakes.ripening(now := self.clock()):
                await self._ripen(now)
            first = self.wakes.first()
            delay = first - self.claim_ahead - self.clock() if first is not None else 1.0
            if delay > 0:
                self._wake.clear()
                await wait_event(self._wake, min(delay, 1.0))
                continue
            await self.step(self.clock())
            await asyncio.sleep(0)  # never starve the heartbeat, whatever a cycle did

    async def step(self, now: float) -> None:
        """One turn of the timer: claim for the jobs due by ``now`` (claim_ahead before their instant)."""
        due: list[Owned] = []
        seen: set[str] = set()  # (a job pushed twice with the same wake is due once)
        while (first := self.wakes.first()) is not None and first - self.claim_ahead <= now and len(due) < TAKEOVER_JOBS:
            wake, job_id = self.wakes.pop()
            o = self.owned.get(job_id)
            if o is not None and o.wake == wake and not o.releasing and job_id not in seen:
                seen.add(job_id)
                due.append(o)
        if not due or self.stopping:
            return
        try:
            await self._claim_cycle(due, now)
        except asyncio.CancelledError:
            raise
        except Exception:
            raise_if_cancelling()
            log.exception("claim cycle failed")
            for o in due:
                if self.owned.get(o.id) is o:
                    self._push(o, self.clock() + self.claim_ahead + 1.0)

    # ------------------------------------------------------------------ claims

    def _plan(self, o: Owned, now: float) -> tuple[list[Claim], planning.Plan]:
        """The claims for one due job (planning.plan decides; this turns its plan into rows)."""
        job = o.job
        p = planning.plan(
            o.timetable, o.anchor, _utc(now), _utc(now + self.claim_ahead), policy=job.misfire_policy,
            grace=timedelta(seconds=job.misfire_grace_seconds), busy=o.busy,
            forbid=job.concurrency_policy is ConcurrencyPolicy.FORBID, budget=PLAN_BUDGET,
            skip_until=job.skip_until, runs_left=None if job.max_runs is None else max(0, job.max_runs - o.runs),
        )
        claims: list[Claim] = []
        for x in p.excluded:  # not due: a calendar names them, or a skip request covers them
            excluded = x.fate is Fate.EXCLUDED
            claims.append(Claim(id=new_execution_id(), job_id=job.id, scheduled_at=x.last, fence=o.fence,
                                kind=ExecutionKind.EXCLUSION if excluded else ExecutionKind.SKIP,
                                state=ExecutionState.EXCLUDED if excluded else ExecutionState.SKIPPED,
                                missed_count=x.count, missed_from=x.first, error=x.reason))
        for m in p.missed:
            claims.append(Claim(id=new_execution_id(), job_id=job.id, scheduled_at=m.last, fence=o.fence,
                                kind=ExecutionKind.MISFIRE, state=ExecutionState(m.fate), missed_count=m.count,
                                missed_from=m.first, error=m.reason))
            metrics.misfires(str(m.fate)).inc(m.count)
        for sk in p.skips:
            claims.append(Claim(id=new_execution_id(), job_id=job.id, scheduled_at=sk.scheduled_at, fence=o.fence,
                                kind=ExecutionKind.OVERLAP, state=ExecutionState.SKIPPED, missed_count=1,
                                missed_from=sk.scheduled_at, error=sk.reason))
            metrics.misfires(str(ExecutionKind.OVERLAP)).inc()
        forbid = job.concurrency_policy is ConcurrencyPolicy.FORBID
        buffer = job.concurrency_policy in BUFFERING
        counted = job.max_runs is not None
        # buffer_one / buffer_all: a run due while one is in flight here (or waits, or is claimed to go) waits
        # for it, in order (buffer_one: one at most, the others are skipped); the claim statement buffers it too
        # when the run in flight is on another node
        busy = buffer and bool(o.inflight or o.queue or o.pending)
        waiting = len(o.queue)
        for r in p.runs:
            state, kind, error = ExecutionState.CLAIMED, r.kind, None
            if busy:
                if job.concurrency_policy is ConcurrencyPolicy.BUFFER_ONE and waiting >= 1:
                    state, kind, error = ExecutionState.SKIPPED, ExecutionKind.OVERLAP, BUFFER_FULL_REASON
                else:
                    state = ExecutionState.BUFFERED
                    waiting += 1
            claims.append(Claim(id=new_execution_id(), job_id=job.id, scheduled_at=r.scheduled_at, fence=o.fence,
                                kind=kind, state=state, forbid=forbid, buffer=buffer and state == ExecutionState.CLAIMED,
                                counted=counted and state != ExecutionState.SKIPPED, error=error,
                                missed_count=1 if state == ExecutionState.SKIPPED else 0,
                                missed_from=r.scheduled_at if state == ExecutionState.SKIPPED else None))
            busy = busy or buffer
        return claims, p

    def _paused_or_unreadable(self, o: Owned) -> bool:
        """A paused job is not claimed. Nor is a definition this release cannot read (a packed one is made into a
        Job only now: a value a newer release wrote, during a rolling upgrade): that job is dropped, the others
        due with it are claimed."""
        try:
            return o.job.paused
        except Exception:
            log.exception("could not read a job's definition; not owned", job=o.id)
            self.ownership.drop(o, "its definition could not be read")
            return True

    async def _claim_cycle(self, due: list[Owned], now: float) -> None:
        if not self.membership.fresh():
            # Our lease is not surely valid: claim nothing; look again shortly (the
            # reconcile loop drops everything if the lease has really lapsed).
            for o in due:
                self._push(o, self.clock() + self.claim_ahead + 0.25)
            return
        due = [o for o in due if not self._paused_or_unreadable(o)]
        if any(o.unconfirmed for o in due) and not await self._settle_unconfirmed([o for o in due if o.unconfirmed]):
            for o in due:
                self._push(o, self.clock() + self.claim_ahead + 1.0)
            return
        # (after the claims maybe inserted are settled: a reload's gap starts after them)
        if behind := {o.id for o in due if self.ownership.behind(o)}:
            for o in due:  # (their reload is under way, and pushes them when it lands)
                if o.id in behind:
                    self._push(o, self.clock() + RELOAD_WAIT)
            due = [o for o in due if o.id not in behind]
        plans: list[tuple[Owned, list[Claim], planning.Plan, int]] = []
        t0 = time.monotonic()
        for k, o in enumerate(due):
            if time.monotonic() - t0 > self.plan_slice:
                # Planning is bounded per job, not per cycle: never hold the loop (and the heartbeat)
                # for long; the rest of the due jobs go in the next cycle, at once.
                for rest in due[k:]:
                    self._push(rest, self.clock())
                break
            if self.owned.get(o.id) is not o or o.releasing:
                continue
            try:
                self.ownership.current_timetable(o)
                claims, p = self._plan(o, self.clock())
                if o.extra:
                    claims, o.extra = [*o.extra, *claims], ()
            except Exception:
                log.exception("planning failed; retrying the job later", job=o.id, schedule=o.job.schedule)
                self._push(o, self.clock() + 5.0)
                continue
            if claims:
                o.claiming += 1  # before any await: a release waits for this claim
                plans.append((o, claims, p, o.generation))
            elif p.completed_at is not None:
                self._complete(o, p.completed_at)  # its runs were used up before this plan
            else:
                self._schedule_next(o)
            if k % 50 == 49:
                await asyncio.sleep(0)
        all_claims = [c for _, cs, _, _ in plans for c in cs]
        if not all_claims:
            return
        try:
            claimed = await self.claims.claim(self.node_id, all_claims, self.liveness())
        except BaseException as e:
            # Some chunks may have been inserted (or the reply lost): the claims are remembered and
            # looked up by id before anything else is planned for these jobs.
            if isinstance(e, StoreUnavailable):
                log.warning("claims failed: MariaDB unavailable; nothing sent, retrying", jobs=len(plans),
                            error=str(e))
            elif isinstance(e, Exception):
                log.exception("claim statement failed; retrying")
            for o, claims, _, _ in plans:
                o.claiming -= 1
                o.unconfirmed = [*o.unconfirmed, *claims]
                self._push(o, self.clock() + self.claim_ahead + 1.0)
                self.ownership.maybe_finish_release(o)  # a release that waited for this claim
            if not isinstance(e, Exception):
                raise
            return
        won, taken, overlapped, buffered = claimed.won, claimed.taken, claimed.overlapped, claimed.buffered
        for o, _, _, _ in plans:
            o.claiming -= 1  # (a release waiting for this claim finishes below, once its runs are pending)
        metrics.CLAIMS.labels("won").inc(len(won))
        missed = [c for c in all_claims if c.state == ExecutionState.MISSED and c.id in won]
        if missed:  # missed instants recorded in the claim itself: the ticks.missed alerts come from them
            self.outcomes.recorder.note([c.execution(state=ExecutionState.MISSED, node=self.node_id, error=c.error)
                                         for c in missed])
        for o, claims, p, gen in plans:
            if self.owned.get(o.id) is not o:
                # dropped while claiming: what was won will not be sent by us
                for c in claims:
                    if c.id in won and c.state == ExecutionState.CLAIMED:
                        self._not_sent(o, c, "ownership lost while claiming; not sent")
                continue
            lost = [c for c in claims if c.id not in won and c.id not in taken]
            if lost:
                metrics.CLAIMS.labels("lost").inc(len(lost))
                for c in claims:
                    if c.id in won and c.state == ExecutionState.CLAIMED:
                        self._not_sent(o, c, "claim batch partly refused (fence moved on); not sent")
                # (a pause that overtook the claim: the instants due before it are recorded by the job's ring
                # owner once nobody owns it, with its whole gap: ownership._close_gaps)
                self.ownership.drop(o, f"claim refused: fence {o.fence} is stale, or the job was paused or deleted")
                continue
            if o.generation == gen:  # (a reload meanwhile moved the anchor to the edit: keep that)
                o.anchor = max(o.anchor, p.anchor)  # every instant up to it has its row now
            for c in claims:
                if c.id in overlapped:  # forbid, and a run of the job is in flight on another node
                    self.outcomes.told(c, ExecutionState.SKIPPED, OVERLAP_REASON)
                    metrics.misfires(str(ExecutionKind.OVERLAP)).inc()
            o.runs += sum(1 for c in claims if c.counted and c.id in won and c.id not in overlapped)  # as the store
            self._accept(o, [replace(c, state=ExecutionState.BUFFERED) if c.id in buffered else c
                             for c in claims if c.id in won and c.id not in overlapped],
                         taken=[c for c in claims if c.id in taken])
            if o.id in claimed.redeliver or o.id in claimed.requeue:  # a deposed owner's late claim, settled
                self._take_on(o, claimed.redeliver.get(o.id, ()), claimed.requeue.get(o.id, ()))
            if p.completed_at is not None and o.generation == gen and o.anchor >= p.completed_at \
                    and (o.job.max_runs is None or o.runs >= o.job.max_runs):
                self._complete(o, p.completed_at)  # the last run max_runs allows is claimed
            else:
                self._schedule_next(o)
            self.ownership.maybe_finish_release(o)

    def _accept(self, o: Owned, won: list[Claim], *, taken: Sequence[Claim] = ()) -> None:
        """Claims that are ours: runs wait for their instant, misfire and overlap rows are told."""
        if taken:
            # These ticks already have an execution (claimed before an edit moved the anchor back,
            # or by a run that reached the same instant): they are accounted for.
            metrics.CLAIMS.labels("taken").inc(len(taken))
        for c in won:
            o.claims_since_retention += 1
            if c.state == ExecutionState.CLAIMED:
                delay = max(0.0, o.timetable.fire_at(c.scheduled_at).timestamp() - self.clock())
                o.pend(c, self.later(delay, self._send_due, o, c))
            elif c.state == ExecutionState.BUFFERED:
                o.queue = [*o.queue, c]
                self.outcomes.told(c, c.state, c.error)
                if o.job.concurrency_policy is ConcurrencyPolicy.BUFFER_ONE and len(o.queue) > 1:
                    # (buffered by the claim statement while one already waited: the buffer holds one)
                    late, o.queue = o.queue[-1], o.queue[:-1]
                    self.outcomes.mark(late, ExecutionState.SKIPPED, error=BUFFER_FULL_REASON)
                self._poll_queue(o)
            else:
                self.outcomes.told(c, c.state, c.error)

    # ------------------------------------------------------------------ buffered ticks

    def _poll_queue(self, o: Owned) -> None:
        """Buffered ticks go as soon as no run of the job is in flight: at the end of a run of this node's, or,
        when the run is another node's (a hand-over, a run-now there), once a look every second finds none."""
        if not o.queue or o.inflight or o.pending or o.polling or o.releasing:
            return
        o.polling = True
        self.tasks.spawn(self._wait_and_dequeue(o))

    async def _wait_and_dequeue(self, o: Owned) -> None:
        try:
            while o.queue and not o.inflight and not o.pending and not o.releasing and self.owned.get(o.id) is o:
                try:
                    busy = await self.claims.in_flight(o.id, self.liveness())
                except StoreUnavailable:
                    busy = [("?", "", None)]
                if not busy:
                    await self._dequeue(o)
                    return
                await asyncio.sleep(QUEUE_POLL)
        finally:
            o.polling = False
            self._maybe_complete(o)  # (the buffered ticks left were all too late: nothing more to send)

    async def _dequeue(self, o: Owned) -> None:
        """The first buffered tick becomes a claim and goes now (not before its own send time); one that waited
        past the misfire grace is recorded missed instead, and the next one is tried."""
        grace = timedelta(seconds=o.job.misfire_grace_seconds)
        while o.queue and self.owned.get(o.id) is o and not o.releasing:
            c = o.queue[0]
            o.claiming += 1  # a release waits for this claim, as for any other
            try:
                ok = await self.claims.dequeue(c.id, o.fence)
            finally:
                o.claiming -= 1
            if not ok:
                o.queue = ()  # a takeover made them another owner's meanwhile
                break
            o.queue = o.queue[1:]
            claim = replace(c, state=ExecutionState.CLAIMED)
            if self.owned.get(o.id) is not o:  # dropped meanwhile (a lapse): not ours to send
                self._not_sent(o, claim, "ownership lost while a buffered tick was taken; not sent")
                return
            if _utc(self.clock()) - o.timetable.fire_at(c.scheduled_at) > grace:
                self.outcomes.mark(claim, ExecutionState.MISSED, error=BUFFER_LATE_REASON)
                continue
            delay = max(0.0, o.timetable.fire_at(c.scheduled_at).timestamp() - self.clock())
            o.pend(claim, self.later(delay, self._send_due, o, claim))
            break
        self.ownership.maybe_finish_release(o)  # (one that began while the tick was being taken)

    async def _settle_unconfirmed(self, jobs: list[Owned]) -> bool:
        """Claims whose statement failed may have been inserted: look them up by id. Rows that exist
        are ours (our fence): runs already late are not sent (abandoned, or left for redelivery with
        at_least_once) unless still on time; the rest were never inserted and are planned again."""
        ids = [c.id for o in jobs for c in o.unconfirmed]
        try:
            exist = await self.claims.existing(ids)
        except StoreUnavailable:
            return False
        late_line = self.clock() - 1.0
        for o in jobs:
            claims, o.unconfirmed = o.unconfirmed, ()
            if self.owned.get(o.id) is not o:
                continue
            mine = [c for c in claims if c.id in exist]
            # rows recorded before an edit's anchor are not planned again: queue the ones not inserted
            o.extra = [*o.extra, *(c for c in claims if c.id not in exist and c.kind == ExecutionKind.MISFIRE
                                   and c.scheduled_at <= o.anchor)]
            on_time = [c for c in mine if c.state != ExecutionState.CLAIMED or c.scheduled_at.timestamp() >= late_line]
            for c in mine:
                if c not in on_time:
                    self._not_sent(o, c, "claimed while MariaDB was failing; too late when confirmed, not sent")
            o.runs += sum(1 for c in mine if c.counted)  # (their statement counted them as it inserted them)
            self._accept(o, on_time)
            if mine:
                o.anchor = max(o.anchor, max(c.scheduled_at for c in mine))
        return True

    # ------------------------------------------------------------------ firing

    def _send_due(self, o: Owned, claim: Claim) -> None:
        o.unpend(claim.id)
        if not self.membership.fresh():
            self._not_sent(o, claim, "heartbeat lease lapsed before send; not sent")
            self._maybe_complete(o)
            self.ownership.maybe_finish_release(o)
            return
        if o.job.concurrency_policy is ConcurrencyPolicy.REPLACE:
            self._replace(o, claim)
        self.send_now(o, claim)

    def send_now(self, o: Owned, claim: Claim) -> asyncio.Task[None]:
        """Send a claim of this node's now (a due tick, a buffered one, a backfill's instant)."""
        o.inflight += 1
        task = self.tasks.spawn(self._send(o, claim))
        self.running[claim.id] = (task, o)
        return task

    def _replace(self, o: Owned, claim: Claim) -> None:
        """replace: the job's runs in flight are aborted (recorded cancelled) before this tick goes; a run on
        another node is told to stop too."""
        reason = f"{REPLACED_REASON} at {rfc3339(claim.scheduled_at)}"
        for eid, (_, owner) in list(self.running.items()):
            if owner.id == o.id:
                self.cancel_local([eid], reason)
        self.tasks.spawn(self._cancel_elsewhere(o, reason))

    async def _cancel_elsewhere(self, o: Owned, reason: str) -> None:
        try:
            ids = [eid for eid, _, claimer in await self.claims.in_flight(o.id, self.liveness())
                   if claimer != self.membership.claimer and eid not in self.running]
            if ids:
                await self.cancels.cancel(ids, reason)
        except Exception as e:  # the run in flight elsewhere then ends as it would have
            log.warning("could not ask another node to cancel a replaced run", job=o.id, error=str(e))

    def cancel_local(self, execution_ids: Sequence[str], reason: str) -> int:
        """Abort these runs if this node is sending them (a replace tick, here or on another node)."""
        n = 0
        for eid in execution_ids:
            entry = self.running.get(eid)
            if entry is not None and not entry[0].done():
                self.cancelled[eid] = reason
                if eid in self.sending:  # (a task not begun yet sees the reason as it begins: its cleanup runs)
                    entry[0].cancel()
                n += 1
        return n

    async def _send(self, o: Owned, claim: Claim) -> None:
        job, secrets = o.job, o.secrets
        started = datetime.now(UTC)
        # The lease its row was claimed under (the claim's claimer, else this send's start: the claim cycle's claims
        # are dropped with their job at a lapse): a lapse gives the node a new claimer id, and once the scheduler has
        # dropped everything the lease is fresh again, under that id. A send or retry after that would be a deposed
        # owner's (found by the nemesis: a backfill's second attempt sent 6 ms after its node's lapse was handled).
        lease, incarnation = self.membership, claim.claimer or self.membership.claimer
        self.sending[claim.id] = job.id
        result: Result | None = None
        why = self.cancelled.pop(claim.id, None)  # cancelled before its task began (cancel_local)
        if why is None:
            self.outcomes.mark(claim, ExecutionState.RUNNING, attempts=claim.attempts + 1, started_at=started)
        try:
            if why is not None:
                raise asyncio.CancelledError
            due: datetime | None
            if claim.instant is not None:  # a backfill: its instant in the headers, sent now (no lateness)
                when, due = claim.instant, started
            else:
                when, due = claim.scheduled_at, o.timetable.fire_at(claim.scheduled_at) if job.jitter_seconds else None
            result = await self.firer.fire(job, execution_id=claim.id, scheduled_at=when, fence=o.fence,
                                           may_send=lambda: lease.fresh() and lease.claimer == incarnation,
                                           lease_left=lambda: lease.lease_left() if lease.claimer == incarnation
                                           else 0.0, attempts_before=claim.attempts, due_at=due)
        except asyncio.CancelledError:
            why = why or self.cancelled.pop(claim.id, None)
            if why is None:
                raise  # the node is stopping
            self.outcomes.mark(claim, ExecutionState.CANCELLED, error=why, attempts=claim.attempts + 1,
                               started_at=started)
        except Exception as e:
            log.exception("firing failed", job=job.id)
            self.outcomes.mark(claim, ExecutionState.FAILED, error=f"internal error: {type(e).__name__}",
                               started_at=started)
        finally:
            o.inflight -= 1
            self.sending.pop(claim.id, None)
            self.running.pop(claim.id, None)
        if result is not None and result.state == ExecutionState.ABANDONED:
            self._not_sent(o, claim, result.error or "not sent")
        elif result is not None:
            self.outcomes.result(claim, result, secrets)
        if o.queue and not o.inflight:
            self._poll_queue(o)  # buffered ticks: the run they waited for has ended
        self._maybe_complete(o)
        self.ownership.maybe_finish_release(o)
        self._maybe_cool(o)

    async def run_now(self, job: Job) -> str:
        """Run a job now, from whichever node got the request: a claim for this instant
        under the job's current fence, then an immediate send."""
        if self.stopping or not self.membership.fresh():
            raise LeaseNotFresh("this node is stopping or its heartbeat lease is not fresh; ask another node")
        now = datetime.now(UTC)
        eid = new_execution_id()
        claimer = self.membership.claimer
        fence = await self.claims.claim_run_now(job.id, self.node_id, eid, now, claimer=claimer,
                                                forbid_overlap=job.concurrency_policy is ConcurrencyPolicy.FORBID)
        o = Owned.of(job, timetable=job.timetable(), fence=fence, anchor=now)
        claim = Claim(id=eid, job_id=job.id, scheduled_at=now, fence=fence, kind=ExecutionKind.MANUAL, claimer=claimer)
        self.send_now(o, claim)  # (a replace tick of the owner, here, aborts it as any run of the job)
        return claim.id

    # ------------------------------------------------------------------ loops

    async def run_reconcile(self) -> None:
        failures = 0
        while True:
            failed = store_away = False
            try:
                if self.membership.lapsed.is_set():
                    self.wakes.clear()
                    self.ownership.drop_all("own heartbeat lapsed")
                    self.membership.lapsed.clear()
                    self.catalogue.request_full()
                await self.ownership.reconcile()
                await self.settle_orphans()
                metrics.OWNED.set(len(self.owned))
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as e:
                raise_if_cancelling()
                failed = store_away = True
                log.warning("reconcile: MariaDB unavailable", error=str(e))
            except Exception as e:
                raise_if_cancelling()
                failed = True
                log.warning("reconcile failed", error=f"{type(e).__name__}: {e}")
            # A pass that failed, or that left a stray lock it could not release (Redis away), is
            # retried with a growing pause (0.05 s up to 2 s): never a hot loop of failing calls. MariaDB
            # away: up to 0.5 s, so edits that could not be read during the outage reach their owner within
            # half a second of its end (the nemesis saw a 2 s pause after a 2.5 s cut send an edited job's
            # tick under its old schedule).
            failures = failures + 1 if (failed or self.ownership.stray_locks()) else 0
            if failures:
                await asyncio.sleep(min(0.5 if store_away else 2.0, 0.05 * 2 ** min(failures, 6)))
            waits = [self.membership.changed.wait(), self.catalogue.changed.wait(), self.ownership.wake.wait(),
                     self.membership.lapsed.wait(), self.membership.claimers_changed.wait()]
            timeout = 0.2 if self.ownership.needs_pass else 2.0
            tasks = [asyncio.ensure_future(w) for w in waits]
            try:
                await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
            self.membership.changed.clear()
            self.catalogue.changed.clear()
            self.ownership.wake.clear()
            self.membership.claimers_changed.clear()

    async def settle_orphans(self) -> None:
        """A claimer seen live has gone (its node died, lapsed or restarted) after a hand-over or a run-now
        left runs in flight there: their open rows of jobs this node owns are settled as a takeover would
        (at_least_once re-sent by this owner, the rest abandoned). A claimer that comes and goes between
        two looks is settled by the job's next takeover instead."""
        if not self.membership.fresh():
            return
        live = self.membership.live_claimers()
        gone = sorted(self._claimers_seen - live)
        if gone and self.owned:
            fences = {j: o.fence for j, o in self.owned.items()}
            found = await self.claims.orphans(gone, fences, self.node_id, self.membership.claimer)
            for job_id, redeliver in found.items():
                o = self.owned.get(job_id)
                if o is not None and not o.releasing:
                    self._redeliver(o, redeliver)
            log.info("settled the runs lost claimers left open", claimers=gone,
                     redelivered=sum(map(len, found.values())))
        self._claimers_seen = set(live)  # (not reached when the store failed: retried at the next pass)

    async def shutdown(self, grace: float) -> None:
        """Stop claiming; send what was claimed (at most claim_ahead away); release every lock, so
        peers take over at once. Runs in flight go on after the node has left (``drain``): one slow
        target must not hold every job's hand-over. (at_least_once jobs wait for their runs here,
        within ``grace``: released first, a run in flight would be redelivered.)"""
        self.ownership.stopping = True
        for o in self.owned.values():
            o.releasing = True

        handover_ok = self.membership.handover_ok

        def waiting(o: Owned) -> bool:
            # with a release-2 node in the ring, at_least_once runs in flight would be re-sent by it
            return bool(o.pending or o.claiming or (o.inflight and o.job.delivery is Delivery.AT_LEAST_ONCE
                                                    and not handover_ok))

        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(waiting(o) for o in self.owned.values()):
            await asyncio.sleep(0.05)
        for o in list(self.owned.values()):
            self.abandon_pending(o, "node shut down before send")
        n = len(self.ownership.held)
        try:
            await self.outcomes.recorder.flush(everything=True)  # before the takeover reads the rows
        except Exception as e:
            log.warning("outcome flush before release failed", error=str(e))
        for _ in range(3):
            try:
                await self.ownership.release_all()
            except Exception as e:
                log.warning("lock release on shutdown failed", error=str(e))
            if not self.ownership.held:
                break
        log.info("scheduler stopped claiming and released its locks", released=n - len(self.ownership.held),
                 in_flight=len(self.sending))

    async def drain(self, grace: float) -> None:
        """After leaving: let runs in flight finish (within ``grace``) and write their outcomes."""
        await self.tasks.wait(grace)
        try:
            await self.outcomes.recorder.flush(everything=True)
            await self.outcomes.recorder.drain_health()  # the streaks, alerts and auto-pauses they make
        except Exception as e:
            log.warning("final outcome flush failed", error=str(e))
