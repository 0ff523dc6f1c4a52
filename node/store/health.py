"""A job's health, from the outcomes of its scheduled runs: the failure streak (failed runs in a row, in instant
order), the alerts its changes raise (``job.failing`` at a streak's first failure, ``job.recovered`` at the first
success after one, ``ticks.missed``), and the auto-pause (``pauseAfterFailures``).

Written after the outcomes themselves (so the rows of the batch are there to read), one transaction a batch, by
the node that recorded them; safe to run again on the same outcomes (a retry after a lost primary): each outcome
counts once and in instant order (``health_at``: the instant of the last outcome counted), a failure with a
later success already recorded starts nothing (it is not the job's state any more), and each alert's row is
keyed by its event. A failure scheduled before the job's ``active_since`` (a resume, a new schedule) is the old
definition's and does not count; a resume also sets the auto-pause's base (``pause_base``): it pauses again
only after as many new failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..model.alerts import AlertType
from ..model.audit import Actor, AuditAction, AuditEntry
from ..model.executions import FAILED_STATES, Execution, ExecutionKind, ExecutionState
from ..model.times import rfc3339
from .alerts import insert_alert
from .audit import write_audit
from .codec import HISTORY_SQL, ph, to_db
from .connection import Cursor, Database

SCHEDULED = frozenset({ExecutionKind.TICK, ExecutionKind.CATCHUP})
NOT_RUN = frozenset({ExecutionState.MISSED, ExecutionState.ABANDONED})
MISSABLE = frozenset({ExecutionKind.TICK, ExecutionKind.CATCHUP, ExecutionKind.MISFIRE})  # instants of the schedule


def execution_summary(e: Execution) -> dict[str, Any]:
    """What an alert says of the run that raised it (its error is redacted already, as its row is)."""
    return {"id": e.id, "scheduledAt": rfc3339(e.scheduled_at), "state": str(e.state), "statusCode": e.status_code,
            "error": e.error, "attempts": e.attempts, "durationMs": e.duration_ms, "node": e.node}


def relevant(e: Execution) -> bool:
    """Does this outcome count for a job's health (a scheduled run's end, or an instant not run)?"""
    return (e.kind in SCHEDULED and (e.state == ExecutionState.SUCCEEDED or e.state in FAILED_STATES)) or \
        (e.state in NOT_RUN and e.kind in MISSABLE)


def _utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=UTC)


def _minute(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M")


class Health:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, outcomes: Sequence[Execution], node: str) -> list[str]:
        """Count these outcomes into their jobs' streaks; the jobs that paused themselves (to be announced)."""
        runs: dict[str, list[Execution]] = {}
        for e in sorted((e for e in outcomes if e.kind in SCHEDULED and (
                e.state == ExecutionState.SUCCEEDED or e.state in FAILED_STATES)), key=lambda e: e.scheduled_at):
            runs.setdefault(e.job_id, []).append(e)
        missed = [e for e in outcomes if e.state in NOT_RUN and e.kind in MISSABLE]
        if missed:
            await self._missed(missed, node)
        failing = [j for j, es in runs.items() if any(e.state != ExecutionState.SUCCEEDED for e in es)]
        ok_only = [j for j, es in runs.items() if j not in failing]
        if ok_only:  # the common case, a read: which of them have a streak to end?
            rows = await self.db.fetchall(f"SELECT id FROM jobs WHERE id IN ({ph(len(ok_only))}) AND fail_streak > 0",
                                          ok_only)
            failing += [r["id"] for r in rows]
        if not failing:
            return []
        paused: list[str] = []
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                paused = await self._streaks(cur, {j: runs[j] for j in failing}, node)
        return paused

    async def _streaks(self, cur: Cursor, runs: dict[str, list[Execution]], node: str) -> list[str]:
        ids = sorted(runs)
        await cur.execute(
            "SELECT id, fail_streak, failing_since, health_at, pause_base, paused, deleted_at, active_since,"
            " JSON_VALUE(spec, '$.pause_after_failures') AS pause_after"
            f" FROM jobs WHERE id IN ({ph(len(ids))}) ORDER BY id FOR UPDATE", ids)
        jobs = {r["id"]: r for r in await cur.fetchall()}
        # the newest success recorded for each (this batch's rows are written): an older failure is history
        await cur.execute(
            f"SELECT job_id, MAX(scheduled_at) AS t FROM executions WHERE job_id IN ({ph(len(ids))})"
            " AND kind IN ('tick', 'catchup') AND state = 'succeeded' GROUP BY job_id", ids)
        newest_ok = {r["job_id"]: _utc(r["t"]) for r in await cur.fetchall()}
        paused: list[str] = []
        for job_id in ids:
            row = jobs.get(job_id)
            if row is None or row["deleted_at"] is not None:
                continue
            streak, since = int(row["fail_streak"]), _utc(row["failing_since"])
            base, health_at = int(row["pause_base"]), _utc(row["health_at"])
            active_since = _utc(row["active_since"])
            first_failure: Execution | None = None
            recovered: tuple[Execution, int, datetime | None] | None = None
            last_failure: Execution | None = None
            for e in runs[job_id]:
                t = e.scheduled_at
                if health_at is not None and t <= health_at:
                    continue  # counted already, or older than what was
                if e.state == ExecutionState.SUCCEEDED:
                    if streak:
                        recovered = (e, streak, since)
                    streak, since, base, health_at = 0, None, 0, t
                    first_failure = None
                    continue
                ok_after = newest_ok.get(job_id)
                if (ok_after is not None and ok_after > t) or (active_since is not None and t < active_since):
                    continue  # a later run succeeded, or the definition changed since: not the job's state
                streak += 1
                since = since or t
                health_at = t
                last_failure = e
                if streak == 1:
                    first_failure = e
            if (streak, since, base, health_at) == (int(row["fail_streak"]), _utc(row["failing_since"]),
                                                    int(row["pause_base"]), _utc(row["health_at"])):
                continue
            await cur.execute("UPDATE jobs SET fail_streak = %s, failing_since = %s, pause_base = %s, health_at = %s"
                              " WHERE id = %s", (streak, to_db(since) if since else None, base,
                                                 to_db(health_at) if health_at else None, job_id))
            if recovered is not None:
                e, n, began = recovered
                await insert_alert(cur, f"recovered:{job_id}:{e.scheduled_at.isoformat()}",
                                   str(AlertType.JOB_RECOVERED), job_id, {
                                       "streak": n, "node": node, "failingSince": rfc3339(began),
                                       "execution": execution_summary(e)})
            if first_failure is not None:
                await insert_alert(cur, f"failing:{job_id}:{first_failure.scheduled_at.isoformat()}",
                                   str(AlertType.JOB_FAILING), job_id,
                                   {"streak": 1, "node": node, "execution": execution_summary(first_failure)})
            limit = int(row["pause_after"] or 0)
            if last_failure is not None and limit and streak - base >= limit and not row["paused"]:
                await self._pause(cur, job_id, streak, limit, last_failure, node)
                paused.append(job_id)
        return paused

    @staticmethod
    async def _pause(cur: Cursor, job_id: str, streak: int, limit: int, e: Execution, node: str) -> None:
        reason = f"paused after {streak} consecutive failed runs (pauseAfterFailures {limit})"
        await cur.execute(
            "UPDATE jobs SET paused = 1, version = version + 1, updated_at = NOW(3), paused_until = NULL,"
            " spec = JSON_SET(spec, '$.paused_reason', %s, '$.paused_by', 'cronring', '$.paused_at',"
            " DATE_FORMAT(NOW(3), '%%Y-%%m-%%dT%%H:%%i:%%s.%%fZ'), '$.paused_until', NULL) WHERE id = %s",
            (reason, job_id))
        await cur.execute(HISTORY_SQL.format("%s"), (job_id,))
        await write_audit(cur, AuditEntry(Actor.system(node), AuditAction.AUTO_PAUSE,
                                          {"paused": [False, True], "pausedReason": [None, reason]}, reason), job_id)
        await insert_alert(cur, f"paused:{job_id}:{e.scheduled_at.isoformat()}", str(AlertType.JOB_PAUSED), job_id,
                           {"streak": streak, "node": node, "reason": reason, "execution": execution_summary(e)})

    async def _missed(self, missed: Sequence[Execution], node: str) -> None:
        """One ``ticks.missed`` a job a minute (the first rows of that minute say what)."""
        firsts: dict[tuple[str, str], tuple[Execution, int]] = {}
        for e in missed:
            key = (e.job_id, _minute(e.finished_at or e.scheduled_at))
            first, count = firsts.get(key, (e, 0))
            firsts[key] = (first, count + max(1, e.missed_count or 1))
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                for (job_id, minute), (e, count) in firsts.items():
                    await insert_alert(cur, f"missed:{job_id}:{minute}", str(AlertType.TICKS_MISSED), job_id, {
                        "count": count, "node": node, "execution": execution_summary(e)})
