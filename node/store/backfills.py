"""Backfills: what was asked and how far each is (``backfills``); their executions are in ``executions``, written
by the claim path (``executions.py``: ``claim_backfill``)."""

from __future__ import annotations

import secrets
from collections.abc import Container
from dataclasses import replace
from typing import Any

from ..model.audit import AuditEntry
from ..model.backfills import ACTIVE, Backfill, BackfillPolicy, BackfillState
from ..model.errors import Conflict, NotFound
from ..model.executions import FAILED_STATES, ExecutionState
from .audit import Versions, write_audit
from .codec import OPEN, from_db, sql_in, to_db, to_db_or_none
from .connection import Database

_COLS = ("id, job_id, from_at, to_at, policy, max_per_second, total, sent, already_done, failed, state, cursor_at, node,"
         " error, created_at, updated_at")
_ACTIVE = sql_in(ACTIVE)
_NOT_DELIVERED = sql_in(FAILED_STATES | {ExecutionState.ABANDONED, ExecutionState.CANCELLED})
MAX_ACTIVE_PER_JOB = 10


def _backfill(r: dict[str, Any]) -> Backfill:
    return Backfill(id=r["id"], job_id=r["job_id"], start=from_db(r["from_at"]),  # type: ignore[arg-type]
                    end=from_db(r["to_at"]), policy=BackfillPolicy(r["policy"]),  # type: ignore[arg-type]
                    max_per_second=int(r["max_per_second"]), total=int(r["total"]), sent=int(r["sent"]),
                    already_done=int(r["already_done"]), failed=int(r["failed"]), state=BackfillState(r["state"]),
                    cursor=from_db(r["cursor_at"]), node=r["node"], error=r["error"],
                    created_at=from_db(r["created_at"]), updated_at=from_db(r["updated_at"]))


class Backfills:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, b: Backfill, *, audit: AuditEntry | None = None) -> Backfill:
        bid = secrets.token_hex(8)
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                if attempt.again:
                    await cur.execute("SELECT 1 FROM backfills WHERE id=%s", (bid,))
                    if await cur.fetchone() is not None:
                        break
                await cur.execute("SELECT 1 FROM jobs WHERE id=%s AND deleted_at IS NULL FOR UPDATE", (b.job_id,))
                if await cur.fetchone() is None:
                    raise NotFound(b.job_id)
                await cur.execute(f"SELECT COUNT(*) AS n FROM backfills WHERE job_id=%s AND state IN {_ACTIVE}",
                                  (b.job_id,))
                if (await cur.fetchone())["n"] >= MAX_ACTIVE_PER_JOB:
                    raise Conflict(f"the job already has {MAX_ACTIVE_PER_JOB} backfills under way; wait or cancel one")
                await cur.execute(
                    "INSERT INTO backfills (id, job_id, from_at, to_at, policy, max_per_second, total, state, created_at,"
                    " updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,NOW(3),NOW(3))",
                    (bid, b.job_id, to_db(b.start), to_db(b.end), str(b.policy), b.max_per_second, b.total,
                     str(BackfillState.QUEUED)))
                if audit is not None:
                    await write_audit(cur, replace(audit, subject=bid), b.job_id, Versions.SAME)
        return await self.get(b.job_id, bid)

    async def get(self, job_id: str, backfill_id: str) -> Backfill:
        row = await self.db.fetchone(f"SELECT {_COLS} FROM backfills WHERE id=%s AND job_id=%s", (backfill_id, job_id))
        if row is None:
            raise NotFound(backfill_id)
        return _backfill(row)

    async def of_job(self, job_id: str, limit: int = 50) -> list[Backfill]:
        rows = await self.db.fetchall(f"SELECT {_COLS} FROM backfills WHERE job_id=%s ORDER BY created_at DESC LIMIT %s",
                                      (job_id, limit))
        return [_backfill(r) for r in rows]

    async def active(self, job_ids: Container[str] | None = None) -> list[Backfill]:
        """Backfills queued or running (of these jobs: any container, e.g. the owned jobs' dict, never copied —
        200,000 owned jobs made a list and a set of ids at every look): their owners run them."""
        rows = await self.db.fetchall(f"SELECT {_COLS} FROM backfills WHERE state IN {_ACTIVE} ORDER BY created_at")
        return [_backfill(r) for r in rows if job_ids is None or r["job_id"] in job_ids]

    async def cancel(self, job_id: str, backfill_id: str, *, audit: AuditEntry | None = None) -> Backfill:
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                await cur.execute(f"UPDATE backfills SET state=%s, updated_at=NOW(3) WHERE id=%s AND job_id=%s"
                                  f" AND state IN {_ACTIVE}", (str(BackfillState.CANCELLED), backfill_id, job_id))
                if cur.rowcount and audit is not None:
                    await write_audit(cur, replace(audit, subject=backfill_id), job_id, Versions.SAME)
        return await self.get(job_id, backfill_id)

    async def end_all(self, job_id: str, why: str) -> int:
        """The job's active backfills end (cancelled, with ``why``): how many."""
        return await self.db.execute(f"UPDATE backfills SET state=%s, error=%s, updated_at=NOW(3) WHERE job_id=%s"
                                     f" AND state IN {_ACTIVE}", (str(BackfillState.CANCELLED), why, job_id))

    async def progress(self, b: Backfill, *, node: str) -> BackfillState | None:
        """Write how far it is (while it is active: a cancel is never undone); its state as stored, None if gone."""
        await self.db.execute(
            f"UPDATE backfills SET sent=%s, already_done=%s, failed=%s, cursor_at=%s, node=%s, error=%s,"
            f" state=IF(state IN {_ACTIVE}, %s, state), updated_at=NOW(3) WHERE id=%s",
            (b.sent, b.already_done, b.failed, to_db_or_none(b.cursor), node, b.error, str(b.state), b.id))
        row = await self.db.fetchone("SELECT state FROM backfills WHERE id=%s", (b.id,))
        return None if row is None else BackfillState(row["state"])

    async def counts(self, backfill_id: str) -> dict[str, int]:
        """Its executions that have ended, the failed ones among them, and those still open (a resumed backfill
        counts again)."""
        row = await self.db.fetchone(
            f"SELECT SUM(state NOT IN {OPEN}) AS sent, SUM(state IN {_NOT_DELIVERED}) AS failed,"
            f" SUM(state IN {OPEN}) AS open FROM executions WHERE backfill=%s", (backfill_id,))
        if row is None:
            return {"sent": 0, "failed": 0, "open": 0}
        return {k: int(row[k] or 0) for k in ("sent", "failed", "open")}

