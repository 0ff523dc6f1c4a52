"""History: what happened, read back (a job's executions, the last one of each job, the tick ledger's
inputs), and what keeps it bounded (retention per job, the purge of old tombstones)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .. import fastjson
from ..batching import AUDIT_JOBS, STATEMENT_ROWS, chunks
from ..model.backfills import ACTIVE as BACKFILL_ACTIVE
from ..model.executions import Execution
from ..model.jobs import Job, JobVersion
from .codec import (
    CLAIMED,
    EXEC_COLS,
    EXEC_JSON,
    LEDGER_ROW,
    MISSED,
    OPEN,
    execution,
    execution_from_json,
    from_db,
    last_ticks_sql,
    ledger_execution,
    ph,
    sql_in,
    to_db,
)
from .connection import Database

History = dict[str, list[dict[str, Any]]]  # job id -> its definitions (job_history rows), ordered by version
RETENTION_QUIET = "INTERVAL 3 MINUTE"  # rows younger than this are kept whatever the count: the audit reads them
BACKFILL_KEEP_DAYS = 30  # an ended backfill and its executions are kept this long (what a later one checks against)


_VERSION_COLS = "version, valid_from, name, schedule, time_zone, paused, deleted, completed, spec"


def _version(job_id: str, row: dict[str, Any]) -> JobVersion:
    """A version as the job it was (its definition; a version written before release 3 kept none: the
    schedule, zone and pause alone)."""
    kept = row["spec"] is not None
    spec = row["spec"] or json.dumps({"uri": "", "method": "POST", "timeout_ms": 10_000, "retries": 0,
                                      "retry_backoff_ms": 1_000, "retry_max_backoff_ms": 30_000,
                                      "misfire_policy": "fire_once", "misfire_grace_seconds": 60,
                                      "concurrency_policy": "allow"})
    job = Job.from_row({"id": job_id, "name": row["name"] or "", "schedule": row["schedule"],
                        "time_zone": row["time_zone"], "paused": row["paused"], "spec": spec,
                        "version": row["version"], "fence": 0})
    return JobVersion(version=int(row["version"]), at=row["valid_from"].replace(tzinfo=UTC), job=job, deleted=bool(row["deleted"]),
                      completed=bool(row["completed"]), spec_kept=kept)


class Histories:
    def __init__(self, db: Database, *, keep_per_job: int = 200) -> None:
        self.db = db
        self.keep_per_job = keep_per_job  # executions kept per job by retention (settings.history_per_job)

    # ---- executions -----------------------------------------------------------------------

    async def executions(self, job_id: str, *, limit: int, before: datetime | None = None) -> list[Execution]:
        """A job's newest executions, newest first (before ``before``, for the next page)."""
        if before is None:
            rows = await self.db.fetchall(f"SELECT {EXEC_COLS} FROM executions WHERE job_id=%s"
                                          " ORDER BY scheduled_at DESC LIMIT %s", (job_id, limit))
        else:
            rows = await self.db.fetchall(f"SELECT {EXEC_COLS} FROM executions WHERE job_id=%s AND scheduled_at < %s"
                                          " ORDER BY scheduled_at DESC LIMIT %s", (job_id, to_db(before), limit))
        return [execution(r) for r in rows]

    async def last_executions(self, job_ids: Sequence[str]) -> dict[str, Execution]:
        """Each job's last execution that is not a claim made ahead nor a missed range (a page's "last run")."""
        if not job_ids:
            return {}
        rows = await self.db.fetchall(
            f"SELECT {EXEC_JSON} AS e FROM executions x JOIN (SELECT job_id, MAX(scheduled_at) AS m FROM executions"
            f" WHERE job_id IN ({ph(len(job_ids))}) AND state NOT IN ({MISSED}, {CLAIMED}) GROUP BY job_id) l"
            " ON x.job_id = l.job_id AND x.scheduled_at = l.m", list(job_ids))
        out: dict[str, Execution] = {}
        for r in rows:
            e = execution_from_json(r["e"])
            out[e.job_id] = e
        return out

    async def all_executions(self, job_ids: Sequence[str] | None = None) -> list[Execution]:
        """Every execution row (of these jobs): for tests and audits."""
        if job_ids:
            rows = await self.db.fetchall(f"SELECT {EXEC_COLS} FROM executions WHERE job_id IN ({ph(len(job_ids))})",
                                          list(job_ids))
        else:
            rows = await self.db.fetchall(f"SELECT {EXEC_COLS} FROM executions")
        return [execution(r) for r in rows]

    async def last_scheduled_tick(self, job_id: str) -> datetime | None:
        row = await self.db.fetchone(last_ticks_sql(1), (job_id,))
        return from_db(row["last"]) if row else None

    # ---- definitions and the ledger -------------------------------------------------------

    async def versions(self, job_id: str, *, limit: int = 100, before: int | None = None) -> list[JobVersion]:
        """A job's versions, newest first (``before``: older than that version)."""
        rows = await self.db.fetchall(
            f"SELECT {_VERSION_COLS} FROM job_history WHERE job_id = %s"
            + (" AND version < %s" if before is not None else "") + " ORDER BY version DESC LIMIT %s",
            [job_id, *([before] if before is not None else []), limit])
        return [_version(job_id, r) for r in rows]

    async def version(self, job_id: str, version: int) -> JobVersion | None:
        row = await self.db.fetchone(f"SELECT {_VERSION_COLS} FROM job_history WHERE job_id = %s AND version = %s",
                                     (job_id, version))
        return _version(job_id, row) if row else None

    async def job_history(self, job_ids: Sequence[str]) -> History:
        """Every definition of these jobs, ordered by version."""
        out: History = {j: [] for j in job_ids}
        for chunk in chunks(job_ids, AUDIT_JOBS):
            for r in await self.db.fetchall(
                    "SELECT job_id, version, valid_from, schedule, time_zone, paused, deleted, spec, completed"
                    " FROM job_history"
                    f" WHERE job_id IN ({ph(len(chunk))}) ORDER BY job_id, version", list(chunk)):
                r["valid_from"] = from_db(r["valid_from"])
                out[r["job_id"]].append(r)
        return out

    async def ledger_inputs(self, job_ids: Sequence[str], start: datetime, end: datetime
                            ) -> tuple[History, dict[str, list[Execution]], dict[str, datetime | None]]:
        """For each job: its definition history up to ``end``, the execution rows that account for instants
        in ``[start, end)``, and its oldest execution row when retention may have trimmed older ones."""
        history: History = {j: [] for j in job_ids}
        rows: dict[str, list[Execution]] = {j: [] for j in job_ids}
        oldest: dict[str, datetime | None] = {}
        for chunk in chunks(job_ids, AUDIT_JOBS):
            ids, jobs_in = list(chunk), ph(len(chunk))
            async for attempt in self.db.attempts():
                async with attempt as cur:
                    for j in ids:  # from scratch: a second attempt (after a lost primary) must not add twice
                        history[j], rows[j] = [], []
                        oldest.pop(j, None)
                    await cur.execute(
                        "SELECT job_id, version, valid_from, schedule, time_zone, paused, deleted, spec, completed"
                    " FROM job_history"
                        f" WHERE job_id IN ({jobs_in}) AND valid_from < %s ORDER BY job_id, version", [*ids, to_db(end)])
                    for r in await cur.fetchall():
                        r["valid_from"] = from_db(r["valid_from"])
                        history[r["job_id"]].append(r)
                    # A range row's scheduled_at is its last instant: rows ending in or after the window and
                    # starting before its end. One JSON array per job, built by MariaDB.
                    await cur.execute("SET SESSION group_concat_max_len = 1073741824")
                    await cur.execute(
                        f"SELECT job_id, JSON_ARRAYAGG(JSON_ARRAY({LEDGER_ROW})) AS r FROM executions"
                        f" WHERE job_id IN ({jobs_in}) AND ((scheduled_at >= %s AND COALESCE(missed_from, scheduled_at) < %s)"
                        " OR (instant >= %s AND instant < %s)) GROUP BY job_id",
                        [*ids, to_db(start), to_db(end), to_db(start), to_db(end)])
                    for g in await cur.fetchall():
                        rows[g["job_id"]].extend(ledger_execution(g["job_id"], v) for v in fastjson.loads(g["r"]))
                    # Only a job that has reached the retention limit can have lost rows to it: for the others
                    # an instant without a row is a loss, never "trimmed".
                    # (a backfill's rows are not retention's: they say nothing of what it trimmed)
                    await cur.execute(f"SELECT job_id, MIN(scheduled_at) AS m, COUNT(*) AS n FROM executions"
                                      f" WHERE job_id IN ({jobs_in}) AND backfill IS NULL GROUP BY job_id", ids)
                    for r in await cur.fetchall():
                        if int(r["n"]) >= self.keep_per_job:
                            oldest[r["job_id"]] = from_db(r["m"])
        return history, rows, oldest

    # ---- keeping it bounded ---------------------------------------------------------------

    async def apply_retention(self, job_ids: Sequence[str], keep: int) -> int:
        """Keep the newest ``keep`` finished executions of each job (never its takeover anchor, whatever the
        number of run-nows after it, nor anything younger than the audit reads); returns rows deleted. A
        backfill's executions are not among them: they go with their backfill (``purge_backfills``), so a repeated
        or overlapping backfill finds what an earlier one delivered, and progress never counts down."""
        deleted = 0
        for job_id in job_ids:
            async for attempt in self.db.attempts():
                async with attempt as cur:
                    await cur.execute("SELECT scheduled_at FROM executions WHERE job_id=%s AND backfill IS NULL"
                                      " ORDER BY scheduled_at DESC LIMIT 1 OFFSET %s", (job_id, keep))
                    cut = await cur.fetchone()
                    if cut is None:
                        break
                    await cur.execute(last_ticks_sql(1), (job_id,))
                    anchor = await cur.fetchone()
                    deleted += await cur.execute(
                        f"DELETE FROM executions WHERE job_id=%s AND scheduled_at <= %s AND state NOT IN {OPEN}"
                        f" AND backfill IS NULL AND scheduled_at <> %s AND scheduled_at < NOW(3) - {RETENTION_QUIET}",
                        (job_id, cut["scheduled_at"], anchor["last"] if anchor else datetime(1970, 1, 1)))
        return deleted

    async def purge_backfills(self, older_than_days: int = BACKFILL_KEEP_DAYS) -> int:
        """Backfills that ended more than ``older_than_days`` ago go, with their executions (a thousand at a
        time); how many."""
        row = await self.db.fetchone(f"SELECT id FROM backfills WHERE state NOT IN {sql_in(BACKFILL_ACTIVE)}"
                                     " AND updated_at < NOW(3) - INTERVAL %s DAY LIMIT 1", (older_than_days,))
        if row is None:
            return 0  # (one backfill a pass, its rows a few thousand at a time: never one long statement)
        while await self.db.execute("DELETE FROM executions WHERE backfill = %s LIMIT %s",
                                    (row["id"], STATEMENT_ROWS)) >= STATEMENT_ROWS:
            pass
        await self.db.execute("DELETE FROM backfills WHERE id = %s", (row["id"],))
        return 1

    async def purge_tombstones(self, older_than_days: int = 7) -> int:
        """Delete jobs deleted more than ``older_than_days`` ago, with their history and executions (a
        thousand at a time); how many."""
        async for attempt in self.db.attempts():
            async with attempt as cur:
                await cur.execute("SELECT id FROM jobs WHERE deleted_at IS NOT NULL AND deleted_at < NOW(3)"
                                  " - INTERVAL %s DAY LIMIT %s", (older_than_days, STATEMENT_ROWS))
                ids = [r["id"] for r in await cur.fetchall()]
                if ids:
                    for table, col in (("executions", "job_id"), ("job_history", "job_id"), ("backfills", "job_id"),
                                       ("jobs", "id")):
                        await cur.execute(f"DELETE FROM {table} WHERE {col} IN ({ph(len(ids))})", ids)
                return len(ids)
        return 0
