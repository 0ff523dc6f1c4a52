"""The story of a tick: own → due → claim → fire → record → publish.

This is the one module that knows the whole sequence. The others each do one
step: ``ring`` says who should own a job, ``fencing`` takes its lock, ``store``
bumps its fence and claims its ticks, ``firing`` sends the request, and the
``outcomes`` records what happened and tells the cluster.

Ownership of a job:
  desired (ring says me, job active) → lock acquired (Redis) → fence bumped
  (MariaDB) → ticks claimed under that fence → on ring change: finish what was
  claimed, compare-and-delete the lock.

A tick:
  ``claim_ahead`` seconds before it is due, a batch of due ticks is claimed in
  one statement; each won claim is sent at its instant, only while this node's
  heartbeat lease is fresh. A claim lost to a newer fence drops the job.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol

import structlog

from .. import metrics
from ..aio import Tasks, raise_if_cancelling, wait_event
from ..batching import TAKEOVER_JOBS
from ..model.errors import LeaseNotFresh, StoreUnavailable
from ..model.executions import (
    OVERLAP_REASON,
    Claim,
    Claimed,
    ExecutionKind,
    ExecutionState,
    Liveness,
    Redelivery,
    new_execution_id,
)
from ..model.jobs import ConcurrencyPolicy, Delivery, Job
from ..model.schedule import Schedule
from ..model.times import rfc3339
from . import planning
from .firing import Result
from .outcomes import Outcomes
from .ownership import Handle, Lease, Owned, Ownership


class Sender(Protocol):
    """Sends one execution's request, attempts and retries included (firing.Firer)."""

    async def fire(self, job: Job, *, execution_id: str, scheduled_at: datetime, fence: int,
                   may_send: Callable[[], bool], lease_left: Callable[[], float], attempts_before: int = 0) -> Result: ...


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
    async def orphans(self, gone: Sequence[str], job_ids: Sequence[str], node: str, claimer: str
                      ) -> dict[str, list[Redelivery]]: ...


log = structlog.get_logger("scheduler")

PLAN_BUDGET = 1000  # schedule instants enumerated per plan (~20 ms); a longer gap is planned in slices
PLAN_SLICE = 0.05  # seconds of planning per claim cycle before the rest waits for the next cycle


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@lru_cache(maxsize=65536)
def first_tick(schedule: Schedule, anchor: datetime) -> datetime:
    """The first tick after an anchor; jobs created together share the answer."""
    return schedule.next_after(anchor)


