"""A job's health, from the outcomes of its scheduled runs: the failure streak (failed runs in a row), the alerts
its changes raise (``job.failing`` at a streak's first failure, ``job.recovered`` at the first success after one,
``ticks.missed``), and the auto-pause (``pauseAfterFailures``).

Written after the outcomes themselves, by the node that recorded them; safe to run again on the same outcomes (a
retry after a lost primary): each outcome counts once, in instant order (``health_at``: the scheduled instant of
the last outcome counted), and each alert's row is keyed by its event.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..model.alerts import AlertType
from ..model.audit import Actor, AuditAction, AuditEntry
from ..model.executions import FAILED_STATES, Execution, ExecutionKind, ExecutionState
from ..model.times import rfc3339
from .alerts import insert_alert
from .audit import write_audit
from .codec import HISTORY_SQL, ph, to_db
from .connection import Database

SCHEDULED = frozenset({ExecutionKind.TICK, ExecutionKind.CATCHUP})
NOT_RUN = frozenset({ExecutionState.MISSED, ExecutionState.ABANDONED})


def execution_summary(e: Execution) -> dict[str, Any]:
    """What an alert says of the run that raised it (its error is redacted already, as its row is)."""
    return {"id": e.id, "scheduledAt": rfc3339(e.scheduled_at), "state": str(e.state), "statusCode": e.status_code,
            "error": e.error, "attempts": e.attempts, "durationMs": e.duration_ms, "node": e.node}


def _minute(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M")


class Health:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, outcomes: Sequence[Execution], node: str) -> list[str]:
        """Count these outcomes into their jobs' streaks; the jobs that paused themselves (to be announced)."""
        scheduled = sorted((e for e in outcomes if e.kind in SCHEDULED and (
            e.state == ExecutionState.SUCCEEDED or e.state in FAILED_STATES)), key=lambda e: e.scheduled_at)
        missed = [e for e in outcomes if e.state in NOT_RUN]
        paused: list[str] = []
        if missed:
            await self._missed(missed, node)
        ok = {e.job_id: e for e in scheduled if e.state == ExecutionState.SUCCEEDED}  # the latest of each job
        if ok:
            rows = await self.db.fetchall(f"SELECT id FROM jobs WHERE id IN ({ph(len(ok))}) AND fail_streak > 0",
                                          list(ok))
            for r in rows:
                await self._recovered(ok[r["id"]], node)
        for e in scheduled:
            if e.state != ExecutionState.SUCCEEDED and await self._failed(e, node):
                paused.append(e.job_id)
        return paused

    async def _recovered(self, e: Execution, node: str) -> None:
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                await cur.execute("SELECT fail_streak, failing_since FROM jobs WHERE id = %s FOR UPDATE", (e.job_id,))
                row = await cur.fetchone()
                if row is None or not row["fail_streak"]:
                    return
                n = await cur.execute(
                    "UPDATE jobs SET fail_streak = 0, failing_since = NULL, health_at = %s WHERE id = %s"
                    " AND (health_at IS NULL OR health_at < %s)", (to_db(e.scheduled_at), e.job_id, to_db(e.scheduled_at)))
                if n:
                    await insert_alert(cur, f"recovered:{e.job_id}:{e.scheduled_at.isoformat()}",
                                       str(AlertType.JOB_RECOVERED), e.job_id, {
                                           "streak": int(row["fail_streak"]), "node": node,
                                           "failingSince": rfc3339(row["failing_since"]),
                                           "execution": execution_summary(e)})

    async def _failed(self, e: Execution, node: str) -> bool:
        """Count one failed scheduled run; True when the job paused itself."""
        at = to_db(e.scheduled_at)
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                await cur.execute(
                    "SELECT fail_streak, paused, deleted_at, JSON_VALUE(spec, '$.pause_after_failures') AS pause_after"
                    " FROM jobs WHERE id = %s FOR UPDATE", (e.job_id,))
                row = await cur.fetchone()
                if row is None or row["deleted_at"] is not None:
                    return False
                n = await cur.execute(
                    "UPDATE jobs SET fail_streak = fail_streak + 1, failing_since = COALESCE(failing_since, %s),"
                    " health_at = %s WHERE id = %s AND (health_at IS NULL OR health_at < %s)", (at, at, e.job_id, at))
                if not n:
                    return False  # counted already (this outcome, or a later one)
                streak = int(row["fail_streak"]) + 1
                if streak == 1:
                    await insert_alert(cur, f"failing:{e.job_id}:{e.scheduled_at.isoformat()}",
                                       str(AlertType.JOB_FAILING), e.job_id,
                                       {"streak": 1, "node": node, "execution": execution_summary(e)})
                limit = int(row["pause_after"] or 0)
                if not limit or streak < limit or row["paused"]:
                    return False
                reason = f"paused after {streak} consecutive failed runs (pauseAfterFailures {limit})"
                await cur.execute(
                    "UPDATE jobs SET paused = 1, version = version + 1, updated_at = NOW(3), paused_until = NULL,"
                    " spec = JSON_SET(spec, '$.paused_reason', %s, '$.paused_by', 'cronring', '$.paused_at',"
                    " DATE_FORMAT(NOW(3), '%%Y-%%m-%%dT%%H:%%i:%%s.%%fZ'), '$.paused_until', NULL) WHERE id = %s",
                    (reason, e.job_id))
                await cur.execute(HISTORY_SQL.format("%s"), (e.job_id,))
                await write_audit(cur, AuditEntry(Actor.system(node), AuditAction.AUTO_PAUSE,
                                                  {"paused": [False, True], "pausedReason": [None, reason]}, reason),
                                  e.job_id)
                await insert_alert(cur, f"paused:{e.job_id}:{e.scheduled_at.isoformat()}", str(AlertType.JOB_PAUSED),
                                   e.job_id, {"streak": streak, "node": node, "reason": reason,
                                              "execution": execution_summary(e)})
                return True
        return False

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

    async def failing(self, *, limit: int, cursor: int | None = None) -> list[dict[str, Any]]:
        """Jobs whose last scheduled run failed: (id, streak, since), in creation order."""
        rows = await self.db.fetchall(
            "SELECT id, seq, fail_streak, failing_since FROM jobs WHERE fail_streak > 0 AND deleted_at IS NULL"
            + (" AND seq > %s" if cursor else "") + " ORDER BY seq LIMIT %s", [*([cursor] if cursor else []), limit])
        return [dict(r) for r in rows]
