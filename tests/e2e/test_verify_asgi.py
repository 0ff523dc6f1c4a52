"""A real node fires a job at a FastAPI-style ASGI app (under uvicorn) guarded by cronring.verify's
VerifyMiddleware, its fences and keys in Redis; then the test plays the attacker and the deposed owner
with the captured request: a replay is answered 200 without running the handler, a tampered body and
a wrong secret get 401, a lower fence 409."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from node import verify
from node.verify import RedisFenceStore, RedisIdempotencyStore, Verifier, sign
from tests.e2e.fixtures import cluster_fixture
from tests.harness import REDIS_URL, Cluster, wait_for
from tests.unit.test_verify import MiniApp, MiniRequest, serve_asgi

# the node signs with the secret being rotated out; the target already knows the new one
cluster = cluster_fixture("vasgi", "vasgi-1", receiver=False, CRONRING_SIGNING_SECRET="old-secret")
TARGET_SECRETS = ("new-secret", "old-secret")
HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


@pytest.fixture(scope="module")
async def target(cluster: Cluster) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """The guarded app's URL and the requests its handler ran for (headers, raw body, the Delivery)."""
    r = aioredis.from_url(REDIS_URL)
    prefix = f"{cluster.namespace}:verify:"  # removed with the cluster's namespace
    verifier = Verifier(TARGET_SECRETS, fences=RedisFenceStore(r, prefix=prefix + "fence:"),
                        idempotency=RedisIdempotencyStore(r, prefix=prefix + "idem:"))
    app = MiniApp()
    runs: list[dict[str, Any]] = []

    @app.post("/cron/nightly")
    async def nightly(request: MiniRequest) -> tuple[int, Any]:
        runs.append({"headers": request.headers, "body": await request.body(), "delivery": verify.delivery_of(request)})
        return 200, {"ran": len(runs)}

    try:
        async with serve_asgi(verify.VerifyMiddleware(app, verifier, paths=["/cron"])) as url:
            yield url, runs
    finally:
        await r.aclose()


async def run_now(cluster: Cluster, job: dict[str, Any]) -> dict[str, Any]:
    url = cluster.any_node().url
    status, body, _ = await cluster.request("POST", f"{url}/api/crons/{job['id']}/run")
    assert status == 202, body
    eid = body["executionId"]

    async def done() -> dict[str, Any] | None:
        rows = (await cluster.request("GET", f"{url}/api/crons/{job['id']}/executions"))[1]
        row = next((r for r in rows if r["id"] == eid), None)
        return row if row and row["state"] not in ("claimed", "running") else None

    return await wait_for(done, 30, "the execution to finish")


async def test_a_node_fires_at_a_guarded_asgi_app_and_forgeries_are_refused(
        cluster: Cluster, target: tuple[str, list[dict[str, Any]]]) -> None:
    url, runs = target
    # not paused, so a node owns it. Owning a job draws a fence, written with the owner's first write for it: its
    # one instant a few seconds away, skipped (a row, no request); the next is a year away
    soon = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    job = await cluster.create_job(uri=f"{url}/cron/nightly", timeZone="UTC",
                                   schedule=f"{soon.second} {soon.minute} {soon.hour} {soon.day} {soon.month} *",
                                   body={"job": "{{jobId}}", "execution": "{{executionId}}"})
    node = cluster.any_node().url
    status, _, _ = await cluster.request("POST", f"{node}/api/crons/{job['id']}/skip", json={"count": 1})
    assert status == 200

    async def written() -> bool:
        rows = (await cluster.request("GET", f"{node}/api/crons/{job['id']}/executions"))[1]
        return any(r["state"] == "skipped" for r in rows)

    await wait_for(written, 20, "the owner's first write (its instant, skipped)")
    row = await run_now(cluster, job)
    assert (row["state"], row["statusCode"], row["attempts"]) == ("succeeded", 200, 1), row
    assert len(runs) == 1
    sent, body, delivery = runs[0]["headers"], runs[0]["body"], runs[0]["delivery"]
    assert json.loads(body) == {"job": job["id"], "execution": row["id"]}
    assert (delivery.job_id, delivery.execution_id, delivery.idempotency_key) == (job["id"], row["id"], row["id"])
    assert delivery.fence == int(sent["x-cron-fence"]) >= 1 and delivery.attempt == 1
    assert delivery.signed.rotated  # signed with the previous secret: the rotation is not over yet
    captured = {k: v for k, v in sent.items() if k not in HOP_BY_HOP}

    async def post(data: bytes, **changes: str) -> tuple[int, Any, Any]:
        return await cluster.request("POST", f"{url}/cron/nightly", data=data, headers={**captured, **changes})

    # the captured request again, byte for byte: already done, answered 200, the handler not run
    status, got, h = await post(body)
    assert status == 200 and got["replayed"] is True and h["Idempotent-Replayed"] == "true"
    assert got["idempotencyKey"] == row["id"]
    # the same signature on another body
    tampered = body.replace(b'"execution"', b'"executed"')
    status, got, _ = await post(tampered)
    assert (status, got["error"]) == (401, "bad-signature")
    # re-signed by someone without the secret, as a new execution
    status, got, _ = await post(tampered, **{"Idempotency-Key": "forged-1", "X-Cron-Execution-Id": "forged-1",
                                             "X-Cron-Signature": sign("wrong-secret", tampered)})
    assert (status, got["error"]) == (401, "bad-signature")
    # well signed, but from a deposed owner: a lower fence than the job's requests have carried
    stale = str(delivery.fence - 1)
    status, got, _ = await post(body, **{"Idempotency-Key": "stale-1", "X-Cron-Fence": stale,
                                         "X-Cron-Signature": sign("new-secret", body)})
    assert (status, got["error"]) == (409, "stale-fence")
    assert len(runs) == 1  # nothing of the above reached the handler

    # the job's next execution is new: it runs
    row2 = await run_now(cluster, job)
    assert (row2["state"], row2["statusCode"]) == ("succeeded", 200)
    assert len(runs) == 2 and runs[1]["delivery"].execution_id == row2["id"] != row["id"]
