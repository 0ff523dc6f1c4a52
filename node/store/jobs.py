"""Jobs: definitions, versions, the catalogue's change feed. Every change writes the new version's row of
``job_history`` in its own transaction (the tick ledger lists each instant under the definition in force
then), and a delete settles the job's open executions (nobody will take it over now).

A write that may run twice (a second attempt after a lost primary) first looks for its own result: a job
found by the id it chose, an edit already in place, a delete already done."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from ..batching import STATEMENT_ROWS, chunks
from ..model.audit import AuditEntry
from ..model.errors import NotFound, StoreUnavailable, TooManyJobs, UnknownCalendars, VersionConflict
from ..model.executions import Execution
from ..model.jobs import Job, JobSummary
from ..model.labels import Selector
from ..model.times import rfc3339
from .audit import Versions, write_audit
from .codec import (
    ABANDONED,
    CLAIMED,
    EXEC_JSON,
    HISTORY_SQL,
    JOB_COLS,
    JOB_JSON,
    MISSED,
    OPEN,
    arcs_sql,
    execution_from_json,
    from_db,
    job_from_json,
    job_row,
    ph,
    selector_sql,
    summary,
    to_db,
)
from .connection import Cursor, Database


class Found(NamedTuple):
    """A search's page: the jobs, and (when it stopped before the end, within its budget) the seq to go on from
    and the highest seq, whose ratio is how far through the creation order it got."""

    jobs: list[Job]
    resume: int | None = None
    top: int = 0

    @property
    def progress(self) -> float | None:
        """How far through the creation order a search stopped (thousandths, rounded down: 1.0 only at the end)."""
        return None if self.resume is None else int(1000 * self.resume / max(self.top, 1)) / 1000


SEARCH_WINDOW = 8_000  # seqs a search reads per statement (a window of the creation order: ~40 ms at a million jobs)
RECENT_DELETES = 600  # seconds: a share's read also returns the jobs deleted this recently (cluster/catalogue.TOMBSTONE_KEEP)
SEARCH_BUDGET = 0.1  # seconds a search goes on before it answers with what it found (CRONRING_SEARCH_BUDGET)

_INSERT = ("INSERT INTO jobs (id, name, schedule, time_zone, paused, spec, version, fence, active_since, created_at,"
           " updated_at) VALUES ")
_VALUES = "(%s,%s,%s,%s,%s,%s,1,0,NOW(3),NOW(3),NOW(3))"
# One job and its last execution (not a claim made ahead, not a missed range) in one statement: the API's
# hot read, two JSON objects built by MariaDB.
_JOB_AND_LAST_SQL = (
    f"SELECT {JOB_JSON} AS j, (SELECT {EXEC_JSON} FROM executions x WHERE x.job_id = j.id"
    f" AND x.state NOT IN ({MISSED}, {CLAIMED}) ORDER BY x.scheduled_at DESC LIMIT 1) AS e"
    " FROM jobs j WHERE j.id = %s AND j.deleted_at IS NULL"
)


def new_id() -> str:
    return secrets.token_hex(8)


async def _lock_calendars(cur: Cursor, job: Job) -> None:
    """The calendars the job names exist, and stay until this transaction ends (share locks: a delete of one
    waits, then finds the job naming it). ``UnknownCalendars`` otherwise."""
    names = list(job.exclude_calendars)
    if not names:
        return
    await cur.execute(f"SELECT name FROM calendars WHERE name IN ({ph(len(names))}) LOCK IN SHARE MODE", names)
    found = {r["name"] for r in await cur.fetchall()}
    if missing := [n for n in names if n not in found]:
        raise UnknownCalendars(missing)


async def _exists(cur: Cursor, job_id: str) -> bool:
    await cur.execute("SELECT 1 FROM jobs WHERE id=%s", (job_id,))
    return await cur.fetchone() is not None


class Jobs:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- writes ---------------------------------------------------------------------------

    async def create(self, job: Job, max_jobs: int, *, audit: AuditEntry | None = None) -> Job:
        """Insert one job (version 1) under the job cap; the cap and the insert hold one named lock on every
        node, so concurrent creates cannot pass the count together."""
        job_id, lock = new_id(), f"cronring-create-{self.db.url.database}"
        async for attempt in self.db.attempts():
            async with attempt as cur:
                if attempt.again and await _exists(cur, job_id):  # the first run committed: the id is ours alone
                    break
                await cur.execute("SELECT GET_LOCK(%s, 10) AS ok", (lock,))
                if not (await cur.fetchone())["ok"]:
                    raise StoreUnavailable("another create held the job-count lock for 10 s")
                try:
                    await cur.execute("START TRANSACTION")
                    try:
                        await cur.execute("SELECT COUNT(*) AS n FROM jobs WHERE deleted_at IS NULL")
                        if (await cur.fetchone())["n"] >= max_jobs:
                            raise TooManyJobs(f"the cluster already has {max_jobs} jobs (CRONRING_MAX_JOBS)")
                        await _lock_calendars(cur, job)
                        await cur.execute(_INSERT + _VALUES, (job_id, *job_row(job)))
                        await cur.execute(HISTORY_SQL.format("%s"), (job_id,))
                        if audit is not None:
                            await write_audit(cur, audit, job_id, Versions.CREATED)
                    except BaseException:
                        await cur.execute("ROLLBACK")
                        raise
                    await cur.execute("COMMIT")
                finally:
                    await cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
        return await self.get(job_id)

    async def create_many(self, jobs: Sequence[Job]) -> list[str]:
        """Insert many jobs in one transaction (benchmarks, imports); their ids."""
        ids = [new_id() for _ in jobs]
        rows = [(i, *job_row(j)) for i, j in zip(ids, jobs, strict=True)]
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                if attempt.again and await _exists(cur, ids[0]):  # one transaction: the first id, all of them
                    break
                for chunk in chunks(rows, STATEMENT_ROWS):
                    await cur.execute(_INSERT + ",".join([_VALUES] * len(chunk)), [v for r in chunk for v in r])
                    await cur.execute(HISTORY_SQL.format(ph(len(chunk))), [r[0] for r in chunk])
        return ids

    async def update(self, job_id: str, job: Job, *, if_version: int | None, schedule_changed: bool,
                     reopen: bool = False, audit: AuditEntry | None = None) -> Job:
        """``schedule_changed``: its instants are new from now on (the owner plans from the edit). ``reopen``: a
        completed job the edit lets fire again."""
        cols = job_row(job)
        sql = ("UPDATE jobs SET name=%s, schedule=%s, time_zone=%s, paused=%s, spec=%s, version=version+1,"
               " updated_at=NOW(3), paused_until=%s" + (", active_since=NOW(3)" if schedule_changed or reopen else "") +
               (", completed_at=NULL" if reopen else "") +
               " WHERE id=%s AND deleted_at IS NULL" + (" AND version=%s" if if_version is not None else ""))
        until = to_db(job.paused_until) if job.paused and job.paused_until else None
        args = [*cols, until, job_id, *([if_version] if if_version is not None else [])]
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                if attempt.again and await self._edit_in_place(cur, job_id, cols, if_version):
                    break
                await _lock_calendars(cur, job)
                await cur.execute(sql, args)
                if cur.rowcount == 0:
                    await self._refused(cur, job_id)
                await cur.execute(HISTORY_SQL.format("%s"), (job_id,))
                if audit is not None:
                    await write_audit(cur, audit, job_id)
        return await self.get(job_id)

    @staticmethod
    async def _edit_in_place(cur: Cursor, job_id: str, cols: tuple[Any, ...], if_version: int | None) -> bool:
        """A second attempt: the first one committed this very edit (same values, the version after it)."""
        await cur.execute("SELECT version, spec, name, schedule, time_zone, paused FROM jobs"
                          " WHERE id=%s AND deleted_at IS NULL", (job_id,))
        row = await cur.fetchone()
        return row is not None and (if_version is None or row["version"] == if_version + 1) and \
            (row["name"], row["schedule"], row["time_zone"], row["paused"], json.loads(row["spec"])) == \
            (*cols[:4], json.loads(cols[4]))

    @staticmethod
    async def _refused(cur: Cursor, job_id: str) -> None:
        """An update or delete that changed no row: gone (NotFound) or at another version (VersionConflict)."""
        await cur.execute("SELECT version, deleted_at FROM jobs WHERE id=%s", (job_id,))
        row = await cur.fetchone()
        if row is None or row["deleted_at"] is not None:
            raise NotFound(job_id)
        raise VersionConflict(row["version"])

    async def complete(self, job_id: str, fence: int, at: datetime, *, version: int | None = None) -> int | None:
        """The owner (``fence``) marks a job completed at ``at`` (never earlier than its last change: the history
        stays in order); the new version, or None when it is no longer this owner's to complete, or (``version``)
        an edit came after the plan that found it complete (a higher maxRuns, a later endAt: it decides again)."""
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                await cur.execute(
                    # (the owner's fence may not be written yet: an epoch drawn at its takeover, written with its
                    # first write, this one; a higher fence is a newer owner's)
                    "UPDATE jobs SET completed_at = GREATEST(%s, updated_at), version = version + 1, updated_at = NOW(3),"
                    " fence = %s WHERE id = %s AND fence <= %s AND deleted_at IS NULL AND completed_at IS NULL"
                    + ("" if version is None else " AND version = %s"),
                    (to_db(at), fence, job_id, fence) + (() if version is None else (version,)))
                if cur.rowcount == 0:
                    return None
                await cur.execute(HISTORY_SQL.format("%s"), (job_id,))
                await cur.execute("SELECT version FROM jobs WHERE id=%s", (job_id,))
                return int((await cur.fetchone())["version"])
        return None

    async def set_paused(self, job_id: str, paused: bool, *, reason: str | None = None, by: str | None = None,
                         until: datetime | None = None, audit: AuditEntry | None = None, expired: bool = False,
                         if_streak_at_least: int | None = None) -> bool:
        """Pause (why, by whom, until when) or resume; False when it already was (nothing written). ``expired``:
        resume only if its ``pausedUntil`` has passed (the nodes' sweep: one of them does it). A pause's reason
        lives in the spec (versions show it), its end also in a column (the sweep's index).
        ``if_streak_at_least``: an auto-pause, only while the failure streak is that long."""
        if paused:
            spec = ("JSON_SET(spec, '$.paused_reason', %s, '$.paused_by', %s,"
                    " '$.paused_at', DATE_FORMAT(NOW(3), '%%Y-%%m-%%dT%%H:%%i:%%s.%%fZ'), '$.paused_until', %s)")
            args: list[Any] = [reason, by, rfc3339(until)]
        else:
            spec = "JSON_REMOVE(spec, '$.paused_reason', '$.paused_by', '$.paused_at', '$.paused_until')"
            args = []
        cond = " AND paused_until <= NOW(3)" if expired else ""
        if if_streak_at_least is not None:
            cond += " AND fail_streak >= %s"
        # a pause of a job whose pause has ended (the sweep has not come yet) pauses it anew, with no end
        changes = "(paused = 0 OR paused_until <= NOW(3))" if paused else "paused <> %s"
        sql = (f"UPDATE jobs SET paused=%s, spec={spec}, paused_until=%s, version=version+1, updated_at=NOW(3)"
               # a resume: the auto-pause counts its failures from here (pause_base), instants from now
               + ("" if paused else ", active_since=NOW(3), pause_base=fail_streak")
               + f" WHERE id=%s AND deleted_at IS NULL AND {changes}{cond}")
        values = [int(paused), *args, to_db(until) if paused and until else None, job_id,
                  *([] if paused else [int(paused)]), *([if_streak_at_least] if if_streak_at_least is not None else [])]
        changed = False
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                await cur.execute(sql, values)
                changed = bool(cur.rowcount)
                if changed:
                    await cur.execute(HISTORY_SQL.format("%s"), (job_id,))
                    if audit is not None:
                        await write_audit(cur, audit, job_id)
        return changed

    async def pauses_ended(self, limit: int = 100) -> list[str]:
        """Paused jobs whose pause has ended (``pausedUntil`` passed)."""
        rows = await self.db.fetchall("SELECT id FROM jobs WHERE paused_until <= NOW(3) AND paused = 1"
                                      " AND deleted_at IS NULL ORDER BY paused_until LIMIT %s", (limit,))
        return [r["id"] for r in rows]

    async def delete(self, job_id: str, *, if_version: int | None = None, audit: AuditEntry | None = None) -> int:
        """Soft-delete (a tombstone for the catalogues); the version it ends at. Rows claimed by an owner
        lost before it recorded an outcome are settled: nobody will take this job over now (a run still in
        flight overwrites that with its real outcome)."""
        sql = ("UPDATE jobs SET deleted_at=NOW(3), updated_at=NOW(3), version=version+1 WHERE id=%s"
               " AND deleted_at IS NULL" + (" AND version=%s" if if_version is not None else ""))
        args = [job_id, *([if_version] if if_version is not None else [])]
        version = 0
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                await cur.execute(sql, args)
                if cur.rowcount == 0:
                    await cur.execute("SELECT version, deleted_at FROM jobs WHERE id=%s", (job_id,))
                    row = await cur.fetchone()
                    if row is not None and row["deleted_at"] is not None and attempt.again and \
                            (if_version is None or row["version"] == if_version + 1):
                        version = int(row["version"])  # the first run committed this delete
                        break
                    await self._refused(cur, job_id)
                await cur.execute(HISTORY_SQL.format("%s"), (job_id,))
                if audit is not None:
                    await write_audit(cur, audit, job_id)
                await cur.execute(
                    f"UPDATE executions SET state={ABANDONED}, finished_at=NOW(3),"
                    " error=CONCAT('job deleted before ', node, ' recorded an outcome')"
                    f" WHERE job_id=%s AND state IN {OPEN}", (job_id,))
                await cur.execute("SELECT version FROM jobs WHERE id=%s", (job_id,))
                version = int((await cur.fetchone())["version"])
        return version

    # ---- reads ----------------------------------------------------------------------------

    async def get(self, job_id: str, *, include_deleted: bool = False) -> Job:
        row = await self.db.fetchone(f"SELECT {JOB_COLS} FROM jobs WHERE id=%s", (job_id,))
        if row is None or (row["deleted_at"] is not None and not include_deleted):
            raise NotFound(job_id)
        return _job(row)

    async def get_and_last(self, job_id: str) -> tuple[Job, Execution | None]:
        """One job and its last execution (the API's hot read)."""
        row = await self.db.fetchone(_JOB_AND_LAST_SQL, (job_id,))
        if row is None:
            raise NotFound(job_id)
        return job_from_json(row["j"]), (execution_from_json(row["e"]) if row["e"] is not None else None)

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        out: list[Job] = []
        for chunk in chunks(job_ids, STATEMENT_ROWS):
            rows = await self.db.fetchall(f"SELECT {JOB_COLS} FROM jobs WHERE id IN ({ph(len(chunk))})"
                                          " AND deleted_at IS NULL", chunk)
            out.extend(_job(r) for r in rows)
        return out

    async def search(self, *, limit: int, cursor: int | None, q: str | None, paused: bool | None,
                     failing: bool = False, selector: Selector | None = None, budget: float = SEARCH_BUDGET) -> Found:
        """``page``, for a reader (the API's list, the dashboard's jobs page): a search (``q``) reads the table in
        creation order a window at a time and answers within ``budget`` seconds with what it found, and where
        to go on (a seq) when it stopped before the end with fewer than ``limit`` jobs. A word nobody's job has
        reads every row: at a million jobs that is seconds, so it goes in steps a reader can follow (the API's
        next cursor, the dashboard's progress bar) instead of one request that holds a connection for all of it."""
        if not q:
            return Found(await self.page(limit=limit, cursor=cursor, q=None, paused=paused, failing=failing,
                                         selector=selector))
        deadline = time.monotonic() + budget
        row = await self.db.fetchone("SELECT COALESCE(MAX(seq), 0) AS top FROM jobs")
        top = int(row["top"]) if row else 0
        lo, found = cursor or 0, list[Job]()
        while lo < top:
            hi = min(top, lo + SEARCH_WINDOW)
            found += await self.page(limit=limit - len(found), cursor=lo, q=q, paused=paused, failing=failing,
                                     selector=selector, until=hi)
            if len(found) >= limit:
                return Found(found)
            lo = hi
            if lo < top and time.monotonic() >= deadline:
                return Found(found, resume=lo, top=top)
        return Found(found)

    async def page(self, *, limit: int, cursor: int | None, q: str | None, paused: bool | None,
                   failing: bool = False, selector: Selector | None = None, until: int | None = None) -> list[Job]:
        """A page in creation order after ``cursor`` (``seq``), up to ``until`` (a seq) if given. ``q`` searches
        names, ids, schedules and the target as scheme://host:port/path (``search_target``): never header values,
        userinfo or queries."""
        where: list[str] = ["deleted_at IS NULL"]
        args: list[Any] = []
        if cursor is not None:
            where.append("seq > %s")
            args.append(cursor)
        if until is not None:
            where.append("seq <= %s")
            args.append(until)
        if q:
            like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(name LIKE %s OR id LIKE %s OR schedule LIKE %s OR search_target LIKE %s)")
            args += [like, like, like, like]
        if paused is not None:
            where.append("paused = %s")
            args.append(int(paused))
        if failing:
            where.append("fail_streak > 0")
        if selector:
            cond, cond_args = selector_sql(selector)
            where.append(cond)
            args += cond_args
        rows = await self.db.fetchall(f"SELECT {JOB_JSON} AS j FROM jobs j WHERE {' AND '.join(where)}"
                                      " ORDER BY seq LIMIT %s", [*args, limit])
        return [job_from_json(r["j"]) for r in rows]

    async def calendar_users(self) -> dict[str, int]:
        """How many live jobs name each calendar."""
        rows = await self.db.fetchall(
            "SELECT c.name, COUNT(j.id) AS n FROM calendars c JOIN jobs j ON j.deleted_at IS NULL AND"
            " JSON_CONTAINS(COALESCE(JSON_EXTRACT(j.spec, '$.exclude_calendars'), '[]'), JSON_QUOTE(c.name))"
            " GROUP BY c.name")
        return {r["name"]: int(r["n"]) for r in rows}

    async def count(self, selector: Selector | None = None) -> int:
        cond, args = selector_sql(selector) if selector else ("1=1", [])
        row = await self.db.fetchone(f"SELECT COUNT(*) AS n FROM jobs WHERE deleted_at IS NULL AND {cond}", args)
        return int(row["n"]) if row else 0

    async def last_change(self) -> datetime | None:
        """When a job last changed (created, edited, paused, completed, deleted): the updated_at index's last entry."""
        row = await self.db.fetchone("SELECT MAX(updated_at) AS m FROM jobs")
        return from_db(row["m"]) if row and row["m"] is not None else None

    async def forecast_groups(self, selector: Selector | None = None) -> list[dict[str, Any]]:
        """What the forecast counts (scheduling/forecast.py), first kind: the active jobs with one plain schedule
        without H, grouped by MariaDB by (schedule, zone), each group with its count and an example (id, name).
        "Plain" is read from the stored spec: its optional keys are written only when set (model/jobs.py)."""
        live, args = _forecast_live(selector)
        groups = await self.db.fetchall(
            f"SELECT schedule, time_zone, COUNT(*) AS n, MIN(id) AS id FROM jobs WHERE {live} AND {_PLAIN}"
            " AND schedule NOT LIKE %s GROUP BY schedule, time_zone", [*args, "%H%"])
        names = {r["id"]: "" for r in groups}
        for chunk in chunks(list(names), STATEMENT_ROWS):
            for r in await self.db.fetchall(f"SELECT id, name FROM jobs WHERE id IN ({ph(len(chunk))})", chunk):
                names[r["id"]] = r["name"]
        for r in groups:
            r["name"] = names.get(r["id"], "")
        return groups

    async def forecast_h(self, selector: Selector | None, after: int, limit: int
                         ) -> list[tuple[int, str, str, str, str]]:
        """Second kind, a page at a time (by seq): plain jobs whose schedule has H, as (seq, id, name, schedule,
        zone); H resolves by id. (An H in a day name, THU, lands here too: right, at the price of a hash.)"""
        live, args = _forecast_live(selector)
        rows = await self.db.fetchall(
            f"SELECT seq, id, name, schedule, time_zone FROM jobs WHERE {live} AND {_PLAIN} AND schedule LIKE %s"
            " AND seq > %s ORDER BY seq LIMIT %s", [*args, "%H%", after, limit])
        return [(int(r["seq"]), r["id"], r["name"], r["schedule"], r["time_zone"]) for r in rows]

    async def forecast_rest(self, selector: Selector | None, after: int, limit: int) -> list[Job]:
        """Third kind, a page at a time (by seq): the other active jobs (calendars, bounds, several schedules, a
        jitter, a DST policy, skips, a run limit), whole."""
        live, args = _forecast_live(selector)
        return [_job(r) for r in await self.db.fetchall(
            f"SELECT {JOB_COLS} FROM jobs WHERE {live} AND NOT ({_PLAIN}) AND seq > %s ORDER BY seq LIMIT %s",
            [*args, after, limit])]

    async def ids_matching(self, selector: Selector) -> list[str]:
        """The live jobs a selector matches (a scoped token's stream)."""
        cond, args = selector_sql(selector)
        return [r["id"] for r in await self.db.fetchall(f"SELECT id FROM jobs WHERE deleted_at IS NULL AND {cond}", args)]

    async def share_digest(self, arcs: Sequence[tuple[int, int]]) -> tuple[int, int, datetime | None]:
        """How many live jobs lie in ``arcs`` and a digest of their summaries (model.jobs.summary_digest: the XOR
        of each one's md5), read from the ring index alone; and the database's now. A node's full re-sync
        compares it with its own and reads its share again only when they differ."""
        share, share_args = arcs_sql(arcs)
        async for attempt in self.db.attempts():
            async with attempt as cur:
                await cur.execute("SELECT NOW(3) AS now")
                now = (await cur.fetchone())["now"]
                await cur.execute(
                    "SELECT COUNT(*) AS n, BIT_XOR(CAST(CONV(LEFT(MD5(CONCAT(id, ':', version, ':', paused, ':',"
                    " completed_at IS NOT NULL)), 16), 16, 10) AS UNSIGNED)) AS x"
                    f" FROM jobs FORCE INDEX (ix_jobs_ring) WHERE deleted_at IS NULL AND {share}", share_args)
                row = await cur.fetchone()
                return int(row["n"] or 0), int(row["x"] or 0), from_db(now)
        return 0, 0, None

    async def changed_since(self, watermark: datetime | None, arcs: Sequence[tuple[int, int]] | None = None
                            ) -> tuple[list[JobSummary], datetime | None]:
        """The catalogue's feed: summaries (tombstones included) changed at or after ``watermark``; all live
        ones when None. Only the jobs whose ring point lies in ``arcs`` (a node's share; None: every job), and
        then also the jobs deleted within ``RECENT_DELETES`` seconds: a node that takes a share over learns of
        a delete its ring owner may not have lived to settle (cluster/catalogue.focus). And the database's now,
        the next watermark."""
        cols = "id, paused, version, deleted_at, completed_at"
        share, share_args = arcs_sql(arcs) if arcs is not None else ("TRUE", [])
        async for attempt in self.db.attempts():
            async with attempt as cur:
                await cur.execute("SELECT NOW(3) AS now")
                now = (await cur.fetchone())["now"]
                if share == "FALSE":
                    return [], from_db(now)
                if watermark is None:
                    if share == "TRUE":
                        await cur.execute(f"SELECT {cols} FROM jobs WHERE deleted_at IS NULL")
                    else:
                        await cur.execute(f"SELECT {cols} FROM jobs FORCE INDEX (ix_jobs_ring) WHERE (deleted_at IS NULL"
                                          f" OR deleted_at >= NOW(3) - INTERVAL {RECENT_DELETES} SECOND) AND {share}",
                                          share_args)
                else:
                    return await _changed_pages(cur, cols, to_db(watermark), share, share_args), from_db(now)
                rows = await cur.fetchall()
                return [summary(r) for r in rows], from_db(now)
        return [], None


CHANGED_PAGE = 2000  # rows per statement of a read since a watermark


def changed_page_sql(cols: str, share: str, *, first: bool) -> str:
    """A page of ``_changed_pages``: the first (``updated_at >= %s``), or the next after ``(updated_at, id)``."""
    since = "updated_at >= %s" if first else "(updated_at > %s OR (updated_at = %s AND id > %s))"
    return (f"SELECT {cols}, updated_at FROM jobs FORCE INDEX (ix_jobs_updated) WHERE {since} AND {share}"
            f" ORDER BY updated_at, id LIMIT {CHANGED_PAGE}")


async def _changed_pages(cur: Cursor, cols: str, since: Any, share: str, share_args: list[Any]) -> list[JobSummary]:
    """The summaries changed since ``since``, read a page at a time in ``(updated_at, id)`` order (the index's own):
    a read just after a bulk apply of 100,000 jobs held every row's dict at once, ~40 MB for a moment, ~9 MB of
    which a node's RSS kept (pymalloc's pools); now a page's rows at most, and their summaries."""
    out: list[JobSummary] = []
    after: tuple[Any, str] | None = None
    while True:
        if after is None:
            await cur.execute(changed_page_sql(cols, share, first=True), (since, *share_args))
        else:
            await cur.execute(changed_page_sql(cols, share, first=False), (after[0], after[0], after[1], *share_args))
        rows = await cur.fetchall()
        out.extend(summary(r) for r in rows)
        if len(rows) < CHANGED_PAGE:
            return out
        after = (rows[-1]["updated_at"], rows[-1]["id"])


_PLAIN = ("NOT JSON_CONTAINS_PATH(spec, 'one', '$.more_schedules', '$.start_at', '$.end_at', '$.skip_until',"
          " '$.max_runs', '$.jitter_seconds', '$.dst_policy', '$.exclude_calendars')")


def _forecast_live(selector: Selector | None) -> tuple[str, list[Any]]:
    cond, args = selector_sql(selector) if selector else ("1=1", [])
    return f"deleted_at IS NULL AND paused = 0 AND completed_at IS NULL AND {cond}", args


def _job(row: dict[str, Any]) -> Job:
    return Job.from_row(row)
