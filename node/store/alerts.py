"""The alerts outbox. An event is one row, whose id is the event's key (a job's failure streak starting at an
instant, a node's death): however many nodes see the event, ``INSERT IGNORE`` keeps one. Every node sends from
the outbox under a lease (the row's ``claimer`` and ``lease_until``): a sender killed mid-send leaves its row
to be sent again by another when the lease ends, with the same ``Idempotency-Key``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..model.alerts import Alert, AlertState
from ..model.labels import Selector
from .codec import selector_sql, to_db
from .connection import Cursor, Database


def alert_id(key: str) -> str:
    """The row id of an event's key (32 hex: the key may be long; the same key gives the same id everywhere)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


async def insert_alert(cur: Cursor, key: str, type_: str, job_id: str | None, payload: dict[str, Any],
                       at: datetime | None = None) -> bool:
    """Record an event once (in the caller's transaction); False when it was recorded already."""
    n = await cur.execute(
        "INSERT IGNORE INTO alerts (id, type, job_id, at, payload, state, next_at) VALUES"
        " (%s, %s, %s, COALESCE(%s, NOW(3)), %s, %s, NOW(3))",
        (alert_id(key), type_, job_id, to_db(at) if at else None, json.dumps(payload, default=str),
         str(AlertState.PENDING)))
    return bool(n)


_COLS = "id, type, job_id, at, payload, state, attempts, claimer, sent_at, node, status_code, error"


def _alert(row: dict[str, Any]) -> Alert:
    return Alert(id=row["id"], type=row["type"], job_id=row["job_id"], at=row["at"].replace(tzinfo=UTC),
                 payload=json.loads(row["payload"]), state=AlertState(row["state"]), attempts=int(row["attempts"]),
                 sent_at=row["sent_at"].replace(tzinfo=UTC) if row["sent_at"] else None, node=row["node"],
                 status_code=row["status_code"], error=row["error"])


class Alerts:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, key: str, type_: str, job_id: str | None, payload: dict[str, Any]) -> bool:
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                return await insert_alert(cur, key, type_, job_id, payload)
        return False

    async def claim(self, claimer: str, *, lease_seconds: float, limit: int = 20) -> list[Alert]:
        """Alerts due to be sent (new, a retry whose time has come, or one whose sender's lease ended), leased to
        ``claimer``."""
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                await cur.execute(
                    "UPDATE alerts SET state = %s, claimer = %s, lease_until = NOW(3) + INTERVAL %s SECOND,"
                    " attempts = attempts + 1 WHERE (state = %s AND next_at <= NOW(3)) OR (state = %s AND"
                    " lease_until < NOW(3)) ORDER BY at LIMIT %s",
                    (str(AlertState.SENDING), claimer, lease_seconds, str(AlertState.PENDING), str(AlertState.SENDING),
                     limit))
                if not cur.rowcount:
                    return []
                await cur.execute(f"SELECT {_COLS} FROM alerts WHERE state = %s AND claimer = %s"
                                  " AND lease_until > NOW(3)", (str(AlertState.SENDING), claimer))
                return [_alert(r) for r in await cur.fetchall()]
        return []

    async def finish(self, alert_id_: str, claimer: str, state: AlertState, *, node: str, status: int | None = None,
                     error: str | None = None, retry_in: float | None = None) -> None:
        """The sender's outcome (only while it still holds the lease): sent, failed for good, or pending again
        in ``retry_in`` seconds."""
        await self.db.execute(
            "UPDATE alerts SET state = %s, node = %s, status_code = %s, error = %s, claimer = NULL, lease_until = NULL,"
            " sent_at = IF(%s = 'sent', NOW(3), sent_at), next_at = NOW(3) + INTERVAL %s SECOND"
            " WHERE id = %s AND claimer = %s",
            (str(state), node, status, error[:1000] if error else None, str(state), retry_in or 0, alert_id_, claimer))

    async def recent(self, *, limit: int = 100, type_: str | None = None, job_id: str | None = None,
                     before: datetime | None = None, selector: Selector | None = None) -> list[Alert]:
        where: list[str] = ["1=1"]
        args: list[Any] = []
        for col, value in (("type", type_), ("job_id", job_id)):
            if value is not None:
                where.append(f"{col} = %s")
                args.append(value)
        if before is not None:
            where.append("at < %s")
            args.append(to_db(before))
        if selector:
            cond, cond_args = selector_sql(selector)
            where.append(f"job_id IN (SELECT id FROM jobs WHERE {cond})")
            args += cond_args
        rows = await self.db.fetchall(f"SELECT {_COLS} FROM alerts WHERE {' AND '.join(where)} ORDER BY at DESC"
                                      " LIMIT %s", [*args, limit])
        return [_alert(r) for r in rows]

    async def tally(self, type_: str, since: datetime, selector: Selector | None = None) -> tuple[int, int]:
        """How many alerts of ``type_`` were raised since ``since`` (about the jobs ``selector`` matches, when given),
        and the sum of their payloads' ``count`` (the cluster page's unaccounted ticks: each ``ticks.unaccounted``
        alert counts the instants it found). Read through the (type, at) index."""
        where, args = "type = %s AND at >= %s", [type_, to_db(since)]
        if selector:
            cond, cond_args = selector_sql(selector)
            where += f" AND job_id IN (SELECT id FROM jobs WHERE {cond})"
            args += cond_args
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n, COALESCE(SUM(CAST(JSON_VALUE(payload, '$.count') AS UNSIGNED)), 0) AS c"
            f" FROM alerts WHERE {where}", args)
        return (int(row["n"]), int(row["c"])) if row else (0, 0)

    async def targets(self, job_ids: Sequence[str]) -> dict[str, tuple[str, str | None, dict[str, Any]]]:
        """(name, alertUri, labels) of these jobs, deleted ones too (an alert about a job deleted since is sent)."""
        if not job_ids:
            return {}
        rows = await self.db.fetchall(
            f"SELECT id, name, JSON_VALUE(spec, '$.alert_uri') AS alert_uri, JSON_EXTRACT(spec, '$.labels') AS labels"
            f" FROM jobs WHERE id IN ({', '.join(['%s'] * len(job_ids))})", list(job_ids))
        return {r["id"]: (r["name"], r["alert_uri"], json.loads(r["labels"]) if r["labels"] else {}) for r in rows}

    async def purge(self, older_than_days: int) -> int:
        total = 0
        while True:
            n = await self.db.execute("DELETE FROM alerts WHERE at < NOW(3) - INTERVAL %s DAY AND state <> %s"
                                      " ORDER BY at LIMIT 1000", (older_than_days, str(AlertState.SENDING)))
            total += n or 0
            if not n or n < 1000:
                return total