class Scheduler:
    """Owns the timers of the jobs this node owns and tells each tick's story. Built by the composition
    root (``web/app.py``) with its collaborators: the ownership state machine (whose hooks it is), the
    outcomes, the claim path, the firer, the membership and the catalogue."""

    def __init__(self, *, node_id: str, claims: Claims, ownership: Ownership, outcomes: Outcomes, firer: Sender,
                 membership: ClusterLease, catalogue: ChangeNotices, tasks: Tasks, claim_ahead: float,
                 clock: Callable[[], float] = time.time, later: Later | None = None,
                 plan_slice: float = PLAN_SLICE) -> None:
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
        self.heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
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

    def took(self, o: Owned, redeliver: tuple[Redelivery, ...] = ()) -> None:
        # Wake for the first tick after the anchor: at once when ticks were missed since
        # (the misfire policy handles them), else claim_ahead before it is due.
        self._push(o, max(self.clock(), first_tick(o.schedule, o.anchor).timestamp()))
        self._redeliver(o, redeliver)

    def liveness(self) -> Liveness:
        mine = self.membership.claimer
        return Liveness(claimer=mine, others=frozenset(self.membership.live_claimers() - {mine}),
                        sending=frozenset(self.sending))

    async def record_running(self, o: Owned) -> None:
        """Before a release with runs in flight: their running rows, written now (see Recorder)."""
        await self.outcomes.recorder.write_now({e for e, j in self.sending.items() if j == o.job.id})

    def _redeliver(self, o: Owned, redeliver: Sequence[Redelivery]) -> None:
        for r in redeliver:  # at_least_once: executions a lost owner claimed, sent again now
            claim = Claim(id=r.id, job_id=o.job.id, scheduled_at=r.scheduled_at, fence=o.fence, kind=r.kind,
                          attempts=r.attempts)
            log.info("redelivering", job=o.job.id, execution=r.id, tick=rfc3339(r.scheduled_at), fence=o.fence)
            metrics.REDELIVERIES.inc()
            delay = max(0.0, r.scheduled_at.timestamp() - self.clock())  # a tick claimed ahead waits for its instant
            o.pending[claim.id] = (self.later(delay, self._send_due, o, claim), claim)

    def reloaded(self, o: Owned) -> None:
        self._push(o, self.clock())

    def abandon_pending(self, o: Owned, reason: str) -> None:
        for handle, claim in list(o.pending.values()):
            handle.cancel()
            self._not_sent(o, claim, reason)
        o.pending.clear()

    def _not_sent(self, o: Owned, claim: Claim, reason: str) -> None:
        """A claimed execution this node will not send. at_most_once: abandoned, never re-sent.
        at_least_once: left open; the job's next owner (maybe this node again) re-sends it."""
        if o.job.delivery is Delivery.AT_LEAST_ONCE:
            log.info("claimed execution left for the next owner (at_least_once)", job=o.job.id,
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
        o.wake = wake
        heapq.heappush(self.heap, (wake, next(self._seq), o.job.id))
        if self.heap[0][2] == o.job.id:
            self._wake.set()

    def _schedule_next(self, o: Owned) -> None:
        if o.releasing or self.owned.get(o.job.id) is not o:
            return
        self._push(o, first_tick(o.schedule, o.anchor).timestamp())

    async def run_timer(self) -> None:
        while True:
            delay = self.heap[0][0] - self.claim_ahead - self.clock() if self.heap else 1.0
            if delay > 0:
                self._wake.clear()
                await wait_event(self._wake, min(delay, 1.0))
                continue
            await self.step(self.clock())
            await asyncio.sleep(0)  # never starve the heartbeat, whatever a cycle did

    async def step(self, now: float) -> None:
        """One turn of the timer: claim for the jobs due by ``now`` (claim_ahead before their instant)."""
        due: list[Owned] = []
        while self.heap and self.heap[0][0] - self.claim_ahead <= now and len(due) < TAKEOVER_JOBS:
            wake, _, job_id = heapq.heappop(self.heap)
            o = self.owned.get(job_id)
            if o is not None and o.wake == wake and not o.releasing:
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
                if self.owned.get(o.job.id) is o:
                    self._push(o, self.clock() + self.claim_ahead + 1.0)

    # ------------------------------------------------------------------ claims

    def _plan(self, o: Owned, now: float) -> tuple[list[Claim], planning.Plan]:
        """The claims for one due job (planning.plan decides; this turns its plan into rows)."""
        job = o.job
        p = planning.plan(
            o.schedule, o.anchor, _utc(now), _utc(now + self.claim_ahead), policy=job.misfire_policy,
            grace=timedelta(seconds=job.misfire_grace_seconds), busy=o.busy,
            forbid=job.concurrency_policy is ConcurrencyPolicy.FORBID, budget=PLAN_BUDGET,
        )
        claims: list[Claim] = []
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
        for r in p.runs:
            claims.append(Claim(id=new_execution_id(), job_id=job.id, scheduled_at=r.scheduled_at, fence=o.fence,
                                kind=r.kind, forbid=forbid))
        return claims, p

    async def _claim_cycle(self, due: list[Owned], now: float) -> None:
        if not self.membership.fresh():
            # Our lease is not surely valid: claim nothing; look again shortly (the
            # reconcile loop drops everything if the lease has really lapsed).
            for o in due:
                self._push(o, self.clock() + self.claim_ahead + 0.25)
            return
        due = [o for o in due if not o.job.paused]
        if any(o.unconfirmed for o in due) and not await self._settle_unconfirmed([o for o in due if o.unconfirmed]):
            for o in due:
                self._push(o, self.clock() + self.claim_ahead + 1.0)
            return
        plans: list[tuple[Owned, list[Claim], planning.Plan, int]] = []
        t0 = time.monotonic()
        for k, o in enumerate(due):
            if time.monotonic() - t0 > self.plan_slice:
                # Planning is bounded per job, not per cycle: never hold the loop (and the heartbeat)
                # for long; the rest of the due jobs go in the next cycle, at once.
                for rest in due[k:]:
                    self._push(rest, self.clock())
                break
            if self.owned.get(o.job.id) is not o or o.releasing:
                continue
            try:
                claims, p = self._plan(o, self.clock())
                if o.extra:
                    claims, o.extra = o.extra + claims, []
            except Exception:
                log.exception("planning failed; retrying the job later", job=o.job.id, schedule=o.job.schedule)
                self._push(o, self.clock() + 5.0)
                continue
            if claims:
                o.claiming += 1  # before any await: a release waits for this claim
                plans.append((o, claims, p, o.generation))
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
                o.unconfirmed.extend(claims)
                self._push(o, self.clock() + self.claim_ahead + 1.0)
                self.ownership.maybe_finish_release(o)  # a release that waited for this claim
            if not isinstance(e, Exception):
                raise
            return
        won, taken, overlapped = claimed.won, claimed.taken, claimed.overlapped
        for o, _, _, _ in plans:
            o.claiming -= 1  # (a release waiting for this claim finishes below, once its runs are pending)
        metrics.CLAIMS.labels("won").inc(len(won))
        for o, claims, p, gen in plans:
            if self.owned.get(o.job.id) is not o:
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
                self.ownership.drop(o, f"claim refused: fence {o.fence} is stale, or the job was paused or deleted")
                continue
            if o.generation == gen:  # (a reload meanwhile moved the anchor to the edit: keep that)
                o.anchor = max(o.anchor, p.anchor)  # every instant up to it has its row now
            for c in claims:
                if c.id in overlapped:  # forbid, and a run of the job is in flight on another node
                    self.outcomes.told(c, ExecutionState.SKIPPED, OVERLAP_REASON)
                    metrics.misfires(str(ExecutionKind.OVERLAP)).inc()
            self._accept(o, [c for c in claims if c.id in won and c.id not in overlapped],
                         taken=[c for c in claims if c.id in taken])
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
                delay = max(0.0, c.scheduled_at.timestamp() - self.clock())
                o.pending[c.id] = (self.later(delay, self._send_due, o, c), c)
            else:
                self.outcomes.told(c, c.state, c.error)

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
            claims, o.unconfirmed = o.unconfirmed, []
            if self.owned.get(o.job.id) is not o:
                continue
            mine = [c for c in claims if c.id in exist]
            # rows recorded before an edit's anchor are not planned again: queue the ones not inserted
            o.extra += [c for c in claims if c.id not in exist and c.kind == ExecutionKind.MISFIRE
                        and c.scheduled_at <= o.anchor]
            on_time = [c for c in mine if c.state != ExecutionState.CLAIMED or c.scheduled_at.timestamp() >= late_line]
            for c in mine:
                if c not in on_time:
                    self._not_sent(o, c, "claimed while MariaDB was failing; too late when confirmed, not sent")
            self._accept(o, on_time)
            if mine:
                o.anchor = max(o.anchor, max(c.scheduled_at for c in mine))
        return True

    # ------------------------------------------------------------------ firing

    def _send_due(self, o: Owned, claim: Claim) -> None:
        o.pending.pop(claim.id, None)
        if not self.membership.fresh():
            self._not_sent(o, claim, "heartbeat lease lapsed before send; not sent")
            self.ownership.maybe_finish_release(o)
            return
        o.inflight += 1
        self.tasks.spawn(self._send(o, claim))

    async def _send(self, o: Owned, claim: Claim) -> None:
        job = o.job
        started = datetime.now(UTC)
        self.sending[claim.id] = job.id
        self.outcomes.mark(claim, ExecutionState.RUNNING, attempts=claim.attempts + 1, started_at=started)
        result: Result | None = None
        try:
            result = await self.firer.fire(job, execution_id=claim.id, scheduled_at=claim.scheduled_at,
                                           fence=o.fence, may_send=self.membership.fresh,
                                           lease_left=self.membership.lease_left, attempts_before=claim.attempts)
        except Exception as e:
            log.exception("firing failed", job=job.id)
            self.outcomes.mark(claim, ExecutionState.FAILED, error=f"internal error: {type(e).__name__}",
                               started_at=started)
        finally:
            o.inflight -= 1
            self.sending.pop(claim.id, None)
        if result is not None and result.state == ExecutionState.ABANDONED:
            self._not_sent(o, claim, result.error or "not sent")
        elif result is not None:
            self.outcomes.result(claim, result, o.secrets)
        self.ownership.maybe_finish_release(o)

    async def run_now(self, job: Job) -> str:
        """Run a job now, from whichever node got the request: a claim for this instant
        under the job's current fence, then an immediate send."""
        if self.stopping or not self.membership.fresh():
            raise LeaseNotFresh("this node is stopping or its heartbeat lease is not fresh; ask another node")
        now = datetime.now(UTC)
        eid = new_execution_id()
        fence = await self.claims.claim_run_now(job.id, self.node_id, eid, now, claimer=self.membership.claimer,
                                                forbid_overlap=job.concurrency_policy is ConcurrencyPolicy.FORBID)
        o = Owned(job=job, schedule=job.parsed_schedule, fence=fence, anchor=now)
        claim = Claim(id=eid, job_id=job.id, scheduled_at=now, fence=fence, kind=ExecutionKind.MANUAL)
        o.inflight += 1
        self.tasks.spawn(self._send(o, claim))
        return claim.id

    # ------------------------------------------------------------------ loops

    async def run_reconcile(self) -> None:
        failures = 0
        while True:
            failed = False
            try:
                if self.membership.lapsed.is_set():
                    self.heap.clear()
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
                failed = True
                log.warning("reconcile: MariaDB unavailable", error=str(e))
            except Exception as e:
                raise_if_cancelling()
                failed = True
                log.warning("reconcile failed", error=f"{type(e).__name__}: {e}")
            # A pass that failed, or that left a stray lock it could not release (Redis away), is
            # retried with a growing pause (0.05 s up to 2 s): never a hot loop of failing calls.
            failures = failures + 1 if (failed or self.ownership.stray_locks()) else 0
            if failures:
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
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
            found = await self.claims.orphans(gone, list(self.owned), self.node_id, self.membership.claimer)
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
        except Exception as e:
            log.warning("final outcome flush failed", error=str(e))
