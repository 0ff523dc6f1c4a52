"""Alerts: what is worth telling a person, once per event (``store/alerts.py`` keeps one row per event)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from .times import rfc3339


class AlertType(StrEnum):
    JOB_FAILING = "job.failing"  # a failure streak began (its first failed scheduled run)
    JOB_RECOVERED = "job.recovered"  # the first success after a streak
    JOB_PAUSED = "job.paused"  # it paused itself (pauseAfterFailures)
    TICKS_MISSED = "ticks.missed"  # instants recorded missed or abandoned (at most one a job a minute)
    TICKS_UNACCOUNTED = "ticks.unaccounted"  # the ledger audit found an instant without a row (a bug)
    NODE_DOWN = "node.down"  # a member died (sent once, by one survivor)


class AlertState(StrEnum):
    PENDING = "pending"  # to be sent (now, or at its next retry)
    SENDING = "sending"  # leased to a sender
    SENT = "sent"  # the target answered 2xx
    FAILED = "failed"  # retries exhausted, or refused for good (4xx but 408/429)
    UNROUTED = "unrouted"  # no CRONRING_ALERT_URL and no alertUri: listed, not sent


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    type: str
    job_id: str | None
    at: datetime
    payload: dict[str, Any]
    state: AlertState
    attempts: int = 0
    sent_at: datetime | None = None
    node: str | None = None
    status_code: int | None = None
    error: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "at": rfc3339(self.at), "jobId": self.job_id,
                "state": str(self.state), "attempts": self.attempts, "sentAt": rfc3339(self.sent_at),
                "sentBy": self.node, "statusCode": self.status_code, "error": self.error, **self.payload}


def summary(body: dict[str, Any]) -> str:
    """One line a person reads (Slack's ``text``)."""
    job = body.get("job") or {}
    who = f"job {job.get('name') or job.get('id')!s}" if job else f"node {body.get('node')}"
    what = {
        AlertType.JOB_FAILING: "is failing",
        AlertType.JOB_RECOVERED: f"recovered after {body.get('streak')} failed runs",
        AlertType.JOB_PAUSED: f"paused itself after {body.get('streak')} failed runs in a row",
        AlertType.TICKS_MISSED: f"missed {body.get('count', 'some')} ticks",
        AlertType.TICKS_UNACCOUNTED: "has a tick the ledger cannot account for",
        AlertType.NODE_DOWN: "is down",
    }.get(body.get("type", ""), body.get("type", "alert"))
    detail = ""
    execution = body.get("execution") or {}
    if execution.get("error"):
        detail = f": {execution['error']}"
    elif execution.get("statusCode"):
        detail = f": HTTP {execution['statusCode']}"
    return f"[cronring] {who} {what}{detail}"[:2000]
