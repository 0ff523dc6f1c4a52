"""Which jobs this node owns, and the locks it holds: an explicit state machine per job.

A job moves through these states on this node::

    UNOWNED ──ring says me──▶ ACQUIRING ──lock got──▶ TAKING_OVER ──fence drawn───▶ OWNED
       ▲                          │ held by a live peer                                │ ring moved,
       │                          ▼ (retried every pass; reported when stuck)          │ paused, deleted
       └──────── lock deleted ◀── RELEASING ◀── claims sent, runs finished ◀──────────┘

Two facts are kept apart, because they drift apart under failures: the jobs this node *owns*
(it claims their ticks) and the locks it *holds* in Redis. Every pass reconciles them: a lock
held for a job not owned (a release that failed, a takeover that found the job deleted, a drop
after a lapse) is released, with retry, until Redis confirms it gone. Nothing is ever released
"quietly": a lock a live node keeps by mistake is a job nobody can fire.

Edits reach the owner: each pass compares the owned definition's version with the catalogue's
and reloads what is stale (ordered by version, retried when MariaDB is away), whatever else
changed in the same pass.

I/O goes through small Protocols (``LockService``, ``Takeovers``, ``Definitions``,
``DefinitionHistory``, ``Lease``, ``JobIndex``, ``Hooks``) so the state machine runs against
in-memory fakes in a hypothesis stateful test as well as against Redis and MariaDB.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar, overload

import structlog

from .. import metrics
from ..aio import raise_if_cancelling
from ..batching import TAKEOVER_JOBS, chunks
from ..cluster.ring import Ring
from ..model.calendars import Calendar
from ..model.errors import StoreUnavailable
from ..model.executions import Claim, ExecutionKind, ExecutionState, Liveness, Redelivery, Takeover, new_execution_id
from ..model.jobs import Job, JobSummary, StoredJob, pack_job, secret_values, unpack_job
from ..model.timetable import Timetable
from . import planning
from .ledger import missed_in_gap

log = structlog.get_logger("ownership")
T = TypeVar("T")

PAUSED_WHILE_LOST = "due before the job was paused, never claimed (its owner was lost, or its claim was held up); not run"
DELETED_WHILE_LOST = "due before the job was deleted, never claimed (its owner was lost, or its claim was held up); not run"
CLOSE_JOBS = 500  # paused jobs whose gap a pass records, at most
EDIT_REPLAN = timedelta(minutes=5)  # a takeover re-plans from an edit this recent (see _own)
BEHIND_LIMIT = 5.0  # seconds a due job waits for its newer definition's reload before it is planned as held
OWN_BETWEEN_YIELDS = 250  # a takeover's jobs made owned between two looks at the loop
UNHELD_RETRY = 1.0  # seconds between a streamed takeover's tries of the jobs whose locks were still held


class JobState(StrEnum):
    UNOWNED = "unowned"
    ACQUIRING = "acquiring"  # asking Redis for the lock
    TAKING_OVER = "taking_over"  # lock held; drawing the fence, reading the job from MariaDB
    OWNED = "owned"  # claiming and sending its ticks
    RELEASING = "releasing"  # no longer ours: finishing what was claimed, then deleting the lock


class LockService(Protocol):
    async def acquire(self, job_ids: Sequence[str]) -> list[str]: ...
    async def set_fences(self, fences: dict[str, int]) -> None: ...
    async def release(self, job_ids: Sequence[str]) -> int: ...
    async def holders(self, job_ids: Sequence[str]) -> dict[str, str | None]: ...
    async def held_by_me(self) -> list[str]: ...


class Takeovers(Protocol):
    """Draws fences and reads what a new owner needs; records a paused job's gap (store/executions.py)."""

    async def take_over(self, job_ids: Sequence[str], node: str, live: Liveness | None = None, *,
                        eager: bool = False) -> list[Takeover]: ...
    async def reseed_epochs(self) -> None: ...
    async def gap_anchors(self, job_ids: Sequence[str]) -> dict[str, tuple[int, datetime | None]]: ...
    async def refused(self, node: str, claims: Sequence[Claim]) -> set[str]: ...


class Definitions(Protocol):
    """Reads job definitions (store/jobs.py)."""

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]: ...


class DefinitionHistory(Protocol):
    """Reads every definition a job has had (store/history.py)."""

    async def job_history(self, job_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]: ...


class Lease(Protocol):
    """This node's membership: the ring it sees and whether its heartbeat lease is valid."""

    @property
    def ring(self) -> Ring: ...
    @property
    def epoch(self) -> int: ...
    @property
    def handover_ok(self) -> bool:
        """Every member hands over with runs in flight (none is a release-2 node that would abandon or
        re-send them): a release need not wait for this node's runs."""
        ...
    def fresh(self) -> bool: ...


class JobIndex(Protocol):
    """The catalogue: job summaries by id (tombstones included) and the ids changed since last asked."""

    @property
    def jobs(self) -> Mapping[str, JobSummary]: ...

    changed_ids: set[str]
    calendars: dict[str, Calendar]  # exclusion calendars by name
    calendars_seen: int  # bumped whenever they change

    # True when it holds this node's share of the ring focused and nothing else (False: every job, for tools)
    holds_share: bool

    def active_ids(self) -> list[str]: ...
    def active_view(self) -> Collection[str]:
        """The active ids held, live (used only when ``holds_share``)."""
        ...
    def version_of(self, job_id: str) -> int | None:
        """The version of a job held (a tombstone's too), without making its summary."""
        ...
    async def sync_calendars(self) -> None: ...
    async def focus(self, ring: Ring, still: Callable[[], bool] = ...,
                    each: Callable[[list[JobSummary]], Coroutine[Any, Any, None]] | None = None) -> bool:
        """Hold this node's share of the ring (the jobs whose point the ring gives it); True when all read.
        ``each`` is given each slice's summaries as they are held."""
        ...


class Handle(Protocol):
    """A timer that may be cancelled (asyncio.TimerHandle)."""

    def cancel(self) -> None: ...


NO_PENDING: Mapping[str, tuple[Handle, Claim]] = MappingProxyType({})  # read-only: a write to it raises


