"""How the model's records are spelled in MariaDB: columns, placeholders, instants, the vocabulary as SQL
literals, and rows (or MariaDB-built JSON) back into records. Shared by the repositories; no statement
runs here.

Rows are read as one JSON object each where it pays (``JOB_JSON``, ``EXEC_JSON``): the pure-Python driver
parses a column description per column per result and converts every value in Python; ``json.loads`` is C.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .. import fastjson
from ..model.executions import (
    IN_FLIGHT_STATES,
    ONE_INSTANT_KINDS,
    OPEN_STATES,
    UNSCHEDULED_KINDS,
    Execution,
    ExecutionKind,
    ExecutionState,
)
from ..model.jobs import Job, JobSummary
from ..model.labels import Op, Selector


def ph(n: int) -> str:
    """``%s,%s,…``: the placeholders of an IN list of ``n`` values."""
    return ",".join(["%s"] * n)


def sql_in(values: Iterable[StrEnum]) -> str:
    """``('a','b')``: a set of the vocabulary as an SQL list literal (constants of ours, never input)."""
    items = sorted(str(v) for v in values)
    if not all(v.replace("_", "").isalnum() for v in items):
        raise ValueError(f"not a vocabulary word: {items!r}")
    return "(" + ",".join(f"'{v}'" for v in items) + ")"


OPEN = sql_in(OPEN_STATES)  # ('buffered','claimed','running')
IN_FLIGHT = sql_in(IN_FLIGHT_STATES)  # ('claimed','running'): a run sent or about to be
UNSCHEDULED = sql_in(UNSCHEDULED_KINDS)  # ('backfill','manual')
ONE_INSTANT = sql_in(ONE_INSTANT_KINDS)  # ('catchup','tick')
CLAIMED, RUNNING = f"'{ExecutionState.CLAIMED}'", f"'{ExecutionState.RUNNING}'"
SKIPPED, MISSED, ABANDONED = f"'{ExecutionState.SKIPPED}'", f"'{ExecutionState.MISSED}'", f"'{ExecutionState.ABANDONED}'"
BUFFERED, EXCLUDED = f"'{ExecutionState.BUFFERED}'", f"'{ExecutionState.EXCLUDED}'"
SUCCEEDED, BACKFILL = f"'{ExecutionState.SUCCEEDED}'", f"'{ExecutionKind.BACKFILL}'"
MANUAL, MISFIRE, OVERLAP = f"'{ExecutionKind.MANUAL}'", f"'{ExecutionKind.MISFIRE}'", f"'{ExecutionKind.OVERLAP}'"


def last_ticks_sql(n_jobs: int) -> str:
    """Each job's takeover anchor: its last *scheduled* instant with a row. A run-now or a backfill is not
    an instant of the schedule and never moves it (else the ticks between the last scheduled one and the
    manual run would vanish without a row)."""
    return (f"SELECT job_id, MAX(scheduled_at) AS last FROM executions WHERE job_id IN ({ph(n_jobs)})"
            f" AND kind NOT IN {UNSCHEDULED} GROUP BY job_id")


def to_db(dt: datetime) -> datetime:
    """Aware instant -> naive UTC with millisecond precision (DATETIME(3))."""
    dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def to_db_or_none(dt: datetime | None) -> datetime | None:
    return None if dt is None else to_db(dt)


def from_db(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=UTC)


def from_text(v: str | None) -> datetime | None:
    """A DATETIME as MariaDB writes it in JSON or DATE_FORMAT ('2026-11-28 17:00:00.123'), as aware UTC."""
    return None if v is None else datetime.fromisoformat(v).replace(tzinfo=UTC)


# ---- jobs ----------------------------------------------------------------------------------

JOB_COLS = ("id, seq, name, schedule, time_zone, paused, spec, version, fence, owner, active_since, created_at,"
            " updated_at, deleted_at, runs, completed_at, fail_streak, failing_since")
# What an owner fires from (a takeover reads it for every job it takes): the row less its bookkeeping times and its
# stored owner, which a Job read so leaves None (one datetime object fewer each, and no copy to drop them)
OWNER_COLS = ("id, seq, name, schedule, time_zone, paused, spec, version, fence, active_since, runs, completed_at,"
              " fail_streak, failing_since")
JOB_JSON = "JSON_OBJECT(" + ", ".join(f"'{c.strip()}', j.{c.strip()}" for c in JOB_COLS.split(",")) + ")"


# The history row of a job's current version (run in the transaction of every change).
HISTORY_SQL = (
    "INSERT IGNORE INTO job_history (job_id, version, valid_from, schedule, time_zone, paused, deleted, name, spec,"
    " completed) SELECT id, version, COALESCE(deleted_at, completed_at, updated_at), schedule, time_zone, paused,"
    " deleted_at IS NOT NULL, name, spec, completed_at IS NOT NULL FROM jobs WHERE id IN ({})"
)

POINTS = 1 << 128  # the ring's point space (cluster/ring.py): jobs.ring_point is UNHEX(MD5(id)), 16 bytes


def arcs_sql(arcs: Sequence[tuple[int, int]], column: str = "ring_point") -> tuple[str, list[Any]]:
    """A condition selecting the jobs whose ring point lies in one of the half-open arcs ``[lo, hi)`` (integers,
    0 <= lo < hi <= 2**128): the share of a member of the ring. No arcs: no job. The bounds are written as hex
    literals (made here from integers, never from input; aiomysql cannot pass bytes as parameters)."""
    if not arcs:
        return "FALSE", []
    parts: list[str] = []
    for lo, hi in arcs:
        if not 0 <= lo < hi <= POINTS:
            raise ValueError(f"not an arc of the ring: [{lo}, {hi})")
        cond = []
        if lo > 0:
            cond.append(f"{column} >= X'{lo:032x}'")
        if hi < POINTS:
            cond.append(f"{column} < X'{hi:032x}'")
        if not cond:
            return "TRUE", []
        parts.append("(" + " AND ".join(cond) + ")")
    return "(" + " OR ".join(parts) + ")", []


def job_row(job: Job) -> tuple[Any, ...]:
    """(name, schedule, time_zone, paused, spec): the columns a write sets from a definition."""
    return job.name, job.schedule, job.time_zone, int(job.paused), json.dumps(job.spec())


DECODED_ROWS = 1024  # rows kept decoded (each at most DECODED_TEXT long: a few MB at most)
DECODED_TEXT = 4096
_DECODED: dict[str, Job] = {}


def job_from_json(doc: str) -> Job:
    """A job row read as a JSON object (``JOB_JSON``). The same text gives the same (frozen) Job without
    parsing it again: a list page read a hundred times a second decodes its 50 jobs once, until one changes
    (any column: the text is the whole row). Rows longer than DECODED_TEXT (big bodies) are not kept."""
    job = _DECODED.get(doc)
    if job is not None:
        return job
    row = json.loads(doc)
    for k in ("active_since", "created_at", "updated_at", "deleted_at", "completed_at", "failing_since"):
        row[k] = from_text(row[k])
    job = Job.from_row(row)
    if len(doc) <= DECODED_TEXT:
        if len(_DECODED) >= DECODED_ROWS:
            _DECODED.clear()
        _DECODED[doc] = job
    return job


def summary(row: dict[str, Any]) -> JobSummary:
    return JobSummary.from_row(row)


# ---- executions ----------------------------------------------------------------------------

EXEC_COLS = ("id, job_id, scheduled_at, kind, state, fence, node, attempts, status_code, duration_ms, lateness_ms,"
             " error, response_excerpt, missed_count, missed_from, claimed_at, started_at, finished_at, redelivered,"
             " claimer, instant, backfill")
EXEC_JSON = "JSON_OBJECT(" + ", ".join(f"'{c.strip()}', x.{c.strip()}" for c in EXEC_COLS.split(",")) + ")"
_EXEC_TIMES = ("scheduled_at", "missed_from", "claimed_at", "started_at", "finished_at", "instant")


def execution(row: dict[str, Any], *, times: Any = from_db) -> Execution:
    """A row of ``EXEC_COLS`` (DATETIMEs as the driver gives them; ``times=from_text`` for JSON) as a record."""
    return Execution(
        id=row["id"], job_id=row["job_id"], scheduled_at=times(row["scheduled_at"]), kind=ExecutionKind(row["kind"]),
        state=ExecutionState(row["state"]), fence=int(row["fence"]), node=row["node"], attempts=int(row["attempts"]),
        status_code=row["status_code"], duration_ms=row["duration_ms"], lateness_ms=row["lateness_ms"],
        error=row["error"], response_excerpt=row["response_excerpt"], missed_count=int(row["missed_count"] or 0),
        missed_from=times(row["missed_from"]), claimed_at=times(row["claimed_at"]),
        started_at=times(row["started_at"]), finished_at=times(row["finished_at"]),
        redelivered=bool(row.get("redelivered")), claimer=row.get("claimer"), instant=times(row.get("instant")),
        backfill=row.get("backfill"),
    )


def execution_from_json(doc: str) -> Execution:
    """An execution row read as a JSON object (``EXEC_JSON``)."""
    return execution(fastjson.loads(doc), times=from_text)


# The ledger's rows: the columns it reads, as one JSON array per row (the audit reads a minute of every
# owned job: the pure-Python driver's per-column conversions cost 5x).
LEDGER_ROW = ("id, DATE_FORMAT(scheduled_at, '%%Y-%%m-%%dT%%H:%%i:%%s.%%f'), kind, state,"
              " DATE_FORMAT(missed_from, '%%Y-%%m-%%dT%%H:%%i:%%s.%%f'), missed_count, error, attempts, node,"
              " status_code, redelivered, fence, DATE_FORMAT(instant, '%%Y-%%m-%%dT%%H:%%i:%%s.%%f'), backfill")


def ledger_execution(job_id: str, v: Sequence[Any]) -> Execution:
    """One ``LEDGER_ROW`` array as a record (the columns the ledger does not read are left empty)."""
    return Execution(id=v[0], job_id=job_id, scheduled_at=from_text(v[1]),  # type: ignore[arg-type]
                     kind=ExecutionKind(v[2]), state=ExecutionState(v[3]), missed_from=from_text(v[4]),
                     missed_count=int(v[5] or 0), error=v[6], attempts=int(v[7] or 0), node=v[8], status_code=v[9],
                     redelivered=bool(v[10]), fence=int(v[11]), instant=from_text(v[12]) if len(v) > 12 else None,
                     backfill=v[13] if len(v) > 13 else None)


def selector_sql(selector: Selector, alias: str = "") -> tuple[str, list[Any]]:
    """A label selector as a condition on the jobs table (``alias``: its alias with the dot), and its arguments.
    The key goes in a JSON path as a parameter: its syntax (letters, digits, ``-_./``) needs no escape there."""
    conds: list[str] = []
    args: list[Any] = []
    for r in selector.requirements:
        value = f"JSON_VALUE({alias}spec, %s)"
        path = f'$.labels."{r.key}"'
        if r.op is Op.EQ:
            conds.append(f"{value} = %s")
            args += [path, r.values[0]]
        elif r.op is Op.NE:
            conds.append(f"({value} IS NULL OR {value} <> %s)")
            args += [path, path, r.values[0]]
        elif r.op is Op.IN:
            conds.append(f"{value} IN ({ph(len(r.values))})")
            args += [path, *r.values]
        elif r.op is Op.NOTIN:
            conds.append(f"({value} IS NULL OR {value} NOT IN ({ph(len(r.values))}))")
            args += [path, path, *r.values]
        elif r.op is Op.EXISTS:
            conds.append(f"{value} IS NOT NULL")
            args.append(path)
        else:
            conds.append(f"{value} IS NULL")
            args.append(path)
    return " AND ".join(conds) or "1=1", args
