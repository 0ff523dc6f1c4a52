"""The receiver's /alerts witness (cronring's failure alerts: signed JSON or Slack-style bodies), and its
signature check through cronring.verify, over aiohttp's test client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from node.receiver.app import create_app

from node.verify import sign
from tests.harness import ROOT

SECRETS = ("current-secret", "previous-secret")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(log_file=str(tmp_path / "deliveries.log"), secrets=SECRETS))) as c:
        yield c


def alert_headers(body: bytes, key: str, kind: str, secret: str | None = SECRETS[0], t: int | None = None
                  ) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Idempotency-Key": key, "X-Cronring-Alert": kind}
    if secret is not None:
        h["X-Cron-Signature"] = sign(secret, body, timestamp=t)
    return h


def failing(alert_id: str, kind: str = "job.failing") -> bytes:
    return json.dumps({"id": alert_id, "type": kind, "at": "2027-01-15T08:00:03.120Z",
                       "job": {"id": "j1", "name": "nightly", "consecutiveFailures": 3}}).encode()


async def test_alerts_are_recorded_once_per_key_with_their_deliveries(client: TestClient) -> None:
    body = failing("al-1")
    r = await client.post("/alerts", data=body, headers=alert_headers(body, "al-1", "job.failing"))
    assert r.status == 200 and await r.json() == {"received": True, "id": "al-1", "deliveries": 1}
    # a redelivery of the same alert (same Idempotency-Key), signed again, by the previous secret
    r = await client.post("/alerts", data=body, headers=alert_headers(body, "al-1", "job.failing", SECRETS[1]))
    assert (await r.json())["deliveries"] == 2
    (got,) = await (await client.get("/alerts")).json()
    assert got.pop("receivedAt").endswith("Z")
    assert got == {"id": "al-1", "type": "job.failing", "at": "2027-01-15T08:00:03.120Z", "path": "/alerts",
                   "signature": "ok", "deliveries": 2, "body": json.loads(body)}


async def test_slack_bodies_take_their_type_from_the_header(client: TestClient) -> None:
    body = json.dumps({"text": ":white_check_mark: nightly recovered"}).encode()
    r = await client.post("/alerts/slack/ops", data=body, headers=alert_headers(body, "al-2", "job.recovered"))
    assert r.status == 200
    (got,) = await (await client.get("/alerts")).json()
    assert (got["id"], got["type"], got["at"], got["path"], got["signature"]) == (
        "al-2", "job.recovered", None, "/alerts/slack/ops", "ok")
    assert got["body"] == {"text": ":white_check_mark: nightly recovered"}
    r = await client.post("/alerts/plain", data=b"node n3 is down", headers=alert_headers(b"node n3 is down", "al-3",
                                                                                          "node.down"))
    assert r.status == 200
    assert (await (await client.get("/alerts?type=node.down")).json())[0]["body"] == "node n3 is down"


async def test_signature_verdicts_are_recorded_not_refused(client: TestClient) -> None:
    old = int(time.time()) - 3600
    cases = {"ok": {}, "bad": {"secret": "wrong-secret"}, "missing": {"secret": None}, "expired": {"t": old}}
    for verdict, how in cases.items():
        body = failing(f"k-{verdict}", "ticks.missed")
        r = await client.post("/alerts", data=body, headers=alert_headers(body, f"k-{verdict}", "ticks.missed", **how))
        assert r.status == 200, verdict
    got = await (await client.get("/alerts")).json()
    assert [(a["id"], a["signature"]) for a in got] == [(f"k-{v}", v) for v in cases]
    # a bad delivery of an alert that came well signed is not hidden by the good one
    body = failing("k-ok", "ticks.missed")
    await client.post("/alerts", data=body, headers=alert_headers(body, "k-ok", "ticks.missed", secret="wrong-secret"))
    first = (await (await client.get("/alerts")).json())[0]
    assert first["deliveries"] == 2 and first["signature"] == "bad"


async def test_alert_list_filter_order_reset(client: TestClient) -> None:
    for i, kind in enumerate(["job.failing", "job.paused", "job.failing", "ticks.unaccounted"]):
        body = failing(f"a{i}", kind)
        await client.post("/alerts", data=body, headers=alert_headers(body, f"a{i}", kind))
    assert [a["id"] for a in await (await client.get("/alerts")).json()] == ["a0", "a1", "a2", "a3"]
    assert [a["id"] for a in await (await client.get("/alerts?type=job.failing")).json()] == ["a0", "a2"]
    assert await (await client.get("/alerts?type=none")).json() == []
    # no key and no id: each POST is an alert of its own
    await client.post("/alerts", data=b"{}", headers={"X-Cronring-Alert": "job.failing"})
    await client.post("/alerts", data=b"{}", headers={"X-Cronring-Alert": "job.failing"})
    assert len(await (await client.get("/alerts?type=job.failing")).json()) == 4
    # alerts are not ticks: the tick counters do not move
    stats = await (await client.get("/stats")).json()
    assert stats["total"]["requests"] == 0 and stats["total"]["badSignatures"] == 0
    assert (await client.get("/alerts/a0")).status == 405  # only POSTs under /alerts/
    assert (await client.post("/reset")).status == 200
    assert await (await client.get("/alerts")).json() == []


async def test_unsigned_receiver_marks_alerts_unchecked(tmp_path: Path) -> None:
    async with TestClient(TestServer(create_app(log_file=str(tmp_path / "d.log")))) as c:
        await c.post("/alerts", data=failing("u1"), headers={"Idempotency-Key": "u1"})
        (got,) = await (await c.get("/alerts")).json()
        assert (got["type"], got["signature"]) == ("job.failing", "unchecked")


async def test_tick_witness_through_cronring_verify(client: TestClient) -> None:
    """The webhook path still answers and counts as before, now checked by cronring.verify."""
    def tick(exec_id: str, fence: int, secret: str, body: bytes = b"{}", t: int | None = None) -> dict[str, str]:
        return {"X-Cron-Job-Id": "j", "X-Cron-Execution-Id": exec_id, "X-Cron-Fence": str(fence),
                "X-Cron-Scheduled-At": f"2027-01-01T00:00:0{exec_id[-1]}.000Z",
                "X-Cron-Signature": sign(secret, body, timestamp=t)}

    assert (await client.post("/webhook", data=b"{}", headers=tick("e1", 2, SECRETS[0]))).status == 200
    assert (await client.post("/webhook", data=b"{}", headers=tick("e2", 2, SECRETS[1]))).status == 200  # rotated
    r = await client.post("/webhook", data=b"{}", headers=tick("e3", 2, "wrong"))
    assert r.status == 401 and (await r.json())["error"] == "signature bad"
    r = await client.post("/webhook", data=b"{}", headers=tick("e4", 2, SECRETS[0], t=int(time.time()) - 600))
    assert r.status == 401 and (await r.json())["error"] == "signature expired"
    assert (await client.post("/webhook", data=b"{}", headers=tick("e5", 1, SECRETS[0]))).status == 409
    stats = await (await client.get("/stats?job=j")).json()
    # (a stale-fenced request is still counted as a delivery, as the witness always did: and answered 409)
    assert (stats["deliveries"], stats["badSignatures"], stats["staleFences"], stats["maxFence"]) == (3, 2, 1, 2)


def test_the_receiver_finds_cronring_verify_in_every_layout() -> None:
    """A checkout's `receiver` (python -m receiver) and `node.receiver`, and the installed `cronring.receiver`."""
    import node.receiver.app as nested

    import node.verify
    import receiver.app as top

    assert top.verify is nested.verify is node.verify
    probe = ("import sys, cronring.receiver.app as app\n"
             "assert app.verify.__name__ == 'cronring.verify', app.verify\n"
             "assert not {'node', 'receiver'} & set(sys.modules), sorted(sys.modules)\n")
    found = subprocess.run([sys.executable, "-c", "import cronring"], cwd=ROOT.parent, capture_output=True)
    if found.returncode != 0:
        pytest.skip("cronring is not installed in this environment")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT.parent, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
