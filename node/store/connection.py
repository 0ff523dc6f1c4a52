"""The connection layer: one MariaDB pool, the search for the writable host, and attempts.

Every statement runs inside an **attempt**. With one host an attempt is simply a pooled connection and a
cursor. With several hosts (``mysql://u:p@h1,h2/db``), a statement that fails because its host went away
or turned read-only runs again, once, on the new primary (found within FAILOVER_WAIT): a claim, a fence
bump or an outcome is never assumed done or lost. The second attempt knows it is one
(``attempt.again``): a write whose first run may have committed looks for its own result first (a claim
or a job found by its id, an edit or a delete already in place), so none is done twice::

    async for attempt in db.attempts():
        async with attempt as cur:
            if attempt.again and await found_my_row(cur):
                break
            await cur.execute(...)

``db.fetchone``/``fetchall``/``execute`` wrap one statement so; ``attempts(transaction=True)`` wraps the
body in START TRANSACTION/COMMIT (ROLLBACK on any error). Outages come out as ``StoreUnavailable``.

No query lives here: the repositories (jobs, executions, history) bring their own SQL.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlparse

import asyncmy
import structlog
from asyncmy import errors as mysql_errors
from asyncmy.cursors import Cursor as Cursor  # (re-exported: the repositories' type)
from asyncmy.cursors import DictCursor
from asyncmy.pool import Pool

from .. import metrics, netloc
from ..model.errors import StoreUnavailable

log = structlog.get_logger("store")
# "database/table already exists" notes from CREATE ... IF NOT EXISTS are expected (the driver logs each).
logging.getLogger("asyncmy").setLevel(logging.ERROR)

# The driver is asyncmy (its protocol in Cython): release 2's aiomysql parsed every row in pure Python, a
# quarter of a busy node's CPU (BENCHMARKS.md, "A million jobs"). Its API and errors follow PyMySQL's.
OperationalError, InterfaceError = mysql_errors.OperationalError, mysql_errors.InterfaceError
_CONN_ERRORS = (OperationalError, InterfaceError, ConnectionError, OSError, asyncio.TimeoutError)
_CUT = (*_CONN_ERRORS, asyncio.CancelledError)  # a connection left in the middle of a statement
# The server went away, or it is not the primary any more: with several hosts, find the writable one.
_READ_ONLY_CODES = {1290, 1836}  # --read-only is on; "running in read-only mode"
_GONE_CODES = {2003, 2006, 2013, 2055}  # can't connect; server has gone away; lost connection (x2)
_DEADLOCK = 1213  # "Deadlock found when trying to get lock; try restarting transaction"
DEADLOCK_RETRIES = 5
FAILOVER_WAIT = 15.0  # seconds an operation waits for a writable host to appear before it is refused
STATEMENT_TIMEOUT = 30.0  # with several hosts: a statement (or transaction) longer than this means a lost host
VERIFY_EVERY = 5.0  # with several hosts: seconds between checks that the host in use is still writable
SEARCH_EVERY = 0.5  # with several hosts: seconds between searches for the writable one
Row = dict[str, Any]
T = TypeVar("T")


class DatabaseURLError(ValueError):
    """A CRONRING_DATABASE_URL that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseURL:
    """``mysql://user:pass@host[:port][,host2[:port]…]/database[?ssl=true]``. With several hosts the
    store uses the one that is writable (``@@read_only = 0``) and moves when that changes."""

    host: str
    port: int
    user: str
    password: str
    database: str
    ssl: bool = False
    hosts: tuple[tuple[str, int], ...] = ()  # every host in the URL, in order; (host, port) first

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        u = urlparse(url)
        if u.scheme not in ("mysql", "mariadb", "mysql+aiomysql"):
            raise DatabaseURLError(f"CRONRING_DATABASE_URL must start with mysql://, got {url!r}")
        db = u.path.lstrip("/")
        if not db:
            raise DatabaseURLError("CRONRING_DATABASE_URL must name a database: mysql://user:pass@host:3306/cronring")
        user, password, texts = netloc.split(u.netloc)
        try:
            hosts = tuple(netloc.host_port(t, 3306) for t in texts) if any(texts) else (("127.0.0.1", 3306),)
        except ValueError as e:
            raise DatabaseURLError(f"CRONRING_DATABASE_URL: {e}") from None
        if len(set(hosts)) != len(hosts):
            raise DatabaseURLError("CRONRING_DATABASE_URL names a host twice")
        return cls(host=hosts[0][0], port=hosts[0][1], user=user or "root", password=password, database=db,
                   ssl="ssl=true" in (u.query or "").lower(), hosts=hosts)

    def redacted(self) -> str:
        where = ",".join(f"{h}:{p}" for h, p in self.hosts or ((self.host, self.port),))
        return f"mysql://{self.user}:***@{where}/{self.database}"


