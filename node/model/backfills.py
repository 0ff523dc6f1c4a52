"""Backfills: a job's scheduled instants over a past (or any) range, sent again on request. No I/O.

A backfill sends each due instant of the job in ``[from, to)`` (its timetable's, as it is now) as an execution of
kind ``backfill`` carrying that instant in ``X-Cron-Scheduled-At``. It is idempotent: an instant that already has a
delivered execution (its own tick, or an earlier backfill's) is not sent again and counts as ``alreadyDone``; one
a backfill is sending right now is waited for. The job's owner runs it, at most ``maxPerSecond`` instants a
second, one at a time (``forbid``) or side by side (``allow``); a backfill whose owner is lost resumes on the next
owner, which re-sends what was in flight there as the same execution (same ``Idempotency-Key``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from .times import rfc3339

MAX_INSTANTS = 10_000
MAX_PER_SECOND = 100
DEFAULT_PER_SECOND = 10


class BackfillState(StrEnum):
    QUEUED = "queued"  # asked for; its job's owner has not started it yet
    RUNNING = "running"
    DONE = "done"  # every instant sent, already done, or failed
    CANCELLED = "cancelled"  # DELETE: no instant is sent after it


ACTIVE = frozenset({BackfillState.QUEUED, BackfillState.RUNNING})


class BackfillPolicy(StrEnum):
    FORBID = "forbid"  # one instant at a time: the next goes when the previous has ended
    ALLOW = "allow"  # up to maxPerSecond a second, side by side


@dataclass(frozen=True, slots=True, kw_only=True)
class Backfill:
    id: str
    job_id: str
    start: datetime
    end: datetime
    policy: BackfillPolicy = BackfillPolicy.FORBID
    max_per_second: int = DEFAULT_PER_SECOND
    total: int = 0
    sent: int = 0  # instants whose execution has ended (delivered or failed)
    already_done: int = 0  # instants that had a delivered execution already
    failed: int = 0  # of ``sent``: failed or timed out
    state: BackfillState = BackfillState.QUEUED
    cursor: datetime | None = None  # every instant up to it is handled (sent, in flight, or already done)
    node: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "jobId": self.job_id, "from": rfc3339(self.start), "to": rfc3339(self.end),
                "concurrencyPolicy": str(self.policy), "maxPerSecond": self.max_per_second, "total": self.total,
                "sent": self.sent, "alreadyDone": self.already_done, "failed": self.failed, "state": str(self.state),
                "progress": round((self.sent + self.already_done) / self.total, 4) if self.total else 1.0,
                "cursor": rfc3339(self.cursor), "node": self.node, "error": self.error,
                "createdAt": rfc3339(self.created_at), "updatedAt": rfc3339(self.updated_at)}
