"""Backfills, run by the owner of their job (``model/backfills.py`` says what a backfill is).

Every couple of seconds the runner looks for the active backfills of the jobs this node owns and runs each job's
backfills one after another, in the order they were asked for:

1. what a lost owner left in flight for it (rows of a claimer that has gone) is re-sent as the same executions;
2. each due instant of ``[from, to)`` after its cursor is claimed under the job's fence (``claim_backfill``):
   claimed → sent (one at a time for ``forbid``, side by side for ``allow``), at most ``maxPerSecond`` a second;
   done → counted ``alreadyDone``; mine (this backfill's own row, met again after a resume) → nothing; busy
   (another backfill is sending it) → tried again at the end; lost (the fence moved on) → stop: the job's next
   owner resumes it from the cursor;
3. progress (and the cursor) is written every second and told on the stream; a cancel seen there stops it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Container
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from ..aio import raise_if_cancelling, wait_event
from ..model.backfills import Backfill, BackfillPolicy, BackfillState
from ..model.errors import StoreUnavailable
from ..model.executions import Claim, ExecutionKind, Liveness, Redelivery, new_execution_id
from .ownership import Owned

log = structlog.get_logger("backfill")

LOOK_EVERY = 2.0  # seconds between looks for backfills to start or resume
PROGRESS_EVERY = 1.0  # seconds between progress writes
BUSY_RETRIES = 30  # an instant another backfill is sending is tried again this many times (a second apart)
ANCHOR_POLL, ANCHOR_WAIT = 0.2, 10.0  # an instant not yet decided by its own tick: looked at every 0.2 s, waited
# for until 10 s after its tick's send time
_TINY = timedelta(microseconds=1)


class BackfillStore(Protocol):
    """store/backfills.py and store/executions.py, as the runner needs them."""

    async def active(self, job_ids: Container[str] | None = None) -> list[Backfill]: ...
    async def progress(self, b: Backfill, *, node: str) -> BackfillState | None: ...
    async def counts(self, backfill_id: str) -> dict[str, int]: ...


class BackfillClaims(Protocol):
    async def claim_backfill(self, job_id: str, fence: int, node: str, claimer: str, backfill_id: str,
                             instant: datetime, execution_id: str) -> str: ...
    async def lost_backfill_rows(self, backfill_id: str, job_id: str, fence: int, node: str, live: Liveness
                                 ) -> list[Redelivery]: ...


class Sends(Protocol):
    """The scheduler, as the runner uses it: who owns what, and a send of a claim now."""

    @property
    def owned(self) -> dict[str, Owned]: ...
    def liveness(self) -> Liveness: ...
    def send_now(self, o: Owned, claim: Claim) -> asyncio.Task[None]: ...


class BackfillRunner:
    def __init__(self, *, node_id: str, store: BackfillStore, claims: BackfillClaims, sends: Sends,
                 fresh: Callable[[], bool], tell: Callable[[Backfill], None] = lambda b: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node_id = node_id
        self.store, self.claims, self.sends = store, claims, sends
        self.fresh = fresh
        self.tell = tell  # progress on the events stream (the composition root wires the publisher)
        self.clock = clock
        self.wake = asyncio.Event()
        self.running: dict[str, asyncio.Task[None]] = {}  # job id -> the task running its backfills

    async def run(self) -> None:
        try:
            await self._loop()
        finally:  # the node is stopping: each job's runner with it (sends in flight are the scheduler's to drain)
            for task in self.running.values():
                task.cancel()

    async def _loop(self) -> None:
        while True:
            try:
                await self.look()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as e:
                raise_if_cancelling()
                log.warning("backfills: MariaDB unavailable", error=str(e))
            except Exception:
                raise_if_cancelling()
                log.exception("backfill look failed")
            self.wake.clear()
            await wait_event(self.wake, LOOK_EVERY)

    async def look(self) -> None:
        if not self.fresh():
            return
        owned = self.sends.owned
        if not owned:
            return
        for job_id in [j for j, t in self.running.items() if t.done()]:
            del self.running[job_id]
        for b in await self.store.active(owned):
            task = self.running.get(b.job_id)
            if task is None or task.done():
                self.running[b.job_id] = asyncio.get_running_loop().create_task(self._job(b.job_id))

    async def _job(self, job_id: str) -> None:
        """This job's active backfills, one after another, while this node owns the job."""
        while True:
            o = self.sends.owned.get(job_id)
            if o is None or o.releasing or not self.fresh():
                return
            todo = [b for b in await self.store.active((job_id,)) if b.job_id == job_id]
            if not todo:
                return
            try:
                if not await self._run(o, todo[0]):
                    return  # stopped (ownership lost, the lease, MariaDB): the next look or owner resumes it
            except StoreUnavailable as e:
                log.warning("backfill paused: MariaDB unavailable", backfill=todo[0].id, error=str(e))
                return

    async def _run(self, o: Owned, b: Backfill) -> bool:
        """Run one backfill to its end; False when it stopped before (it resumes later, here or elsewhere)."""
        counts = await self.store.counts(b.id)
        b = replace(b, state=BackfillState.RUNNING, sent=counts["sent"], failed=counts["failed"], error=None)
        if await self.store.progress(b, node=self.node_id) is not BackfillState.RUNNING:
            return True  # cancelled meanwhile
        self.tell(b)
        log.info("backfill started", job=o.id, backfill=b.id, total=b.total, resumed_from=b.cursor)
        flights: set[asyncio.Task[None]] = set()
        owner_ok = True

        def still_mine() -> bool:
            return self.sends.owned.get(o.id) is o and not o.releasing and self.fresh()

        # 1. what a lost owner left in flight: sent again as the same executions
        live = self.sends.liveness()
        for r in await self.claims.lost_backfill_rows(b.id, o.id, o.fence, self.node_id, live):
            claim = Claim(id=r.id, job_id=o.id, scheduled_at=r.scheduled_at, fence=o.fence, claimer=live.claimer,
                          kind=ExecutionKind.BACKFILL, attempts=r.attempts, instant=r.scheduled_at, backfill=b.id)
            flights.add(self.sends.send_now(o, claim))
        # 2. the instants after the cursor
        limiter = _Rate(b.max_per_second, self.clock)
        busy: list[datetime] = []
        last_write = self.clock()
        lo = max(b.start - _TINY, b.cursor) if b.cursor is not None else b.start - _TINY
        instants = o.timetable.due_after(lo)
        done = False
        while not done:
            t = next(instants, None)
            if t is None or t >= b.end:
                done = True
                break
            if not still_mine():
                owner_ok = False
                break
            # An instant the job's own schedule has not decided yet (its tick unclaimed: `to` is never in the future,
            # but a jitter sends a tick up to jitterSeconds after its instant) waits until it is: its tick's row then
            # says delivered (not sent again), in flight (tried again when it ends) or not sent (sent now). Never
            # beside its own tick.
            if t > o.anchor:
                deadline = self.clock() + ANCHOR_WAIT + max(0.0, o.timetable.fire_at(t).timestamp() - time.time())
                while t > o.anchor and still_mine() and self.clock() < deadline:
                    await asyncio.sleep(ANCHOR_POLL)
            if t > o.anchor:
                owner_ok = False  # (the owner is far behind, or gone: resumed at the next look or by the next owner)
                break
            await limiter.take()
            if b.policy is BackfillPolicy.FORBID and flights:
                await asyncio.wait(flights)
            claimer = self.sends.liveness().claimer
            outcome = await self.claims.claim_backfill(o.id, o.fence, self.node_id, claimer, b.id, t,
                                                       eid := new_execution_id())
            if outcome == "lost":
                owner_ok = False
                break
            if outcome == "claimed":
                claim = Claim(id=eid, job_id=o.id, scheduled_at=t, fence=o.fence, kind=ExecutionKind.BACKFILL,
                              instant=t, backfill=b.id, claimer=claimer)
                flights.add(self.sends.send_now(o, claim))
            elif outcome == "done":
                b = replace(b, already_done=b.already_done + 1)
            elif outcome == "busy":
                busy.append(t)
            # ("mine": this backfill has it already, sent before a resume: counted where it is)
            b = replace(b, cursor=t)
            flights = {f for f in flights if not f.done()}
            if self.clock() - last_write >= PROGRESS_EVERY:
                last_write = self.clock()
                b = await self._progress(b)
                if b.state is BackfillState.CANCELLED:
                    break
        # 3. instants another backfill was sending: once it has ended
        # (as long as a run of the job may take: its tick's tries, and a wait in the buffer within the grace)
        job = o.job
        for _ in range(max(BUSY_RETRIES, BUSY_RETRIES + job.misfire_grace_seconds + int(
                (job.retries + 1) * (job.timeout_ms + job.retry_max_backoff_ms) / 1000))):
            if not busy or not owner_ok or b.state is BackfillState.CANCELLED or not still_mine():
                break
            await asyncio.sleep(1.0)
            left = []
            for t in busy:
                claimer = self.sends.liveness().claimer
                outcome = await self.claims.claim_backfill(o.id, o.fence, self.node_id, claimer, b.id, t,
                                                           eid := new_execution_id())
                if outcome == "claimed":
                    flights.add(self.sends.send_now(o, Claim(id=eid, job_id=o.id, scheduled_at=t, fence=o.fence,
                                                             kind=ExecutionKind.BACKFILL, instant=t, backfill=b.id,
                                                             claimer=claimer)))
                elif outcome == "done":
                    b = replace(b, already_done=b.already_done + 1)
                elif outcome == "busy":
                    left.append(t)
                elif outcome == "lost":
                    owner_ok = False
            busy = left
        if flights:
            await asyncio.wait(flights)
        for _ in range(50):  # outcomes are written in batches: the last ones a moment after their sends end
            if (await self.store.counts(b.id))["open"] == 0:
                break
            await asyncio.sleep(0.1)
        if busy:
            b = replace(b, error=f"{len(busy)} instant(s) stayed in flight (their own tick, or another backfill) for"
                                 " longer than a run of the job may take; not sent by this one")
        finished = done and owner_ok and b.state is not BackfillState.CANCELLED
        if finished:
            b = replace(b, state=BackfillState.DONE)
        b = await self._progress(b)
        log.info("backfill " + ("done" if finished else "stopped"), job=o.id, backfill=b.id, sent=b.sent,
                 already_done=b.already_done, failed=b.failed, state=str(b.state))
        return finished or b.state is BackfillState.CANCELLED

    async def _progress(self, b: Backfill) -> Backfill:
        counts = await self.store.counts(b.id)
        b = replace(b, sent=counts["sent"], failed=counts["failed"])
        stored = await self.store.progress(b, node=self.node_id)
        if stored is not None and stored is not b.state:
            b = replace(b, state=stored)  # cancelled by a DELETE
        self.tell(b)
        return b


class _Rate:
    """At most ``per_second`` takes in any second (a token bucket of one second)."""

    def __init__(self, per_second: int, clock: Callable[[], float]) -> None:
        self.interval = 1.0 / max(1, per_second)
        self.clock = clock
        self.next = clock()

    async def take(self) -> None:
        now = self.clock()
        if now < self.next:
            await asyncio.sleep(self.next - now)
        self.next = max(self.next, now) + self.interval

