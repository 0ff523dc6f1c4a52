"""MariaDB: migrations, jobs, fences, claims, executions. All SQL lives here.

The database is the durable truth. Two rules make "never twice" hold:

* a claim inserts the execution row for ``(job_id, scheduled_at)`` only where
  ``jobs.fence`` still equals the claimer's fence, under a UNIQUE key on
  ``(job_id, scheduled_at)``; no claim, no request;
* the fence is bumped here, by ``UPDATE jobs SET fence = fence + 1``, whenever a
  node takes a job over, so a stale owner's claims stop matching.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import secrets
import ssl
import warnings
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiomysql
import pymysql
import structlog

from .. import fastjson, metrics
from ..model.jobs import Job, JobSummary
from ..settings import DatabaseURL

log = structlog.get_logger("store")
T = TypeVar("T")
# "database/table already exists" notes from CREATE ... IF NOT EXISTS are expected.
warnings.filterwarnings("ignore", category=pymysql.Warning)

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """
            CREATE TABLE IF NOT EXISTS jobs (
              id VARCHAR(32) NOT NULL PRIMARY KEY,
              seq BIGINT NOT NULL AUTO_INCREMENT UNIQUE,
              name VARCHAR(200) NOT NULL DEFAULT '',
              schedule VARCHAR(200) NOT NULL,
              time_zone VARCHAR(64) NOT NULL,
              paused TINYINT(1) NOT NULL DEFAULT 0,
              spec LONGTEXT NOT NULL,
              version INT NOT NULL DEFAULT 1,
              fence BIGINT NOT NULL DEFAULT 0,
              owner VARCHAR(200) NULL,
              active_since DATETIME(3) NOT NULL,
              created_at DATETIME(3) NOT NULL,
              updated_at DATETIME(3) NOT NULL,
              deleted_at DATETIME(3) NULL,
              KEY ix_jobs_updated (updated_at),
              KEY ix_jobs_live (deleted_at, seq)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
            """,
            """
            CREATE TABLE IF NOT EXISTS executions (
              id CHAR(32) NOT NULL PRIMARY KEY,
              job_id VARCHAR(32) NOT NULL,
              scheduled_at DATETIME(3) NOT NULL,
              kind VARCHAR(16) NOT NULL DEFAULT 'tick',
              state VARCHAR(16) NOT NULL,
              fence BIGINT NOT NULL,
              node VARCHAR(200) NOT NULL,
              attempts INT NOT NULL DEFAULT 0,
              status_code INT NULL,
              duration_ms INT NULL,
              lateness_ms INT NULL,
              error VARCHAR(1000) NULL,
              response_excerpt TEXT NULL,
              missed_count INT NOT NULL DEFAULT 0,
              missed_from DATETIME(3) NULL,
              claimed_at DATETIME(3) NOT NULL,
              started_at DATETIME(3) NULL,
              finished_at DATETIME(3) NULL,
              UNIQUE KEY uq_executions_tick (job_id, scheduled_at),
              KEY ix_executions_open (state, job_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
            """,
        ],
    ),
]

# What `?q=` searches besides name, id and schedule: the target without userinfo, query or
# fragment, computed by MariaDB from the stored spec. Never the spec itself: a LIKE over header
# values or a URL's password is an oracle for secrets (a reader recovered a key in 121 requests).
MIGRATIONS.append((
    2,
    [
        r"""
        ALTER TABLE jobs ADD COLUMN IF NOT EXISTS search_target VARCHAR(2048) AS (
          REGEXP_REPLACE(REGEXP_REPLACE(JSON_VALUE(spec, '$.uri'), '[?#].*$', ''),
                         '^([A-Za-z][A-Za-z0-9+.-]*://)[^/]*@', '\\1')
        ) VIRTUAL
        """,
    ],
))

# Every definition a job has had, from the instant it took force: the tick ledger lists each
# scheduled instant under the definition in force then (an edit, a pause, a delete start a row).
MIGRATIONS.append((
    3,
    [
        """
        CREATE TABLE IF NOT EXISTS job_history (
          job_id VARCHAR(32) NOT NULL,
          version INT NOT NULL,
          valid_from DATETIME(3) NOT NULL,
          schedule VARCHAR(200) NOT NULL,
          time_zone VARCHAR(64) NOT NULL,
          paused TINYINT(1) NOT NULL,
          deleted TINYINT(1) NOT NULL,
          PRIMARY KEY (job_id, version)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
        """,
        """
        INSERT IGNORE INTO job_history (job_id, version, valid_from, schedule, time_zone, paused, deleted)
        SELECT id, version, created_at, schedule, time_zone, paused, 0 FROM jobs WHERE deleted_at IS NULL
        """,
        # at_least_once: an execution re-sent by a new owner after its first owner was lost
        "ALTER TABLE executions ADD COLUMN IF NOT EXISTS redelivered TINYINT(1) NOT NULL DEFAULT 0",
    ],
))

# Who claimed an execution: the claiming process's claimer id (membership.Membership.claimer, new at every
# start and lapse). An open row whose claimer is a live member's is in flight there: a new owner leaves it
# alone (a hand-over no longer waits for it) and a forbid tick sees it. NULL: claimed by a release-2 node.
MIGRATIONS.append((
    4,
    ["ALTER TABLE executions ADD COLUMN IF NOT EXISTS claimer CHAR(16) NULL"],
))

# Run in the transaction of every change to a job (its new version as a history row).
_HISTORY_SQL = (
    "INSERT IGNORE INTO job_history (job_id, version, valid_from, schedule, time_zone, paused, deleted)"
    " SELECT id, version, COALESCE(deleted_at, updated_at), schedule, time_zone, paused, deleted_at IS NOT NULL"
    " FROM jobs WHERE id IN ({})"
)

OPEN_STATES = ("claimed", "running")
UNSCHEDULED_KINDS = "('manual', 'backfill')"  # executions that are not an instant of the schedule
TERMINAL_STATES = ("succeeded", "failed", "timed_out", "skipped", "missed", "abandoned")

_CONN_ERRORS = (pymysql.err.OperationalError, pymysql.err.InterfaceError, ConnectionError, OSError, asyncio.TimeoutError)
# The server went away, or it is not the primary any more: with several hosts, find the writable one.
_READ_ONLY_CODES = {1290, 1836}  # --read-only is on; "running in read-only mode"
_GONE_CODES = {2003, 2006, 2013, 2055}  # can't connect; server has gone away; lost connection (x2)
FAILOVER_WAIT = 15.0  # seconds an operation waits for a writable host to appear before it is refused
STATEMENT_TIMEOUT = 30.0  # with several hosts: a statement (or transaction) longer than this means a lost host
VERIFY_EVERY = 5.0  # with several hosts: seconds between checks that the host in use is still writable
SEARCH_EVERY = 0.5  # with several hosts: seconds between searches for the writable one
_RETRYING: contextvars.ContextVar[bool] = contextvars.ContextVar("store_retrying", default=False)


def retrying() -> bool:
    """True while a statement runs again after its first run failed on a lost or demoted primary: the
    first run may have committed, so a write that is not idempotent looks for its own result first."""
    return _RETRYING.get()


def _read_only_error(e: BaseException) -> bool:
    return isinstance(e, pymysql.err.OperationalError) and bool(e.args) and e.args[0] in _READ_ONLY_CODES


def _moves_primary(e: BaseException) -> bool:
    if isinstance(e, pymysql.err.OperationalError):
        return _read_only_error(e) or (bool(e.args) and e.args[0] in _GONE_CODES)
    return isinstance(e, pymysql.err.InterfaceError | ConnectionError | OSError | asyncio.TimeoutError)


class StoreUnavailable(Exception):
    """MariaDB cannot be reached right now; callers answer 503 and retry later."""


class NotFound(Exception):
    pass


class VersionConflict(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(f"job is at version {current}")
        self.current = current


class TooManyJobs(Exception):
    pass


class RunInFlight(Exception):
    """A run-now refused by the job's concurrency policy."""


def new_id() -> str:
    return secrets.token_hex(8)


def new_execution_id() -> str:
    return secrets.token_hex(16)


def to_db(dt: datetime) -> datetime:
    """Aware instant -> naive UTC with millisecond precision (DATETIME(3))."""
    dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def from_db(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """An execution row a node wants to insert, fence-checked."""

    id: str
    job_id: str
    scheduled_at: datetime
    fence: int
    kind: str = "tick"  # tick | catchup | manual | misfire | overlap
    state: str = "claimed"
    missed_count: int = 0
    missed_from: datetime | None = None
    error: str | None = None
    attempts: int = 0  # attempts already made of this execution (a redelivery continues the count)
    forbid: bool = False  # a run of a concurrencyPolicy forbid job: recorded skipped if a run is in flight elsewhere


@dataclass(frozen=True, slots=True, kw_only=True)
class Liveness:
    """What a claim or a takeover must know of runs in flight: the claimer id of this process, those of the
    other live members, and the executions this process is sending right now."""

    claimer: str
    others: frozenset[str] = frozenset()
    sending: frozenset[str] = frozenset()


OVERLAP_REASON = "previous run still in flight (concurrencyPolicy forbid)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """What a claim statement did: ids won, ids whose tick already had another execution's row, and ids
    (of ``forbid`` runs) inserted as skipped because a run of their job was in flight elsewhere."""

    won: set[str]
    taken: set[str]
    overlapped: set[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """A state change of a claimed execution, written in batches."""

    id: str
    job_id: str
    scheduled_at: datetime
    fence: int
    state: str
    node: str
    attempts: int = 0
    status_code: int | None = None
    duration_ms: int | None = None
    lateness_ms: int | None = None
    error: str | None = None
    response_excerpt: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    claimer: str | None = None  # written only when the row is new (its claim was lost)


@dataclass(frozen=True, slots=True, kw_only=True)
class Redelivery:
    """An execution of an at_least_once job whose claimer was lost before an outcome: the new owner
    sends it again as the same execution, its attempts continuing."""

    id: str
    scheduled_at: datetime
    kind: str
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Takeover:
    job: Job
    fence: int
    last_tick: datetime | None
    redeliver: tuple[Redelivery, ...] = ()


# An outcome overwrites the row, except a redelivered row, which only its current owner (fence) writes:
# the lost first owner, if it comes back, must not overwrite the redelivery's outcome.
_RECORD_UPDATE = ", ".join(
    f"{col}=IF(redelivered = 1 AND fence <> VALUES(fence), {col}, {new})" for col, new in (
        ("state", "VALUES(state)"), ("attempts", "VALUES(attempts)"), ("status_code", "VALUES(status_code)"),
        ("duration_ms", "VALUES(duration_ms)"), ("lateness_ms", "VALUES(lateness_ms)"), ("error", "VALUES(error)"),
        ("response_excerpt", "VALUES(response_excerpt)"), ("started_at", "COALESCE(VALUES(started_at), started_at)"),
        ("finished_at", "VALUES(finished_at)"),
    )
)


def _ph(n: int) -> str:
    return ",".join(["%s"] * n)


RECENT_CLAIM_SECONDS = 2  # a live claimer's claimed row this young may be in flight (its "running" is held back 1 s)


def _in_flight(live: Liveness, alias: str, *, recent_claims: bool) -> tuple[str, list[Any]]:
    """SQL true for an open row of ``alias`` that is in flight on a live process: another live claimer's
    row in state running (a run sent and still going; a hand-over writes that state before it releases),
    or, with ``recent_claims``, claimed moments ago (a run-now just sent: its running state is held back);
    or an execution this process is sending right now. A live claimer's older claimed row is a claim it
    will not send (left for the next owner): not in flight."""
    parts, args = [], []
    if live.others:
        young = f" OR {alias}.claimed_at >= NOW(3) - INTERVAL {RECENT_CLAIM_SECONDS} SECOND" if recent_claims else ""
        parts.append(f"({alias}.claimer IN ({_ph(len(live.others))}) AND ({alias}.state = 'running'{young}))")
        args += sorted(live.others)
    if live.sending:
        parts.append(f"{alias}.id IN ({_ph(len(live.sending))})")
        args += sorted(live.sending)
    return ("(" + " OR ".join(parts) + ")" if parts else "FALSE"), args


async def _job_exists(cur: aiomysql.Cursor, job_id: str) -> bool:
    await cur.execute("SELECT 1 FROM jobs WHERE id=%s", (job_id,))
    return await cur.fetchone() is not None


class Store:
    def __init__(self, url: DatabaseURL, *, pool_size: int = 10, connect_timeout: float = 3.0) -> None:
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._pool: aiomysql.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()  # dropped pools finishing their statements
        self._scan_failed_at = 0.0  # monotonic time of the last search that found no writable host
        self._verified_at = 0.0  # when the pool's host last answered @@read_only = 0 (several hosts)
        self.available = False
        self.primary: tuple[str, int] | None = None  # the host the pool talks to, once connected
        self.switches = 0  # moves to another host (cronring_database_primary_switches_total)
        self.keep_per_job = 200  # executions kept per job by retention (settings.history_per_job)

    # ---- connection management -------------------------------------------------

    async def _get_pool(self) -> aiomysql.Pool:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._closed:
                raise StoreUnavailable("the store is closed (the node is stopping)")
            if self._pool is None and self.multi_host and \
                    asyncio.get_running_loop().time() - self._scan_failed_at < SEARCH_EVERY:
                # callers queued behind a search that found no writable host: one search is enough
                raise StoreUnavailable("no writable MariaDB host (searched a moment ago)")
            if self._pool is None:
                try:
                    host, port = await self._find_primary()
                    await self._ensure_database(host, port)
                    pool = await asyncio.wait_for(aiomysql.create_pool(
                        host=host, port=port, user=self.url.user,
                        password=self.url.password, db=self.url.database, autocommit=True,
                        minsize=1, maxsize=self.pool_size, pool_recycle=300,
                        connect_timeout=self.connect_timeout, charset="utf8mb4",
                        init_command="SET time_zone='+00:00'", ssl=self._ssl(),
                    ), 2 * self.connect_timeout)  # connect_timeout bounds the TCP connect only
                    await self._migrate(pool)
                    if self.primary is not None and (host, port) != self.primary:
                        self.switches += 1
                        metrics.DATABASE_SWITCHES.inc()
                        log.warning("MariaDB primary changed", primary=f"{host}:{port}", was=self.primary_name)
                    self.primary, self._pool = (host, port), pool
                    self._verified_at = asyncio.get_running_loop().time()
                except _CONN_ERRORS as e:
                    self._scan_failed_at = asyncio.get_running_loop().time()
                    self.available = False
                    raise StoreUnavailable(f"MariaDB unreachable: {e}") from None
        return self._pool

    @property
    def multi_host(self) -> bool:
        return len(self.url.hosts) > 1

    @property
    def primary_name(self) -> str | None:
        return None if self.primary is None else f"{self.primary[0]}:{self.primary[1]}"

    async def _read_only(self, host: str, port: int) -> bool:
        """Whether ``host`` is read-only; raises a connection error when it does not answer in time
        (every step bounded: aiomysql's connect_timeout covers only the TCP connect, not a frozen
        server's greeting)."""
        conn = await asyncio.wait_for(aiomysql.connect(
            host=host, port=port, user=self.url.user, password=self.url.password,
            connect_timeout=self.connect_timeout, ssl=self._ssl()), 2 * self.connect_timeout)
        try:
            async with conn.cursor() as cur:
                await asyncio.wait_for(cur.execute("SELECT @@read_only"), self.connect_timeout)
                (read_only,) = await cur.fetchone()
            return bool(read_only)
        finally:
            conn.close()

    async def _find_primary(self) -> tuple[str, int]:
        """The host to use: the only one, or the one writable host. Every host is asked: two writable
        hosts (an old primary back after a promotion, say) would give two fence sequences, so the
        store refuses to choose until an operator makes one of them read-only."""
        if not self.multi_host:
            return self.url.host, self.url.port
        answers = await asyncio.gather(*(self._read_only(h, p) for h, p in self.url.hosts), return_exceptions=True)
        writable = [h for h, ro in zip(self.url.hosts, answers, strict=True) if ro is False]
        if len(writable) == 1:
            return writable[0]
        if len(writable) > 1:
            names = ", ".join(f"{h}:{p}" for h, p in writable)
            log.error("more than one MariaDB host is writable; refusing to choose", hosts=names)
            raise pymysql.err.OperationalError(2003, f"more than one writable MariaDB host ({names}): make all "
                                                     "but the primary read-only")
        problems = [f"{h}:{p} " + ("read-only" if ro is True else f"unreachable ({ro!r})")
                    for (h, p), ro in zip(self.url.hosts, answers, strict=True)]
        raise pymysql.err.OperationalError(2003, "no writable MariaDB host: " + "; ".join(problems))

    async def _drop(self, pool: Any, error: BaseException) -> None:
        """Stop using ``pool`` (once, whoever sees its host fail first); the next operation finds the
        primary. Statements still running on it finish or fail by themselves; its connections are
        closed as they come back (and cut after a few seconds)."""
        async with self._pool_lock:
            current: Any = self._pool
            if pool is None or current is not pool:
                return
            self._pool = None
            log.warning("MariaDB primary lost; looking for the writable host", primary=self.primary_name,
                        error=f"{type(error).__name__}: {error}")
            task = asyncio.create_task(self._close_pool(pool, 5.0))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _lost_primary(self, pool: aiomysql.Pool, error: BaseException) -> None:
        """A statement on ``pool`` failed in a way that may mean its host is gone or demoted. A lost
        connection on a host that still answers writable is just a lost connection: keep the pool.
        Otherwise drop it and wait — at most FAILOVER_WAIT — for a writable host. Raises
        StoreUnavailable when none appears."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FAILOVER_WAIT
        if self.primary is not None and not _read_only_error(error):
            try:
                if not await self._read_only(*self.primary):
                    return
            except _CONN_ERRORS:
                pass
        await self._drop(pool, error)
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    try:
                        await self._get_pool()
                        return
                    except StoreUnavailable:
                        await asyncio.sleep(SEARCH_EVERY)
        except TimeoutError:
            raise StoreUnavailable(f"no writable MariaDB host within {FAILOVER_WAIT:g} s") from None

    async def _ensure_database(self, host: str, port: int) -> None:
        conn = await asyncio.wait_for(aiomysql.connect(
            host=host, port=port, user=self.url.user, password=self.url.password,
            connect_timeout=self.connect_timeout, autocommit=True, ssl=self._ssl(),
        ), 2 * self.connect_timeout)
        try:
            async with conn.cursor() as cur:
                await cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{self.url.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
        except pymysql.err.OperationalError as e:
            if e.args and e.args[0] in (1044, 1045):  # no privilege: the database must already exist
                return
            raise
        finally:
            conn.close()

    def _ssl(self) -> ssl.SSLContext | None:
        """TLS to MariaDB when the URL asks for it (mysql://...?ssl=true), verified by the system CAs."""
        return ssl.create_default_context() if self.url.ssl else None

    async def _migrate(self, pool: aiomysql.Pool) -> None:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT GET_LOCK(%s, 60)", (f"cronring-migrate-{self.url.database}",))
            try:
                await cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INT PRIMARY KEY, applied_at DATETIME(3) NOT NULL)")
                await cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                (current,) = await cur.fetchone()
                for version, statements in MIGRATIONS:
                    if version <= current:
                        continue
                    for sql in statements:
                        await cur.execute(sql)
                    await cur.execute("INSERT INTO schema_migrations VALUES (%s, NOW(3))", (version,))
                    log.info("migration applied", version=version)
            finally:
                await cur.execute("SELECT RELEASE_LOCK(%s)", (f"cronring-migrate-{self.url.database}",))

    async def start(self) -> None:
        """Connect and migrate; raises StoreUnavailable when MariaDB is down."""
        await self._get_pool()
        self.available = True

    async def close(self, timeout: float = 3.0) -> None:
        """Close the pool; connections still in use after ``timeout`` are closed under their users (a
        query hung on a dead MariaDB must not hold the node's exit: aiomysql waits for them forever)."""
        async with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            await self._close_pool(pool, timeout)
        for task in list(self._closing):
            await task

    @staticmethod
    async def _close_pool(pool: aiomysql.Pool, timeout: float) -> None:
        pool.close()
        try:
            await asyncio.wait_for(pool.wait_closed(), timeout)
        except TimeoutError:
            log.warning("MariaDB connections still in use at close; closing them", in_use=pool.size - pool.freesize)
            pool.terminate()

    async def _run(self, fn: Callable[[aiomysql.Cursor], Awaitable[T]], *, failover: bool = True) -> T:
        """Run ``fn(cursor)`` on a pooled connection, mapping outages to StoreUnavailable.

        With several hosts, a statement that fails because its host went away or turned read-only is
        run again, once, on the new primary (found within FAILOVER_WAIT): a claim, a fence bump or an
        outcome is never assumed done or lost. The second run knows it is one (``retrying()``): a
        write whose first run may have committed checks for its own result first (a claim or a job
        found by its id, an edit or a delete already in place), so none is done twice. Each
        statement is bounded by STATEMENT_TIMEOUT there (a primary cut off without a reset would
        otherwise hold it for the kernel's retransmission time), and the host is asked again
        whether it is writable at most every VERIFY_EVERY seconds. ``failover=False`` (health
        probes): drop a failed host but do not wait for the next one."""
        for attempt in (1, 2):
            pool = await self._get_pool()
            token = _RETRYING.set(True) if attempt == 2 else None
            try:
                async with pool.acquire() as conn:
                    try:
                        async with conn.cursor(aiomysql.DictCursor) as cur:
                            if self.multi_host:
                                async with asyncio.timeout(STATEMENT_TIMEOUT):
                                    await self._verify(cur)
                                    result = await fn(cur)
                            else:
                                result = await fn(cur)
                    except _CONN_ERRORS:
                        conn.close()  # a broken connection must not go back to the pool
                        raise
            except _CONN_ERRORS as e:
                self.available = False
                if attempt == 2 or not self.multi_host or not _moves_primary(e):
                    raise StoreUnavailable(f"MariaDB unavailable: {e}") from None
                if not failover:
                    await self._drop(pool, e)
                    raise StoreUnavailable(f"MariaDB unavailable: {e}") from None
                await self._lost_primary(pool, e)
                continue
            finally:
                if token is not None:
                    _RETRYING.reset(token)
            self.available = True
            return result
        raise AssertionError("unreachable")

    async def _verify(self, cur: aiomysql.Cursor, *, now: bool = False) -> None:
        """With several hosts: is the pool's host still the writable one? (Asked at most every
        VERIFY_EVERY seconds, or ``now``.) A switch-over that only made it read-only is noticed here
        even before a write fails on it — a user with SUPER or READ_ONLY ADMIN could still write."""
        t = asyncio.get_running_loop().time()
        if not now and t - self._verified_at < VERIFY_EVERY:
            return
        await cur.execute("SELECT @@read_only AS ro")
        row = await cur.fetchone()
        if row and row["ro"]:
            raise pymysql.err.OperationalError(1290, f"{self.primary_name} turned read-only")
        self._verified_at = t

    async def _txn(self, fn: Callable[[aiomysql.Cursor], Awaitable[T]]) -> T:
        async def wrapped(cur: aiomysql.Cursor) -> T:
            await cur.execute("START TRANSACTION")
            try:
                result = await fn(cur)
            except BaseException:
                await cur.execute("ROLLBACK")
                raise
            await cur.execute("COMMIT")
            return result

        return await self._run(wrapped)

    async def ping(self) -> bool:
        """Reachable (and, with several hosts, still the writable one: a primary turned read-only by a
        switch-over is dropped here, and the probe says not ready, without waiting for the next)."""
        async def go(cur: aiomysql.Cursor) -> None:
            await cur.execute("SELECT 1")
            if self.multi_host:
                await self._verify(cur, now=True)

        try:
            await self._run(go, failover=False)
            return True
        except StoreUnavailable:
            return False

    # ---- jobs ---------------------------------------------------------------------

    async def create_job(self, job: Job, max_jobs: int) -> Job:
        job_id = new_id()

        lock = f"cronring-create-{self.url.database}"

        async def go(cur: aiomysql.Cursor) -> None:
            if retrying() and await _job_exists(cur, job_id):  # the first run committed: the id is ours alone
                return
            # The cap is checked and the row inserted under one named lock (every node, every
            # create): 40 concurrent creates can no longer pass the count together.
            await cur.execute("SELECT GET_LOCK(%s, 10) AS ok", (lock,))
            if not (await cur.fetchone())["ok"]:
                raise StoreUnavailable("another create held the job-count lock for 10 s")
            try:
                await cur.execute("START TRANSACTION")
                try:
                    await cur.execute("SELECT COUNT(*) AS n FROM jobs WHERE deleted_at IS NULL")
                    if (await cur.fetchone())["n"] >= max_jobs:
                        raise TooManyJobs(f"the cluster already has {max_jobs} jobs (CRONRING_MAX_JOBS)")
                    await cur.execute(
                        "INSERT INTO jobs (id, name, schedule, time_zone, paused, spec, version, fence,"
                        " active_since, created_at, updated_at) VALUES (%s,%s,%s,%s,%s,%s,1,0,NOW(3),NOW(3),NOW(3))",
                        (job_id, job.name, job.schedule, job.time_zone, int(job.paused), json.dumps(job.spec())),
                    )
                    await cur.execute(_HISTORY_SQL.format("%s"), (job_id,))
                except BaseException:
                    await cur.execute("ROLLBACK")
                    raise
                await cur.execute("COMMIT")
            finally:
                await cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))

        await self._run(go)
        return await self.get_job(job_id)

    async def create_jobs_bulk(self, jobs: Sequence[Job]) -> list[str]:
        """Insert many jobs in one statement (benchmarks, apply)."""
        ids = [new_id() for _ in jobs]
        rows = [(i, j.name, j.schedule, j.time_zone, int(j.paused), json.dumps(j.spec())) for i, j in zip(ids, jobs, strict=True)]

        async def go(cur: aiomysql.Cursor) -> None:
            if retrying() and await _job_exists(cur, ids[0]):  # one transaction: the first id, all of them
                return
            for k in range(0, len(rows), 1000):
                chunk = rows[k : k + 1000]
                sql = (
                    "INSERT INTO jobs (id, name, schedule, time_zone, paused, spec, version, fence, active_since,"
                    " created_at, updated_at) VALUES " + ",".join(["(%s,%s,%s,%s,%s,%s,1,0,NOW(3),NOW(3),NOW(3))"] * len(chunk))
                )
                await cur.execute(sql, [v for r in chunk for v in r])
                await cur.execute(_HISTORY_SQL.format(_ph(len(chunk))), [r[0] for r in chunk])

        await self._txn(go)
        return ids

    _JOB_COLS = "id, seq, name, schedule, time_zone, paused, spec, version, fence, owner, active_since, created_at, updated_at, deleted_at"

    async def get_job(self, job_id: str, *, include_deleted: bool = False) -> Job:
        async def go(cur: aiomysql.Cursor) -> dict[str, Any] | None:
            await cur.execute(f"SELECT {self._JOB_COLS} FROM jobs WHERE id=%s", (job_id,))
            row: dict[str, Any] | None = await cur.fetchone()
            return row

        row = await self._run(go)
        if row is None or (row["deleted_at"] is not None and not include_deleted):
            raise NotFound(job_id)
        return Job.from_row(row)

    async def get_job_and_last(self, job_id: str) -> tuple[Job, dict[str, Any] | None]:
        """One job and its last execution in one statement (the API's hot read).

        The two rows come back as two JSON objects built by MariaDB: the pure-Python driver
        parses a column description per column per result, which for 32 columns was a
        quarter of the node's CPU on this read.
        """
        sql = self._JOB_AND_LAST_SQL

        async def go(cur: aiomysql.Cursor) -> dict[str, Any] | None:
            await cur.execute(sql, (job_id,))
            row: dict[str, Any] | None = await cur.fetchone()
            return row

        row = await self._run(go)
        if row is None:
            raise NotFound(job_id)
        return _job_from_json(row["j"]), (_exec_from_json(row["e"]) if row["e"] is not None else None)

    async def get_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        out: list[Job] = []
        for k in range(0, len(job_ids), 1000):
            chunk = list(job_ids[k : k + 1000])

            async def go(cur: aiomysql.Cursor, chunk: list[str] = chunk) -> list[dict[str, Any]]:
                await cur.execute(f"SELECT {self._JOB_COLS} FROM jobs WHERE id IN ({_ph(len(chunk))}) AND deleted_at IS NULL", chunk)
                rows: list[dict[str, Any]] = await cur.fetchall()
                return rows

            out.extend(Job.from_row(r) for r in await self._run(go))
        return out

    async def list_jobs(self, *, limit: int, cursor: int | None, q: str | None, paused: bool | None) -> list[Job]:
        where = ["deleted_at IS NULL"]
        args: list[Any] = []
        if cursor is not None:
            where.append("seq > %s")
            args.append(cursor)
        if q:
            like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(name LIKE %s OR id LIKE %s OR schedule LIKE %s OR search_target LIKE %s)")
            args += [like, like, like, like]
        if paused is not None:
            where.append("paused = %s")
            args.append(int(paused))
        sql = f"SELECT {self._JOB_JSON} AS j FROM jobs j WHERE {' AND '.join(where)} ORDER BY seq LIMIT %s"
        args.append(limit)

        async def go(cur: aiomysql.Cursor) -> list[dict[str, Any]]:
            await cur.execute(sql, args)
            rows: list[dict[str, Any]] = await cur.fetchall()
            return rows

        return [_job_from_json(r["j"]) for r in await self._run(go)]

    async def count_jobs(self) -> int:
        async def go(cur: aiomysql.Cursor) -> int:
            await cur.execute("SELECT COUNT(*) AS n FROM jobs WHERE deleted_at IS NULL")
            return int((await cur.fetchone())["n"])

        return await self._run(go)

    async def update_job(self, job_id: str, job: Job, *, if_version: int | None, schedule_changed: bool) -> Job:
        async def go(cur: aiomysql.Cursor) -> None:
            sql = (
                "UPDATE jobs SET name=%s, schedule=%s, time_zone=%s, paused=%s, spec=%s, version=version+1,"
                " updated_at=NOW(3)" + (", active_since=NOW(3)" if schedule_changed else "") +
                " WHERE id=%s AND deleted_at IS NULL"
            )
            args: list[Any] = [job.name, job.schedule, job.time_zone, int(job.paused), json.dumps(job.spec()), job_id]
            if if_version is not None:
                sql += " AND version=%s"
                args.append(if_version)
            if retrying():  # the first run may have committed: this very edit already in place is done
                await cur.execute("SELECT version, spec, name, schedule, time_zone, paused FROM jobs"
                                  " WHERE id=%s AND deleted_at IS NULL", (job_id,))
                row = await cur.fetchone()
                if row is not None and (if_version is None or row["version"] == if_version + 1) and \
                        (row["name"], row["schedule"], row["time_zone"], row["paused"], json.loads(row["spec"])) == \
                        (*args[:4], json.loads(args[4])):
                    return
            await cur.execute(sql, args)
            if cur.rowcount == 0:
                await cur.execute("SELECT version, deleted_at FROM jobs WHERE id=%s", (job_id,))
                row = await cur.fetchone()
                if row is None or row["deleted_at"] is not None:
                    raise NotFound(job_id)
                raise VersionConflict(row["version"])
            await cur.execute(_HISTORY_SQL.format("%s"), (job_id,))

        await self._txn(go)
        return await self.get_job(job_id)

    async def set_paused(self, job_id: str, paused: bool) -> Job:
        async def go(cur: aiomysql.Cursor) -> None:
            await cur.execute(
                "UPDATE jobs SET paused=%s, version=version+1, updated_at=NOW(3)"
                + ("" if paused else ", active_since=NOW(3)")
                + " WHERE id=%s AND deleted_at IS NULL AND paused<>%s",
                (int(paused), job_id, int(paused)),
            )
            if cur.rowcount:
                await cur.execute(_HISTORY_SQL.format("%s"), (job_id,))

        await self._txn(go)
        return await self.get_job(job_id)

    async def delete_job(self, job_id: str, *, if_version: int | None = None) -> int:
        async def go(cur: aiomysql.Cursor) -> int:
            sql = "UPDATE jobs SET deleted_at=NOW(3), updated_at=NOW(3), version=version+1 WHERE id=%s AND deleted_at IS NULL"
            args: list[Any] = [job_id]
            if if_version is not None:
                sql += " AND version=%s"
                args.append(if_version)
            await cur.execute(sql, args)
            if cur.rowcount == 0:
                await cur.execute("SELECT version, deleted_at FROM jobs WHERE id=%s", (job_id,))
                row = await cur.fetchone()
                if row is not None and row["deleted_at"] is not None and retrying() and \
                        (if_version is None or row["version"] == if_version + 1):
                    return int(row["version"])  # the first run committed this delete
                if row is None or row["deleted_at"] is not None:
                    raise NotFound(job_id)
                raise VersionConflict(row["version"])
            await cur.execute(_HISTORY_SQL.format("%s"), (job_id,))
            # rows claimed by an owner lost before it recorded an outcome: nobody will take this job
            # over now (a run still in flight overwrites this with its real outcome)
            await cur.execute(
                "UPDATE executions SET state='abandoned', finished_at=NOW(3),"
                " error=CONCAT('job deleted before ', node, ' recorded an outcome')"
                " WHERE job_id=%s AND state IN ('claimed','running')", (job_id,))
            await cur.execute("SELECT version FROM jobs WHERE id=%s", (job_id,))
            return int((await cur.fetchone())["version"])

        return await self._txn(go)

    async def changed_since(self, watermark: datetime | None) -> tuple[list[JobSummary], datetime | None]:
        """Job summaries (tombstones included) changed at or after ``watermark``; all live ones when None."""

        async def go(cur: aiomysql.Cursor) -> tuple[list[dict[str, Any]], datetime]:
            await cur.execute("SELECT NOW(3) AS now")
            now = (await cur.fetchone())["now"]
            cols = "id, paused, version, deleted_at"
            if watermark is None:
                await cur.execute(f"SELECT {cols} FROM jobs WHERE deleted_at IS NULL")
            else:
                await cur.execute(f"SELECT {cols} FROM jobs WHERE updated_at >= %s", (to_db(watermark),))
            rows: list[dict[str, Any]] = await cur.fetchall()
            return rows, now

        rows, now = await self._run(go)
        return [JobSummary.from_row(r) for r in rows], from_db(now)

    # ---- ownership ------------------------------------------------------------------

    async def take_over(self, job_ids: Sequence[str], node: str, live: Liveness | None = None) -> list[Takeover]:
        """Bump the fence of each job to this node, and read what a new owner needs.

        Rows claimed under an older fence and still open are a lost claimer's (abandoned, or re-sent for
        at_least_once) unless they are in flight on a live process: a live member's running row (a hand-over
        no longer waits for its runs), or one this process is sending itself (``live``). Those stay open:
        their claimer records their outcome, and a forbid tick sees them in flight."""
        if not job_ids:
            return []
        out: list[Takeover] = []
        live = live or Liveness(claimer="")
        alive_sql, alive_args = _in_flight(live, "e", recent_claims=False)
        for k in range(0, len(job_ids), 2000):
            chunk = list(job_ids[k : k + 2000])

            async def go(cur: aiomysql.Cursor, chunk: list[str] = chunk) -> list[Takeover]:
                ph = _ph(len(chunk))
                await cur.execute(f"UPDATE jobs SET fence=fence+1, owner=%s WHERE id IN ({ph}) AND deleted_at IS NULL", [node, *chunk])
                await cur.execute(f"SELECT {self._JOB_COLS} FROM jobs WHERE id IN ({ph}) AND deleted_at IS NULL", chunk)
                rows = await cur.fetchall()
                # The takeover anchor: the last *scheduled* tick claimed. A run-now or a backfill is
                # not a tick of the schedule and never moves it (else the ticks between the last
                # scheduled one and the manual run would vanish without a row).
                await cur.execute(
                    f"SELECT job_id, MAX(scheduled_at) AS last FROM executions WHERE job_id IN ({ph})"
                    f" AND kind NOT IN {UNSCHEDULED_KINDS} GROUP BY job_id", chunk
                )
                last = {r["job_id"]: from_db(r["last"]) for r in await cur.fetchall()}
                # at_least_once: rows claimed under an older fence and never finished, still within
                # the job's misfire grace, become this owner's, to be sent again as the same execution.
                await cur.execute(
                    f"UPDATE executions e JOIN jobs j ON j.id = e.job_id"
                    f" SET e.fence = j.fence, e.node = %s, e.claimer = %s, e.redelivered = 1, e.state = 'claimed'"
                    f" WHERE e.job_id IN ({ph}) AND e.state IN ('claimed','running') AND e.fence < j.fence"
                    f" AND NOT {alive_sql}"
                    f" AND JSON_VALUE(j.spec, '$.delivery') = 'at_least_once'"
                    f" AND e.scheduled_at >= NOW(3) - INTERVAL JSON_VALUE(j.spec, '$.misfire_grace_seconds') SECOND",
                    [node, live.claimer or None, *chunk, *alive_args],
                )
                redeliver: dict[str, list[Redelivery]] = {}
                if cur.rowcount:
                    await cur.execute(
                        f"SELECT e.id, e.job_id, e.scheduled_at, e.kind, e.attempts FROM executions e"
                        f" JOIN jobs j ON j.id = e.job_id AND e.fence = j.fence"
                        f" WHERE e.job_id IN ({ph}) AND e.state = 'claimed' AND e.redelivered = 1"
                        f" ORDER BY e.scheduled_at", chunk,
                    )
                    for r in await cur.fetchall():
                        redeliver.setdefault(r["job_id"], []).append(Redelivery(
                            id=r["id"], scheduled_at=r["scheduled_at"].replace(tzinfo=UTC), kind=r["kind"],
                            attempts=int(r["attempts"])))
                # The other rows claimed under an older fence and never finished (their owner died,
                # was cut off, or lost the reply to its claim): outcome unknown, never re-sent. A run
                # still in flight somewhere overwrites this with its real outcome when it records it.
                await cur.execute(
                    f"UPDATE executions e JOIN jobs j ON j.id = e.job_id SET e.state='abandoned',"
                    f" e.finished_at=NOW(3), e.error=CONCAT('owner ', e.node, ' lost before recording an outcome;"
                    f" not re-sent')"
                    f" WHERE e.state IN ('claimed','running') AND e.job_id IN ({ph}) AND e.fence < j.fence"
                    f" AND NOT {alive_sql}",
                    [*chunk, *alive_args],
                )
                return [Takeover(job=Job.from_row(r), fence=int(r["fence"]), last_tick=last.get(r["id"]),
                                 redeliver=tuple(redeliver.get(r["id"], ()))) for r in rows]

            out.extend(await self._txn(go))
        return out

    async def orphans(self, gone: Sequence[str], job_ids: Sequence[str], node: str, claimer: str
                      ) -> dict[str, list[Redelivery]]:
        """Open rows of these (owned) jobs whose claimer has gone (its node died, lapsed or restarted
        after a hand-over or a run-now left them in flight there): what a takeover does with a lost
        claimer's rows, now. at_least_once rows within the grace become this owner's to re-send (by job);
        the others are abandoned."""
        if not gone or not job_ids:
            return {}
        gph = _ph(len(gone))

        async def find(cur: aiomysql.Cursor) -> list[str]:
            await cur.execute(f"SELECT DISTINCT job_id FROM executions WHERE state IN ('claimed','running')"
                              f" AND claimer IN ({gph})", list(gone))
            return [r["job_id"] for r in await cur.fetchall()]

        mine = set(job_ids)
        hit = [j for j in await self._run(find) if j in mine]
        out: dict[str, list[Redelivery]] = {}
        for k in range(0, len(hit), 2000):
            chunk = hit[k : k + 2000]
            ph = _ph(len(chunk))

            async def go(cur: aiomysql.Cursor, chunk: list[str] = chunk, ph: str = ph) -> dict[str, list[Redelivery]]:
                await cur.execute(
                    f"SELECT e.id FROM executions e JOIN jobs j ON j.id = e.job_id"
                    f" WHERE e.job_id IN ({ph}) AND e.state IN ('claimed','running') AND e.claimer IN ({gph})"
                    f" AND JSON_VALUE(j.spec, '$.delivery') = 'at_least_once'"
                    f" AND e.scheduled_at >= NOW(3) - INTERVAL JSON_VALUE(j.spec, '$.misfire_grace_seconds') SECOND"
                    f" FOR UPDATE", [*chunk, *gone])
                again = [r["id"] for r in await cur.fetchall()]
                got: dict[str, list[Redelivery]] = {}
                if again:
                    aph = _ph(len(again))
                    await cur.execute(
                        f"UPDATE executions e JOIN jobs j ON j.id = e.job_id SET e.fence = j.fence, e.node = %s,"
                        f" e.claimer = %s, e.redelivered = 1, e.state = 'claimed' WHERE e.id IN ({aph})",
                        [node, claimer, *again])
                    await cur.execute(f"SELECT id, job_id, scheduled_at, kind, attempts FROM executions"
                                      f" WHERE id IN ({aph}) ORDER BY scheduled_at", again)
                    for r in await cur.fetchall():
                        got.setdefault(r["job_id"], []).append(Redelivery(
                            id=r["id"], scheduled_at=r["scheduled_at"].replace(tzinfo=UTC), kind=r["kind"],
                            attempts=int(r["attempts"])))
                await cur.execute(
                    f"UPDATE executions SET state='abandoned', finished_at=NOW(3),"
                    f" error=CONCAT(node, ' lost before recording an outcome; not re-sent')"
                    f" WHERE job_id IN ({ph}) AND state IN ('claimed','running') AND claimer IN ({gph})",
                    [*chunk, *gone])
                return got

            out.update(await self._txn(go))
        return out

    async def claim(self, node: str, claims: Sequence[Claim]) -> set[str]:
        """Insert fence-checked execution rows; returns the ids that were won."""
        return (await self.claim_ticks(node, claims)).won

    async def claim_ticks(self, node: str, claims: Sequence[Claim], live: Liveness | None = None) -> Claimed:
        """Insert fence-checked execution rows. Returns the ids won, and the ids whose tick already
        had a row of another execution (the tick is accounted for: not a fence problem). A claim in
        neither set was refused: the fence moved on, or the job was paused or deleted.

        A ``forbid`` run is inserted as an overlap row (state skipped) when its job has a run in flight
        elsewhere: an open row of another live claimer (a run-now on another node, or the previous owner's
        run that a hand-over left in flight), or one this process is sending (``live``)."""
        if not claims:
            return Claimed(won=set(), taken=set(), overlapped=set())
        won: set[str] = set()
        taken: set[str] = set()
        overlapped: set[str] = set()
        claimer = live.claimer if live is not None and live.claimer else None
        for k in range(0, len(claims), 500):
            chunk = claims[k : k + 500]
            guarded = {c.id for c in chunk if c.forbid and c.state == "claimed"} if live is not None else set()
            union = " UNION ALL ".join(
                ["SELECT %s AS id, %s AS job_id, CAST(%s AS DATETIME(3)) AS scheduled_at, %s AS fence, %s AS kind,"
                 " %s AS state, %s AS missed_count, CAST(%s AS DATETIME(3)) AS missed_from, %s AS error,"
                 " %s AS guard"] * len(chunk)
            )
            rows: list[Any] = []
            for c in chunk:
                rows += [c.id, c.job_id, to_db(c.scheduled_at), c.fence, c.kind, c.state, c.missed_count,
                         to_db(c.missed_from) if c.missed_from else None, c.error, int(c.id in guarded)]
            busy_args: list[Any] = []
            if guarded and live is not None:
                alive_sql, busy_args = _in_flight(live, "o", recent_claims=True)
                busy = (f"(c.guard = 1 AND EXISTS (SELECT 1 FROM executions o WHERE o.job_id = c.job_id"
                        f" AND o.state IN ('claimed','running') AND {alive_sql}))")
            else:
                busy = "0"
            sql = (
                "INSERT INTO executions (id, job_id, scheduled_at, kind, state, fence, node, claimer, missed_count,"
                " missed_from, error, claimed_at, finished_at)"
                " SELECT c.id, c.job_id, c.scheduled_at, IF(c.busy, 'overlap', c.kind), IF(c.busy, 'skipped', c.state),"
                " c.fence, %s, %s, IF(c.busy, 1, c.missed_count), IF(c.busy, c.scheduled_at, c.missed_from),"
                " IF(c.busy, %s, c.error), NOW(3), IF(c.state='claimed' AND NOT c.busy, NULL, NOW(3))"
                f" FROM (SELECT c.*, {busy} AS busy FROM ({union}) c) c JOIN jobs j ON j.id = c.job_id AND j.fence = c.fence"
                " AND j.deleted_at IS NULL AND (j.paused = 0 OR c.kind = 'manual')"
                " ON DUPLICATE KEY UPDATE executions.id = executions.id"
            )
            # the placeholders in the statement's order: node, claimer, the overlap reason, the in-flight
            # check's, then the claims'
            args: list[Any] = [node, claimer, OVERLAP_REASON, *busy_args, *rows]

            async def go(cur: aiomysql.Cursor, sql: str = sql, args: list[Any] = args, chunk: Sequence[Claim] = chunk,
                         guarded: set[str] = guarded) -> tuple[set[str], set[str], set[str]]:
                skipped: set[str] = set()
                # A duplicate tick is left unchanged, so it counts 0 affected rows: when every
                # row was inserted, every claim is won without reading them back.
                if await cur.execute(sql, args) == len(chunk):
                    if guarded:
                        await cur.execute(f"SELECT id FROM executions WHERE id IN ({_ph(len(guarded))})"
                                          f" AND kind = 'overlap'", sorted(guarded))
                        skipped = {r["id"] for r in await cur.fetchall()}
                    return {c.id for c in chunk}, set(), skipped
                keys = [(c.job_id, to_db(c.scheduled_at)) for c in chunk]
                await cur.execute(
                    f"SELECT e.id, e.job_id, e.scheduled_at, e.kind, j.fence AS job_fence,"
                    f" (j.deleted_at IS NULL AND j.paused = 0) AS live FROM executions e JOIN jobs j ON j.id = e.job_id"
                    f" WHERE (e.job_id, e.scheduled_at) IN ({','.join(['(%s,%s)'] * len(keys))})",
                    [v for k in keys for v in k],
                )
                rows = {(r["job_id"], r["scheduled_at"]): r for r in await cur.fetchall()}
                got, dup = set(), set()
                for c, k in zip(chunk, keys, strict=True):
                    row = rows.get(k)
                    if row is None:
                        continue
                    if row["id"] == c.id:
                        got.add(c.id)
                        if c.id in guarded and row["kind"] == "overlap":
                            skipped.add(c.id)
                    elif row["job_fence"] == c.fence and row["live"]:
                        dup.add(c.id)  # our fence still holds: the tick simply has its row already
                return got, dup, skipped

            g, d, o = await self._run(go)
            won |= g
            taken |= d
            overlapped |= o
        return Claimed(won=won, taken=taken, overlapped=overlapped)

    async def existing_ids(self, execution_ids: Sequence[str]) -> set[str]:
        """Which of these executions have a row (claims whose statement failed may have been inserted)."""
        found: set[str] = set()
        for k in range(0, len(execution_ids), 1000):
            chunk = list(execution_ids[k : k + 1000])

            async def go(cur: aiomysql.Cursor, chunk: list[str] = chunk) -> None:
                await cur.execute(f"SELECT id FROM executions WHERE id IN ({_ph(len(chunk))})", chunk)
                found.update(r["id"] for r in await cur.fetchall())

            await self._run(go)
        return found

    async def claim_manual(self, job_id: str, node: str, execution_id: str, at: datetime, *,
                           forbid_overlap: bool = False, claimer: str | None = None) -> int:
        """Claim a run-now execution under whatever fence the job has now; returns that fence.
        Raises NotFound when the job is gone, RunInFlight when ``forbid_overlap`` and a run of the
        job is open. Its instant never equals a tick (ticks are whole seconds) nor another run-now."""
        at = to_db(at)
        if at.microsecond == 0:
            at = at.replace(microsecond=1000)
        guard = (" AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.job_id = jobs.id"
                 " AND e.state IN ('claimed','running'))") if forbid_overlap else ""

        async def go(cur: aiomysql.Cursor) -> int | None:
            if retrying():  # the first run may have committed: our execution id is our claim
                await cur.execute("SELECT fence FROM executions WHERE id=%s", (execution_id,))
                mine = await cur.fetchone()
                if mine is not None:
                    return int(mine["fence"])
            for k in range(5):  # another run-now at the same millisecond: the next one
                when = at + timedelta(milliseconds=k)
                n = await cur.execute(
                    "INSERT INTO executions (id, job_id, scheduled_at, kind, state, fence, node, claimer, claimed_at)"
                    " SELECT %s, id, %s, 'manual', 'claimed', fence, %s, %s, NOW(3) FROM jobs"
                    " WHERE id=%s AND deleted_at IS NULL" + guard +
                    " ON DUPLICATE KEY UPDATE executions.id = executions.id",
                    (execution_id, when, node, claimer, job_id),
                )
                if n == 1:
                    await cur.execute("SELECT fence FROM executions WHERE id=%s", (execution_id,))
                    return int((await cur.fetchone())["fence"])
                await cur.execute("SELECT 1 FROM jobs WHERE id=%s AND deleted_at IS NULL", (job_id,))
                if await cur.fetchone() is None:
                    raise NotFound(job_id)
                if forbid_overlap:
                    await cur.execute("SELECT 1 FROM executions WHERE job_id=%s AND state IN ('claimed','running')"
                                      " LIMIT 1", (job_id,))
                    if await cur.fetchone() is not None:
                        raise RunInFlight("a run of this job is still in flight (concurrencyPolicy forbid)")
            return None

        fence = await self._run(go)
        if fence is None:
            raise StoreUnavailable("could not find a free instant for the run; retry")
        return fence

    async def record(self, outcomes: Iterable[Outcome]) -> None:
        """Write execution state changes in one multi-row statement."""
        rows = list(outcomes)
        if not rows:
            return
        for k in range(0, len(rows), 500):
            chunk = rows[k : k + 500]
            args: list[Any] = []
            for o in chunk:
                args += [o.id, o.job_id, to_db(o.scheduled_at), o.state, o.fence, o.node, o.attempts, o.status_code,
                         o.duration_ms, o.lateness_ms, (o.error or None) and o.error[:1000], o.response_excerpt,
                         to_db(o.started_at) if o.started_at else None, to_db(o.finished_at) if o.finished_at else None,
                         o.claimer]
            sql = (
                "INSERT INTO executions (id, job_id, scheduled_at, state, fence, node, attempts, status_code, duration_ms,"
                " lateness_ms, error, response_excerpt, started_at, finished_at, claimer, claimed_at) VALUES "
                + ",".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,NOW(3))"] * len(chunk))
                + " ON DUPLICATE KEY UPDATE " + _RECORD_UPDATE
            )

            async def go(cur: aiomysql.Cursor, sql: str = sql, args: list[Any] = args) -> None:
                await cur.execute(sql, args)

            await self._run(go)

    async def abandon(self, execution_ids: Sequence[str], reason: str) -> None:
        if not execution_ids:
            return

        async def go(cur: aiomysql.Cursor) -> None:
            await cur.execute(
                f"UPDATE executions SET state='abandoned', error=%s, finished_at=NOW(3)"
                f" WHERE id IN ({_ph(len(execution_ids))}) AND state IN ('claimed','running')",
                [reason[:1000], *execution_ids],
            )

        await self._run(go)

    async def extend_overlap(self, execution_id: str, fence: int, scheduled_at: datetime) -> bool:
        """Fold one more skipped tick into an overlap row (a run of misfires is one row)."""

        async def go(cur: aiomysql.Cursor) -> bool:
            await cur.execute(
                "UPDATE executions e JOIN jobs j ON j.id = e.job_id AND j.fence = %s"
                " SET e.scheduled_at=%s, e.missed_count=e.missed_count+1 WHERE e.id=%s",
                (fence, to_db(scheduled_at), execution_id),
            )
            return bool(cur.rowcount == 1)

        try:
            return await self._run(go)
        except pymysql.err.IntegrityError:
            return False

    # ---- executions -------------------------------------------------------------

    _EXEC_COLS = (
        "id, job_id, scheduled_at, kind, state, fence, node, attempts, status_code, duration_ms, lateness_ms,"
        " error, response_excerpt, missed_count, missed_from, claimed_at, started_at, finished_at, redelivered, claimer"
    )
    # Rows as one JSON object each, built by MariaDB: the pure-Python driver parses a column
    # description per column per result and converts every value in Python; json.loads is C.
    _JOB_JSON = "JSON_OBJECT(" + ", ".join(f"'{c.strip()}', j.{c.strip()}" for c in _JOB_COLS.split(",")) + ")"
    _EXEC_JSON = "JSON_OBJECT(" + ", ".join(f"'{c.strip()}', x.{c.strip()}" for c in _EXEC_COLS.split(",")) + ")"
    _JOB_AND_LAST_SQL = (
        f"SELECT {_JOB_JSON} AS j,"
        f" (SELECT {_EXEC_JSON}"
        "  FROM executions x WHERE x.job_id = j.id AND x.state NOT IN ('missed', 'claimed')"
        "  ORDER BY x.scheduled_at DESC LIMIT 1) AS e"
        " FROM jobs j WHERE j.id = %s AND j.deleted_at IS NULL"
    )

    async def executions(self, job_id: str, *, limit: int, before: datetime | None = None) -> list[dict[str, Any]]:
        async def go(cur: aiomysql.Cursor) -> list[dict[str, Any]]:
            if before is None:
                await cur.execute(
                    f"SELECT {self._EXEC_COLS} FROM executions WHERE job_id=%s ORDER BY scheduled_at DESC LIMIT %s",
                    (job_id, limit),
                )
            else:
                await cur.execute(
                    f"SELECT {self._EXEC_COLS} FROM executions WHERE job_id=%s AND scheduled_at < %s"
                    " ORDER BY scheduled_at DESC LIMIT %s",
                    (job_id, to_db(before), limit),
                )
            rows: list[dict[str, Any]] = await cur.fetchall()
            return rows

        return [_exec_row(r) for r in await self._run(go)]

    async def last_executions(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not job_ids:
            return {}

        async def go(cur: aiomysql.Cursor) -> list[dict[str, Any]]:
            await cur.execute(
                f"SELECT {self._EXEC_JSON} AS e FROM executions x"
                f" JOIN (SELECT job_id, MAX(scheduled_at) AS m FROM executions WHERE job_id IN ({_ph(len(job_ids))})"
                "  AND state NOT IN ('missed', 'claimed') GROUP BY job_id) l ON x.job_id = l.job_id AND x.scheduled_at = l.m",
                list(job_ids),
            )
            rows: list[dict[str, Any]] = await cur.fetchall()
            return rows

        out: dict[str, dict[str, Any]] = {}
        for r in await self._run(go):
            e = _exec_from_json(r["e"])
            out[e["job_id"]] = e
        return out

    async def all_executions(self, job_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every execution row (for tests and audits)."""

        async def go(cur: aiomysql.Cursor) -> list[dict[str, Any]]:
            if job_ids:
                await cur.execute(f"SELECT {self._EXEC_COLS} FROM executions WHERE job_id IN ({_ph(len(job_ids))})", list(job_ids))
            else:
                await cur.execute(f"SELECT {self._EXEC_COLS} FROM executions")
            rows: list[dict[str, Any]] = await cur.fetchall()
            return rows

        return [_exec_row(r) for r in await self._run(go)]

    async def apply_retention(self, job_ids: Sequence[str], keep: int) -> int:
        """Keep the newest ``keep`` finished executions of each job; returns rows deleted."""
        deleted = 0
        for job_id in job_ids:

            async def go(cur: aiomysql.Cursor, job_id: str = job_id) -> int:
                await cur.execute(
                    "SELECT scheduled_at FROM executions WHERE job_id=%s ORDER BY scheduled_at DESC LIMIT 1 OFFSET %s",
                    (job_id, keep),
                )
                row = await cur.fetchone()
                if row is None:
                    return 0
                # never the row that anchors a takeover (the last scheduled tick), whatever
                # number of manual runs came after it
                await cur.execute(
                    f"SELECT MAX(scheduled_at) AS a FROM executions WHERE job_id=%s AND kind NOT IN {UNSCHEDULED_KINDS}",
                    (job_id,),
                )
                anchor = (await cur.fetchone())["a"]
                await cur.execute(
                    "DELETE FROM executions WHERE job_id=%s AND scheduled_at <= %s AND state NOT IN ('claimed','running')"
                    " AND scheduled_at <> %s AND scheduled_at < NOW(3) - INTERVAL 3 MINUTE",  # the audit reads them
                    (job_id, row["scheduled_at"], anchor or datetime(1970, 1, 1)),
                )
                return int(cur.rowcount)

            deleted += await self._run(go)
        return deleted

    # ---- the tick ledger ---------------------------------------------------------------

    async def job_history(self, job_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """Every definition of these jobs, ordered by version."""
        out: dict[str, list[dict[str, Any]]] = {j: [] for j in job_ids}
        for k in range(0, len(job_ids), 500):
            chunk = list(job_ids[k : k + 500])

            async def go(cur: aiomysql.Cursor, chunk: list[str] = chunk) -> None:
                await cur.execute(
                    f"SELECT job_id, version, valid_from, schedule, time_zone, paused, deleted FROM job_history"
                    f" WHERE job_id IN ({_ph(len(chunk))}) ORDER BY job_id, version", chunk)
                for r in await cur.fetchall():
                    r["valid_from"] = from_db(r["valid_from"])
                    out[r["job_id"]].append(r)

            await self._run(go)
        return out

    async def last_scheduled_tick(self, job_id: str) -> datetime | None:
        async def go(cur: aiomysql.Cursor) -> datetime | None:
            await cur.execute(f"SELECT MAX(scheduled_at) AS m FROM executions WHERE job_id=%s"
                              f" AND kind NOT IN {UNSCHEDULED_KINDS}", (job_id,))
            return from_db((await cur.fetchone())["m"])

        return await self._run(go)

    async def record_missed(self, job_id: str, node: str, ranges: Sequence[Any], reason: str) -> None:
        """Missed-range rows written without a fence (a gap of a job nobody owns any more, e.g. deleted):
        a range whose last instant already has a row is left alone."""
        if not ranges:
            return
        rows = [(new_execution_id(), job_id, to_db(m.last), node, int(m.count), to_db(m.first), reason) for m in ranges]

        async def go(cur: aiomysql.Cursor) -> None:
            await cur.execute(
                "INSERT IGNORE INTO executions (id, job_id, scheduled_at, kind, state, fence, node, missed_count,"
                " missed_from, error, claimed_at, finished_at) VALUES "
                + ",".join(["(%s,%s,%s,'misfire','missed',0,%s,%s,%s,%s,NOW(3),NOW(3))"] * len(rows)),
                [v for r in rows for v in r],
            )

        await self._run(go)

    _LEDGER_JSON = ("id, DATE_FORMAT(scheduled_at, '%%Y-%%m-%%dT%%H:%%i:%%s.%%f'), kind, state,"
                    " DATE_FORMAT(missed_from, '%%Y-%%m-%%dT%%H:%%i:%%s.%%f'), missed_count, error, attempts, node,"
                    " status_code, redelivered")

    async def ledger_inputs(self, job_ids: Sequence[str], start: datetime, end: datetime
                            ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]],
                                       dict[str, datetime | None]]:
        """For each job: its definition history up to ``end``, the execution rows that account for
        instants in ``[start, end)``, and its oldest execution row (older history was trimmed)."""
        history: dict[str, list[dict[str, Any]]] = {j: [] for j in job_ids}
        rows: dict[str, list[dict[str, Any]]] = {j: [] for j in job_ids}
        oldest: dict[str, datetime | None] = {}
        for k in range(0, len(job_ids), 500):
            chunk = list(job_ids[k : k + 500])
            ph = _ph(len(chunk))

            async def go(cur: aiomysql.Cursor, chunk: list[str] = chunk, ph: str = ph) -> None:
                for j in chunk:  # from scratch: a second run (after a lost primary) must not add twice
                    history[j], rows[j] = [], []
                    oldest.pop(j, None)
                await cur.execute(
                    f"SELECT job_id, version, valid_from, schedule, time_zone, paused, deleted FROM job_history"
                    f" WHERE job_id IN ({ph}) AND valid_from < %s ORDER BY job_id, version", [*chunk, to_db(end)],
                )
                for r in await cur.fetchall():
                    r["valid_from"] = from_db(r["valid_from"])
                    history[r["job_id"]].append(r)
                # A range row's scheduled_at is its last instant: rows ending in or after the window and
                # starting before its end. One JSON array per job, built by MariaDB (the audit reads a
                # minute of every owned job: the pure-Python driver's per-column conversions cost 5x).
                await cur.execute("SET SESSION group_concat_max_len = 1073741824")
                await cur.execute(
                    f"SELECT job_id, JSON_ARRAYAGG(JSON_ARRAY({self._LEDGER_JSON})) AS r FROM executions"
                    f" WHERE job_id IN ({ph}) AND scheduled_at >= %s AND COALESCE(missed_from, scheduled_at) < %s"
                    f" GROUP BY job_id", [*chunk, to_db(start), to_db(end)],
                )
                for g in await cur.fetchall():
                    out = rows[g["job_id"]]
                    for v in fastjson.loads(g["r"]):
                        out.append({
                            "id": v[0], "job_id": g["job_id"], "scheduled_at": _ledger_dt(v[1]), "kind": v[2],
                            "state": v[3], "missed_from": _ledger_dt(v[4]), "missed_count": v[5], "error": v[6],
                            "attempts": v[7], "node": v[8], "status_code": v[9], "redelivered": bool(v[10]),
                        })
                # Only a job that has reached the retention limit can have lost rows to it: for the
                # others an instant without a row is a loss, never "trimmed".
                await cur.execute(f"SELECT job_id, MIN(scheduled_at) AS m, COUNT(*) AS n FROM executions"
                                  f" WHERE job_id IN ({ph}) GROUP BY job_id", chunk)
                for r in await cur.fetchall():
                    if int(r["n"]) >= self.keep_per_job:
                        oldest[r["job_id"]] = from_db(r["m"])

            await self._run(go)
        return history, rows, oldest

    async def purge_tombstones(self, older_than_days: int = 7) -> int:
        async def go(cur: aiomysql.Cursor) -> int:
            await cur.execute(
                "SELECT id FROM jobs WHERE deleted_at IS NOT NULL AND deleted_at < NOW(3) - INTERVAL %s DAY LIMIT 1000",
                (older_than_days,),
            )
            ids = [r["id"] for r in await cur.fetchall()]
            if not ids:
                return 0
            await cur.execute(f"DELETE FROM executions WHERE job_id IN ({_ph(len(ids))})", ids)
            await cur.execute(f"DELETE FROM job_history WHERE job_id IN ({_ph(len(ids))})", ids)
            await cur.execute(f"DELETE FROM jobs WHERE id IN ({_ph(len(ids))})", ids)
            return len(ids)

        return await self._run(go)


_EXEC_DATETIMES = ("scheduled_at", "missed_from", "claimed_at", "started_at", "finished_at")


def _job_from_json(doc: str) -> Job:
    """A job row read as a JSON object (``_JOB_JSON``)."""
    job = json.loads(doc)
    for k in ("active_since", "created_at", "updated_at", "deleted_at"):
        job[k] = _json_dt(job[k])
    return Job.from_row(job)


def _exec_from_json(doc: str) -> dict[str, Any]:
    """An execution row read as a JSON object (``_EXEC_JSON``), datetimes aware UTC."""
    row: dict[str, Any] = fastjson.loads(doc)
    for k in _EXEC_DATETIMES:
        row[k] = _json_dt(row[k])
    return row


def _ledger_dt(v: str | None) -> datetime | None:
    return None if v is None else datetime.fromisoformat(v).replace(tzinfo=UTC)


def _json_dt(v: str | None) -> datetime | None:
    """A DATETIME as MariaDB's JSON_OBJECT writes it ('2026-11-28 17:00:00.123'), as aware UTC."""
    return None if v is None else datetime.fromisoformat(v).replace(tzinfo=UTC)


def _exec_row(r: dict[str, Any]) -> dict[str, Any]:
    out = dict(r)
    for k in _EXEC_DATETIMES:
        out[k] = from_db(out.get(k))
    return out
