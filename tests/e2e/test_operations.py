"""Operating cronring as a team, end to end on two real nodes: failure alerts (once per streak, signed, through the
outbox), auto-pause, named tokens as the actors of an audit log, versions and restore, pauses with a reason and an
end. The receiver is the alerts' witness; a target in the test's own loop fails on demand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from tests.harness import Cluster, wait_for
from tests.local_server import LocalServer

SECRET = "alert-signing-secret-1"
TOKENS = "alice=alice-token-1:admin,bob=bob-token-22:admin,reader=read-token-333:read"
ALICE = {"Authorization": "Bearer alice-token-1"}
BOB = {"Authorization": "Bearer bob-token-22", "X-Cronring-Client": "cli/test"}
READER = {"Authorization": "Bearer read-token-333"}
HEADER_SECRET = "Bearer v3ry-s3cret-header-value"


class Target:
    """Answers 200, or 500 while ``failing``."""

    def __init__(self) -> None:
        self.failing = False
        self.hits = 0
        self.server = LocalServer(self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if request.path == "/json":  # ?status=green&delay_ms=
            await asyncio.sleep(int(request.query.get("delay_ms", "0")) / 1000)
            return web.json_response({"status": request.query.get("status", "green"), "items": [{"id": 7}]})
        if request.path == "/text":
            return web.Response(text=request.query.get("text", ""))
        return web.Response(status=500 if self.failing else 200, text="down" if self.failing else "ok")


@pytest.fixture(scope="module")
async def ops() -> AsyncIterator[tuple[Cluster, Target]]:
    c = Cluster("ops", CRONRING_API_TOKENS=TOKENS, CRONRING_SIGNING_SECRET=SECRET)
    target = Target()
    await target.server.start()
    try:
        await c.start_receiver(SECRET)
        assert c.receiver is not None
        extra = {"CRONRING_ALERT_URL": f"{c.receiver.url}/alerts/team"}
        for n in ("op-a", "op-b"):
            port = __import__("tests.harness", fromlist=["free_port"]).free_port()
            from tests.harness import Node

            node = Node(n, port, c.env_for(n, port, **extra), c.dir / f"{n}.log")
            c.nodes[n] = node
            node.start()
        for node in c.nodes.values():
            await c.wait_healthy(node)

        async def both() -> bool:
            for node in c.nodes.values():
                status, view, _ = await c.request("GET", f"{node.url}/api/cluster", headers=READER)
                if status != 200 or len(view["members"]) != 2:
                    return False
            return True

        await wait_for(both, 20, "two members")
        yield c, target
    finally:
        await c.close()
        await target.server.close()


async def api(c: Cluster, method: str, path: str, headers: dict[str, str], **kw: Any) -> tuple[int, Any]:
    status, body, _ = await c.request(method, f"{c.any_node().url}{path}", headers=headers, **kw)
    return status, body


async def alerts_at_receiver(c: Cluster, job_id: str | None = None) -> list[dict[str, Any]]:
    assert c.receiver is not None
    got = await c.get_json(f"{c.receiver.url}/alerts")
    return [a for a in got if job_id is None or (a.get("body") or {}).get("job", {}).get("id") == job_id]


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_a_failing_job_alerts_once_pauses_itself_and_recovers(ops: tuple[Cluster, Target]) -> None:
    c, target = ops
    target.failing = False
    status, job = await api(c, "POST", "/api/crons", ALICE, json={
        "name": "nightly-report", "schedule": "* * * * * *", "uri": target.server.url + "/run",
        "pauseAfterFailures": 3})
    assert status == 201, job
    jid = job["id"]
    assert job["pauseAfterFailures"] == 3 and job["failStreak"] == 0
    await wait_for(lambda: target.hits >= 2, 15, "two successful runs")
    target.failing = True

    async def paused() -> Any:
        s, j = await api(c, "GET", f"/api/crons/{jid}", READER)
        return j if s == 200 and j["paused"] else None

    j = await wait_for(paused, 30, "the job to pause itself")
    assert j["pausedBy"] == "cronring" and "3 consecutive failed runs" in j["pausedReason"], j
    assert j["failStreak"] >= 3 and j["failingSince"], j

    async def receiver_has(kind: str) -> Any:
        got = [a for a in await alerts_at_receiver(c, jid) if a["type"] == kind]
        return got or None

    failing = await wait_for(lambda: receiver_has("job.failing"), 30, "job.failing at the receiver")
    await wait_for(lambda: receiver_has("job.paused"), 30, "job.paused at the receiver")
    assert len({a["id"] for a in failing}) == 1, failing
    assert all(a["signature"] == "ok" for a in failing), failing
    body = failing[0]["body"]
    assert body["job"] == {"id": jid, "name": "nightly-report", "labels": {}}
    assert body["streak"] == 1 and body["execution"]["statusCode"] == 500, body

    # failing: the jobs whose last scheduled run failed
    s, listed = await api(c, "GET", "/api/crons?state=failing", READER)
    assert s == 200 and [x["id"] for x in listed] == [jid], listed

    target.failing = False
    s, resumed = await api(c, "POST", f"/api/crons/{jid}/resume", BOB, json={"note": "fixed the report host"})
    assert s == 200 and not resumed["paused"] and resumed["pausedReason"] is None, resumed
    recovered = await wait_for(lambda: receiver_has("job.recovered"), 30, "job.recovered at the receiver")
    assert recovered[0]["body"]["streak"] >= 3
    s, listed = await api(c, "GET", "/api/crons?state=failing", READER)
    assert s == 200 and listed == [], listed
    # still one failing alert for the whole streak (every failure after the first was the same streak)
    assert len({a["id"] for a in await receiver_has("job.failing")}) == 1
    s, alerts = await api(c, "GET", f"/api/alerts?jobId={jid}", READER)
    assert s == 200 and {a["type"] for a in alerts} >= {"job.failing", "job.paused", "job.recovered"}, alerts
    assert all(a["state"] == "sent" for a in alerts if a["type"] != "ticks.missed"), alerts

    s, rows = await api(c, "GET", f"/api/audit?jobId={jid}", READER)
    assert s == 200
    steps = [(r["action"], r["actor"], r["via"]) for r in reversed(rows)]
    assert steps == [("create", "alice", "api"), ("auto-pause", "cronring", "system"), ("resume", "bob", "cli")], steps
    assert rows[0]["note"] == "fixed the report host" and rows[0]["node"] in c.nodes
    await api(c, "DELETE", f"/api/crons/{jid}", ALICE)


async def test_three_edits_and_a_restore_give_version_one_back(ops: tuple[Cluster, Target]) -> None:
    c, target = ops
    s, v1 = await api(c, "POST", "/api/crons", ALICE, json={
        "name": "v1", "schedule": "0 3 * * *", "timeZone": "Europe/Paris", "uri": target.server.url + "/a",
        "headers": {"Authorization": HEADER_SECRET, "X-Team": "billing"}, "retries": 2, "paused": True})
    assert s == 201, v1
    jid = v1["id"]
    for patch in ({"name": "v2", "schedule": "*/5 * * * *"},
                  {"headers": {"Authorization": "Bearer another-secret-0", "X-Team": "billing"}},
                  {"retries": 5, "timeZone": "UTC", "paused": False}):
        s, body = await api(c, "PATCH", f"/api/crons/{jid}", BOB, json=patch)
        assert s == 200, body
    s, restored = await api(c, "POST", f"/api/crons/{jid}/restore", BOB, json={"version": 1})
    assert s == 200, restored
    assert restored["version"] == 5
    s, old = await api(c, "GET", f"/api/crons/{jid}/versions/1", READER)
    assert s == 200 and old["complete"], old
    ignore = {"version", "updatedAt", "createdAt", "owner", "nextRunAt", "running", "lastExecutedAt", "isLocked",
              "state", "lastExecution", "remainingRuns", "completedAt", "failStreak", "failingSince", "change"}
    now = {k: v for k, v in restored.items() if k not in ignore}
    then = {k: v for k, v in old["job"].items() if k not in ignore}
    assert now == then, {k: (now.get(k), then.get(k)) for k in set(now) | set(then) if now.get(k) != then.get(k)}
    assert now["pausedBy"] == "alice"  # paused by its creator in version 1; the restore keeps who and when

    # the secret of version 1 is the one in force again (a restore writes the stored definition, unmasked)
    s, versions = await api(c, "GET", f"/api/crons/{jid}/versions", READER)
    assert s == 200 and [v["version"] for v in versions] == [5, 4, 3, 2, 1]
    assert [v["change"]["actor"] for v in versions] == ["bob", "bob", "bob", "bob", "alice"]
    assert versions[0]["change"]["action"] == "restore" and versions[0]["change"]["note"] == "restored version 1"
    s, rows = await api(c, "GET", f"/api/audit?jobId={jid}&actor=bob", READER)
    assert s == 200 and [(r["action"], r["fromVersion"], r["toVersion"]) for r in reversed(rows)] == [
        ("update", 1, 2), ("update", 2, 3), ("update", 3, 4), ("restore", 4, 5)], rows
    assert rows[-1]["changes"]["name"] == ["v1", "v2"]
    assert rows[-2]["changes"]["headers"] == [{"Authorization": "***", "X-Team": "billing"}] * 2  # changed, masked
    for text in (json.dumps(versions), json.dumps(rows), json.dumps(restored)):
        assert "v3ry-s3cret" not in text and "another-secret" not in text

    # bad input changes nothing
    for payload, code in (({"version": 99}, 404), ({"version": 0}, 400), ({"version": "1"}, 400), ({}, 400),
                          ({"version": 1, "x": 1}, 400)):
        s, body = await api(c, "POST", f"/api/crons/{jid}/restore", BOB, json=payload)
        assert s == code, (payload, s, body)
    s, body = await api(c, "POST", f"/api/crons/{jid}/restore", READER, json={"version": 1})
    assert s == 403, body
    s, after = await api(c, "GET", f"/api/crons/{jid}", READER)
    assert after["version"] == 5
    await api(c, "DELETE", f"/api/crons/{jid}", ALICE)


async def test_a_pause_with_a_reason_ends_by_itself(ops: tuple[Cluster, Target]) -> None:
    c, target = ops
    s, job = await api(c, "POST", "/api/crons", ALICE, json={"schedule": "0 0 1 1 *", "uri": target.server.url})
    jid = job["id"]
    until = datetime.now(UTC) + timedelta(seconds=3)
    s, body = await api(c, "POST", f"/api/crons/{jid}/pause", BOB, json={"note": "database maintenance",
                                                                          "until": iso(until)})
    assert s == 200, body
    assert body["paused"] and body["pausedReason"] == "database maintenance" and body["pausedBy"] == "bob", body
    assert body["pausedUntil"] == iso(until) and body["pausedAt"], body
    for bad in ({"until": "yesterday"}, {"until": iso(datetime.now(UTC) - timedelta(hours=1))}, {"note": 5},
                {"note": "x" * 501}, {"reason": "x"}, []):
        s, err = await api(c, "POST", f"/api/crons/{jid}/pause", BOB, json=bad)
        assert s == 400, (bad, s, err)
    s, unchanged = await api(c, "GET", f"/api/crons/{jid}", READER)
    assert unchanged["version"] == body["version"]
    s, again = await api(c, "POST", f"/api/crons/{jid}/pause", BOB)  # no body: a second pause changes nothing
    assert s == 200 and again["version"] == body["version"] and again["pausedUntil"] == iso(until)

    async def resumed() -> Any:
        s, j = await api(c, "GET", f"/api/crons/{jid}", READER)
        return j if not j["paused"] else None

    j = await wait_for(resumed, 20, "the pause to end by itself")
    assert j["pausedReason"] is None and j["pausedUntil"] is None
    s, rows = await api(c, "GET", f"/api/audit?jobId={jid}", READER)
    assert [(r["action"], r["actor"]) for r in rows[:2]] == [("resume", "cronring"), ("pause", "bob")], rows
    # once, whichever node swept it
    assert sum(1 for r in rows if r["action"] == "resume") == 1
    await api(c, "DELETE", f"/api/crons/{jid}", ALICE)


async def test_the_audit_log_refuses_bad_filters_and_readers_cannot_write(ops: tuple[Cluster, Target]) -> None:
    c, _ = ops
    for query in ("action=drop", "jobId=XYZ", "limit=0", "limit=x", "before=yesterday", "actor=a%20b"):
        s, body = await api(c, "GET", f"/api/audit?{query}", READER)
        assert s == 400, (query, s, body)
    s, rows = await api(c, "GET", "/api/audit?limit=2", READER)
    assert s == 200 and len(rows) == 2
    s, older = await api(c, "GET", f"/api/audit?limit=2&before={rows[-1]['id']}", READER)
    assert s == 200 and all(r["id"] < rows[-1]["id"] for r in older)
    s, body = await api(c, "POST", "/api/crons", READER, json={"schedule": "* * * * *", "uri": "http://127.0.0.1:9/"})
    assert s == 403


async def test_one_failing_alert_when_the_node_that_recorded_it_is_killed(ops: tuple[Cluster, Target]) -> None:
    """kill -9 of the node that records the streak's first failure (and would send its alert), right after it
    wrote the alert's row: the survivor sends it, once (the receiver sees one alert id)."""
    c, target = ops
    target.failing = False
    s, job = await api(c, "POST", "/api/crons", ALICE, json={"schedule": "* * * * * *", "uri": target.server.url})
    jid = job["id"]

    async def owner() -> Any:
        s, j = await api(c, "GET", f"/api/crons/{jid}", READER)
        return j["owner"] if s == 200 and j["owner"] else None

    await wait_for(owner, 15, "an owner")
    target.failing = True

    async def failing_row() -> Any:
        s, rows = await api(c, "GET", f"/api/alerts?jobId={jid}&type=job.failing", READER)
        return rows if s == 200 and rows else None

    rows = await wait_for(failing_row, 20, "the job.failing row")
    killed = c.nodes[rows[0]["node"]]
    killed.kill()

    async def delivered() -> Any:
        got = [a for a in await alerts_at_receiver(c, jid) if a["type"] == "job.failing"]
        return got or None

    got = await wait_for(delivered, 40, "the job.failing alert at the receiver")
    assert len({a["id"] for a in got}) == 1, got
    # the streak goes on under the new owner (failures counted past the kill): no second job.failing
    hits = target.hits

    async def more_failures() -> Any:
        s, j = await api(c, "GET", f"/api/crons/{jid}", READER)
        return s == 200 and j["failStreak"] >= 3 and target.hits > hits

    await wait_for(more_failures, 30, "the streak to go on under the survivor")
    await api(c, "DELETE", f"/api/crons/{jid}", ALICE)

    async def node_down() -> Any:  # the survivor noticed the death: one node.down, naming it
        got = [a for a in await alerts_at_receiver(c) if a["type"] == "node.down"]
        return got or None

    down = await wait_for(node_down, 20, "a node.down alert")
    assert len({a["id"] for a in down}) == 1 and down[0]["body"]["node"] == killed.name, down
    got = [a for a in await alerts_at_receiver(c, jid) if a["type"] == "job.failing"]
    assert len({a["id"] for a in got}) == 1, got


