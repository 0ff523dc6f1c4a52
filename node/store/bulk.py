"""Bulk apply: a batch of creates and edits written in one transaction — all of it, or nothing.

Each row is written as the single paths write it (``jobs.py``: ``create``, ``update``), many rows a statement:
the job's row (version 1, or its version + 1), the history row of its new version, and its audit row (actor,
how, node, versions, what changed). The transaction first

* locks every edited row (``FOR UPDATE``) and checks it is still at the version the batch was validated against:
  ``StaleJobs`` otherwise (nothing written; the caller validates again against what is there now);
* with creates, holds the job-count lock of ``Jobs.create`` (one named lock on every node) and keeps the cap;
* locks the calendars the batch names in share mode (a delete of one waits, then finds a job naming it):
  ``UnknownCalendars`` when one is missing.

Every row of a batch carries one instant (``updated_at``, ``created_at``, ``active_since`` where the edit
restarts the timetable or reopens a completed job, the audit rows' ``at``): the database's clock, read once the
locks are held, just before the writes.

A statement holds at most ROWS_A_STATEMENT rows and STATEMENT_BYTES of escaped values (less on a server whose
``max_allowed_packet`` is small; a bigger row goes alone): a batch of jobs with big bodies is many statements, never
one over the packet limit (the server drops the connection), and the driver escapes one statement's values on the
event loop at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any

from ..batching import chunks
from ..model.audit import AuditEntry
from ..model.errors import StoreUnavailable, TooManyJobs, UnknownCalendars
from ..model.jobs import Job
from .audit import audit_columns
from .codec import HISTORY_SQL, job_row, ph, to_db
from .connection import Cursor, Database

# the lock Jobs.create holds around the count and the insert (jobs.py): creates of both paths keep one cap
CREATE_LOCK = "cronring-create-{}"
LOCK_WAIT_SECONDS = 10
# Rows a statement: the driver escapes every value on the event loop (a thousand jobs' ~11,000 values held it for
# ~35 ms); a quarter of that, and the loop runs between statements.
ROWS_A_STATEMENT = 250
# Escaped bytes a statement (at most half the server's max_allowed_packet): 120 jobs of 64 KiB bodies made one
# statement of ~45 MiB (a body's emoji are 12 bytes each in the spec's JSON, and escaped again), past the 16 MiB
# packet: the server dropped the connection, a 503 for a valid batch; and the driver held the loop 680 ms escaping
# it. Escaping such a spec takes ~25 ns a character here: a megabyte is ~25 ms of the loop, 4 MiB was ~100 ms.
STATEMENT_BYTES = 1024 * 1024

_INSERT = ("INSERT INTO jobs (id, name, schedule, time_zone, paused, spec, version, fence, active_since, created_at,"
           " updated_at) VALUES ")
_INSERT_ROW = "(%s,%s,%s,%s,%s,%s,1,0,%s,%s,%s)"
# An edit's values as the rows of a derived table (the first row names the columns), joined to the jobs it
# changes at the version it was validated against. ``restart``: its instants are new from the edit on (a new
# schedule, zone, start or DST policy, a resume); ``reopen``: a completed job the edit lets fire again.
_EDIT_FIRST = ("SELECT %s AS id, %s AS version, %s AS name, %s AS schedule, %s AS time_zone, %s AS paused,"
               " %s AS spec, %s AS paused_until, %s AS restart, %s AS reopen")
_EDIT_NEXT = "SELECT %s,%s,%s,%s,%s,%s,%s,%s,%s,%s"
_EDIT_SET = (") v ON j.id = v.id COLLATE utf8mb4_bin AND j.version = v.version AND j.deleted_at IS NULL"
             " SET j.name = v.name, j.schedule = v.schedule, j.time_zone = v.time_zone, j.paused = v.paused,"
             " j.spec = v.spec, j.paused_until = v.paused_until, j.version = j.version + 1, j.updated_at = %s,"
             " j.active_since = IF(v.restart OR v.reopen, %s, j.active_since),"
             " j.completed_at = IF(v.reopen, NULL, j.completed_at)")
_AUDIT = ("INSERT INTO audit_log (at, actor, via, node, action, changes, note, subject, job_id, from_version,"
          " to_version) VALUES ")
_AUDIT_ROW = "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
_ESCAPED = "\\'\"\n\r\x00\x1a"  # the characters the driver escapes (each becomes two)
_COUNT = "SELECT COUNT(*) AS n FROM jobs WHERE deleted_at IS NULL"


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    """A job the batch creates, under the id chosen for it (``jobs.new_id``), at version 1."""

    id: str
    job: Job
    audit: AuditEntry


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEdit:
    """A new definition of an existing job, validated against its ``version`` (it becomes ``version + 1``)."""

    id: str
    job: Job
    version: int
    restart: bool = False  # new instants from the edit on (Jobs.update's schedule_changed)
    reopen: bool = False  # a completed job the edit lets fire again (its instants are new from the edit on too)
    audit: AuditEntry


class StaleJobs(Exception):
    """Jobs of the batch changed (or went) after it was validated: nothing was written."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"changed since the batch was validated: {', '.join(ids[:10])}")
        self.ids = ids