def _deadlock(e: BaseException) -> bool:
    return isinstance(e, OperationalError) and bool(e.args) and e.args[0] == _DEADLOCK


def _read_only_error(e: BaseException) -> bool:
    return isinstance(e, OperationalError) and bool(e.args) and e.args[0] in _READ_ONLY_CODES


def _moves_primary(e: BaseException) -> bool:
    if isinstance(e, OperationalError):
        return _read_only_error(e) or (bool(e.args) and e.args[0] in _GONE_CODES)
    return isinstance(e, InterfaceError | ConnectionError | OSError | asyncio.TimeoutError)


async def _connecting(connect: Awaitable[T]) -> T:
    """A connect whose failure is a connection error: the driver raises RuntimeError when the socket closes
    in the middle of its handshake (a proxy cut, a host dying), or when its pool was closed meanwhile."""
    try:
        return await connect
    except RuntimeError as e:
        raise ConnectionError(f"no connection: {e}") from None


class Attempt:
    """One run of a statement (or a transaction) on a pooled connection, opened by ``Database.attempts``;
    ``async with attempt as cur`` runs the body with its cursor and commits (or rolls back) at the end.

    A failure that may mean a lost or demoted primary is kept (``failed``) and swallowed when a second
    attempt may follow, and so is a deadlock (``deadlocked``): the code after the ``async with`` block
    runs, the loop goes round, and ``Database.attempts`` yields the next attempt (on the new primary, with
    ``again`` True; or, after a deadlock, as it was). Assign or return a result inside the block, never
    after it."""

    __slots__ = ("_conn", "_gated", "_timeout", "again", "cursor", "db", "deadlocked", "failed", "pool", "transaction")

    def __init__(self, db: Database, *, again: bool, transaction: bool) -> None:
        self.db, self.again, self.transaction = db, again, transaction
        self.failed: BaseException | None = None
        self.deadlocked = False
        self.pool: Pool | None = None
        self.cursor: Any = None
        self._conn: Any = None
        self._gated = False
        self._timeout: Any = None

    async def open(self) -> None:
        # In arrival order: asyncmy's pool hands a released connection to whoever asks next, so under load
        # a caller queued on its condition could wait behind an endless stream of newer ones.
        await self.db.gate.acquire()
        self._gated = True
        try:
            self.pool = await self.db.pool()
            # (a pool dropped by a failover meanwhile also raises RuntimeError: the host, not the statement)
            self._conn = await _connecting(self.pool.acquire())
        except BaseException:
            self._ungate()
            raise
        try:
            self.cursor = self._conn.cursor(self.db.cursor_class)
            if self.db.multi_host:
                self._timeout = asyncio.timeout(STATEMENT_TIMEOUT)
                await self._timeout.__aenter__()
                await self.db.verify(self.cursor)
            if self.transaction:
                await self.cursor.execute("START TRANSACTION")
        except BaseException as e:
            await self._release(e)
            raise

    async def __aenter__(self) -> Cursor:
        cursor: Cursor = self.cursor
        return cursor

    async def __aexit__(self, kind: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> bool:
        if self.transaction:
            try:
                await self.cursor.execute("ROLLBACK" if e is not None else "COMMIT")
            except _CONN_ERRORS as failed:
                e = e or failed
        if self._timeout is not None:
            try:
                await self._timeout.__aexit__(type(e) if e else None, e, None)
            except TimeoutError as timed_out:
                e = timed_out
            self._timeout = None
        await self._release(e)
        if e is None:
            self.db.available = True
            return False
        if _deadlock(e):
            self.deadlocked = True
            return True  # rolled back whole by InnoDB: ``attempts`` runs it again
        if not isinstance(e, _CONN_ERRORS):
            return False  # an error of the statement itself (a conflict, a constraint): the caller's
        self.db.available = False
        if self.again or not self.db.multi_host or not _moves_primary(e):
            raise StoreUnavailable(f"MariaDB unavailable: {e}") from None
        self.failed = e
        return True  # swallowed: ``attempts`` finds the primary and yields the second attempt

    async def _release(self, e: BaseException | None) -> None:
        try:
            if self.cursor is not None and not isinstance(e, _CUT):
                await self.cursor.close()  # (reads what is left of its results)
        finally:
            if isinstance(e, _CUT):
                self._conn.close()  # broken, or cut in the middle of a statement: never back to the pool
            if self.pool is not None:
                self.pool.release(self._conn)
            self._ungate()

    def _ungate(self) -> None:
        if self._gated:
            self._gated = False
            self.db.gate.release()


class Database:
    """The pool and the primary: connect lazily (a node starts and answers 503 while MariaDB is down),
    find the one writable host among several, move when it fails, freezes or turns read-only."""

    def __init__(self, url: DatabaseURL, *, pool_size: int = 10, connect_timeout: float = 3.0,
                 on_connect: Callable[[Pool], Awaitable[None]] | None = None) -> None:
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.on_connect = on_connect  # run on every new pool, before first use (the migrations)
        self._pool: Pool | None = None
        self._pool_lock = asyncio.Lock()
        self.gate = asyncio.Semaphore(pool_size)  # one permit per pooled connection, taken in arrival order
        self.cursor_class: type[DictCursor] = DictCursor  # (a test's spy subclasses it: the driver's are frozen)
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()  # dropped pools finishing their statements
        self._scan_failed_at = 0.0  # monotonic time of the last search that found no writable host
        self._verified_at = 0.0  # when the pool's host last answered @@read_only = 0 (several hosts)
        self.available = False
        self.primary: tuple[str, int] | None = None  # the host the pool talks to, once connected
        self.switches = 0  # moves to another host (cronring_database_primary_switches_total)

    # ---- attempts ----------------------------------------------------------------------

    async def attempts(self, *, transaction: bool = False, failover: bool = True) -> AsyncIterator[Attempt]:
        """One attempt; again on the new primary when it lost its host (several hosts, once); again when
        InnoDB chose it as a deadlock's victim (it was rolled back whole: a few times, after a short pause).
        An attempt is ``again`` once an earlier one's body ran and lost its connection (it may have
        committed); one that failed while connecting, or was rolled back, leaves nothing behind.
        ``failover=False`` (health probes): drop a failed host but do not wait for the next one."""
        uncertain, failovers, deadlocks = False, 0, 0
        while True:
            attempt = Attempt(self, again=uncertain, transaction=transaction)
            try:
                await attempt.open()
            except _CONN_ERRORS as e:
                self.available = False
                if failovers or not self.multi_host or not _moves_primary(e):
                    raise StoreUnavailable(f"MariaDB unavailable: {e}") from None
                attempt.failed = e
            else:
                yield attempt
                if attempt.deadlocked:
                    deadlocks += 1
                    if deadlocks > DEADLOCK_RETRIES:
                        raise StoreUnavailable(f"deadlocked {deadlocks} times in a row; retry shortly")
                    await asyncio.sleep(random.uniform(0.005, 0.05) * deadlocks)  # noqa: S311 - jitter
                    continue
                if attempt.failed is None:
                    return
                uncertain = True
            failed: BaseException = attempt.failed or StoreUnavailable("MariaDB unavailable")
            if failovers:
                raise StoreUnavailable(f"MariaDB unavailable: {failed}")
            failovers += 1
            if not failover:
                await self._drop(attempt.pool, failed)
                raise StoreUnavailable(f"MariaDB unavailable: {failed}")
            await self._lost_primary(attempt.pool, failed)

    async def fetchone(self, sql: str, args: Sequence[Any] | None = None) -> Row | None:
        async for attempt in self.attempts():
            async with attempt as cur:
                await cur.execute(sql, args)
                row: Row | None = await cur.fetchone()
                return row
        return None  # (an attempt that raised never gets here)

    async def fetchall(self, sql: str, args: Sequence[Any] | None = None) -> list[Row]:
        async for attempt in self.attempts():
            async with attempt as cur:
                await cur.execute(sql, args)
                rows: list[Row] = await cur.fetchall()
                return rows
        return []

    async def execute(self, sql: str, args: Sequence[Any] | None = None) -> int:
        """One statement; its affected rows. Safe to run twice (an upsert, an idempotent update)."""
        async for attempt in self.attempts():
            async with attempt as cur:
                return int(await cur.execute(sql, args))
        return 0

    # ---- the pool and the primary ------------------------------------------------------

    async def pool(self) -> Pool:
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
                    pool = await asyncio.wait_for(_connecting(asyncmy.create_pool(
                        host=host, port=port, user=self.url.user,
                        password=self.url.password, database=self.url.database, autocommit=True,
                        minsize=1, maxsize=self.pool_size, pool_recycle=300,
                        connect_timeout=self.connect_timeout, charset="utf8mb4",
                        init_command="SET time_zone='+00:00'", ssl=self._ssl(),
                    )), 2 * self.connect_timeout)  # connect_timeout bounds the TCP connect only
                    if self.on_connect is not None:
                        await self.on_connect(pool)
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
        (every step bounded: the driver's connect_timeout need not cover a frozen server's greeting)."""
        conn = await asyncio.wait_for(_connecting(asyncmy.connect(
            host=host, port=port, user=self.url.user, password=self.url.password,
            connect_timeout=self.connect_timeout, ssl=self._ssl())), 2 * self.connect_timeout)
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
            raise OperationalError(2003, f"more than one writable MariaDB host ({names}): make all "
                                                     "but the primary read-only")
        problems = [f"{h}:{p} " + ("read-only" if ro is True else f"unreachable ({ro!r})")
                    for (h, p), ro in zip(self.url.hosts, answers, strict=True)]
        raise OperationalError(2003, "no writable MariaDB host: " + "; ".join(problems))

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

    async def _lost_primary(self, pool: Pool | None, error: BaseException) -> None:
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
                        await self.pool()
                        return
                    except StoreUnavailable:
                        await asyncio.sleep(SEARCH_EVERY)
        except TimeoutError:
            raise StoreUnavailable(f"no writable MariaDB host within {FAILOVER_WAIT:g} s") from None

    async def _ensure_database(self, host: str, port: int) -> None:
        conn = await asyncio.wait_for(_connecting(asyncmy.connect(
            host=host, port=port, user=self.url.user, password=self.url.password,
            connect_timeout=self.connect_timeout, autocommit=True, ssl=self._ssl(),
        )), 2 * self.connect_timeout)
        try:
            async with conn.cursor() as cur:
                await cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{self.url.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
        except OperationalError as e:
            if e.args and e.args[0] in (1044, 1045):  # no privilege: the database must already exist
                return
            raise
        finally:
            conn.close()

    def _ssl(self) -> ssl.SSLContext | None:
        """TLS to MariaDB when the URL asks for it (mysql://...?ssl=true), verified by the system CAs."""
        return ssl.create_default_context() if self.url.ssl else None

    async def verify(self, cur: Cursor, *, now: bool = False) -> None:
        """With several hosts: is the pool's host still the writable one? (Asked at most every
        VERIFY_EVERY seconds, or ``now``.) A switch-over that only made it read-only is noticed here
        even before a write fails on it — a user with SUPER or READ_ONLY ADMIN could still write."""
        t = asyncio.get_running_loop().time()
        if not now and t - self._verified_at < VERIFY_EVERY:
            return
        await cur.execute("SELECT @@read_only AS ro")
        row = await cur.fetchone()
        if row and row["ro"]:
            raise OperationalError(1290, f"{self.primary_name} turned read-only")
        self._verified_at = t

    async def ping(self) -> bool:
        """Reachable (and, with several hosts, still the writable one: a primary turned read-only by a
        switch-over is dropped here, and the probe says not ready, without waiting for the next)."""
        try:
            async for attempt in self.attempts(failover=False):
                async with attempt as cur:
                    await cur.execute("SELECT 1")
                    if self.multi_host:
                        await self.verify(cur, now=True)
            return True
        except StoreUnavailable:
            return False

    async def start(self) -> None:
        """Connect (and migrate, ``on_connect``); raises StoreUnavailable when MariaDB is down."""
        await self.pool()
        self.available = True

    async def close(self, timeout: float = 3.0) -> None:
        """Close the pool; connections still in use after ``timeout`` are closed under their users (a
        query hung on a dead MariaDB must not hold the node's exit: the pool waits for them forever)."""
        async with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            await self._close_pool(pool, timeout)
        for task in list(self._closing):
            await task

    @staticmethod
    async def _close_pool(pool: Pool, timeout: float) -> None:
        pool.close()
        try:
            await asyncio.wait_for(pool.wait_closed(), timeout)
        except TimeoutError:
            log.warning("MariaDB connections still in use at close; closing them", in_use=pool.size - pool.freesize)
            pool.terminate()
