"""The fencing locks against a real Redis: a process restarted under the same node id finds the locks its
predecessor kept; a node id that never took a lock finds it has none without scanning every lock key (a sixth
node joining a million jobs spent a tenth of its join in that scan)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

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


async def test_a_restarted_node_finds_its_locks_and_a_new_one_scans_nothing(keys: Keys, monkeypatch: Any) -> None:
    a = locks(keys, "a")
    assert await a.acquire(["j1", "j2"]) == ["j1", "j2"]
    await a.set_fences({"j1": 7})
    again = locks(keys, "a")  # the process restarted under the same id
    assert sorted(await again.held_by_me()) == ["j1", "j2"]
    assert await again.release(["j2"]) == 1
    assert await locks(keys, "a").held_by_me() == ["j1"]

    fresh = locks(keys, "b")
    scans = []

    def scan_iter(*args: Any, **kwargs: Any) -> Any:
        scans.append(args)
        raise AssertionError("a node id that never held a lock scanned the lock keys")

    monkeypatch.setattr(fresh.redis, "scan_iter", scan_iter)
    assert await fresh.held_by_me() == [] and scans == []
    assert await fresh.acquire(["j3"]) == ["j3"]
    monkeypatch.undo()
    assert await locks(keys, "b").held_by_me() == ["j3"]
