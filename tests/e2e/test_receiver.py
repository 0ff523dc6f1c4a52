"""The receiver over real HTTP: signatures, fences, redeliveries, double fires, logs, hostile input."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from tests.harness import Cluster


def sig(secret: str, body: bytes, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    return f"t={t},v1=" + hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()


@pytest.fixture(scope="module")
async def rc():
    c = Cluster("recv")
    await c.start_receiver("current-secret,previous-secret")
    yield c
    await c.close()


def hdrs(job: str, exec_id: str, tick: str, fence: int, body: bytes, secret: str = "current-secret", **extra: str) -> dict:
    return {"X-Cron-Job-Id": job, "X-Cron-Execution-Id": exec_id, "X-Cron-Scheduled-At": tick,
            "X-Cron-Fence": str(fence), "X-Cron-Attempt": "1", "X-Cron-Signature": sig(secret, body), **extra}


async def test_signatures_good_rotated_bad_expired(rc: Cluster) -> None:
    u = f"{rc.receiver.url}/webhook"
    b = b'{"a":1}'
    assert (await rc.request("POST", u, data=b, headers=hdrs("s", "e1", "2026-01-01T00:00:00.000Z", 1, b)))[0] == 200
    assert (await rc.request("POST", u, data=b, headers=hdrs("s", "e2", "2026-01-01T00:00:01.000Z", 1, b,
                                                              secret="previous-secret")))[0] == 200
    assert (await rc.request("POST", u, data=b, headers=hdrs("s", "e3", "2026-01-01T00:00:02.000Z", 1, b,
                                                              secret="wrong")))[0] == 401
    old = {**hdrs("s", "e4", "2026-01-01T00:00:03.000Z", 1, b), "X-Cron-Signature": sig("current-secret", b, int(time.time()) - 600)}
    status, body, _ = await rc.request("POST", u, data=b, headers=old)
    assert status == 401 and "expired" in body["error"]


async def test_fences_redeliveries_double_fires(rc: Cluster) -> None:
    u = f"{rc.receiver.url}/hooks/fences"
    b = b""
    t = "2026-01-01T00:00:00.000Z"
    assert (await rc.request("POST", u, data=b, headers=hdrs("f", "x1", t, 5, b)))[0] == 200
    assert (await rc.request("POST", u, data=b, headers=hdrs("f", "x1", t, 5, b)))[0] == 200  # redelivery
    assert (await rc.request("POST", u, data=b, headers=hdrs("f", "x2", t, 5, b)))[0] == 200  # double fire
    status, body, _ = await rc.request("POST", u, data=b, headers=hdrs("f", "x3", "2026-01-01T00:00:01.000Z", 4, b))
    assert status == 409  # stale fence
    stats = (await rc.request("GET", f"{rc.receiver.url}/stats?job=f"))[1]
    assert stats["redeliveries"] == 1 and stats["doubleFires"] == 1 and stats["staleFences"] == 1
    assert stats["maxFence"] == 5


@pytest.mark.parametrize("name", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", ".hidden.log", "x.txt", "%00.log",
                                  "..\\..\\x.log"])
async def test_log_path_traversal_refused(rc: Cluster, name: str) -> None:
    status, body, _ = await rc.request("GET", f"{rc.receiver.url}/logs/{name}")
    assert status == 404


async def test_logs_and_bad_target_knobs(rc: Cluster) -> None:
    status, body, _ = await rc.request("GET", f"{rc.receiver.url}/logs")
    assert "deliveries.log" in body["files"]
    status, body, _ = await rc.request("GET", f"{rc.receiver.url}/logs/deliveries.log?lines=2")
    assert status == 200 and len(body["lines"]) <= 2
    b = b"x"
    status, _, _ = await rc.request("POST", f"{rc.receiver.url}/webhook?status=500", data=b,
                                    headers=hdrs("k", "k1", "2026-01-01T00:00:00.000Z", 1, b))
    assert status == 500
    assert (await rc.request("POST", f"{rc.receiver.url}/webhook?fail_rate=2", data=b))[0] == 400
    assert (await rc.request("POST", f"{rc.receiver.url}/webhook?delay_ms=x", data=b))[0] == 400


@pytest.mark.parametrize("headers", [
    {"X-Cron-Fence": "not-a-number"}, {"X-Cron-Scheduled-At": "yesterday"}, {"X-Cron-Signature": "garbage"},
    {"X-Cron-Signature": "t=abc,v1="}, {"X-Cron-Attempt": "9" * 40}, {"X-Cron-Job-Id": "j" * 500},
])
async def test_malformed_headers_never_500(rc: Cluster, headers: dict) -> None:
    status, body, _ = await rc.request("POST", f"{rc.receiver.url}/webhook", data=b"{}", headers=headers)
    assert status in (200, 401, 409)


async def test_reset_health_stats(rc: Cluster) -> None:
    assert (await rc.request("GET", f"{rc.receiver.url}/health"))[1]["status"] == "healthy"
    assert (await rc.request("POST", f"{rc.receiver.url}/reset"))[0] == 200
    assert (await rc.request("GET", f"{rc.receiver.url}/stats"))[1]["total"]["deliveries"] == 0
