"""Firing against the real receiver acting as a good and a bad target: signatures, retries, timeouts."""

from __future__ import annotations

from tests.e2e.fixtures import cluster_fixture
from tests.harness import Cluster, wait_for

cluster = cluster_fixture("fire", "fire-1", receiver_secrets="newsecret,oldsecret", CRONRING_SIGNING_SECRET="oldsecret")


async def _run_and_wait(cluster: Cluster, job: dict) -> dict:
    url = cluster.any_node().url
    status, body, _ = await cluster.request("POST", f"{url}/api/crons/{job['id']}/run")
    assert status == 202, body
    eid = body["executionId"]

    async def done():
        rows = (await cluster.request("GET", f"{url}/api/crons/{job['id']}/executions"))[1]
        row = next((r for r in rows if r["id"] == eid), None)
        return row if row and row["state"] not in ("claimed", "running") else None

    return await wait_for(done, 30, "the execution to finish")


async def test_signed_with_rotated_secret_is_accepted(cluster: Cluster) -> None:
    job = await cluster.create_job(schedule="0 0 1 1 *", paused=True)
    row = await _run_and_wait(cluster, job)
    assert row["state"] == "succeeded" and row["statusCode"] == 200
    d = [x for x in await cluster.deliveries() if x["jobId"] == job["id"]]
    assert len(d) == 1 and d[0]["outcome"] == "delivered"


async def test_retries_with_same_execution_id_then_success_status(cluster: Cluster) -> None:
    job = await cluster.create_job(uri=f"{cluster.receiver.url}/webhook?status=503", schedule="0 0 1 1 *",
                                   paused=True, retries=2, retryBackoffMs=100, retryMaxBackoffMs=100)
    row = await _run_and_wait(cluster, job)
    assert row["state"] == "failed" and row["attempts"] == 3 and row["statusCode"] == 503
    d = [x for x in await cluster.deliveries() if x["jobId"] == job["id"]]
    assert [x["attempt"] for x in d] == [1, 2, 3]
    assert len({x["executionId"] for x in d}) == 1  # retries are one execution
    assert [x["outcome"] for x in d] == ["delivered", "redelivery", "redelivery"]


async def test_expect_status_and_timeout(cluster: Cluster) -> None:
    job = await cluster.create_job(uri=f"{cluster.receiver.url}/webhook?status=418", schedule="0 0 1 1 *",
                                   paused=True, expectStatus=[418])
    assert (await _run_and_wait(cluster, job))["state"] == "succeeded"
    job = await cluster.create_job(uri=f"{cluster.receiver.url}/webhook?delay_ms=2000", schedule="0 0 1 1 *",
                                   paused=True, timeoutMs=300)
    row = await _run_and_wait(cluster, job)
    assert row["state"] == "timed_out" and "timed out" in row["error"]


async def test_unsigned_or_bad_signature_rejected_by_receiver(cluster: Cluster) -> None:
    r = cluster.receiver.url
    status, body, _ = await cluster.request("POST", f"{r}/webhook", json={"x": 1}, headers={"X-Cron-Job-Id": "j"})
    assert status == 401
    status, body, _ = await cluster.request("POST", f"{r}/webhook", data=b"{}", headers={
        "X-Cron-Job-Id": "j", "X-Cron-Signature": "t=1,v1=" + "0" * 64})
    assert status == 401 and "expired" in body["error"]
    status, body, _ = await cluster.request("POST", f"{r}/webhook", data=b"{}", headers={
        "X-Cron-Job-Id": "j", "X-Cron-Signature": "t=1,v1=00"})  # (a MAC that is no SHA-256 is malformed first)
    assert status == 401 and "malformed" in body["error"]


async def test_target_behind_denied_name_is_refused_at_send(cluster: Cluster) -> None:
    """Names are checked after DNS: localhost-like names pass, link-local results do not."""
    status, body, _ = await cluster.request("POST", f"{cluster.any_node().url}/api/crons", json={
        "uri": "http://metadata.google.internal/computeMetadata/v1/", "schedule": "* * * * *"})
    assert status == 400 and "outbound policy" in body["details"]["uri"]


async def test_a_slow_run_shows_as_running_then_its_outcome(cluster: Cluster) -> None:
    """A "running" row is held back for a second; a run still going after that is visible as running."""
    job = await cluster.create_job(uri=f"{cluster.receiver.url}/webhook?delay_ms=3000", schedule="0 0 1 1 *",
                                   paused=True, timeoutMs=10_000)
    url = cluster.any_node().url
    status, body, _ = await cluster.request("POST", f"{url}/api/crons/{job['id']}/run")
    assert status == 202, body

    async def shown_running():
        got = (await cluster.request("GET", f"{url}/api/crons/{job['id']}"))[1]
        return got if got["running"] and got["lastExecution"]["state"] == "running" else None

    got = await wait_for(shown_running, 10, "the slow run to show as running")
    assert got["lastExecution"]["id"] == body["executionId"]

    async def finished():
        got = (await cluster.request("GET", f"{url}/api/crons/{job['id']}"))[1]
        return got if got["lastExecution"]["state"] == "succeeded" else None

    got = await wait_for(finished, 15, "the slow run to finish")
    assert not got["running"] and got["lastExecution"]["durationMs"] >= 3000
