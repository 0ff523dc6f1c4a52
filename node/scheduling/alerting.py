"""Alerts sent: every node takes due rows from the outbox under a lease (``store/alerts.py``) and POSTs each to
its job's ``alertUri`` or ``CRONRING_ALERT_URL``, signed as ticks are, with the alert's id as its
``Idempotency-Key``: at least once (retries with backoff; a sender lost mid-send leaves its lease to end, and
another sends it again), once per event (one row per event)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from .. import metrics
from ..aio import raise_if_cancelling
from ..model.alerts import Alert, AlertState, summary
from ..model.errors import StoreUnavailable
from ..model.times import rfc3339

log = structlog.get_logger("alerts")

EVERY = 1.0  # seconds between looks at the outbox when nothing woke the sender
LEASE_SECONDS = 15.0  # a sender lost mid-send: another sends the alert again after this
MAX_ATTEMPTS = 12  # backoff 2 s, 4 s, ... capped at 10 min: about an hour of trying
TIMEOUT = 10.0


class Outbox(Protocol):
    """The alerts outbox (store/alerts.py)."""

    async def claim(self, claimer: str, *, lease_seconds: float, limit: int = 20) -> list[Alert]: ...
    async def finish(self, alert_id_: str, claimer: str, state: AlertState, *, node: str, status: int | None = None,
                     error: str | None = None, retry_in: float | None = None) -> None: ...
    async def targets(self, job_ids: Sequence[str]) -> dict[str, tuple[str, str | None, dict[str, Any]]]: ...


class Poster(Protocol):
    async def post(self, uri: str, body: bytes, headers: dict[str, str], *, timeout: float = 10.0
                   ) -> tuple[int | None, str | None]: ...


def backoff(attempts: int) -> float:
    return float(min(600, 2 ** max(1, attempts)))


def body_of(alert: Alert, job: dict[str, Any] | None, fmt: str) -> bytes:
    """The POST's body: the alert as JSON, or Slack's ``{"text": ...}`` (an incoming webhook's format)."""
    doc: dict[str, Any] = {"id": alert.id, "type": alert.type, "at": rfc3339(alert.at), **alert.payload}
    if job is not None:
        doc["job"] = job
    if fmt == "slack":
        return json.dumps({"text": summary(doc)}).encode()
    return json.dumps(doc, default=str).encode()


class AlertSender:
    def __init__(self, outbox: Outbox, poster: Poster, *, node_id: str, claimer: Callable[[], str],
                 alert_url: str, alert_format: str, fresh: Callable[[], bool]) -> None:
        self.outbox, self.poster, self.node_id, self.claimer = outbox, poster, node_id, claimer
        self.alert_url, self.alert_format, self.fresh = alert_url, alert_format, fresh
        self.wake = asyncio.Event()

    async def pass_once(self) -> int:
        """Send what is due; how many were sent."""
        if not self.fresh():
            return 0  # a node cut off from the cluster leaves the sending to the others
        claimer = self.claimer()
        # one at a time: the lease (15 s) outlasts its one POST (10 s at most), so no other node sends it meanwhile
        due = await self.outbox.claim(claimer, lease_seconds=LEASE_SECONDS, limit=1)
        if not due:
            return 0
        jobs = await self.outbox.targets(sorted({a.job_id for a in due if a.job_id}))
        sent = 0
        for alert in due:
            name, alert_uri, labels = jobs.get(alert.job_id or "", (None, None, {}))
            target = alert_uri or self.alert_url
            if not target:
                await self.outbox.finish(alert.id, claimer, AlertState.UNROUTED, node=self.node_id,
                                         error="no alertUri and no CRONRING_ALERT_URL")
                continue
            job = {"id": alert.job_id, "name": name, "labels": labels} if alert.job_id else None
            status, error = await self.poster.post(target, body_of(alert, job, self.alert_format), {
                "Idempotency-Key": alert.id, "X-Cronring-Alert": alert.type}, timeout=TIMEOUT)
            if status is not None and 200 <= status < 300:
                await self.outbox.finish(alert.id, claimer, AlertState.SENT, node=self.node_id, status=status)
                metrics.ALERTS.labels(type=alert.type, outcome="sent").inc()
                sent += 1
                continue
            why = error or f"HTTP {status}"
            final = alert.attempts >= MAX_ATTEMPTS or (status is not None and 400 <= status < 500
                                                        and status not in (408, 425, 429))
            await self.outbox.finish(alert.id, claimer, AlertState.FAILED if final else AlertState.PENDING,
                                     node=self.node_id, status=status, error=why,
                                     retry_in=None if final else backoff(alert.attempts))
            metrics.ALERTS.labels(type=alert.type, outcome="failed" if final else "retry").inc()
            log.warning("alert not delivered", alert=alert.id, type=alert.type, status=status, error=why,
                        attempts=alert.attempts, final=final)
        return sent

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(EVERY):
                    await self.wake.wait()
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                while await self.pass_once():
                    pass
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as e:
                raise_if_cancelling()
                log.warning("alerts: the store is away; will retry", error=str(e))
            except Exception:
                raise_if_cancelling()
                log.exception("alerts: a pass failed")