async def test_pausing_a_paused_job_with_a_body_replaces_its_note_and_end(ops: tuple[Cluster, Target]) -> None:
    c, target = ops
    s, job = await api(c, "POST", "/api/crons", ALICE, json={"schedule": "0 0 1 1 *", "uri": target.server.url})
    jid = job["id"]
    soon = iso(datetime.now(UTC) + timedelta(hours=1))
    s, body = await api(c, "POST", f"/api/crons/{jid}/pause", BOB, json={"note": "until lunch", "until": soon})
    assert s == 200 and body["pausedUntil"] == soon
    s, body = await api(c, "POST", f"/api/crons/{jid}/pause", ALICE, json={"note": "indefinitely"})
    assert s == 200 and body["pausedUntil"] is None and body["pausedReason"] == "indefinitely", body
    assert body["paused"] and body["pausedBy"] == "bob"  # who paused it; the audit log says who changed the note
    s, rows = await api(c, "GET", f"/api/audit?jobId={jid}&limit=1", READER)
    assert rows[0]["actor"] == "alice" and rows[0]["changes"]["pausedUntil"] == [soon, None], rows
    await api(c, "DELETE", f"/api/crons/{jid}", ALICE)


async def test_response_assertions_say_which_failed_and_why(ops: tuple[Cluster, Target]) -> None:
    c, target = ops
    base = target.server.url

    async def run(**fields: Any) -> dict[str, Any]:
        s, job = await api(c, "POST", "/api/crons", ALICE, json={"schedule": "0 0 1 1 *", **fields})
        assert s == 201, job
        s, _ = await api(c, "POST", f"/api/crons/{job['id']}/run", ALICE)
        assert s == 202

        async def done() -> Any:
            s, rows = await api(c, "GET", f"/api/crons/{job['id']}/executions", READER)
            return rows[0] if rows and rows[0]["state"] not in ("claimed", "running") else None

        row = await wait_for(done, 20, "the run to end")
        await api(c, "DELETE", f"/api/crons/{job['id']}", ALICE)
        return dict(row)

    checks = {"expectBody": "green", "expectJson": [{"path": "$.status", "equals": "green"},
                                                    {"path": "$.items[0].id", "equals": 7}], "maxDurationMs": 2000}
    row = await run(uri=f"{base}/json?status=green", **checks)
    assert row["state"] == "succeeded", row
    row = await run(uri=f"{base}/json?status=amber", **{**checks, "expectBody": "/amb(er)?/i"})
    assert row["state"] == "failed" and row["error"] == 'expectJson $.status: expected "green", got "amber"', row
    row = await run(uri=f"{base}/json?status=green", expectBody="/^RED$/m")
    assert row["state"] == "failed" and row["error"].startswith("expectBody: /^RED$/m does not match"), row
    row = await run(uri=f"{base}/json?delay_ms=300", maxDurationMs=100)
    assert row["state"] == "failed" and row["error"].startswith("too slow: ") and row["attempts"] == 1, row
    row = await run(uri=f"{base}/json", expectJson=[{"path": "$.missing[2]", "equals": None}])
    assert row["error"] == "expectJson $.missing[2]: not in the response", row
    # a pattern that backtracks for ever fails within its time bound, and the node answers meanwhile
    evil = "a" * 50 + "!"
    row = await run(uri=f"{base}/text?text={evil}", expectBody="/^(a|aa)+$/")
    assert row["state"] == "failed" and "took longer than 50 ms" in row["error"], row
    s, _ = await api(c, "GET", "/livez", READER)
    assert s == 200
    # bad assertions are refused, naming the field
    for bad in ({"expectBody": "/(unclosed/"}, {"expectBody": ""}, {"expectJson": [{"path": "status", "equals": 1}]},
                {"expectJson": [{"path": "$..x", "equals": 1}]}, {"expectJson": []}, {"maxDurationMs": 0},
                {"expectJson": [{"path": "$.a"}]}):
        s, body = await api(c, "POST", "/api/crons", ALICE, json={"schedule": "0 0 1 1 *", "uri": base, **bad})
        assert s == 400 and set(body["details"]) == set(bad), (bad, body)
