"""What happened to an execution: its state changes written to MariaDB in batches, and the
same changes told to the cluster on the events stream.

The scheduler decides *that* something happened (claimed, running, succeeded, abandoned...);
this module records and publishes it, so ``scheduler.py`` tells only the tick story.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

import redis.asyncio as aioredis
import structlog

from .. import metrics
from ..aio import raise_if_cancelling
from ..batching import OUTCOME_BATCH, STREAM_EVENTS, chunks
from ..cluster.keys import EVENTS_STREAM_LENGTH, Keys
from ..cluster.messages import ExecutionBatch, execution_event
from ..model.errors import StoreUnavailable
from ..model.executions import OPEN_STATES, Claim, Execution, ExecutionState
from ..model.jobs import redact
from ..model.times import now_iso, tick_iso
from .firing import Result
from .pulse import Pulse


class OutcomeSink(Protocol):
    """Where outcomes are written (store/executions.py)."""

    async def record(self, executions: Iterable[Execution]) -> None: ...

log = structlog.get_logger("outcomes")


class Recorder:
    """Writes execution state changes in batches; keeps them while MariaDB is away.

    A "running" row is held back for ``running_after`` seconds and written only if the run
    is still going then: most requests finish sooner, and their one outcome row replaces it.
    (The claimed row is already open, so a node that dies meanwhile leaves the same
    evidence: the takeover marks it abandoned either way.)
    """

    def __init__(self, sink: OutcomeSink, *, max_buffer: int = 200_000, running_after: float = 1.0) -> None:
        self.sink = sink
        # after each batch is written, outside the flush: the jobs' health (streaks, alerts, auto-pause), from the
        # outcomes that count for it (``relevant``); the jobs that paused themselves are announced
        self.health: Callable[[Sequence[Execution]], Awaitable[list[str]]] | None = None
        self.relevant: Callable[[Execution], bool] = lambda e: True
        self.on_paused: Callable[[list[str]], Awaitable[None]] | None = None
        self.health_queue: list[Execution] = []
        self.buffer: dict[str, Execution] = {}
        self.running: dict[str, tuple[float, Execution]] = {}  # held back, in the order they started
        self.running_after = running_after
        self._timer: asyncio.TimerHandle | None = None
        self._health_timer: asyncio.TimerHandle | None = None
        self._health_at = -1e9  # monotonic time of the last health step
        self.max_buffer = max_buffer
        self.wake = asyncio.Event()
        self._flushing = asyncio.Lock()

    def put(self, outcome: Execution) -> None:
        if outcome.state == ExecutionState.RUNNING:
            self.running[outcome.id] = (time.monotonic() + self.running_after, outcome)
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.running_after, self._promote)
            return
        self.running.pop(outcome.id, None)
        self._buffer(outcome)

    def promote(self, ids: set[str]) -> None:
        """Write these executions' held-back running rows with the next batch (a hand-over is about to tell
        the next owner, through them, that these runs are in flight here)."""
        for oid in ids & self.running.keys():
            _, outcome = self.running.pop(oid)
            if oid not in self.buffer:
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

    def _buffer(self, outcome: Execution) -> None:
        if len(self.buffer) >= self.max_buffer and outcome.id not in self.buffer:
            log.error("outcome buffer full; dropping an outcome (row stays open, later marked abandoned)",
                      execution=outcome.id)
            return
        self.buffer[outcome.id] = outcome  # a later state replaces an earlier one
        self.wake.set()

    async def flush(self, *, everything: bool = False, needed_for: set[str] | None = None) -> None:
        """Write what is buffered when the flush starts, one flush at a time.

        What arrives meanwhile waits for the next one: at 500 outcomes a second the buffer is never
        empty, and a flush that ran until it was never ended. Side by side flushes (a hand-over of many
        jobs starts one per job) each wrote the same first batch, again and again, and one node spent its
        loop rewriting rows while its ticks went 2 s late. ``needed_for``: only if one of these is still
        unwritten once this flush's turn comes. ``everything``: held-back running rows too, until none
        is left (at shutdown, when nothing new is claimed)."""
        async with self._flushing:
            if needed_for is not None and not needed_for & self.buffer.keys():
                return  # a flush before this one wrote them
            if everything:
                if self._timer is not None:
                    self._timer.cancel()
                self._promote(everything=True)
            while True:
                for batch in chunks(list(self.buffer.values()), OUTCOME_BATCH):
                    await self.sink.record(batch)
                    if self.health is not None:
                        self._queue_health(batch)
                    for o in batch:
                        if self.buffer.get(o.id) is o:
                            del self.buffer[o.id]
                if not (everything and self.buffer):
                    return

    HEALTH_QUEUE = 50_000

    def _queue_health(self, batch: Iterable[Execution]) -> None:
        self.health_queue.extend(o for o in batch if self.relevant(o))
        if len(self.health_queue) > self.HEALTH_QUEUE:  # MariaDB away for long: the oldest go (streaks miss them)
            log.error("health queue full: dropping the oldest outcomes from the failure streaks",
                      dropped=len(self.health_queue) - self.HEALTH_QUEUE)
            del self.health_queue[: len(self.health_queue) - self.HEALTH_QUEUE]

    def note(self, written: Iterable[Execution]) -> None:
        """Rows written elsewhere (missed instants, in their claim): for the health step only."""
        if self.health is not None:
            self._queue_health(written)
            self.wake.set()

    async def drain_health(self) -> None:
        """Count what was written into the jobs' health, a batch at a time; kept for the next pass when MariaDB is
        away, dropped (logged) when the health step itself fails (the outcomes are written either way)."""
        while self.health is not None and self.health_queue:
            batch = self.health_queue[:OUTCOME_BATCH]
            try:
                paused = await self.health(batch)
            except StoreUnavailable:
                raise
            except Exception:
                raise_if_cancelling()
                log.exception("health step failed for a batch of outcomes; skipped", outcomes=len(batch))
                paused = []
            del self.health_queue[: len(batch)]
            if paused and self.on_paused is not None:
                await self.on_paused(paused)

    HEALTH_EVERY = 1.0  # seconds between health steps: at 100 fires/s, one read a second, not one a flush

    async def _health_turn(self) -> None:
        """The health step for runs that succeeded at most once per HEALTH_EVERY (its read for every small flush cost
        ~10% more CPU per fire at 100/s), at once for a failure, a missed tick or a whole batch."""
        if not self.health_queue:
            return
        wait = self._health_at + self.HEALTH_EVERY - time.monotonic()
        # (a failure or a missed tick goes at once: a streak, its alert and an auto-pause at the Nth failure are
        # never a second late; only runs that succeeded wait for company)
        urgent = any(e.state != ExecutionState.SUCCEEDED for e in self.health_queue)
        if wait > 0 and not urgent and len(self.health_queue) < OUTCOME_BATCH:
            if self._health_timer is None:
                self._health_timer = asyncio.get_running_loop().call_later(wait, self._health_due)
            return
        self._health_at = time.monotonic()
        await self.drain_health()

    def _health_due(self) -> None:
        self._health_timer = None
        self.wake.set()

    async def write_now(self, ids: set[str]) -> None:
        """These executions' rows (held-back running rows too) written before this returns."""
        self.promote(ids)
        if ids & self.buffer.keys():
            await self.flush(needed_for=ids)

    async def run(self) -> None:
        while True:
            await self.wake.wait()  # idle costs nothing
            await asyncio.sleep(0.05)  # gather a batch
            self.wake.clear()
            try:
                await self.flush()
                await self._health_turn()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as e:
                raise_if_cancelling()
                log.warning("recording outcomes failed; will retry", pending=len(self.buffer), error=str(e))
                self.wake.set()
                await asyncio.sleep(1.0)
            except Exception:
                raise_if_cancelling()
                log.exception("recording outcomes failed")
                self.wake.set()
                await asyncio.sleep(1.0)


