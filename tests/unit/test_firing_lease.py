"""The lease is checked where it matters: before an attempt, once a connection is obtained (new, reused
or after waiting for the pool), and connecting is bounded by the lease time left. A real in-process
HTTP server counts what arrives."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from node.model.jobs import Job
from node.scheduling.firing import Firer
from node.scheduling.outbound import OutboundPolicy
from tests.local_server import LocalServer


class Target(LocalServer):
    def __init__(self) -> None:
        super().__init__(self._handle)
        self.attempts: list[str] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts.append(request.headers.get("X-Cron-Attempt", ""))
        await asyncio.sleep(float(request.query.get("sleep", "0")))
        return web.Response(status=int(request.query.get("status", "200")))


async def _fire(target: Target, *, may_send, lease_left, attempts_before: int = 0, query: str = "", retries: int = 0,
                host: str = "127.0.0.1"):
    firer = Firer(node_id="n", signing_secret="", policy=OutboundPolicy(), pool_size=4)
    await firer.start()
    try:
        job = Job(id="j", schedule="* * * * * *", uri=f"http://{host}:{target.port}/x{query}", retries=retries,
                  retry_backoff_ms=0, retry_max_backoff_ms=0)
        return await firer.fire(job, execution_id="e1", scheduled_at=datetime.now(UTC), fence=3, may_send=may_send,
                                lease_left=lease_left, attempts_before=attempts_before)
    finally:
        await firer.close()


async def test_no_lease_left_nothing_is_sent() -> None:
    async with Target() as t:
        r = await _fire(t, may_send=lambda: False, lease_left=lambda: 0.0)
    assert r.state == "abandoned" and t.attempts == [] and "lease" in (r.error or "")


async def test_a_lease_lost_while_connecting_sends_nothing() -> None:
    # time was left when the attempt began; asked again once the connection is obtained, the lease is gone
    async with Target() as t:
        r = await _fire(t, may_send=lambda: False, lease_left=lambda: 1.5)
    assert r.state == "abandoned" and t.attempts == [], (r, t.attempts)


async def test_a_fresh_lease_sends_and_a_redelivery_continues_the_attempt_count() -> None:
    async with Target() as t:
        r = await _fire(t, may_send=lambda: True, lease_left=lambda: 1.5, attempts_before=2)
    assert r.state == "succeeded" and r.attempts == 3 and t.attempts == ["3"]


async def test_retries_stop_when_the_lease_lapses_between_attempts() -> None:
    state = {"fresh": True}

    async with Target() as t:
        def may_send() -> bool:
            if len(t.attempts) >= 1:
                state["fresh"] = False
            return state["fresh"]

        r = await _fire(t, may_send=may_send, lease_left=lambda: 1.5 if state["fresh"] else 0.0, query="?status=503",
                        retries=3)
    assert t.attempts == ["1"] and r.state == "failed" and r.attempts == 1


async def test_connecting_is_bounded_by_the_lease_then_the_job_timeout_applies(monkeypatch) -> None:
    """A connection that takes longer than the lease surely lasts is given up (a failed attempt, nothing
    sent); once connected, the job's own timeout bounds the request, not the lease."""
    import time

    from node.scheduling.outbound import PolicyResolver

    real = PolicyResolver.resolve
    delay = {"s": 1.0}

    async def slow(self, host, port=0, family=0):  # a DNS answer that is slow to come
        await asyncio.sleep(delay["s"])
        return await real(self, host, port, family)

    monkeypatch.setattr(PolicyResolver, "resolve", slow)
    async with Target() as t:
        t0 = time.monotonic()
        r = await _fire(t, may_send=lambda: True, lease_left=lambda: 0.2, host="localhost")
        took = time.monotonic() - t0
        assert r.state == "failed" and t.attempts == [] and "lease" in (r.error or ""), r
        assert took < 0.9, took  # cut at the lease's end, not after the 1 s connect
        delay["s"] = 0.0
        r = await _fire(t, may_send=lambda: True, lease_left=lambda: 0.2, host="localhost", query="?sleep=0.5")
        assert r.state == "succeeded" and t.attempts == ["1"], r