class _Rare(Generic[T]):
    """An ``Owned`` field most owned jobs never change from its default: kept in the record's side dict (``_more``),
    made on the first write of another value and dropped when every such field is back to its default. A hundred thousand records of 25 slots each cost 224 bytes a job;
    of 8, 96 (issue 22: memory per owned job)."""

    __slots__ = ("default", "name")

    def __init__(self, default: T) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, o: None, owner: type | None = None) -> _Rare[T]: ...
    @overload
    def __get__(self, o: Owned, owner: type | None = None) -> T: ...
    def __get__(self, o: Owned | None, owner: type | None = None) -> T | _Rare[T]:
        if o is None:
            return self
        m = o._more
        return self.default if m is None else m.get(self.name, self.default)

    def __set__(self, o: Owned, value: T) -> None:
        m = o._more
        default = value is self.default or (self.default == () and isinstance(value, list | tuple) and not value)
        if m is None:
            if default:
                return
            m = o._more = {}
        if default:
            m.pop(self.name, None)
            if not m:
                o._more = None
        else:
            m[self.name] = value


class SharedInstants:
    """Equal instants as one float object. A float is 32 bytes on the heap, and an owned job holds two (its anchor
    and its wake): jobs on one schedule share both (every ``0 0 * * *`` job's last tick and next one), so 100,000
    of them cost a few floats instead of 6 MB (issue 22, memory per job). At most ``size`` instants are kept
    (cleared when full: then new records share among themselves again); a job's own instant is never changed."""

    __slots__ = ("_kept", "size")

    def __init__(self, size: int = 4096) -> None:
        self._kept: dict[float, float] = {}
        self.size = size

    def __call__(self, x: float) -> float:
        kept = self._kept
        y = kept.get(x)
        if y is None:
            if len(kept) >= self.size:
                kept.clear()
            kept[x] = y = x
        return y


shared_instant = SharedInstants()


