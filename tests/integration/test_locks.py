"""The fencing locks against a real Redis: a process restarted under the same node id finds the locks its
predecessor kept, Redis picking them out of every lock key (a sixth node joining a million jobs spent a tenth of
its join reading them all)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from node.cluster.fencing import Locks
from node.cluster.keys import Keys
from tests.harness import REDIS_URL


@pytest.fixture
async def keys() -> AsyncIterator[Keys]:
    k = Keys(f"cronring-test:locks:{secrets.token_hex(4)}")
    yield k
    r = aioredis.from_url(REDIS_URL)
    found = [x async for x in r.scan_iter(match=f"{k.namespace}:*")]
    if found:
        await r.delete(*found)
    await r.aclose()


def locks(keys: Keys, node: str) -> Locks:
    return Locks(aioredis.from_url(REDIS_URL), keys, node, member_ttl=3.0)


async def test_a_restarted_node_finds_its_own_locks_among_many(keys: Keys) -> None:
    """held_by_me: Redis compares each lock's holder and sends back only this node's, across scan steps."""
    a, b = locks(keys, "a"), locks(keys, "b")
    mine = [f"j{i}" for i in range(0, 5000, 2)]
    assert await a.acquire(mine) == mine
    await a.set_fences({"j0": 7})  # a fenced value names its holder too
    assert await b.acquire([f"j{i}" for i in range(1, 5000, 2)])
    await locks(keys, "ab").acquire(["x"])  # a holder whose name starts with another's
    again = locks(keys, "a")  # the process restarted under the same id
    assert sorted(await again.held_by_me()) == sorted(mine)
    assert await again.release(mine[:10]) == 10
    assert sorted(await locks(keys, "a").held_by_me()) == sorted(mine[10:])
    assert await locks(keys, "c").held_by_me() == []
