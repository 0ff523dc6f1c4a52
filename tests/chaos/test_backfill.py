"""A backfill of 1,000 instants, run twice, with its owner killed halfway through the first: each instant is
delivered exactly once (one execution id per instant at the receiver; a re-send after the kill is the same
execution, which the receiver counts as a redelivery, not a second delivery), and the second run sends nothing
(every instant ``alreadyDone``)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from tests.harness import Cluster, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

N = 1000


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


async def test_a_backfill_sends_each_instant_once_across_a_kill_and_a_second_run(make_cluster) -> None:
    c: Cluster = await make_cluster("bfkill")
    await c.start_nodes("bfkill-1", "bfkill-2")
    job = await c.create_job(schedule="* * * * * *", uri=f"{c.receiver.url}/hooks/bf?delay_ms=20")
    jid = job["id"]
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    start = end - timedelta(seconds=N)
    url = c.any_node().url
    status, b, _ = await c.request("POST", f"{url}/api/crons/{jid}/backfill", json={
        "from": iso(start), "to": iso(end), "concurrencyPolicy": "allow", "maxPerSecond": 80})
    assert status == 202 and b["ticks"] == N, b

    async def progress() -> dict:
        _, body, _ = await c.request("GET", f"{c.any_node().url}/api/crons/{jid}/backfills/{b['id']}")
        return body

    async def halfway() -> bool:
        p = await progress()
        return p["sent"] + p["alreadyDone"] >= N // 2

    await wait_for(halfway, 60, "the backfill to be halfway")
    runner = (await progress())["node"]
    c.nodes[runner].kill()
    survivor = next(n for name, n in c.nodes.items() if name != runner)

    async def finished() -> bool:
        _, body, _ = await c.request("GET", f"{survivor.url}/api/crons/{jid}/backfills/{b['id']}")
        return body["state"] == "done"

    await wait_for(finished, 90, "the backfill to finish on the survivor")
    first = await progress()
    assert first["node"] == survivor.name and first["sent"] + first["alreadyDone"] == N, first

    # the same range again: nothing is sent twice
    status, again, _ = await c.request("POST", f"{survivor.url}/api/crons/{jid}/backfill", json={
        "from": iso(start), "to": iso(end), "maxPerSecond": 100})
    assert status == 202, again

    async def second_done() -> bool:
        _, body, _ = await c.request("GET", f"{survivor.url}/api/crons/{jid}/backfills/{again['id']}")
        return body["state"] == "done"

    await wait_for(second_done, 60, "the second backfill to finish")
    _, second, _ = await c.request("GET", f"{survivor.url}/api/crons/{jid}/backfills/{again['id']}")
    await asyncio.sleep(1)
    by_instant: dict[datetime, set[str]] = defaultdict(set)
    for d in await c.deliveries():
        if d["jobId"] == jid and start <= ts(d["scheduledAt"]) < end:
            by_instant[ts(d["scheduledAt"])].add(d["executionId"])
    twice = {t: ids for t, ids in by_instant.items() if len(ids) > 1}
    missing = [start + timedelta(seconds=k) for k in range(N) if start + timedelta(seconds=k) not in by_instant]
    print(f"first run: {first['sent']} sent, {first['failed']} failed after the kill of {runner}; "
          f"second run: {second['alreadyDone']} already done, {second['sent']} sent")
    assert not twice, f"instants delivered by two executions: {list(twice.items())[:3]}"
    assert not missing, f"instants never delivered: {missing[:5]} ({len(missing)})"
    assert second["alreadyDone"] == N and second["sent"] == 0, second
    _, led, _ = await c.request("GET", f"{survivor.url}/api/crons/{jid}/ticks",
                                params={"from": iso(start), "to": iso(end), "limit": "10000"})
    assert led["counts"]["delivered"] == N, led["counts"]
