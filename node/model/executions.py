"""The execution vocabulary, written once: states, kinds and fates as enums with their sets, and the records
that carry an execution from its claim to MariaDB, the API and the stream. No I/O.

An **execution** is one row of ``executions``: a claimed run of a job (a tick of its schedule, a catch-up,
a run-now), or a row that accounts for instants not run (a missed range, an overlap). Its ``kind`` says
which, its ``state`` where it is::

    buffered ──the run in flight ends──▶ claimed      (concurrencyPolicy buffer_one / buffer_all)
       └──past the misfire grace, or replaced by a later tick──▶ missed
    claimed ──sent──▶ running ──▶ succeeded | failed | timed_out
       │                 ├──────▶ cancelled (concurrencyPolicy replace: a later tick aborted it)
       │                 └──────▶ abandoned (its claimer was lost before an outcome)
       └──never sent───────────▶ abandoned
    (missed, skipped and excluded rows are written terminal: they record instants that were not run)

The SQL is built from these enums (``store/codec.py``): no state or kind is spelled in a query.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from .jobs import Job, StoredJob


class _Open(StrEnum):
    """A vocabulary that reads a value it does not know as itself (a pseudo-member in no set): rows a
    newer release wrote (a kind or state added later) are read during a rolling upgrade, never refused."""

    @classmethod
    def _missing_(cls, value: object) -> StrEnum | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_, member._value_ = value.upper(), value
        return member


class ExecutionState(_Open):
    BUFFERED = "buffered"  # claimed, waiting for the job's run in flight to end (never sent yet)
    CLAIMED = "claimed"  # inserted under the claimer's fence; not sent yet, or sent moments ago
    RUNNING = "running"  # sent and still going (written when a run lasts, or before a hand-over)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"  # sent, then aborted: a later tick replaced it (concurrencyPolicy replace)
    SKIPPED = "skipped"  # not run by choice: misfirePolicy skip, concurrencyPolicy forbid, a skip request
    MISSED = "missed"  # due and not run: past the misfire grace, coalesced, over a catch-up cap
    EXCLUDED = "excluded"  # not due: an exclusion calendar names the instant
    ABANDONED = "abandoned"  # claimed, outcome unknown: its claimer was lost (never re-sent, at_most_once)


OPEN_STATES = frozenset({ExecutionState.BUFFERED, ExecutionState.CLAIMED, ExecutionState.RUNNING})
IN_FLIGHT_STATES = frozenset({ExecutionState.CLAIMED, ExecutionState.RUNNING})  # a run a buffered tick waits for
TERMINAL_STATES = frozenset(ExecutionState) - OPEN_STATES
NOT_RUN_STATES = frozenset({ExecutionState.SKIPPED, ExecutionState.MISSED, ExecutionState.EXCLUDED})
FAILED_STATES = frozenset({ExecutionState.FAILED, ExecutionState.TIMED_OUT})


class ExecutionKind(_Open):
    TICK = "tick"  # one instant of the schedule, on time
    CATCHUP = "catchup"  # one instant, late but within the misfire grace, run by the misfire policy
    MANUAL = "manual"  # run now: not an instant of the schedule
    BACKFILL = "backfill"  # an instant sent again on request (POST .../backfill): not the tick's own row
    MISFIRE = "misfire"  # a range of instants not run (missed or skipped by the misfire policy)
    OVERLAP = "overlap"  # a range of instants skipped: a run of the job was still in flight (forbid)
    SKIP = "skip"  # a range of instants skipped by request (POST .../skip)
    EXCLUSION = "exclusion"  # a range of instants an exclusion calendar names


ONE_INSTANT_KINDS = frozenset({ExecutionKind.TICK, ExecutionKind.CATCHUP})  # a run of the instant at scheduled_at
RANGE_KINDS = frozenset({ExecutionKind.MISFIRE, ExecutionKind.OVERLAP, ExecutionKind.SKIP,
                         ExecutionKind.EXCLUSION})  # every instant in [missed_from, scheduled_at]
UNSCHEDULED_KINDS = frozenset({ExecutionKind.MANUAL, ExecutionKind.BACKFILL})  # never an instant: never an anchor


class Fate(StrEnum):
    """What became of one scheduled instant: the tick ledger's answer, and planning's for instants not run."""

    DELIVERED = "delivered"  # sent and succeeded
    FAILED = "failed"  # sent, and failed or timed out after its retries
    MISSED = "missed"  # due, not run: past the misfire grace, coalesced into one catch-up run, over the catch-up cap
    SKIPPED = "skipped"  # not run by choice: misfirePolicy skip, concurrencyPolicy forbid, a skip request
    ABANDONED = "abandoned"  # claimed, never sent (the claimer lost its lease; at-most-once delivery)
    CANCELLED = "cancelled"  # sent, then aborted by a later tick (concurrencyPolicy replace)
    EXCLUDED = "excluded"  # not due: outside startAt/endAt, or an exclusion calendar names it
    COMPLETED = "completed"  # not due: the job had completed (maxRuns reached)
    PAUSED = "paused"  # the job was paused: not due
    BUFFERED = "buffered"  # claimed, waiting for the run in flight (buffer_one, buffer_all)
    RUNNING = "running"  # claimed or in flight
    PENDING = "pending"  # no row, and none expected yet (later than now - settle)
    UNACCOUNTED = "unaccounted"  # no row, and one was expected: a bug
    TRIMMED = "trimmed"  # older than the job's oldest execution row: its history was deleted by retention


OVERLAP_REASON = "previous run still in flight (concurrencyPolicy forbid)"
BUFFER_FULL_REASON = "previous run still in flight and a tick already waits (concurrencyPolicy buffer_one)"
BUFFER_LATE_REASON = "waited for the run in flight past the misfire grace; not run"
SKIP_REASON = "skipped by request"
REPLACED_REASON = "replaced by a later tick (concurrencyPolicy replace)"


def new_execution_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    """One execution row, the same record from the store to the API, the pages and the stream."""

    id: str
    job_id: str
    scheduled_at: datetime
    kind: ExecutionKind = ExecutionKind.TICK
    state: ExecutionState
    fence: int
    node: str
    attempts: int = 0
    status_code: int | None = None
    duration_ms: int | None = None
    lateness_ms: int | None = None
    error: str | None = None
    response_excerpt: str | None = None
    missed_count: int = 0
    missed_from: datetime | None = None
    claimed_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    redelivered: bool = False
    claimer: str | None = None  # the claiming process (see Liveness); None: a release-2 node's claim
    instant: datetime | None = None  # a backfill's: the scheduled instant it sends (scheduled_at: when claimed)
    backfill: str | None = None  # the backfill it belongs to

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """An execution row a node wants to insert, fence-checked (see store/executions.py)."""

    id: str
    job_id: str
    scheduled_at: datetime
    fence: int
    kind: ExecutionKind = ExecutionKind.TICK
    state: ExecutionState = ExecutionState.CLAIMED
    missed_count: int = 0
    missed_from: datetime | None = None
    error: str | None = None
    attempts: int = 0  # attempts already made of this execution (a redelivery continues the count)
    forbid: bool = False  # a run of a concurrencyPolicy forbid job: recorded skipped if a run is in flight elsewhere
    buffer: bool = False  # a run of a buffer_one/buffer_all job: inserted buffered if a run is in flight elsewhere
    counted: bool = False  # a run counted against the job's maxRuns (jobs.runs goes up with the claim)
    instant: datetime | None = None  # a backfill's: the instant it sends (X-Cron-Scheduled-At)
    backfill: str | None = None
    # the claimer id its row was claimed under, where it is sent outside the claim cycle (a backfill's, a run-now):
    # once the node's id is another (a lapse), the send is a deposed node's and stops
    claimer: str | None = None

    def execution(self, *, state: ExecutionState, node: str, claimer: str | None = None, attempts: int = 0,
                  status_code: int | None = None, duration_ms: int | None = None, lateness_ms: int | None = None,
                  error: str | None = None, response_excerpt: str | None = None, started_at: datetime | None = None,
                  finished_at: datetime | None = None) -> Execution:
        """The execution this claim became, in ``state``: an outcome to record and to publish."""
        return Execution(id=self.id, job_id=self.job_id, scheduled_at=self.scheduled_at, kind=self.kind, state=state,
                         fence=self.fence, node=node, attempts=attempts, status_code=status_code,
                         duration_ms=duration_ms, lateness_ms=lateness_ms, error=error,
                         response_excerpt=response_excerpt, missed_count=self.missed_count,
                         missed_from=self.missed_from, started_at=started_at, finished_at=finished_at,
                         claimer=claimer, instant=self.instant, backfill=self.backfill)


@dataclass(frozen=True, slots=True, kw_only=True)
class Liveness:
    """What a claim or a takeover must know of runs in flight: the claimer id of this process (new at every
    start and after every lapse), those of the other live members, and the executions it is sending now.
    An open row is in flight exactly while its claimer is a live member's."""

    claimer: str
    others: frozenset[str] = frozenset()
    sending: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """What a claim statement did: ids won, ids whose tick already had another execution's row, and ids
    (of ``forbid`` runs) inserted as overlap rows because a run of their job was in flight elsewhere."""

    won: set[str]
    taken: set[str]
    overlapped: set[str]
    buffered: set[str] = field(default_factory=set)  # (buffer runs) inserted buffered: a run is in flight elsewhere
    # A lost claimer's open row found in a claimed tick's place (a deposed owner's claim that landed after the
    # takeover, before this owner's first write): settled as a takeover settles them, by job.
    redeliver: dict[str, list[Redelivery]] = field(default_factory=dict)
    requeue: dict[str, list[Redelivery]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Redelivery:
    """An execution of an at_least_once job whose claimer was lost before an outcome: the new owner
    sends it again as the same execution, its attempts continuing."""

    id: str
    scheduled_at: datetime
    kind: ExecutionKind
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Takeover:
    """What a new owner reads when it takes a job over: the definition, its fence, the last scheduled
    instant claimed (the anchor it resumes from) and the executions it must send again."""

    job: Job | StoredJob  # (the store reads a StoredJob: the owner makes the Job only when it is due)
    fence: int  # the epoch this owner drew: written to the job with its first write (store/executions.write_fences)
    last_tick: datetime | None
    handover: bool = False  # an owner had written a fence before: a hand-over, not a new job's first owner
    redeliver: tuple[Redelivery, ...] = ()
    buffered: tuple[Redelivery, ...] = ()  # ticks waiting for a run to end (never sent): now this owner's queue
