"""An in-memory store with the claim rules of ``node/store/executions.py``, for fast, deterministic tests of the
claim cycle, takeovers, redelivery and hand-overs (``tests/unit/test_claim_path.py``). Its behaviour is held
to MariaDB's by one contract suite run against both (``tests/integration/test_claim_contract.py``).

The rules it keeps, as the SQL does:

* a claim inserts the row for ``(job_id, scheduled_at)`` only where the job's fence still equals the
  claimer's (and the job is neither deleted nor, but for a run-now, paused): one execution per instant;
* a takeover draws a fence epoch (above every fence issued) and writes it only to the jobs with open rows;
  the rest get it with the owner's first write (``_write_fence``: only ever upwards). The open rows under an
  older fence are a lost claimer's (abandoned, or re-sent for at_least_once within the grace) unless they are
  in flight on a live process;
* a forbid run whose job has a run in flight elsewhere is inserted as an overlap row (skipped); a buffer run,
  as a buffered tick; a takeover makes every buffered tick of the job the new owner's (never sent: safe to
  send), and a buffered tick goes out only by a dequeue under its current fence;
* a counted run (maxRuns) adds to the job's runs in the claim's own transaction;
* an outcome overwrites its row, except a redelivered row, which only its current owner (fence) writes.

Instants are kept at millisecond precision, as DATETIME(3) keeps them. ``now`` is the clock MariaDB's
NOW(3) would read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from node.model.errors import NotFound, RunInFlight
from node.model.executions import (
    IN_FLIGHT_STATES,
    OPEN_STATES,
    OVERLAP_REASON,
    UNSCHEDULED_KINDS,
    Claim,
    Claimed,
    Execution,
    ExecutionKind,
    ExecutionState,
    Liveness,
    Redelivery,
    Takeover,
)
from node.model.jobs import Delivery, Job, JobSummary

RECENT_CLAIM = timedelta(seconds=2)  # store/executions.py RECENT_CLAIM_SECONDS


def ms(dt: datetime) -> datetime:
    dt = dt.astimezone(UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


class MemoryStore:
    """Jobs, their definitions and their executions, behind the Protocols the claim path uses:
    ``Claims`` (scheduler), ``Takeovers``/``Definitions``/``DefinitionHistory`` (ownership),
    ``OutcomeSink`` (outcomes), ``LedgerSource`` (audit)."""

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.now = now
        self.jobs: dict[str, Job] = {}
        self.deleted: set[str] = set()
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.rows: dict[str, Execution] = {}
        self.by_tick: dict[tuple[str, datetime], str] = {}
        self.epoch = 0  # the fence_epochs counter (store/executions.next_epoch)

    # ---- jobs (what the API would do) ---------------------------------------------------

    def add_job(self, job: Job) -> Job:
        now = ms(self.now())
        job = replace(job, version=1, fence=0, active_since=now, created_at=now, updated_at=now)
        self.jobs[job.id] = job
        self._history(job, now)
        return job

    def edit(self, job_id: str, *, schedule_changed: bool = True, **fields: Any) -> Job:
        now = ms(self.now())
        job = self.jobs[job_id]
        job = replace(job, **fields, version=job.version + 1, updated_at=now,
                      active_since=now if schedule_changed else job.active_since)
        self.jobs[job_id] = job
        self._history(job, now)
        return job

    def delete(self, job_id: str) -> None:
        now = ms(self.now())
        job = self.jobs[job_id]
        self.deleted.add(job_id)
        self.jobs[job_id] = replace(job, version=job.version + 1, updated_at=now)
        self.history[job_id].append({"job_id": job_id, "version": job.version + 1, "valid_from": now,
                                     "schedule": job.schedule, "time_zone": job.time_zone, "paused": job.paused,
                                     "deleted": True})
        for e in self._open(job_id):
            self.rows[e.id] = replace(e, state=ExecutionState.ABANDONED, finished_at=now,
                                      error=f"job deleted before {e.node} recorded an outcome")

    def _history(self, job: Job, at: datetime) -> None:
        self.history.setdefault(job.id, []).append({
            "job_id": job.id, "version": job.version, "valid_from": at, "schedule": job.schedule,
            "time_zone": job.time_zone, "paused": job.paused, "deleted": False, "spec": json.dumps(job.spec()),
            "completed": job.completed_at is not None})

    def summaries(self) -> list[JobSummary]:
        return [JobSummary(id=j.id, version=j.version, paused=j.paused, deleted=j.id in self.deleted,
                           completed=j.completed_at is not None) for j in self.jobs.values()]

    # ---- Definitions, DefinitionHistory ----------------------------------------------------

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        return [self.jobs[j] for j in job_ids if j in self.jobs and j not in self.deleted]

    async def job_history(self, job_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        return {j: [dict(h) for h in self.history.get(j, [])] for j in job_ids}

    # ---- Takeovers ---------------------------------------------------------------------

    async def take_over(self, job_ids: Sequence[str], node: str, live: Liveness | None = None, *,
                        eager: bool = False) -> list[Takeover]:
        live = live or Liveness(claimer="")
        now = ms(self.now())
        out = []
        self.epoch = epoch = self.epoch + 1  # (as the SQL counter: it knows only what was drawn, reseeded, or written)
        for j in job_ids:
            if j not in self.jobs or j in self.deleted:
                continue
            handover = self.jobs[j].fence > (epoch if eager else 0)
            if eager:  # a release-2 node in the ring: every fence written, above its bump and the counter
                self.jobs[j] = replace(self.jobs[j], fence=max(self.jobs[j].fence + 1, epoch), owner=node)
                self.epoch = max(self.epoch, self.jobs[j].fence)
            elif self._open(j):
                self._write_fence(j, epoch, node)
            job = self.jobs[j]
            redeliver, buffered = self._settle_lost(j, node, live, now)
            # (the definition as store/codec.OWNER_COLS reads it: no bookkeeping times, no stored owner)
            read = replace(job, owner=None, created_at=None, updated_at=None)
            out.append(Takeover(job=read, fence=job.fence if eager else epoch, last_tick=self._last_tick(j), handover=handover,
                                redeliver=tuple(redeliver), buffered=tuple(buffered)))
        return out

    def _settle_lost(self, j: str, node: str, live: Liveness, now: datetime) -> tuple[list[Redelivery], list[Redelivery]]:
        """store/executions._settle_lost: the open rows of ``j`` under an older fence than the job's."""
        job = self.jobs[j]
        redeliver: list[Redelivery] = []
        buffered: list[Redelivery] = []
        for e in sorted(self._open(j), key=lambda e: e.scheduled_at):
            if e.fence >= job.fence:
                continue
            if e.state == ExecutionState.BUFFERED:  # never sent: this owner's queue now
                self.rows[e.id] = replace(e, fence=job.fence, node=node, claimer=live.claimer or None)
                buffered.append(Redelivery(id=e.id, scheduled_at=e.scheduled_at, kind=e.kind, attempts=e.attempts))
                continue
            if self._in_flight(e, live, now, recent=False):
                continue
            if self._again(job, e, now):
                self.rows[e.id] = replace(e, fence=job.fence, node=node, claimer=live.claimer or None,
                                          redelivered=True, state=ExecutionState.CLAIMED)
                redeliver.append(Redelivery(id=e.id, scheduled_at=e.scheduled_at, kind=e.kind, attempts=e.attempts))
            else:
                self.rows[e.id] = replace(e, state=ExecutionState.ABANDONED, finished_at=now,
                                          error=f"owner {e.node} lost before recording an outcome; not re-sent")
        return redeliver, buffered

    async def reseed_epochs(self) -> None:
        self.epoch = max(self.epoch, *(j.fence for j in self.jobs.values()), 0)

    def _write_fence(self, job_id: str, fence: int, node: str) -> None:
        """store/executions.write_fences: an owner's first write for a job gives it the owner's epoch (upwards only)."""
        job = self.jobs.get(job_id)
        if job is not None and job_id not in self.deleted and job.fence < fence:
            self.jobs[job_id] = replace(job, fence=fence, owner=node)

    # ---- Claims ------------------------------------------------------------------------

    async def claim(self, node: str, claims: Sequence[Claim], live: Liveness | None = None) -> Claimed:
        now = ms(self.now())
        got = Claimed(won=set(), taken=set(), overlapped=set())
        lost: set[str] = set()
        for c in claims:
            key = (c.job_id, ms(c.scheduled_at))
            if self.by_tick.get(key) == c.id:
                got.won.add(c.id)  # claimed already (a statement run again): it is ours
                continue
            self._write_fence(c.job_id, c.fence, node)
            job = self.jobs.get(c.job_id)
            if job is None or c.job_id in self.deleted or job.fence != c.fence or \
                    (job.paused and c.kind != ExecutionKind.MANUAL):
                continue  # refused: the fence moved on, or the job was paused or deleted
            if key in self.by_tick:
                if not job.paused:
                    got.taken.add(c.id)  # the tick simply has its row already
                    row = self.rows[self.by_tick[key]]
                    if (live is not None and row.state in OPEN_STATES and row.fence < c.fence
                            and row.claimer not in (live.claimer, *live.others)):
                        lost.add(c.job_id)  # a deposed owner's row, opened after the takeover read
                continue
            busy = (live is not None and (c.forbid or c.buffer) and c.state == ExecutionState.CLAIMED and
                    any(self._in_flight(e, live, now, recent=True) for e in self._in_flight_rows(c.job_id)))
            skip = busy and c.forbid
            e = Execution(id=c.id, job_id=c.job_id, scheduled_at=key[1], fence=c.fence, node=node,
                          claimer=live.claimer if live is not None and live.claimer else None,
                          kind=ExecutionKind.OVERLAP if skip else c.kind,
                          state=ExecutionState.SKIPPED if skip else ExecutionState.BUFFERED if busy else c.state,
                          missed_count=1 if skip else c.missed_count,
                          missed_from=key[1] if skip else (ms(c.missed_from) if c.missed_from else None),
                          error=OVERLAP_REASON if skip else c.error, claimed_at=now,
                          finished_at=None if c.state in (ExecutionState.CLAIMED, ExecutionState.BUFFERED) and not skip
                          else now)
            self.rows[c.id] = e
            self.by_tick[key] = c.id
            got.won.add(c.id)
            if skip:
                got.overlapped.add(c.id)
                continue
            if busy:
                got.buffered.add(c.id)
            if c.counted:  # (a run buffered by the guard is a run: it goes later)
                self.jobs[c.job_id] = replace(job, runs=job.runs + 1)
                job = self.jobs[c.job_id]
        for jid in sorted(lost):
            redeliver, requeue = self._settle_lost(jid, node, live or Liveness(claimer=""), now)
            if redeliver:
                got.redeliver[jid] = redeliver
            if requeue:
                got.requeue[jid] = requeue
        return got

    async def gap_anchors(self, job_ids: Sequence[str]) -> dict[str, tuple[int, datetime | None]]:
        return {j: (self.jobs[j].fence, self._last_tick(j)) for j in job_ids
                if j in self.jobs and (j in self.deleted or self.jobs[j].paused)}

    async def refused(self, node: str, claims: Sequence[Claim]) -> set[str]:
        """store/executions.refused: an instant due before its job was paused or deleted, under the claimer's fence
        still, gets its row (a run: missed)."""
        from node.store.executions import REFUSED_REASON

        now, out = ms(self.now()), set()
        for c in claims:
            if c.kind not in (ExecutionKind.MANUAL, ExecutionKind.BACKFILL):
                self._write_fence(c.job_id, c.fence, node)
            job, key = self.jobs.get(c.job_id), (c.job_id, ms(c.scheduled_at))
            if c.kind in (ExecutionKind.MANUAL, ExecutionKind.BACKFILL) or job is None or job.fence != c.fence \
                    or not (job.paused or c.job_id in self.deleted):
                continue
            then = [h for h in self.history.get(c.job_id, []) if h["valid_from"] < key[1]]
            if not then or then[-1]["paused"] or then[-1]["deleted"]:
                continue
            if key not in self.by_tick:
                run = c.state in (ExecutionState.CLAIMED, ExecutionState.BUFFERED)
                self.rows[c.id] = Execution(
                    id=c.id, job_id=c.job_id, scheduled_at=key[1], fence=c.fence, node=node,
                    kind=ExecutionKind.MISFIRE if run else c.kind, state=ExecutionState.MISSED if run else c.state,
                    missed_count=1 if run else c.missed_count, missed_from=key[1] if run else c.missed_from,
                    error=REFUSED_REASON if run else c.error, claimed_at=now, finished_at=now)
                self.by_tick[key] = c.id
            if self.by_tick[key] == c.id:
                out.add(c.id)
        return out

    async def dequeue(self, execution_id: str, fence: int) -> bool:
        e = self.rows.get(execution_id)
        if e is None or e.state != ExecutionState.BUFFERED or e.fence != fence:
            return False
        self.rows[execution_id] = replace(e, state=ExecutionState.CLAIMED, claimed_at=ms(self.now()))
        return True

    async def in_flight(self, job_id: str, live: Liveness) -> list[tuple[str, str, str | None]]:
        elsewhere = Liveness(claimer=live.claimer, others=live.others)
        now = ms(self.now())
        return [(e.id, e.node, e.claimer) for e in self._in_flight_rows(job_id)
                if self._in_flight(e, elsewhere, now, recent=True)]

    async def complete(self, job_id: str, fence: int, at: datetime, *, version: int | None = None) -> int | None:
        job = self.jobs.get(job_id)
        if job is None or job.fence > fence or job.completed_at is not None or job_id in self.deleted \
                or (version is not None and job.version != version):
            return None
        at = max(ms(at), job.updated_at or at)
        job = self.jobs[job_id] = replace(job, completed_at=at, version=job.version + 1, updated_at=at, fence=fence)
        self._history(job, at)
        return job.version

    async def claim_run_now(self, job_id: str, node: str, execution_id: str, at: datetime, *,
                            forbid_overlap: bool = False, claimer: str | None = None) -> int:
        at = ms(at)
        if at.microsecond == 0:
            at = at + timedelta(milliseconds=1)
        job = self.jobs.get(job_id)
        if job is None or job_id in self.deleted:
            raise NotFound(job_id)
        if forbid_overlap and self._open(job_id):
            raise RunInFlight("a run of this job is still in flight (concurrencyPolicy forbid)")
        for k in range(5):
            key = (job_id, at + timedelta(milliseconds=k))
            if key not in self.by_tick:
                self.rows[execution_id] = Execution(id=execution_id, job_id=job_id, scheduled_at=key[1],
                                                    kind=ExecutionKind.MANUAL, state=ExecutionState.CLAIMED,
                                                    fence=job.fence, node=node, claimer=claimer,
                                                    claimed_at=ms(self.now()))
                self.by_tick[key] = execution_id
                return job.fence
        raise RuntimeError("could not find a free instant for the run")

    async def existing(self, execution_ids: Sequence[str]) -> set[str]:
        return {i for i in execution_ids if i in self.rows}

    async def orphans(self, gone: Sequence[str], fences: Mapping[str, int], node: str, claimer: str
                      ) -> dict[str, list[Redelivery]]:
        now = ms(self.now())
        out: dict[str, list[Redelivery]] = {}
        for j, fence in fences.items():
            if self.jobs.get(j) is None:
                continue
            for e in sorted(self._in_flight_rows(j), key=lambda e: e.scheduled_at):
                if e.claimer not in gone:
                    continue
                self._write_fence(j, fence, node)
                job = self.jobs[j]
                if job.fence != fence:
                    break  # a newer owner's: its rows to settle
                if self._again(job, e, now):
                    self.rows[e.id] = replace(e, fence=job.fence, node=node, claimer=claimer, redelivered=True,
                                              state=ExecutionState.CLAIMED)
                    out.setdefault(j, []).append(Redelivery(id=e.id, scheduled_at=e.scheduled_at, kind=e.kind,
                                                            attempts=e.attempts))
                else:
                    self.rows[e.id] = replace(e, state=ExecutionState.ABANDONED, finished_at=now,
                                              error=f"{e.node} lost before recording an outcome; not re-sent")
        return out

    # ---- OutcomeSink -------------------------------------------------------------------

    async def record(self, executions: Iterable[Execution]) -> None:
        for e in executions:
            key = (e.job_id, ms(e.scheduled_at))
            rid = e.id if e.id in self.rows else self.by_tick.get(key)
            if rid is None:
                self.rows[e.id] = replace(e, scheduled_at=key[1], claimed_at=ms(self.now()))
                self.by_tick[key] = e.id
                continue
            row = self.rows[rid]
            if row.redelivered and row.fence != e.fence:
                continue  # a lost first owner must not overwrite the redelivery's outcome
            self.rows[rid] = replace(row, state=e.state, attempts=e.attempts, status_code=e.status_code,
                                     duration_ms=e.duration_ms, lateness_ms=e.lateness_ms, error=e.error,
                                     response_excerpt=e.response_excerpt,
                                     started_at=e.started_at or row.started_at, finished_at=e.finished_at)

    # ---- LedgerSource ------------------------------------------------------------------

    async def ledger_inputs(self, job_ids: Sequence[str], start: datetime, end: datetime
                            ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[Execution]],
                                       dict[str, datetime | None]]:
        history = {j: [h for h in self.history.get(j, []) if h["valid_from"] < end] for j in job_ids}
        rows = {j: [e for e in self.rows.values() if e.job_id == j and e.scheduled_at >= start
                    and (e.missed_from or e.scheduled_at) < end] for j in job_ids}
        return history, rows, {}

    # ---- the rules ---------------------------------------------------------------------

    def _open(self, job_id: str) -> list[Execution]:
        return [e for e in self.rows.values() if e.job_id == job_id and e.state in OPEN_STATES]

    def _in_flight_rows(self, job_id: str) -> list[Execution]:
        return [e for e in self.rows.values() if e.job_id == job_id and e.state in IN_FLIGHT_STATES]

    def _last_tick(self, job_id: str) -> datetime | None:
        ticks = [e.scheduled_at for e in self.rows.values() if e.job_id == job_id and e.kind not in UNSCHEDULED_KINDS]
        return max(ticks, default=None)

    @staticmethod
    def _in_flight(e: Execution, live: Liveness, now: datetime, *, recent: bool) -> bool:
        if e.id in live.sending:
            return True
        if e.claimer not in live.others:
            return False
        return e.state == ExecutionState.RUNNING or (recent and e.claimed_at is not None
                                                     and e.claimed_at >= now - RECENT_CLAIM)

    @staticmethod
    def _again(job: Job, e: Execution, now: datetime) -> bool:
        return job.delivery is Delivery.AT_LEAST_ONCE and \
            e.scheduled_at >= now - timedelta(seconds=job.misfire_grace_seconds)

    # ---- for the tests -----------------------------------------------------------------

    def executions(self, job_id: str | None = None) -> list[Execution]:
        return sorted((e for e in self.rows.values() if job_id is None or e.job_id == job_id),
                      key=lambda e: (e.job_id, e.scheduled_at))
