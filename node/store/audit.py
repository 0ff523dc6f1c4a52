"""The audit log: a row per change, written by the repositories inside the change's own transaction (``write``),
read by the API (``AuditLog``), purged after CRONRING_AUDIT_DAYS."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ..model.audit import AuditEntry, AuditRecord
from ..model.labels import Selector
from .codec import selector_sql, to_db
from .connection import Cursor, Database


class Versions(StrEnum):
    """Which versions a change goes between (read from the job's row after the change, in its transaction)."""

    CREATED = "created"  # none -> the job's version
    BUMPED = "bumped"  # version - 1 -> version
    SAME = "same"  # the version it acted under (a run, a backfill): from = to


def audit_columns(entry: AuditEntry) -> tuple[Any, ...]:
    """(actor, via, node, action, changes, note, subject): an entry as the columns of its row."""
    return (entry.actor.name[:64], entry.actor.via[:16], entry.actor.node[:200], str(entry.action),
            json.dumps(entry.changes, default=str) if entry.changes else None,
            entry.note[:1000] if entry.note else None, entry.subject)


async def write_audit(cur: Cursor, entry: AuditEntry, job_id: str | None, versions: Versions = Versions.BUMPED
                ) -> None:
    """The audit row of a change, in the change's transaction (the cursor's): both commit, or neither."""
    columns = audit_columns(entry)
    head, tail = columns[:4], columns[4:]
    if job_id is None:
        await cur.execute("INSERT INTO audit_log (at, actor, via, node, action, changes, note, subject)"
                          " VALUES (NOW(3), %s, %s, %s, %s, %s, %s, %s)", (*head, *tail))
        return
    frm = {Versions.CREATED: "NULL", Versions.BUMPED: "version - 1", Versions.SAME: "version"}[versions]
    await cur.execute(
        "INSERT INTO audit_log (at, actor, via, node, action, changes, note, subject, job_id, from_version, to_version)"
        f" SELECT NOW(3), %s, %s, %s, %s, %s, %s, %s, id, {frm}, version FROM jobs WHERE id = %s",
        (*head, *tail, job_id))


def _record(row: dict[str, Any]) -> AuditRecord:
    return AuditRecord(id=int(row["id"]), at=row["at"].replace(tzinfo=UTC), actor=row["actor"], via=row["via"], node=row["node"],
                       action=row["action"], job_id=row["job_id"], from_version=row["from_version"],
                       to_version=row["to_version"], changes=json.loads(row["changes"]) if row["changes"] else {},
                       note=row["note"], subject=row["subject"])


_COLS = "id, at, actor, via, node, action, job_id, from_version, to_version, changes, note, subject"


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def query(self, *, job_id: str | None = None, actor: str | None = None, action: str | None = None,
                    limit: int = 100, before_id: int | None = None, before: datetime | None = None,
                    selector: Selector | None = None) -> list[AuditRecord]:
        """Newest first; ``before_id`` (a row's id) pages on, ``before`` (an instant) starts there. ``selector``:
        only rows of the jobs it matches (a scoped token's view)."""
        where: list[str] = ["1=1"]
        args: list[Any] = []
        for col, value in (("job_id", job_id), ("actor", actor), ("action", action)):
            if value is not None:
                where.append(f"{col} = %s")
                args.append(value)
        if before_id is not None:
            where.append("id < %s")
            args.append(before_id)
        if before is not None:
            where.append("at < %s")
            args.append(to_db(before))
        if selector:
            cond, cond_args = selector_sql(selector)
            where.append(f"job_id IN (SELECT id FROM jobs WHERE {cond})")
            args += cond_args
        rows = await self.db.fetchall(f"SELECT {_COLS} FROM audit_log WHERE {' AND '.join(where)}"
                                      " ORDER BY id DESC LIMIT %s", [*args, limit])
        return [_record(r) for r in rows]

    async def of_versions(self, job_id: str, versions: list[int]) -> dict[int, AuditRecord]:
        """The change that made each of these versions of a job (not a run's or a backfill's row)."""
        if not versions:
            return {}
        rows = await self.db.fetchall(
            f"SELECT {_COLS} FROM audit_log WHERE job_id = %s AND to_version IN ({', '.join(['%s'] * len(versions))})"
            " AND (from_version IS NULL OR from_version <> to_version) ORDER BY id", [job_id, *versions])
        return {int(r["to_version"]): _record(r) for r in rows}

    async def record(self, entry: AuditEntry, job_id: str) -> None:
        """An action's row on its own (a run-now, whose claim is the scheduler's transaction)."""
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                if attempt.again and entry.subject:  # the first attempt may have committed it
                    await cur.execute("SELECT 1 FROM audit_log WHERE job_id = %s AND subject = %s AND action = %s",
                                      (job_id, entry.subject, str(entry.action)))
                    if await cur.fetchone() is not None:
                        return
                await write_audit(cur, entry, job_id, Versions.SAME)

    async def purge(self, older_than_days: int) -> int:
        """Rows older than the retention, 1,000 a statement (never one long lock)."""
        total = 0
        while True:
            n = await self.db.execute("DELETE FROM audit_log WHERE at < NOW(3) - INTERVAL %s DAY ORDER BY id LIMIT 1000",
                                      (older_than_days,))
            total += n or 0
            if not n or n < 1000:
                return total