class Owned:
    """What this node holds for a job it owns. Eight slots a job; the fields most jobs never change from their
    defaults live in ``_more`` (a dict made on first use, dropped once they are all back: ``_Rare``)."""

    __slots__ = ("id", "definition", "version", "timetable", "fence", "_anchor", "wake", "_more")

    def __init__(self, *, id: str, definition: Job | bytes, version: int, timetable: Timetable, fence: int,
                 anchor: datetime, wake: float = 0.0, **rare: Any) -> None:
        self.id = id
        self.definition: Job | bytes = definition  # packed (model/jobs.pack_job) while its next instant is far away
        self.version = version  # the definition's (read without unpacking it)
        self.timetable = timetable  # the job's instants (its schedules, bounds, calendars, jitter)
        self.fence = fence
        self.anchor = anchor  # (a float: 24 bytes where a datetime is 48)
        self.wake = wake  # (Scheduler._push sets it, sharing a far one)
        self._more: dict[str, Any] | None = None
        for k, v in rare.items():
            if not isinstance(getattr(Owned, k, None), _Rare):
                raise TypeError(f"Owned has no field {k}")
            setattr(self, k, v)

    @property
    def anchor(self) -> datetime:
        """Ticks strictly after this are due; the last scheduled tick claimed."""
        return datetime.fromtimestamp(self._anchor, UTC)

    @anchor.setter
    def anchor(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("an anchor is an aware datetime (a naive one would be read as local time)")
        self._anchor = shared_instant(at.timestamp())

    @staticmethod
    def planned_past(owned: Iterable[Owned], at: datetime) -> list[str]:
        """The ids of the records anchored at or after ``at`` and not being released: the tick audit's look at
        every owned job, once a minute (200,000 of them: one comparison each, ``at`` read once)."""
        t = at.timestamp()
        return [o.id for o in owned if o._anchor >= t and not o.releasing]

    calendars = _Rare[tuple[str, ...]](())  # the calendars the definition names (read without unpacking it)
    calendars_seen = _Rare(0)  # the catalogue's calendars_seen its timetable was built with (when it names any)
    inflight = _Rare(0)
    claiming = _Rare(0)  # claim statements under way: a release waits for them
    pending: _Rare[Mapping[str, tuple[Handle, Claim]]] = _Rare(NO_PENDING)  # claimed, to send (``pend``/``unpend``)
    queue: _Rare[Sequence[Claim]] = _Rare(())  # buffered ticks, in order, waiting for the run in flight to end
    polling = _Rare(False)  # the queue waits for a run in flight on another node: asked about every second
    unconfirmed: _Rare[Sequence[Claim]] = _Rare(())  # claimed by a statement that failed: maybe inserted
    extra: _Rare[Sequence[Claim]] = _Rare(())  # rows to claim with the next plan (missed before an edit)
    _secrets: _Rare[list[str] | None] = _Rare(None)  # the job's own secret values (masked in what targets echo)
    releasing = _Rare(False)
    completing = _Rare(False)  # its completion is being written (it can never fire again)
    complete_at: _Rare[datetime | None] = _Rare(None)  # it can never fire again, once its buffered ticks and runs end
    runs = _Rare(0)  # scheduled runs counted against max_runs (jobs.runs, plus the ones claimed since)
    recorded_running = _Rare(False)  # releasing: the runs in flight have their running rows written
    recording = _Rare(False)
    reloading = _Rare(False)
    generation = _Rare(0)  # bumped by a reload: a plan made before it does not move the anchor
    claims_since_retention = _Rare(0)

    @classmethod
    def of(cls, job: Job | StoredJob, *, id: str | None = None, **fields: Any) -> Owned:
        """A record holding ``job`` (``id``: the same id as another structure's string, one object a job); a
        takeover's StoredJob is held packed (the timer makes the Job when it is due)."""
        return cls(id=id or job.id, definition=job.pack() if isinstance(job, StoredJob) else job, version=job.version,
                   calendars=job.exclude_calendars, **fields)

    def __repr__(self) -> str:
        return f"Owned({self.id!r}, version={self.version}, fence={self.fence}, anchor={self.anchor}, more={self._more})"

    @property
    def job(self) -> Job:
        """The definition it fires; a packed one is unpacked here and kept so until ``cool``."""
        d = self.definition
        if isinstance(d, bytes):
            d = self.definition = unpack_job(d)
        return d

    @job.setter
    def job(self, job: Job) -> None:
        self.definition, self.version, self.calendars = job, job.version, job.exclude_calendars
        self._secrets = None

    def peek(self) -> Job:
        """The definition, leaving a packed one packed (a look at every owned job)."""
        d = self.definition
        return unpack_job(d) if isinstance(d, bytes) else d

    def cool(self) -> None:
        """Keep the definition packed: ~100 bytes instead of ~650 (a job whose next instant is minutes away; the
        timer's next look at it unpacks it, in microseconds)."""
        if not isinstance(self.definition, bytes):
            self.definition = pack_job(self.definition)
            self._secrets = None

    @property
    def cold(self) -> bool:
        return isinstance(self.definition, bytes)

    @property
    def secrets(self) -> list[str]:
        if self._secrets is None:
            self._secrets = secret_values(self.job)
        return self._secrets

    def pend(self, claim: Claim, handle: Handle) -> None:
        if not isinstance(self.pending, dict):
            self.pending = {}
        self.pending[claim.id] = (handle, claim)

    def unpend(self, claim_id: str) -> None:
        if isinstance(self.pending, dict):
            self.pending.pop(claim_id, None)
            if not self.pending:
                self.pending = NO_PENDING

    @property
    def busy(self) -> bool:
        # (unconfirmed claims do not hold a release: if they were inserted, they are open rows under
        # our fence, which the next owner's takeover abandons or redelivers)
        return bool(self.pending) or self.inflight > 0 or self.claiming > 0


def missed_rows(job_id: str, fence: int, ranges: Sequence[planning.MissedRange], error: str) -> list[Claim]:
    """One missed row per range of a gap (ledger.missed_in_gap), at its last instant, under ``fence``."""
    return [Claim(id=new_execution_id(), job_id=job_id, scheduled_at=m.last, fence=fence, kind=ExecutionKind.MISFIRE,
                  state=ExecutionState.MISSED, missed_count=m.count, missed_from=m.first, error=error) for m in ranges]


def _absent(ids: Iterable[str], desired: Collection[str]) -> list[str]:
    """The ids not in ``desired`` (the catalogue's view answers for many at once: 200,000 owned jobs, one pass)."""
    missing = getattr(desired, "missing", None)
    return missing(ids) if missing is not None else [j for j in ids if j not in desired]


def _has_gap(t: Takeover) -> bool:
    """The definition in force took force after the last tick claimed (a resume or an edit), or the
    job never had a tick claimed since it was created."""
    since = t.job.active_since
    if since is None:
        return False
    if t.last_tick is None and t.job.version == 1:
        return False  # never changed since its creation, which it took force at: no earlier definition to miss
    return t.last_tick is None or t.last_tick < since


class OwnedJobs(dict[str, Owned]):
    """The jobs this node owns, by id. An owned job's lock is held, so ``held`` keeps only the other locks' ids, and
    a job leaving this dict stays held (its lock is a stray until released): a second set of every owned id cost
    ~40-100 bytes a job (issue 22, memory per job)."""

    def __init__(self) -> None:
        super().__init__()
        self.held = Held(self)

    def __setitem__(self, job_id: str, o: Owned) -> None:
        super().__setitem__(job_id, o)
        self.held.others.discard(job_id)

    def __delitem__(self, job_id: str) -> None:
        super().__delitem__(job_id)
        self.held.others.add(job_id)

    def pop(self, job_id: str, *default: Any) -> Any:
        if job_id in self:
            self.held.others.add(job_id)
        return super().pop(job_id, *default)

    def popitem(self) -> tuple[str, Owned]:
        job_id, o = super().popitem()
        self.held.others.add(job_id)
        return job_id, o

    def clear(self) -> None:
        self.held.others.update(self)
        super().clear()


class Held:
    """The locks this node holds in Redis, as far as it knows: every owned job's, and ``others`` (acquired and not
    owned yet, released and not deleted yet, or found in Redis at start)."""

    __slots__ = ("owned", "others")

    def __init__(self, owned: OwnedJobs) -> None:
        self.owned = owned
        self.others: set[str] = set()

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.owned or job_id in self.others

    def __len__(self) -> int:
        return len(self.owned) + len(self.others)

    def __iter__(self) -> Iterator[str]:
        yield from self.owned
        yield from self.others

    def add(self, job_id: str) -> None:
        if job_id not in self.owned:
            self.others.add(job_id)

    def update(self, job_ids: Iterable[str]) -> None:
        self.others.update(j for j in job_ids if j not in self.owned)

    def difference_update(self, job_ids: Iterable[str]) -> None:
        """Locks released (never an owned job's: an owned job's lock is held as long as it is owned)."""
        self.others.difference_update(job_ids)


class Spawner(Protocol):
    """Starts a task it keeps until it ends (aio.Tasks)."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> Any: ...


class Hooks(Protocol):
    """What the scheduler does when ownership changes (timers, abandoning unsent claims)."""

    def took(self, o: Owned, redeliver: tuple[Redelivery, ...] = (), buffered: tuple[Redelivery, ...] = ()) -> None: ...
    def reloaded(self, o: Owned) -> None: ...
    def abandon_pending(self, o: Owned, reason: str) -> None: ...
    def handover(self, direction: str, job_ids: list[str]) -> None: ...
    def liveness(self) -> Liveness:
        """This process's claimer id, the live peers' and the executions it is sending now."""
        ...
    async def record_running(self, o: Owned) -> None:
        """Write the running rows of the job's runs in flight now (before its lock is released)."""
        ...


class _Unwired:
    """The hooks before the composition root attaches the scheduler: any use is a wiring bug."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"ownership hooks not wired ({name}): web/app.py attaches the scheduler")


class Ownership:
    """The per-job state machine of this node. ``hooks`` (the scheduler) is attached by the composition root
    once both exist: the scheduler drives the ownership, and the ownership tells it what changed."""

    def __init__(self, *, node_id: str, takeovers: Takeovers, definitions: Definitions, history: DefinitionHistory,
                 locks: LockService, lease: Lease, catalogue: JobIndex, member_ttl: float, tasks: Spawner,
                 hooks: Hooks | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.node_id = node_id
        self.takeovers, self.definitions, self.history = takeovers, definitions, history
        self.locks = locks
        self.lease = lease
        self.catalogue = catalogue
        self.hooks: Hooks = hooks or _Unwired()
        self.member_ttl = member_ttl
        self.tasks = tasks
        self.clock = clock
        self.owned = OwnedJobs()
        self.held = self.owned.held  # locks this node holds in Redis, as far as it knows
        self._inventory = True  # learn from Redis which locks name us (at start, after a lapse)
        self._release_warned = -1e9
        self._acquiring: set[str] = set()
        self._taking_over: set[str] = set()
        self.unheld_since: dict[str, float] = {}  # desired, lock held by another node, since when
        self.stuck: dict[str, str | None] = {}  # desired and unheld for > member_ttl: job -> lock holder
        # what the ring gives this node: its own set, or (holding its whole share) the catalogue's active ids, live
        self._desired: Collection[str] = set()
        self._desired_lost = True  # jobs may have left the desired set since the last pass: look for owned to release
        self._releasing: set[str] = set()  # owned jobs being released (the pass finishes them)
        self._closing: set[str] = set()  # paused jobs of this node's share: their gap before the pause to record
        self._stale: set[str] = set()  # owned jobs the catalogue may know a newer version of: reloaded, each pass
        self._unloadable: dict[str, int] = {}  # owned jobs whose newest version could not be loaded: that version
        self._behind_since: dict[str, float] = {}  # due jobs held back for their reload: since when (-1: given up)
        self._check_all = True  # every owned job to be checked so at the next pass (the ring changed)
        self._desired_members: tuple[str, ...] | None = None
        self.stopping = False
        self.drops = 0  # drop_all calls (a lapse): a takeover under way when one came keeps nothing it fetched
        self._mixed = False  # a release-2 node was in the ring since the counter was last moved past every fence
        self._retaken_at = 0.0  # when a streamed takeover last tried its unheld jobs again
        self.handovers_in = 0
        self.handovers_out = 0
        self.wake = asyncio.Event()  # set when another pass is needed soon (a release to retry, a job freed)
        self._calendars_seen = 0

    # ------------------------------------------------------------------ state

    def state(self, job_id: str) -> JobState:
        o = self.owned.get(job_id)
        if o is not None:
            return JobState.RELEASING if o.releasing else JobState.OWNED
        if job_id in self._taking_over:
            return JobState.TAKING_OVER
        if job_id in self._acquiring:
            return JobState.ACQUIRING
        if job_id in self.held:
            return JobState.RELEASING
        return JobState.UNOWNED

    def stray_locks(self) -> set[str]:
        """Locks held for jobs not owned and not being acquired: to release."""
        # Every owned job's lock is held, and so is every lock of a job being taken over (neither owned yet): no
        # stray can exist while there are no more locks than those, which spares set differences over 200k ids at
        # every pass (they were a sixth of a node's time taking a million jobs over with four others).
        if len(self.held.others) <= len(self._taking_over):
            return set()
        return self.held.others - self._acquiring - self._taking_over

    @property
    def needs_pass(self) -> bool:
        # (a paused job still owned here, releasing while a run ends, is not waited for at 5 Hz: its release
        # wakes the loop)
        return bool(self.unheld_since) or any(j not in self.owned for j in self._closing) or bool(self.stray_locks())

    # ------------------------------------------------------------------ one pass

    async def reconcile(self) -> None:
        """One pass: release strays, compute what the ring gives us, release what it took, take the rest."""
        if self._inventory and self.lease.fresh():
            self.held.update(await self.locks.held_by_me())
            self._inventory = False
        await self._release_strays()
        if self.stopping or not self.lease.fresh():
            return
        desired = await self._compute_desired()
        await self._reload_stale()
        # (an owned job was desired when taken: only jobs that left the desired set since can be leaving)
        leaving, self._desired_lost = (_absent(self.owned, desired) if self._desired_lost else []), False
        if leaving:
            log.info("releasing jobs", jobs=len(leaving), sample=leaving[:5], epoch=self.lease.epoch)
            for k, j in enumerate(leaving):
                self.start_release(j)
                if k % 5_000 == 4_999:
                    await asyncio.sleep(0)  # a sixth node joining a million jobs: 30k releases a node
        for j in list(self._releasing):
            o = self.owned.get(j)
            if o is None or not o.releasing:
                self._releasing.discard(j)
            elif o.id in desired:
                # the ring gave it back before its release finished: keep it (lock and fence are ours)
                o.releasing = False
                self._releasing.discard(j)
                self.hooks.reloaded(o)
            else:
                self.maybe_finish_release(o)  # safety net: a release nothing else will finish
        # (owned is a subset of desired here, but for jobs still releasing: equal sizes mean nothing to take)
        want = [j for j in desired if j not in self.owned] if len(desired) > len(self.owned) - len(self._releasing) else []
        now = self.clock()
        for j in [j for j in self.unheld_since if j not in desired or j in self.owned]:
            del self.unheld_since[j]
        if want:
            await self._acquire(want, now)
        await self._release_strays()  # what this pass let go of (jobs with nothing in flight)
        await self._report_stuck(now)
        if self._closing:
            await self._close_gaps()  # (last: MariaDB away, it raises, and the loop backs off)

    async def _compute_desired(self) -> Collection[str]:
        ring = self.lease.ring
        if self.node_id not in ring.members:
            self._desired_members = None
            self._desired = set()
            self._desired_lost = True
            return self._desired
        if self._desired_members != ring.members:
            # the catalogue holds this node's share of the ring: the new share first (read in slices; it stops
            # early if the ring moves on meanwhile, and the next pass goes on from there)
            def same() -> bool:
                return self.lease.ring.members == ring.members

            async def take(summaries: list[JobSummary]) -> None:
                # Each slice of the share is taken over as it comes, while the next is read: a sixth node joining
                # a million jobs spent ~6 s reading its share and ~10 s taking it over, one after the other
                # (BENCHMARKS.md, seventh part). A slice read is within this node's share of ``ring``.
                changed, want = self.catalogue.changed_ids, []
                for s in summaries:
                    # The slice was read while the one before it was taken over: an event since (a pause) is in
                    # the catalogue, not in the slice. Its summary is read when the versions differ.
                    held = s if self.catalogue.version_of(s.id) == s.version else self.catalogue.jobs.get(s.id)
                    if held is None:
                        continue
                    if s.id in changed:  # (looked at here, as below for the rest: else each chunk's reload check
                        if held.paused or held.deleted:  # would go over every job taken so far, ~30x the CPU)
                            self._note_paused(s.id, ring)
                        changed.discard(s.id)
                    if held.active and s.id not in self.owned:
                        want.append(s.id)
                if want and same() and self.lease.fresh() and not self.stopping:
                    await self._acquire(want, self.clock())
                await self._retake_unheld(same)

            # (a focus that raises has moved the catalogue's share already: the next pass must focus again, even
            # if the ring is back to the members of the last whole focus, or the view would read another share)
            self._desired_members = None
            whole = await self.catalogue.focus(ring, same, take)
            for j in self.catalogue.changed_ids:
                self._note_paused(j, ring)
            self.catalogue.changed_ids.clear()  # every job is looked at below
            if whole and self.catalogue.holds_share and same():
                # The catalogue holds the jobs of this node's share of ``ring`` alone (each id's ring point is in
                # it), so the ring's owner of each is this node: what it wants is the catalogue's active jobs, a
                # live view of them (a set of its own cost 40-105 bytes an owned job). Until the ring moves.
                self._desired = self.catalogue.active_view()
            else:
                desired: set[str] = set()
                for part in chunks(self.catalogue.active_ids(), TAKEOVER_JOBS):
                    desired.update(part if self.catalogue.holds_share and same()
                                   else (j for j in part if ring.owner(j) == self.node_id))
                    await asyncio.sleep(0)  # 100k jobs: never starve the heartbeat
                self._desired = desired
            self._desired_lost = True
            self._desired_members = ring.members if whole else None
            self._check_all = True
        elif self.catalogue.changed_ids:
            changed, self.catalogue.changed_ids = self.catalogue.changed_ids, set()
            self._stale.update(j for j in changed if j in self.owned)  # (edits to reload, this pass)
            mine = self._desired
            for j in changed:
                if not isinstance(mine, set):  # (the catalogue's view: it holds the change already)
                    if j not in mine:
                        self._desired_lost = True
                elif (s := self.catalogue.jobs.get(j)) is not None and s.active and ring.owner(j) == self.node_id:
                    mine.add(j)
                elif j in mine:
                    mine.discard(j)
                    self._desired_lost = True
                self._note_paused(j, ring)
        return self._desired

    async def _retake_unheld(self, same: Callable[[], bool]) -> None:
        """During a streamed takeover (a join: the old owners release their jobs a few seconds after the ring
        changed), the jobs of the first slices whose locks were still held are tried again about once a second,
        not only after the whole share (~16 s at a million jobs)."""
        now = self.clock()
        if not self.unheld_since or now - self._retaken_at < UNHELD_RETRY or not same() or not self.lease.fresh():
            return
        self._retaken_at = now
        again = [j for j, since in self.unheld_since.items() if now - since >= UNHELD_RETRY and j not in self.owned
                 and (s := self.catalogue.jobs.get(j)) is not None and s.active]
        if again:
            await self._acquire(again, now)

    def _note_paused(self, j: str, ring: Ring) -> None:
        """A job that changed to paused or was deleted, in this node's share: its gap before the change may have no
        rows (``_close_gaps``, once nobody here owns it: a job paused during its takeover, or whose reload saw the
        pause before a held-up claim came back, is released first). The node that took the change records the gap
        too, once: a MariaDB cut at that moment left a deleted job's instants unaccounted (the 30-minute soak at
        scale); the ring owner's pass retries until it is written."""
        s = self.catalogue.jobs.get(j)
        if s is not None and (s.paused or s.deleted) and ring.owner(j) == self.node_id:
            self._closing.add(j)

    async def _reload_stale(self) -> None:
        """Every owned job whose catalogue version is newer than the definition it fires: reload. When the
        calendars changed, the timetables of the jobs that name one are rebuilt (instants already claimed stay
        claimed; the next plan obeys the new calendars)."""
        if self._calendars_seen != self.catalogue.calendars_seen:
            self._calendars_seen = self.catalogue.calendars_seen
            for k, o in enumerate(list(self.owned.values())):
                if o.calendars and self.owned.get(o.id) is o:  # (read off the record: a packed one stays unread)
                    self.current_timetable(o)
                    self.hooks.reloaded(o)
                if k % 20_000 == 19_999:
                    await asyncio.sleep(0)
        jobs = self.catalogue.jobs
        if self._check_all:  # the ring changed: every owned job is looked at once (not every pass: 200k jobs)
            self._check_all = False
            for k, o in enumerate(list(self.owned.values())):  # (only the behind ones join _stale: a set of every
                if k % 20_000 == 19_999:  # owned id kept its table, ~40 bytes a job, once emptied)
                    await asyncio.sleep(0)
                v = self.catalogue.version_of(o.id)
                if v is not None and v > o.version:
                    self._stale.add(o.id)
        for k, j in enumerate(list(self._stale)):
            if k % 20_000 == 19_999:
                await asyncio.sleep(0)  # after a ring change every owned job is looked at: 200k of them
            stale, s = self.owned.get(j), jobs.get(j)
            if stale is None or s is None or s.version <= stale.version or self._unloadable.get(j) == s.version:
                self._stale.discard(j)  # (a failed read stays: the next pass tries again; not a version unloadable)
                if stale is None:
                    self._unloadable.pop(j, None)
                    self._behind_since.pop(j, None)
            elif not stale.reloading and not stale.releasing:
                stale.reloading = True
                self.tasks.spawn(self._reload(stale))
        if not self._stale:
            self._stale = set()  # (a set keeps its table when emptied: 200k ids after a burst of edits)

    async def _acquire(self, want: list[str], now: float) -> None:
        """Take ``want`` over in chunks, so the first jobs are scheduled while the rest are still being taken over.
        (Fetching the next chunk while this one was made owned bought nothing measurable on this machine: a sixth
        node joining a million jobs is CPU-bound, 17.8 s against 17.1-19.3 s without; BENCHMARKS.md, sixth part.)"""
        taken: list[str] = []
        drops = self.drops  # a lapse meanwhile (drop_all) voids what this call fetched: the locks become strays
        # Fences are epochs written with an owner's first write; a release-2 node in the ring (handover_ok false)
        # bumps them by one at each takeover instead. Meanwhile every takeover writes its fences (eager), and once
        # that node has gone, the counter is moved past every fence before the next takeover writes none.
        eager = not self.lease.handover_ok
        if eager:
            self._mixed = True
        elif self._mixed:
            await self.takeovers.reseed_epochs()
            self._mixed = False

        def still() -> bool:
            return self.lease.fresh() and not self.stopping and self.drops == drops

        for chunk in chunks(want, TAKEOVER_JOBS):
            if not still():
                break  # lapsed meanwhile: the fences we took are void anyway
            takeovers = await self._fetch(list(chunk), now, still, eager)
            if takeovers is None:
                break  # lapsed or stopping while taking it over: the stray pass releases what we got
            if takeovers:
                await self._own_all(takeovers, taken, still)
            await asyncio.sleep(0)
        if taken:
            self.hooks.handover("in", taken)

    async def _fetch(self, chunk: list[str], now: float, still: Callable[[], bool], eager: bool
                     ) -> list[Takeover] | None:
        """One chunk's locks, then its takeover (fences drawn, rows read); None when the lease lapsed meanwhile."""
        self._acquiring.update(chunk)
        try:
            got = await self.locks.acquire(chunk)
        except BaseException:
            # The script may have run and its reply been lost: count the whole chunk as
            # possibly held until a release confirms otherwise (the stray pass cleans up).
            self.held.update(chunk)
            raise
        finally:
            self._acquiring.difference_update(chunk)
        self.held.update(got)
        for j in set(chunk) - set(got):
            self.unheld_since.setdefault(j, now)
        for j in got:
            self.unheld_since.pop(j, None)
        if not got:
            return []
        self._taking_over.update(got)
        try:
            takeovers = await self.takeovers.take_over(got, self.node_id, self.hooks.liveness(), eager=eager)
            if not still():
                return None
            await self.locks.set_fences({t.job.id: t.fence for t in takeovers})
        finally:
            self._taking_over.difference_update(got)
        return takeovers

    async def _own_all(self, takeovers: list[Takeover], taken: list[str], still: Callable[[], bool]) -> None:
        # Gaps first: a gap's missed rows must go out in the job's first claim batch, before any
        # later tick is claimed (a successor reads the last tick claimed: once a later one has a
        # row, a gap left only in memory would be lost with this node).
        gaps = await self._gaps([t for t in takeovers if _has_gap(t)])
        await self._know_calendars([n for t in takeovers for n in t.job.exclude_calendars])
        for k, t in enumerate(takeovers):
            if k % OWN_BETWEEN_YIELDS == OWN_BETWEEN_YIELDS - 1:
                await asyncio.sleep(0)  # (the heartbeat, the timer: 2,000 jobs take ~80 ms)
                if not still():
                    return  # dropped everything meanwhile (a lapse), or stopping: none of these is ours now
            elif k == 0 and not still():
                return  # (the same, during the gap and calendar reads)
            if t.job.id not in gaps and _has_gap(t):
                continue  # its gap could not be read: not owned now; the stray pass frees the lock
            try:
                self._own(t, gaps.get(t.job.id, []))
            except Exception:  # one bad definition (e.g. a zone gone from tzdata) never blocks the rest
                log.exception("could not take a job over", job=t.job.id)
                continue
            if t.handover:  # (not a new job's first owner)
                taken.append(t.job.id)
        # jobs deleted meanwhile are not in takeovers: their locks are strays now
        await self._reload_changed()

    async def _close_gaps(self) -> None:
        """Paused (and deleted) jobs of this node's share that nobody here owns (any more): the instants due between
        the last one claimed and the pause may have no row (the owner was lost before a successor took the job over, or a
        claim held up by an outage was refused by the pause), and a paused job is never taken over to record them;
        the ledger would call them unaccounted for good. They are recorded here as missed, in ranges computed from
        the job's history (one per definition in force, never across the pause). No lock is needed: no claim of a
        paused job's instant can succeed, each range takes one row at its last instant (another node computing the
        same gap from the same last instant writes the same), and a job resumed meanwhile gets nothing here (its
        takeover records its gap). A few hundred jobs a pass: a node starting notes every paused job of its share."""
        # no longer paused (resumed: its takeover records its gap), or gone from the catalogue: nothing to do here
        self._closing = {j for j in self._closing
                         if (s := self.catalogue.jobs.get(j)) is not None and (s.paused or s.deleted)}
        ready = [j for j in self._closing if j not in self.owned][:CLOSE_JOBS]
        if not ready:
            return
        try:
            anchors = await self.takeovers.gap_anchors(ready)
            history = await self.history.job_history(list(anchors)) if anchors else {}
            claims: list[Claim] = []
            for k, (j, (fence, last)) in enumerate(anchors.items()):
                rows = history.get(j) or []
                try:
                    gap = missed_in_gap(rows, last or rows[0]["valid_from"], rows[-1]["valid_from"]) if rows else []
                except Exception:  # (a definition this release cannot read: that job alone is left)
                    log.exception("could not compute the gap of a paused job", job=j)
                    continue
                s = self.catalogue.jobs.get(j)
                claims += missed_rows(j, fence, gap, DELETED_WHILE_LOST if s is not None and s.deleted
                                      else PAUSED_WHILE_LOST)
                if k % 50 == 49:
                    await asyncio.sleep(0)
            written = await self.takeovers.refused(self.node_id, claims) if claims else set()
        except StoreUnavailable as e:
            self.wake.set()
            log.warning("could not record the gap of paused jobs; retrying", jobs=len(ready), error=str(e))
            raise  # (the reconcile loop backs off; the jobs stay to do)
        self._closing.difference_update(ready)
        if written:
            log.info("instants due before a pause, never claimed, recorded as missed", jobs=len(ready),
                     rows=len(written))

    def current_timetable(self, o: Owned) -> None:
        """A job naming calendars plans with them as this node last read them: the claim cycle asks before each
        plan, so a calendar edit never waits for the pass that rebuilds every such job's timetable (a pass
        taking 25,000 jobs over takes seconds; the nemesis with 100,000 jobs loaded saw ticks the calendar
        excluded sent up to 10 s after the edit's reply)."""
        if o.calendars and o.calendars_seen != self.catalogue.calendars_seen:
            o.timetable = o.peek().timetable(self.catalogue.calendars)
            o.calendars_seen = self.catalogue.calendars_seen

    def behind(self, o: Owned) -> bool:
        """The catalogue knows a newer definition than the one ``o`` holds: the claim cycle waits for its reload
        (a claim made with the old one could take an instant a pause or an edit has since ruled out: an owner whose
        claims failed while its job was paused and resumed claimed the instants within the pause, as the job was
        active again)."""
        s = self.catalogue.jobs.get(o.id)
        if s is None or s.version <= o.version or self._unloadable.get(o.id) == s.version:
            self._behind_since.pop(o.id, None)
            return False
        now = self.clock()
        since = self._behind_since.setdefault(o.id, now)
        if now - since > BEHIND_LIMIT:  # (a safety net: a reload that never lands must not stop the job)
            if since > 0:
                log.warning("a job's newer definition has not loaded; planning with the one held", job=o.id,
                            held=o.version, newest=s.version, waited=round(now - since, 1))
                self._behind_since[o.id] = -1.0
            return False
        if o.id not in self._stale:
            self._stale.add(o.id)
            self.wake.set()
        return True

    async def _reload_changed(self) -> None:
        """Edits to owned jobs that arrived during a long pass (a takeover of 20,000 jobs takes seconds): reloaded
        between its chunks, not after it. A skip answered at once must reach the owner within seconds; the
        nemesis with 100,000 jobs loaded saw one sent 3.3 s after its reply. (The ids stay changed: the next
        pass also looks at them for the desired set.)"""
        if self.catalogue.changed_ids or self._stale or self._calendars_seen != self.catalogue.calendars_seen:
            self._stale.update(j for j in self.catalogue.changed_ids if j in self.owned)
            await self._reload_stale()

    async def _gaps(self, gaps: list[Takeover]) -> dict[str, list[Claim]]:
        """Instants due after the last tick claimed and before the definition now in force took
        force (the owner was lost, then the job was paused, edited or resumed before a successor
        planned it): missed rows under the definitions of their time, never skipped silently. By job;
        a job missing from the answer could not be read (MariaDB away) and must not be owned yet."""
        if not gaps:
            return {}
        try:
            history = await self.history.job_history([t.job.id for t in gaps])
        except StoreUnavailable as e:
            log.warning("could not read job history to record a gap's missed ticks; taking over later",
                        jobs=len(gaps), error=str(e))
            return {}
        out: dict[str, list[Claim]] = {}
        for t in gaps:
            rows = history.get(t.job.id) or []
            if not rows or t.job.active_since is None:
                out[t.job.id] = []
                continue
            start = t.last_tick or rows[0]["valid_from"]
            out[t.job.id] = missed_rows(t.job.id, t.fence, missed_in_gap(rows, start, t.job.active_since),
                                        "due while its owner was lost, before the job was changed; not run")
            await asyncio.sleep(0)
        return out

    def _own(self, t: Takeover, gap: list[Claim]) -> None:
        # (the takeover read the definition without its bookkeeping times and stored owner: store/codec.OWNER_COLS;
        # the id is the catalogue's own string: the takeover hands back the ids it was given, one object a job)
        job, known = t.job, self.catalogue.version_of(t.job.id)
        last, since = t.last_tick, t.job.active_since
        if last is not None and since is not None and since < last <= since + EDIT_REPLAN:
            # The schedule changed shortly before the last tick claimed: that tick (and any
            # before it) may be the old definition's. Plan the new definition from the edit;
            # instants that already have a row come back as "taken", not as a lost fence.
            anchor = since
        else:
            anchors = [a for a in (last, since) if a is not None]
            anchor = max(anchors) if anchors else datetime.now(UTC)
        o = Owned.of(job, timetable=job.timetable(self.catalogue.calendars),
                     fence=t.fence, anchor=anchor, extra=gap, runs=job.runs)
        if o.calendars:
            o.calendars_seen = self.catalogue.calendars_seen
        self.owned[o.id] = o
        if known is not None and known > job.version:
            self._stale.add(job.id)  # (edited after the takeover read it: reloaded at the next pass)
        if t.handover:
            self.handovers_in += 1
            metrics.HANDOVERS.labels("in").inc()
        self.hooks.took(o, t.redeliver, t.buffered)

    async def _know_calendars(self, names: Sequence[str]) -> None:
        """A job naming a calendar this node has not read yet (created a moment before it, its event still on the
        way) would fire an instant the calendar excludes: read the calendars first."""
        if any(n not in self.catalogue.calendars for n in names):
            try:
                await self.catalogue.sync_calendars()
            except StoreUnavailable:
                log.warning("could not read the calendars a job names; its next re-sync will")

    async def _reload(self, o: Owned) -> None:
        """An owned job changed (edit): load its new definition, keep the fence. A failed read
        leaves ``reloading`` false, so the next pass tries again. A version that cannot be loaded (a definition
        this release cannot read, a time zone gone) is not tried again, and the job fires as it was until a newer
        one comes (``behind`` no longer holds it back)."""
        version = self.catalogue.jobs.get(o.id)
        try:
            await self._reload_one(o)
        except Exception:
            raise_if_cancelling()
            o.reloading = False
            if version is not None:
                self._unloadable[o.id] = version.version
            log.exception("could not load a job's new definition; it fires as it was until it is edited again",
                          job=o.id, version=version.version if version is not None else None)

    async def _reload_one(self, o: Owned) -> None:
        try:
            jobs = await self.definitions.get_many([o.id])
        except StoreUnavailable:
            self.wake.set()
            return
        finally:
            o.reloading = False
        if self.owned.get(o.id) is not o:
            return
        if not jobs:
            return  # deleted: the catalogue's tombstone releases it
        job = jobs[0]
        if job.version <= o.version:
            return  # an older read than what we have (reloads are ordered by version)
        if job.fence > o.fence:  # (lower: our epoch is not written yet, it goes with our first write)
            self.drop(o, "fence moved on while reloading")
            return
        await self._know_calendars(job.exclude_calendars)
        if self.owned.get(o.id) is not o or job.version <= o.version:
            return  # (or a later reload came first while the calendars were read)
        schedule_changed = job.active_since != o.job.active_since
        gap: list[Claim] = []
        if schedule_changed and job.active_since is not None and job.active_since > o.anchor \
                and (job.version > o.version + 1 or planning.missed_between(o.peek().timetable(), o.anchor,
                                                                              job.active_since)):
            # The edit took force after the last instant claimed (MariaDB was away, or the owner was catching up):
            # the instants due up to the edit were not run. They are recorded as missed, never skipped silently,
            # under the definitions then in force, read from the job's history: a pause (and resume) this owner
            # saw only part of, or not at all, while its claims failed, is never crossed (the instants before it
            # missed, none within it). (Read when the held timetable has instants in the gap, or when versions
            # came between: one this owner never loaded may have had some. Asked without the calendars: an instant
            # one excluded needs its row too, and the soak found a gap that a calendar excluded whole left bare.)
            if o.claiming:
                self.wake.set()
                return  # (a claim under way: the gap starts after what it takes; the next pass reloads)
            try:
                history = (await self.history.job_history([o.id])).get(o.id) or []
            except StoreUnavailable:
                self.wake.set()
                return  # (the next pass reloads again)
            if self.owned.get(o.id) is not o or job.version <= o.version:
                return  # (another reload came first)
            # (from the anchor as it is now; no claim came back meanwhile: none was under way)
            gap = missed_rows(o.id, o.fence, missed_in_gap(history, o.anchor, job.active_since),
                              "due before an edit took force, not claimed in time")
        o.job = replace(job, id=o.id, created_at=None, updated_at=None, owner=None)
        o.timetable = job.timetable(self.catalogue.calendars)
        o.calendars_seen = self.catalogue.calendars_seen if o.calendars else 0
        o.runs = max(o.runs, job.runs)
        o.completing, o.complete_at = False, None
        if schedule_changed and job.active_since is not None:
            if gap:
                o.extra = [*o.extra, *gap]
            # The new definition is in force from the edit on: its instants after the edit are
            # planned (late ones by misfire policy); instants already claimed are kept as claimed.
            o.anchor = job.active_since
            o.generation += 1
        self.hooks.reloaded(o)
        s = self.catalogue.jobs.get(o.id)
        if s is not None and s.version > o.version:
            self.wake.set()  # edited again meanwhile

    # ------------------------------------------------------------------ leaving

    def start_release(self, job_id: str) -> None:
        o = self.owned.get(job_id)
        if o is None or o.releasing:
            return
        o.releasing = True
        self._releasing.add(job_id)
        o.recorded_running = False  # (runs may have started since an earlier release was given back)
        self.maybe_finish_release(o)

    def maybe_finish_release(self, o: Owned) -> None:
        """A releasing job whose claims are sent stops being owned; its lock is then a stray, released by
        the next pass (at once: the pass is woken). Runs still in flight do not hold it (a slow target
        must not cost the job its next ticks): their running rows are written first, so the next owner
        sees them in flight on a live claimer (forbid skips meanwhile) and leaves them to this node,
        which records their outcomes under its old fence. Only with a release-2 node in the ring does the
        release wait for them, as it did then (that node would abandon or re-send them)."""
        if not o.releasing or o.pending or o.claiming or self.owned.get(o.id) is not o:
            return
        if o.inflight:
            if not self.lease.handover_ok:
                return
            if not o.recorded_running:
                if not o.recording:
                    o.recording = True
                    self.tasks.spawn(self._record_running(o))
                return
        del self.owned[o.id]
        self.handovers_out += 1
        metrics.HANDOVERS.labels("out").inc()
        self.hooks.handover("out", [o.id])
        self.wake.set()

    async def _record_running(self, o: Owned) -> None:
        try:
            await self.hooks.record_running(o)
            o.recorded_running = True
        except Exception as e:  # MariaDB away: keep the lock (nobody can claim meanwhile); retried
            log.warning("could not record runs in flight before a release; retrying", job=o.id,
                        error=f"{type(e).__name__}: {e}")
            self.wake.set()
        finally:
            o.recording = False
        self.maybe_finish_release(o)

    def drop(self, o: Owned, reason: str) -> None:
        """Stop owning a job at once (fence lost): never send what it had claimed."""
        if self.owned.get(o.id) is not o:
            return
        del self.owned[o.id]
        self.hooks.abandon_pending(o, reason)
        metrics.FENCE_REJECTIONS.inc()
        log.warning("dropped job", job=o.id, fence=o.fence, reason=reason)
        self.wake.set()

    def drop_all(self, reason: str) -> None:
        """Our heartbeat lapsed: whatever we owned may be someone else's. Send nothing more; the
        locks become strays (compare-and-delete: a lock a peer has taken meanwhile is left alone)."""
        n = len(self.owned)
        for o in list(self.owned.values()):
            self.hooks.abandon_pending(o, reason)
        self.owned.clear()
        self.drops += 1  # (a takeover under way when this came owns nothing it fetched before: _acquire)
        self.unheld_since.clear()
        self.stuck.clear()
        self._desired_members = None
        self._inventory = True
        log.warning("dropped all ownership", jobs=n, reason=reason)
        self.wake.set()

    async def _release_strays(self) -> None:
        stray = list(self.stray_locks())
        if not stray:
            return
        try:
            await self.locks.release(stray)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            metrics.LOCK_RELEASE_FAILURES.inc()
            now = self.clock()
            if now - self._release_warned > 5.0:  # a Redis outage must not flood the log
                self._release_warned = now
                log.warning("lock release failed; retrying", locks=len(stray), error=f"{type(e).__name__}: {e}")
            self.wake.set()
            return
        self.held.difference_update(stray)

    async def release_all(self) -> None:
        """Shutdown: every lock we hold, owned or stray."""
        self.owned.clear()
        await self._release_strays()

    # ------------------------------------------------------------------ reporting

    async def _report_stuck(self, now: float) -> None:
        """Jobs the ring gives us whose lock another node has kept for longer than member_ttl."""
        late = [j for j, since in self.unheld_since.items() if now - since > self.member_ttl]
        new = [j for j in late if j not in self.stuck]
        for j in [j for j in self.stuck if j not in self.unheld_since]:
            del self.stuck[j]
        if new:
            try:
                holders = await self.locks.holders(new[:100])
            except Exception:
                holders = {}
            for j in new:
                self.stuck[j] = holders.get(j)
            log.error("jobs desired but not acquired for longer than member_ttl", jobs=len(late),
                      sample={j: self.stuck[j] for j in new[:5]}, epoch=self.lease.epoch)
        metrics.STUCK.set(len(self.stuck))
