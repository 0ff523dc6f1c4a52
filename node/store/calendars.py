"""Exclusion calendars: named, versioned, read whole by every node (they are few and small).

A calendar a job names cannot be deleted (409 naming the jobs), and a job cannot name a calendar that does
not exist: both checks run under the calendar row's lock (``FOR UPDATE`` by the delete, ``LOCK IN SHARE
MODE`` by a job's write in ``jobs.py``), so a delete and a create that names it cannot both pass.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ..model.audit import AuditEntry
from ..model.calendars import Calendar, from_spec
from ..model.errors import CalendarInUse, Conflict, NotFound, VersionConflict
from .audit import write_audit
from .codec import from_db
from .connection import Database

MAX_CALENDARS = 1000
_REFERENCING = ("SELECT id, name FROM jobs WHERE deleted_at IS NULL AND"
                " JSON_CONTAINS(COALESCE(JSON_EXTRACT(spec, '$.exclude_calendars'), '[]'), JSON_QUOTE(%s))"
                " ORDER BY seq LIMIT 20")


def _calendar(row: dict[str, Any]) -> Calendar:
    return from_spec(row["name"], json.loads(row["spec"]), version=int(row["version"]),
                     updated_at=from_db(row["updated_at"]))


class Calendars:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[Calendar]:
        rows = await self.db.fetchall("SELECT name, spec, version, updated_at FROM calendars ORDER BY name")
        return [_calendar(r) for r in rows]

    async def get(self, name: str) -> Calendar:
        row = await self.db.fetchone("SELECT name, spec, version, updated_at FROM calendars WHERE name=%s", (name,))
        if row is None:
            raise NotFound(name)
        return _calendar(row)

    async def put(self, cal: Calendar, *, if_version: int | None = None, audit: AuditEntry | None = None
                  ) -> tuple[Calendar, bool]:
        """Create or replace; (the stored calendar, created?). ``if_version``: only over that version (412)."""
        spec = json.dumps(cal.spec(), sort_keys=True)
        created = False
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                await cur.execute("SELECT version, spec FROM calendars WHERE name=%s FOR UPDATE", (cal.name,))
                row = await cur.fetchone()
                if row is None:
                    if if_version is not None:
                        raise NotFound(cal.name)
                    await cur.execute("SELECT COUNT(*) AS n FROM calendars")
                    if (await cur.fetchone())["n"] >= MAX_CALENDARS:
                        raise Conflict(f"the cluster already has {MAX_CALENDARS} calendars")
                    await cur.execute("INSERT INTO calendars (name, spec, version, updated_at) VALUES (%s,%s,1,NOW(3))",
                                      (cal.name, spec))
                    created = True
                    if audit is not None:
                        await write_audit(cur, replace(audit, subject=cal.name), None)
                elif attempt.again and json.loads(row["spec"]) == json.loads(spec):
                    break  # the first attempt committed this very change
                elif if_version is not None and int(row["version"]) != if_version:
                    raise VersionConflict(int(row["version"]))
                elif json.loads(row["spec"]) != json.loads(spec):
                    await cur.execute("UPDATE calendars SET spec=%s, version=version+1, updated_at=NOW(3) WHERE name=%s",
                                      (spec, cal.name))
                    if audit is not None:
                        old = json.loads(row["spec"])
                        await write_audit(cur, replace(audit, subject=cal.name, changes={
                            k: [old.get(k), v] for k, v in json.loads(spec).items() if old.get(k) != v}), None)
        return await self.get(cal.name), created

    async def delete(self, name: str, *, if_version: int | None = None, audit: AuditEntry | None = None) -> int:
        """Delete an unreferenced calendar; the version it had. ``CalendarInUse`` names the jobs that use it."""
        async for attempt in self.db.attempts(transaction=True):
            async with attempt as cur:
                await cur.execute("SELECT version FROM calendars WHERE name=%s FOR UPDATE", (name,))
                row = await cur.fetchone()
                if row is None:
                    raise NotFound(name)
                if if_version is not None and int(row["version"]) != if_version:
                    raise VersionConflict(int(row["version"]))
                await cur.execute(_REFERENCING, (name,))
                users = [{"id": r["id"], "name": r["name"]} for r in await cur.fetchall()]
                if users:
                    raise CalendarInUse(name, users)
                await cur.execute("DELETE FROM calendars WHERE name=%s", (name,))
                if audit is not None:
                    await write_audit(cur, replace(audit, subject=name), None)
                return int(row["version"])
        raise NotFound(name)
