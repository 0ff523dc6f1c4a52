"""The audit log's vocabulary: who did what to which job, and what it changed.

Every write a user (or cronring itself) makes is one audit row, written in the transaction of the change it
describes: a change without its row, or a row without its change, cannot be committed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .jobs import Job
    from .labels import Selector

ACTOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")  # a token's name: the actor of its writes
SYSTEM_ACTOR = "cronring"  # the actor of what the scheduler does by itself (auto-pause, a pause ending)


class Via(StrEnum):
    API = "api"
    DASHBOARD = "dashboard"
    CLI = "cli"
    SYSTEM = "system"  # cronring itself


class AuditAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    PAUSE = "pause"
    RESUME = "resume"
    RUN = "run"
    SKIP = "skip"
    BACKFILL = "backfill"
    BACKFILL_CANCEL = "backfill.cancel"
    RESTORE = "restore"
    CALENDAR_PUT = "calendar.put"
    CALENDAR_DELETE = "calendar.delete"
    AUTO_PAUSE = "auto-pause"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change (a token's name, ``anonymous`` without auth, ``cronring``), how, and on which node."""

    name: str
    via: str
    node: str
    selector: Selector | None = field(default=None, compare=False)  # a scoped token: only the jobs it matches

    def sees(self, labels: dict[str, str]) -> bool:
        return self.selector is None or self.selector.matches(labels)

    @classmethod
    def system(cls, node: str) -> Actor:
        return cls(SYSTEM_ACTOR, str(Via.SYSTEM), node)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What an action asks the store to record with its change (the store adds the job's versions)."""

    actor: Actor
    action: AuditAction
    changes: dict[str, list[Any]] = field(default_factory=dict)
    note: str | None = None
    subject: str | None = None  # what besides a job it is about: a calendar's name, a backfill's id


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    via: str
    node: str
    action: str
    job_id: str | None
    from_version: int | None
    to_version: int | None
    changes: dict[str, list[Any]]
    note: str | None
    subject: str | None

    def to_api(self) -> dict[str, Any]:
        from .times import rfc3339

        return {"id": self.id, "at": rfc3339(self.at), "actor": self.actor, "via": self.via, "node": self.node,
                "action": self.action, "jobId": self.job_id, "fromVersion": self.from_version,
                "toVersion": self.to_version, "changes": self.changes, "note": self.note, "subject": self.subject}


# Fields of a job's API view that are bookkeeping, not its definition: never a "change".
_NOT_DEFINITION = frozenset({"id", "version", "owner", "createdAt", "updatedAt", "remainingRuns", "completedAt",
                             "nextRunAt", "running", "lastExecutedAt", "isLocked", "state", "lastExecution",
                             "warnings", "failStreak", "failingSince"})


def changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, list[Any]]:
    """``{field: [old, new]}`` between two API views (masked views: a secret never appears)."""
    before, after = before or {}, after or {}
    out: dict[str, list[Any]] = {}
    for key in sorted(set(before) | set(after)):
        if key in _NOT_DEFINITION:
            continue
        old, new = before.get(key), after.get(key)
        if old != new:
            out[key] = [old, new]
    return out


def job_changes(before: Job | None, after: Job | None) -> dict[str, list[Any]]:
    """What an action changed in a job's definition, masked as the API shows it. A secret that changed (a
    header's value, a password in the URL) is listed with its mask on both sides: the change is visible,
    the secret never."""
    b, a = (before.to_api() if before else None), (after.to_api() if after else None)
    out = changes(b, a)
    if before is not None and after is not None and b is not None and a is not None:
        for key, old, new in (("uri", before.uri, after.uri), ("headers", before.headers, after.headers),
                              ("alertUri", before.alert_uri, after.alert_uri)):
            if old != new and key not in out:
                out[key] = [b[key], a[key]]
    return out