class BulkJobs:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def apply(self, creates: Sequence[NewJob], edits: Sequence[JobEdit], *, max_jobs: int) -> None:
        """Write the whole batch in one transaction, or nothing (``StaleJobs``, ``UnknownCalendars``,
        ``TooManyJobs``, ``StoreUnavailable``)."""
        if not creates and not edits:
            return
        lock = CREATE_LOCK.format(self.db.url.database)
        jobs = [c.job for c in creates] + [e.job for e in edits]
        names = sorted({n for job in jobs for n in job.exclude_calendars})
        written = _Written()
        async for attempt in self.db.attempts():
            async with attempt as cur:
                if attempt.again and await written.committed(cur):
                    break  # the first attempt committed (its connection was lost after): every row is there
                written.mark = None
                if creates:
                    await cur.execute("SELECT GET_LOCK(%s, %s) AS ok", (lock, LOCK_WAIT_SECONDS))
                    if not (await cur.fetchone())["ok"]:
                        raise StoreUnavailable(f"another create held the job-count lock for {LOCK_WAIT_SECONDS} s")
                try:
                    await cur.execute("START TRANSACTION")
                    try:
                        await self._write(cur, creates, edits, names, max_jobs, written)
                    except BaseException:
                        await cur.execute("ROLLBACK")
                        raise
                    await cur.execute("COMMIT")
                finally:
                    if creates:
                        await cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))

    async def check_room(self, creates: int, *, max_jobs: int) -> None:
        """A dry run's cap check: ``TooManyJobs`` if ``creates`` more jobs would pass ``max_jobs`` now (read only, no
        lock: the real run counts again under the job-count lock)."""
        if creates:
            row = await self.db.fetchone(_COUNT)
            _keep_cap(int(row["n"]) if row else 0, creates, max_jobs)

    @staticmethod
    async def _write(cur: Cursor, creates: Sequence[NewJob], edits: Sequence[JobEdit], names: list[str],
                     max_jobs: int, written: _Written) -> None:
        if edits:
            await _lock_versions(cur, edits)
        if creates:
            await cur.execute(_COUNT)
            _keep_cap(int((await cur.fetchone())["n"]), len(creates), max_jobs)
        if names:
            await cur.execute(f"SELECT name FROM calendars WHERE name IN ({ph(len(names))}) LOCK IN SHARE MODE", names)
            found = {r["name"] for r in await cur.fetchall()}
            if missing := [n for n in names if n not in found]:
                raise UnknownCalendars(missing)
        await cur.execute("SELECT NOW(3) AS now, @@max_allowed_packet AS packet")
        row = await cur.fetchone()
        at: datetime = row["now"]
        most = min(STATEMENT_BYTES, int(row["packet"]) // 2)
        # each statement's rows are made as it is cut (a spec's JSON, an audit row's changes): one at a time
        for new in _statements(((c.id, *job_row(c.job), at, at, at) for c in creates), most, len(_INSERT_ROW)):
            await cur.execute(_INSERT + ",".join([_INSERT_ROW] * len(new)), [v for r in new for v in r])
            await cur.execute(HISTORY_SQL.format(ph(len(new))), [r[0] for r in new])
        edited = ((e.id, e.version, *job_row(e.job), _paused_until(e.job), int(e.restart), int(e.reopen)) for e in edits)
        for part in _statements(edited, most, len(_EDIT_FIRST)):
            await cur.execute("UPDATE jobs j JOIN (" + " UNION ALL ".join([_EDIT_FIRST] + [_EDIT_NEXT] * (len(part) - 1))
                              + _EDIT_SET, [*(v for r in part for v in r), at, at])
            if cur.rowcount != len(part):  # the rows are locked at these versions: never, unless a bug
                raise StaleJobs([r[0] for r in part])
            await cur.execute(HISTORY_SQL.format(ph(len(part))), [r[0] for r in part])
        audit = chain(((at, *audit_columns(c.audit), c.id, None, 1) for c in creates),
                      ((at, *audit_columns(e.audit), e.id, e.version, e.version + 1) for e in edits))
        for lines in _statements(audit, most, len(_AUDIT_ROW)):
            await cur.execute(_AUDIT + ",".join([_AUDIT_ROW] * len(lines)), [v for r in lines for v in r])
            if written.mark is None:  # the batch's mark: its first audit row (one transaction: all rows, or none)
                written.mark = (cur.lastrowid, lines[0][8], lines[0][10], at)


class _Written:
    """What tells whether an attempt that lost its connection committed: the id of the batch's first audit row (an
    id of this transaction's own, kept with its job, version and instant), once it was written. Not the jobs
    themselves: another writer may have made the very same edit meanwhile."""

    __slots__ = ("mark",)

    def __init__(self) -> None:
        self.mark: tuple[int, str, int, datetime] | None = None

    async def committed(self, cur: Cursor) -> bool:
        if self.mark is None:  # the audit rows were never written: nor was COMMIT sent
            return False
        await cur.execute("SELECT 1 FROM audit_log WHERE id = %s AND job_id = %s AND to_version = %s AND at = %s",
                          self.mark)
        return await cur.fetchone() is not None


def _keep_cap(have: int, creates: int, max_jobs: int) -> None:
    if have + creates > max_jobs:
        raise TooManyJobs(f"the cluster has {have} jobs: {creates} more would pass {max_jobs} (CRONRING_MAX_JOBS)")


def _statements(rows: Iterable[tuple[Any, ...]], most: int, overhead: int) -> Iterator[list[tuple[Any, ...]]]:
    """The rows cut into statements of at most ROWS_A_STATEMENT rows and ``most`` escaped bytes (one row more when a
    single row is bigger); ``overhead``: a row's own SQL text."""
    part: list[tuple[Any, ...]] = []
    size = 0
    for row in rows:
        n = overhead + sum(_sql_bytes(v) for v in row)
        if part and (len(part) >= ROWS_A_STATEMENT or size + n > most):
            yield part
            part, size = [], 0
        part.append(row)
        size += n
    if part:
        yield part


def _sql_bytes(v: Any) -> int:
    """The bytes a value takes in a statement once the driver has escaped and quoted it (with its comma); a number,
    an instant or NULL: at most 32."""
    if not isinstance(v, str):
        return 32
    return (len(v) if v.isascii() else len(v.encode())) + sum(v.count(c) for c in _ESCAPED) + 3


async def _lock_versions(cur: Cursor, edits: Sequence[JobEdit]) -> None:
    """Lock the edited rows (in id order: two batches lock in one order) and check their versions."""
    found: dict[str, int] = {}
    ids = sorted(e.id for e in edits)
    for chunk in chunks(ids, ROWS_A_STATEMENT):
        await cur.execute(f"SELECT id, version FROM jobs WHERE id IN ({ph(len(chunk))}) AND deleted_at IS NULL"
                          " ORDER BY id FOR UPDATE", list(chunk))
        found.update({r["id"]: int(r["version"]) for r in await cur.fetchall()})
    if stale := [e.id for e in edits if found.get(e.id) != e.version]:
        raise StaleJobs(stale)


def _paused_until(job: Job) -> Any:
    """The ``paused_until`` column of a definition (Jobs.update's: the end of a pause, while paused)."""
    return to_db(job.paused_until) if job.paused and job.paused_until else None
