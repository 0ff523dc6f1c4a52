"""The heartbeat script against a real Redis: claimer ids of members, a node that leaves the ring but drains
its last runs (its claimer stays live), one gone for good, one whose drain heartbeat stops (it expires), and
a lapse that gives a node a new claimer id."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from node.cluster.keys import Keys
from node.cluster.membership import Membership
from tests.harness import REDIS_URL, wait_for

TTL = 0.6


@pytest.fixture
async def keys() -> AsyncIterator[Keys]:
    k = Keys(f"cronring-test:membership:{secrets.token_hex(4)}")
    yield k
    r = aioredis.from_url(REDIS_URL)
    found = [x async for x in r.scan_iter(match=f"{k.namespace}:*")]
    if found:
        await r.delete(*found)
    await r.aclose()


def node(keys: Keys, name: str) -> Membership:
    return Membership(redis=aioredis.from_url(REDIS_URL), keys=keys, node_id=name, url=f"http://{name}",
                      version="test", heartbeat_interval=0.1, member_ttl=TTL)


async def test_a_draining_node_is_out_of_the_ring_and_its_claimer_still_live(keys: Keys) -> None:
    a, b = node(keys, "a"), node(keys, "b")
    await a.beat()
    await b.beat()
    await a.beat()
    assert set(a.view.members) == {"a", "b"} and a.live_claimers() == {a.claimer, b.claimer}
    assert a.handover_ok and a.ring.members == ("a", "b")

    await b.leave()  # SIGTERM: out of the ring, draining
    await a.beat()
    assert set(a.view.members) == {"a"} and a.ring.members == ("a",)
    assert a.live_claimers() == {a.claimer, b.claimer}  # its runs in flight are still its own
    drain = asyncio.create_task(b.draining())
    await asyncio.sleep(TTL * 2)  # longer than member_ttl: the drain heartbeat keeps it live
    await a.beat()
    assert b.claimer in a.live_claimers() and set(a.view.members) == {"a"}
    drain.cancel()
    await b.gone()  # its last runs done
    await a.beat()
    assert a.live_claimers() == {a.claimer}


async def test_a_drain_that_stops_heartbeating_expires(keys: Keys) -> None:
    a, b = node(keys, "a"), node(keys, "b")
    await b.beat()
    await b.leave()
    await a.beat()
    assert b.claimer in a.live_claimers()

    async def expired() -> bool:
        await a.beat()
        return b.claimer not in a.live_claimers()

    await wait_for(expired, 5, "the silent drainer's claimer to expire", interval=0.1)  # (kill -9 mid-drain)


async def test_a_lapse_gives_a_new_claimer_id(keys: Keys) -> None:
    a, b = node(keys, "a"), node(keys, "b")
    await a.beat()
    await b.beat()
    before = b.claimer
    await asyncio.sleep(TTL * 1.5)  # b silent for longer than member_ttl: expired by a's heartbeat
    await a.beat()
    assert set(a.view.members) == {"a"}
    await b.beat()  # b finds it lapsed: what it claimed before is a lost claimer's now
    assert b.lapsed.is_set() and b.claimer != before
    b.lapsed.clear()
    await b.beat()
    await a.beat()
    assert a.live_claimers() == {a.claimer, b.claimer} and before not in a.live_claimers()
