"""The story of a tick: own → due → claim → fire → record → publish.

This is the one module that knows the whole sequence. The others each do one
step: ``ring`` says who should own a job, ``fencing`` takes its lock, ``store``
bumps its fence and claims its ticks, ``firing`` sends the request, and the
recorder/publisher below write the outcome and tell the cluster.

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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import structlog

from node import metrics
from node.aio import wait_event
from node.catalogue import Catalogue
from node.fencing import Locks
from node.firing import Firer, Result
from node.jobs import ConcurrencyPolicy, Job, MisfirePolicy, rfc3339
from node.keys import EVENTS_STREAM_LENGTH, HANDOVER_LOG_LENGTH, Keys
from node.membership import Membership
from node.messages import ExecutionBatch, MembershipEvent, execution_event
from node.schedule import Schedule
from node.store import Claim, Outcome, Store, StoreUnavailable, Takeover, new_execution_id

log = structlog.get_logger("scheduler")

# A tick first considered more than this late is a misfire (handled by policy).
LATE_AFTER = timedelta(seconds=1)
MISSED_COUNT_CAP = 10_000
CATCHUP_CAP = 100  # fire_all: at most this many catch-up runs per job at once


CHUNK = 2000  # jobs per step of a big ownership change, with a yield to the loop between steps


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@lru_cache(maxsize=65536)
def first_tick(schedule: Schedule, anchor: datetime) -> datetime:
    """The first tick after an anchor; jobs created together share the answer."""
    return schedule.next_after(anchor)


@dataclass(slots=True, eq=False)
class Owned:
    job: Job
    schedule: Schedule
    fence: int
    anchor: datetime  # ticks strictly after this are due
    wake: float = 0.0
    inflight: int = 0
    claiming: int = 0  # claim statements under way: a release waits for them
    pending: dict[str, tuple[asyncio.TimerHandle, Claim]] = field(default_factory=dict)
    releasing: bool = False
    overlap_id: str | None = None
    claims_since_retention: int = 0


class Recorder:
    """Writes execution state changes in batches; keeps them while MariaDB is away.

    A "running" row is held back for ``running_after`` seconds and written only if the run
    is still going then: most requests finish sooner, and their one outcome row replaces it.
    (The claimed row is already open, so a node that dies meanwhile leaves the same
    evidence: the takeover marks it abandoned either way.)
    """

    def __init__(self, store: Store, *, max_buffer: int = 200_000, running_after: float = 1.0) -> None:
        self.store = store
        self.buffer: dict[str, Outcome] = {}
        self.running: dict[str, tuple[float, Outcome]] = {}  # held back, in the order they started
        self.running_after = running_after
        self._timer: asyncio.TimerHandle | None = None
        self.max_buffer = max_buffer
        self.wake = asyncio.Event()

    def put(self, outcome: Outcome) -> None:
        if outcome.state == "running":
            self.running[outcome.id] = (time.monotonic() + self.running_after, outcome)
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.running_after, self._promote)
            return
        self.running.pop(outcome.id, None)
        self._buffer(outcome)

    def _promote(self, everything: bool = False) -> None:
        """Move held-back running rows that are due (or all of them) into the write buffer."""
        self._timer = None
        now = time.monotonic()
        while self.running:
            oid, (due, outcome) = next(iter(self.running.items()))
            if due > now and not everything:
                self._timer = asyncio.get_running_loop().call_later(due - now, self._promote)
                break
            del self.running[oid]
            if oid not in self.buffer:
                self._buffer(outcome)

    def _buffer(self, outcome: Outcome) -> None:
        if len(self.buffer) >= self.max_buffer and outcome.id not in self.buffer:
            log.error("outcome buffer full; dropping an outcome (row stays open, later marked abandoned)",
                      execution=outcome.id)
            return
        self.buffer[outcome.id] = outcome  # a later state replaces an earlier one
        self.wake.set()

    async def flush(self, *, everything: bool = False) -> None:
        if everything:
            if self._timer is not None:
                self._timer.cancel()
            self._promote(everything=True)
        while self.buffer:
            batch = list(self.buffer.values())[:2000]
            await self.store.record(batch)
            for o in batch:
                if self.buffer.get(o.id) is o:
                    del self.buffer[o.id]

    async def run(self) -> None:
        while True:
            await self.wake.wait()  # idle costs nothing
            await asyncio.sleep(0.05)  # gather a batch
            self.wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as e:
                log.warning("recording outcomes failed; will retry", pending=len(self.buffer), error=str(e))
                self.wake.set()
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("recording outcomes failed")
                self.wake.set()
                await asyncio.sleep(1.0)


class Publisher:
    """Appends execution events to the events stream in small batches (one entry per ~100 ms)."""

    def __init__(self, membership: Membership, keys: Keys) -> None:
        self.redis = membership.redis
        self.keys = keys
        # by execution id: a later state of one execution within a batch replaces the earlier
        # one (a quick request's "running" never leaves the node, its outcome does)
        self.events: dict[str, dict[str, Any]] = {}
        self.wake = asyncio.Event()

    def put(self, event: dict[str, Any]) -> None:
        """An ExecutionEvent as its dict (messages.execution_event)."""
        if len(self.events) < 50_000 or event["id"] in self.events:
            self.events[event["id"]] = event
            self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            await asyncio.sleep(0.1)  # one stream entry per ~100 ms
            self.wake.clear()
            events, self.events = list(self.events.values()), {}
            try:
                pipe = self.redis.pipeline(transaction=False)
                for k in range(0, len(events), 1000):
                    pipe.xadd(self.keys.events_stream, {b"r": ExecutionBatch(events=events[k : k + 1000]).pack()},
                              maxlen=EVENTS_STREAM_LENGTH, approximate=True)
                await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.debug("publishing executions failed", error=str(e), dropped=len(events))


class Scheduler:
    def __init__(
        self, *, node_id: str, store: Store, catalogue: Catalogue, membership: Membership, locks: Locks,
        firer: Firer, keys: Keys, claim_ahead: float, history_per_job: int,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.catalogue = catalogue
        self.membership = membership
        self.locks = locks
        self.firer = firer
        self.keys = keys
        self.claim_ahead = claim_ahead
        self.history_per_job = history_per_job
        self.owned: dict[str, Owned] = {}
        self.heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._reconcile_now = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.recorder = Recorder(store)
        self.publisher = Publisher(membership, keys)
        self.unheld: set[str] = set()  # desired but the lock is held by a live peer (it is finishing)
        self._desired: set[str] = set()
        self._desired_members: tuple[str, ...] | None = None
        self._to_release: set[str] = set()
        self.stopping = False
        self.handovers_in = 0
        self.handovers_out = 0

    # ------------------------------------------------------------------ ownership

    async def _compute_desired(self) -> set[str]:
        ring = self.membership.view.ring
        if self.node_id not in ring.members:
            return set()
        if self._desired_members != ring.members:
            self.catalogue.changed_ids.clear()
            ids = self.catalogue.active_ids()
            desired: set[str] = set()
            for k in range(0, len(ids), CHUNK):
                desired.update(j for j in ids[k : k + CHUNK] if ring.owner(j) == self.node_id)
                await asyncio.sleep(0)  # 100k jobs: never starve the heartbeat
            self._desired = desired
            self._desired_members = ring.members
        elif self.catalogue.changed_ids:
            changed, self.catalogue.changed_ids = self.catalogue.changed_ids, set()
            for j in changed:
                s = self.catalogue.jobs.get(j)
                if s is not None and not s.paused and not s.deleted and ring.owner(j) == self.node_id:
                    self._desired.add(j)
                else:
                    self._desired.discard(j)
                o = self.owned.get(j)
                if o is not None and s is not None and s.version > o.job.version:
                    self._spawn(self._reload(j))
        return self._desired

    async def reconcile(self) -> None:
        if self.stopping or not self.membership.fresh() or not self.catalogue.loaded.is_set():
            return
        desired = await self._compute_desired()
        leaving = [j for j in self.owned if j not in desired]
        if leaving:
            log.info("releasing jobs", jobs=len(leaving), sample=leaving[:5], epoch=self.membership.view.epoch)
            for j in leaving:
                self._start_release(j)
        want = [j for j in desired if j not in self.owned]
        if not want:
            self.unheld.clear()
            return
        unheld: set[str] = set()
        taken: list[str] = []
        # In chunks, so the first jobs are scheduled while the rest are still being taken over.
        for k in range(0, len(want), CHUNK):
            if not self.membership.fresh() or self.stopping:
                break  # lapsed meanwhile: the fences we took are void anyway
            chunk = want[k : k + CHUNK]
            got = await self.locks.acquire(chunk)
            unheld.update(set(chunk) - set(got))
            if not got:
                continue
            takeovers = await self.store.take_over(got, self.node_id)
            if not self.membership.fresh() or self.stopping:
                break
            await self.locks.set_fences({t.job.id: t.fence for t in takeovers})
            gone = set(got) - {t.job.id for t in takeovers}
            if gone:
                await self.locks.release(list(gone))
            for t in takeovers:
                self._own(t)
                if t.fence > 1:  # fence 1 is a new job's first owner, not a hand-over
                    taken.append(t.job.id)
            await asyncio.sleep(0)
        self.unheld = unheld
        if taken:
            await self._log_handover("in", taken)

    def _own(self, t: Takeover) -> None:
        # the owner needs neither timestamps nor the stored owner: drop them (memory at 100k jobs)
        job = replace(t.job, created_at=None, updated_at=None, owner=None)
        anchors = [a for a in (t.last_tick, t.job.active_since) if a is not None]
        anchor = max(anchors) if anchors else datetime.now(UTC)
        o = Owned(job=job, schedule=job.parsed_schedule, fence=t.fence, anchor=anchor)
        self.owned[job.id] = o
        if t.fence > 1:
            self.handovers_in += 1
            metrics.HANDOVERS.labels("in").inc()
        # Wake for the first tick after the anchor: at once when ticks were missed since
        # (the misfire policy handles them), else claim_ahead before it is due.
        self._push(o, max(time.time(), first_tick(o.schedule, anchor).timestamp()))

    async def _reload(self, job_id: str) -> None:
        """An owned job changed (edit): load its new definition, keep the fence."""
        try:
            jobs = await self.store.get_jobs([job_id])
        except StoreUnavailable:
            return
        o = self.owned.get(job_id)
        if not jobs or o is None:
            return
        job = jobs[0]
        if job.fence != o.fence:
            self._drop(o, "fence moved on while reloading")
            return
        o.job = job
        o.schedule = job.parsed_schedule
        if job.active_since is not None and job.active_since > o.anchor:
            o.anchor = job.active_since
        self._push(o, time.time())

    def _start_release(self, job_id: str) -> None:
        o = self.owned.get(job_id)
        if o is None or o.releasing:
            return
        o.releasing = True
        self._maybe_finish_release(o)

    def _maybe_finish_release(self, o: Owned) -> None:
        if o.releasing and not o.pending and o.inflight == 0 and o.claiming == 0 and self.owned.get(o.job.id) is o:
            del self.owned[o.job.id]
            self.handovers_out += 1
            metrics.HANDOVERS.labels("out").inc()
            if not self._to_release:
                self._spawn(self._flush_releases())  # one flush gathers every release of this pass
            self._to_release.add(o.job.id)

    async def _flush_releases(self) -> None:
        await asyncio.sleep(0)
        ids, self._to_release = list(self._to_release), set()
        if not ids:
            return
        try:
            await self.locks.release(ids)
            await self._log_handover("out", ids)
        except Exception as e:
            log.warning("lock release failed; peers take over when our lease ends", error=str(e))
        self._reconcile_now.set()

    def _drop(self, o: Owned, reason: str) -> None:
        """Stop owning a job at once (fence lost): never send what it had claimed."""
        if self.owned.get(o.job.id) is not o:
            return
        del self.owned[o.job.id]
        self._abandon_pending(o, reason)
        metrics.FENCE_REJECTIONS.inc()
        log.warning("dropped job", job=o.job.id, fence=o.fence, reason=reason)
        self._spawn(self._release_quietly([o.job.id]))

    async def _release_quietly(self, ids: list[str]) -> None:
        try:
            await self.locks.release(ids)
        except Exception:
            pass
        self._reconcile_now.set()

    def _abandon_pending(self, o: Owned, reason: str) -> None:
        for handle, claim in list(o.pending.values()):
            handle.cancel()
            self._record(o, claim, state="abandoned", error=reason)
            metrics.ABANDONED.inc()
        o.pending.clear()

    def drop_all(self, reason: str) -> None:
        """Our heartbeat lapsed: whatever we owned may be someone else's. Send nothing more."""
        n = len(self.owned)
        for o in list(self.owned.values()):
            self._abandon_pending(o, reason)
        self.owned.clear()
        self.heap.clear()
        self.unheld.clear()
        self._desired_members = None
        log.warning("dropped all ownership", jobs=n, reason=reason)

    async def _log_handover(self, direction: str, job_ids: list[str]) -> None:
        rec = MembershipEvent(op="handover", node_id=self.node_id, epoch=self.membership.view.epoch,
                              detail={"direction": direction, "jobs": len(job_ids), "sample": job_ids[:5],
                                      "at": rfc3339(datetime.now(UTC))})
        log.info("hand-over", direction=direction, jobs=len(job_ids), epoch=self.membership.view.epoch)
        try:
            pipe = self.membership.redis.pipeline(transaction=False)
            pipe.lpush(self.keys.handovers, rec.pack())
            pipe.ltrim(self.keys.handovers, 0, HANDOVER_LOG_LENGTH - 1)
            pipe.xadd(self.keys.events_stream, {b"r": rec.pack()}, maxlen=EVENTS_STREAM_LENGTH, approximate=True)
            await pipe.execute()
        except Exception:
            pass

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
            if self.heap:
                delay = self.heap[0][0] - self.claim_ahead - time.time()
            else:
                delay = 1.0
            if delay > 0:
                self._wake.clear()
                await wait_event(self._wake, min(delay, 1.0))
                continue
            now = time.time()
            due: list[Owned] = []
            while self.heap and self.heap[0][0] - self.claim_ahead <= now and len(due) < CHUNK:
                wake, _, job_id = heapq.heappop(self.heap)
                o = self.owned.get(job_id)
                if o is not None and o.wake == wake and not o.releasing:
                    due.append(o)
            if due and not self.stopping:
                try:
                    await self._claim_cycle(due, now)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("claim cycle failed")
                    for o in due:
                        if self.owned.get(o.job.id) is o:
                            self._push(o, time.time() + self.claim_ahead + 1.0)
            await asyncio.sleep(0)  # never starve the heartbeat, whatever a cycle did

    # ------------------------------------------------------------------ claims

    def _plan(self, o: Owned, now: float) -> list[Claim]:
        """The claims for one due job: on-time ticks, and missed ones by misfire policy."""
        job = o.job
        now_dt = _utc(now)
        horizon = _utc(now + self.claim_ahead)
        ticks, total = o.schedule.ticks_between(o.anchor, horizon, cap=MISSED_COUNT_CAP)
        if not ticks:
            return []
        late_line = now_dt - LATE_AFTER
        on_time = [t for t in ticks if t >= late_line]
        missed = [t for t in ticks if t < late_line]
        n_missed = total - len(on_time)
        claims: list[Claim] = []
        to_run: list[tuple[datetime, str]] = []
        covered: list[datetime] = []  # missed ticks accounted for by one misfire row
        n_covered = 0
        reason = ""
        if missed:
            grace_line = now_dt - timedelta(seconds=job.misfire_grace_seconds)
            in_grace = [t for t in missed if t >= grace_line]
            beyond = n_missed - len(in_grace)
            if job.misfire_policy is MisfirePolicy.SKIP:
                covered, n_covered, reason = missed, n_missed, "skipped by misfire policy"
            elif job.misfire_policy is MisfirePolicy.FIRE_ONCE:
                if in_grace:
                    to_run.append((in_grace[-1], "catchup"))
                covered = [t for t in missed if not in_grace or t != in_grace[-1]]
                n_covered = n_missed - (1 if in_grace else 0)
                reason = "coalesced into one catch-up run" if not beyond else "past the misfire grace"
            else:  # FIRE_ALL
                run = in_grace[-CATCHUP_CAP:]
                to_run.extend((t, "catchup") for t in run)
                covered = [t for t in missed if t not in run]
                n_covered = n_missed - len(run)
                reason = "past the misfire grace"
        to_run.extend((t, "tick") for t in on_time)
        if n_covered > 0:
            claims.append(Claim(
                id=new_execution_id(), job_id=job.id, scheduled_at=covered[-1], fence=o.fence, kind="misfire",
                state="missed", missed_count=n_covered, missed_from=covered[0],
                error=reason + (f" (at least {n_covered})" if n_covered >= MISSED_COUNT_CAP else ""),
            ))
            metrics.MISFIRES.labels(reason).inc(n_covered)
        busy = o.inflight > 0 or bool(o.pending)
        for t, kind in to_run:
            if job.concurrency_policy is ConcurrencyPolicy.FORBID and busy:
                claims.append(Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t, fence=o.fence,
                                    kind="overlap", state="skipped", missed_count=1, missed_from=t,
                                    error="previous run still in flight (concurrencyPolicy forbid)"))
                metrics.MISFIRES.labels("overlap").inc()
            else:
                claims.append(Claim(id=new_execution_id(), job_id=job.id, scheduled_at=t, fence=o.fence, kind=kind))
                busy = True
        return claims

    async def _claim_cycle(self, due: list[Owned], now: float) -> None:
        if not self.membership.fresh():
            # Our lease is not surely valid: claim nothing; look again shortly (the
            # reconcile loop drops everything if the lease has really lapsed).
            for o in due:
                self._push(o, time.time() + self.claim_ahead + 0.25)
            return
        plans: list[tuple[Owned, list[Claim]]] = []
        for o in due:
            if o.job.paused:
                continue
            claims = self._plan(o, now)
            if claims:
                plans.append((o, claims))
            else:
                self._schedule_next(o)
        all_claims = [c for _, cs in plans for c in cs]
        if not all_claims:
            return
        for o, _ in plans:
            o.claiming += 1
        try:
            won = await self.store.claim(self.node_id, all_claims)
        except StoreUnavailable as e:
            log.warning("claims failed: MariaDB unavailable; nothing sent, retrying", jobs=len(plans), error=str(e))
            for o, _ in plans:
                o.claiming -= 1
                self._push(o, time.time() + self.claim_ahead + 1.0)
                self._maybe_finish_release(o)
            return
        except BaseException:
            for o, _ in plans:
                o.claiming -= 1
            raise
        for o, _ in plans:
            o.claiming -= 1
        metrics.CLAIMS.labels("won").inc(len(won))
        loop = asyncio.get_running_loop()
        for o, claims in plans:
            if self.owned.get(o.job.id) is not o:
                continue
            lost = [c for c in claims if c.id not in won]
            if lost:
                metrics.CLAIMS.labels("lost").inc(len(lost))
                self._drop(o, f"claim refused: fence {o.fence} is stale or the tick was already claimed")
                continue
            for c in claims:
                o.anchor = max(o.anchor, c.scheduled_at)
                o.claims_since_retention += 1
                if c.state == "claimed":
                    delay = max(0.0, c.scheduled_at.timestamp() - time.time())
                    o.pending[c.id] = (loop.call_later(delay, self._send_due, o, c), c)
                else:
                    self._publish(o, c, state=c.state, error=c.error)
            self._schedule_next(o)
            self._maybe_finish_release(o)  # a release that waited for this claim

    # ------------------------------------------------------------------ firing

    def _send_due(self, o: Owned, claim: Claim) -> None:
        o.pending.pop(claim.id, None)
        if not self.membership.fresh():
            self._record(o, claim, state="abandoned", error="heartbeat lease lapsed before send; not sent")
            metrics.ABANDONED.inc()
            self._maybe_finish_release(o)
            return
        o.inflight += 1
        self._spawn(self._send(o, claim))

    async def _send(self, o: Owned, claim: Claim) -> None:
        job = o.job
        started = datetime.now(UTC)
        self._record(o, claim, state="running", started_at=started)
        result: Result | None = None
        try:
            result = await self.firer.fire(job, execution_id=claim.id, scheduled_at=claim.scheduled_at,
                                           fence=o.fence, may_send=self.membership.fresh)
        except Exception as e:
            log.exception("firing failed", job=job.id)
            self._record(o, claim, state="failed", error=f"internal error: {type(e).__name__}", started_at=started)
        finally:
            o.inflight -= 1
        if result is not None:
            self._record_result(o, claim, result)
        self._maybe_finish_release(o)

    def _record_result(self, o: Owned, claim: Claim, r: Result) -> None:
        metrics.fires(r.state).inc()
        metrics.LATENESS.observe(max(0.0, r.lateness_ms / 1000))
        metrics.DURATION.observe(r.duration_ms / 1000)
        if r.status_code is not None:
            metrics.status_class(r.status_code).inc()
        if r.attempts > 1:
            metrics.RETRIES.inc(r.attempts - 1)
        self._record(o, claim, state=r.state, attempts=r.attempts, status_code=r.status_code,
                     duration_ms=r.duration_ms, lateness_ms=r.lateness_ms, error=r.error,
                     excerpt=r.excerpt, started_at=r.started_at, finished_at=datetime.now(UTC))
        log.info("execution", job=o.job.id, tick=rfc3339(claim.scheduled_at), execution=claim.id, fence=o.fence,
                 kind=claim.kind, state=r.state, status=r.status_code, attempts=r.attempts,
                 duration_ms=r.duration_ms, lateness_ms=r.lateness_ms, error=r.error)

    def _record(self, o: Owned, claim: Claim, *, state: str, attempts: int = 0, status_code: int | None = None,
                duration_ms: int | None = None, lateness_ms: int | None = None, error: str | None = None,
                excerpt: str | None = None, started_at: datetime | None = None,
                finished_at: datetime | None = None) -> None:
        if finished_at is None and state not in ("running", "claimed"):
            finished_at = datetime.now(UTC)
        self.recorder.put(Outcome(
            id=claim.id, job_id=claim.job_id, scheduled_at=claim.scheduled_at, fence=o.fence, state=state,
            node=self.node_id, attempts=attempts, status_code=status_code, duration_ms=duration_ms,
            lateness_ms=lateness_ms, error=error, response_excerpt=excerpt, started_at=started_at,
            finished_at=finished_at,
        ))
        self._publish(o, claim, state=state, attempts=attempts, status_code=status_code, duration_ms=duration_ms,
                      lateness_ms=lateness_ms, error=error)

    def _publish(self, o: Owned, claim: Claim, *, state: str, attempts: int = 0, status_code: int | None = None,
                 duration_ms: int | None = None, lateness_ms: int | None = None, error: str | None = None) -> None:
        self.publisher.put(execution_event(
            claim.id, claim.job_id, rfc3339(claim.scheduled_at) or "", state, self.node_id, o.fence, attempts,
            status_code, duration_ms, lateness_ms, error, rfc3339(datetime.now(UTC)) or "",
        ))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run_now(self, job: Job) -> str | None:
        """Run a job now, from whichever node got the request: a claim for this instant
        under the job's current fence, then an immediate send."""
        now = datetime.now(UTC)
        eid = new_execution_id()
        fence = await self.store.claim_manual(job.id, self.node_id, eid, now)
        if fence is None:
            return None
        o = Owned(job=job, schedule=job.parsed_schedule, fence=fence, anchor=now)
        claim = Claim(id=eid, job_id=job.id, scheduled_at=now, fence=fence, kind="manual")
        o.inflight += 1
        self._spawn(self._send(o, claim))
        return claim.id

    # ------------------------------------------------------------------ loops

    async def run_reconcile(self) -> None:
        while True:
            try:
                if self.membership.lapsed.is_set():
                    self.drop_all("own heartbeat lapsed")
                    self.membership.lapsed.clear()
                    self.catalogue.request_full()
                await self.reconcile()
                metrics.OWNED.set(len(self.owned))
                metrics.MEMBERS.set(len(self.membership.view.members))
                metrics.EPOCH.set(self.membership.view.epoch)
                metrics.JOBS.set(len(self.catalogue.jobs))
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as e:
                log.warning("reconcile: MariaDB unavailable", error=str(e))
            except Exception as e:
                log.warning("reconcile failed", error=f"{type(e).__name__}: {e}")
            waits = [self.membership.changed.wait(), self.catalogue.changed.wait(), self._reconcile_now.wait(),
                     self.membership.lapsed.wait()]
            timeout = 0.2 if self.unheld else 2.0
            tasks = [asyncio.ensure_future(w) for w in waits]
            try:
                await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
            self.membership.changed.clear()
            self.catalogue.changed.clear()
            self._reconcile_now.clear()

    async def run_retention(self) -> None:
        while True:
            await asyncio.sleep(30)
            try:
                ids = [o.job.id for o in list(self.owned.values())
                       if o.claims_since_retention >= max(1, self.history_per_job // 4)]
                if ids:
                    n = await self.store.apply_retention(ids, self.history_per_job)
                    for j in ids:
                        if j in self.owned:
                            self.owned[j].claims_since_retention = 0
                    log.debug("retention", jobs=len(ids), deleted=n)
                await self.store.purge_tombstones()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("retention failed", error=str(e))

    async def shutdown(self, grace: float) -> None:
        """Stop claiming; send what was claimed; let in-flight runs finish; release every lock."""
        self.stopping = True
        for o in self.owned.values():
            o.releasing = True
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(o.pending or o.inflight or o.claiming for o in self.owned.values()):
            await asyncio.sleep(0.05)
        for o in list(self.owned.values()):
            self._abandon_pending(o, "node shut down before send")
        ids = list(self.owned)
        self.owned.clear()
        try:
            await self.recorder.flush(everything=True)
        except Exception as e:
            log.warning("final outcome flush failed", error=str(e))
        if ids:
            try:
                await self.locks.release(ids)
            except Exception as e:
                log.warning("lock release on shutdown failed", error=str(e))
        log.info("scheduler stopped", released=len(ids))