class Publisher:
    """Appends execution events to the events stream in small batches (one entry per ~100 ms)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        # by execution id: a later state of one execution within a batch replaces the earlier
        # one (a quick request's "running" never leaves the node, its outcome does)
        self.events: dict[str, dict[str, Any]] = {}
        self.wake = asyncio.Event()

    def put(self, event: dict[str, Any]) -> None:
        """An execution as the stream carries it (cluster.messages.execution_event)."""
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
                for part in chunks(events, STREAM_EVENTS):
                    pipe.xadd(self.keys.events_stream, {b"r": ExecutionBatch(events=list(part)).pack()},
                              maxlen=EVENTS_STREAM_LENGTH, approximate=True)
                await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                raise_if_cancelling()
                log.debug("publishing executions failed", error=str(e), dropped=len(events))


class Outcomes:
    """Record and publish execution state changes (one call for both). Each change is an ``Execution``:
    the claim's fields with the new state and what the run found."""

    def __init__(self, sink: OutcomeSink, publisher: Publisher, *, node_id: str, claimer: Callable[[], str]) -> None:
        self.node_id = node_id
        self.claimer = claimer  # this process's claimer id now (new after a lapse)
        self.recorder = Recorder(sink)
        self.publisher = publisher
        self.pulse = Pulse(node_id, time.time())  # the cluster page's charts (app.py publishes its slots)

    def result(self, claim: Claim, r: Result, secrets: list[str] | None = None) -> None:
        """A finished run: metrics, the outcome row and event, one summary log line. ``secrets``: the
        job's own secret values, masked in what the target echoed (excerpt, error)."""
        if secrets and (r.excerpt or r.error):
            r = replace(r, excerpt=redact(r.excerpt, secrets), error=redact(r.error, secrets))
        metrics.fires(r.state).inc()
        self.pulse.note(r.state, r.lateness_ms)
        metrics.LATENESS.observe(max(0.0, r.lateness_ms / 1000))
        metrics.DURATION.observe(r.duration_ms / 1000)
        if r.status_code is not None:
            metrics.status_class(r.status_code).inc()
        if r.attempts > 1:
            metrics.RETRIES.inc(r.attempts - 1)
        self.mark(claim, r.state, attempts=r.attempts, status_code=r.status_code, duration_ms=r.duration_ms,
                  lateness_ms=r.lateness_ms, error=r.error, excerpt=r.excerpt, started_at=r.started_at)
        # One line per run that did not succeed (warning); a success is a debug line: at hundreds of
        # runs a second, the ledger, the API and the stream carry them (and JSON lines cost ~5% CPU).
        level = logging.DEBUG if r.state == ExecutionState.SUCCEEDED else logging.WARNING
        if log.is_enabled_for(level):
            log.log(level, "execution", job=claim.job_id, tick=tick_iso(claim.scheduled_at), execution=claim.id,
                    fence=claim.fence, kind=str(claim.kind), state=str(r.state), status=r.status_code,
                    attempts=r.attempts, duration_ms=r.duration_ms, lateness_ms=r.lateness_ms, error=r.error)

    def mark(self, claim: Claim, state: ExecutionState, *, attempts: int = 0, status_code: int | None = None,
             duration_ms: int | None = None, lateness_ms: int | None = None, error: str | None = None,
             excerpt: str | None = None, started_at: datetime | None = None) -> None:
        """A claimed execution is now in ``state``: record the row and tell the cluster."""
        finished_at = None if state in OPEN_STATES else datetime.now(UTC)
        self.record(claim.execution(state=state, node=self.node_id, claimer=self.claimer(), attempts=attempts,
                                    status_code=status_code, duration_ms=duration_ms, lateness_ms=lateness_ms,
                                    error=error, response_excerpt=excerpt, started_at=started_at,
                                    finished_at=finished_at))

    def record(self, e: Execution) -> None:
        self.recorder.put(e)
        self.publish(e)

    def publish(self, e: Execution) -> None:
        """Tell the cluster only (rows the claim itself wrote: misfires, overlaps)."""
        self.publisher.put(execution_event(e, now_iso()))

    def told(self, claim: Claim, state: ExecutionState, error: str | None = None) -> None:
        """Publish a row the claim statement wrote itself (a missed range, an overlap)."""
        self.publish(claim.execution(state=state, node=self.node_id, error=error))
