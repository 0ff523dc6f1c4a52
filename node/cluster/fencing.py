"""Fencing locks in Redis (Lua) and the fence number from MariaDB.

A job's lock key holds ``node_id:fence``. It is acquired only when absent, or
when its holder is no longer a live member: a node's heartbeat is the lease of
all its locks, so locks carry no TTL of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import redis.asyncio as aioredis

from ..batching import LOCK_KEYS, chunks
from .keys import Keys

ACQUIRE_LUA = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local me = ARGV[1]
local ttl = tonumber(ARGV[2])
local got = {}
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  local ok = false
  if not v then
    ok = true
  else
    local holder = string.match(v, '^(.*):%d+$') or v
    if holder == me then
      ok = true
    else
      local s = redis.call('ZSCORE', KEYS[1], holder)
      if (not s) or (now - tonumber(s) > ttl) then ok = true end
    end
  end
  if ok then
    redis.call('SET', KEYS[i], me .. ':0')
    got[#got + 1] = i - 1
  end
end
return got
"""

# ARGV[1] = me; ARGV[2..] = new values (or '' to delete). Acts only where we hold the lock.
UPDATE_LUA = """
local me = ARGV[1]
local n = 0
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and (string.match(v, '^(.*):%d+$') or v) == me then
    if ARGV[i + 1] == '' then redis.call('DEL', KEYS[i]) else redis.call('SET', KEYS[i], ARGV[i + 1]) end
    n = n + 1
  end
end
return n
"""


# One step of a scan of the lock keys, Redis comparing each lock's holder: the next cursor, and the keys among
# this step's that name ARGV[3]. (Keys found by SCAN, not declared: cronring's Redis is one server or Sentinel's.)
HELD_LUA = """
local step = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[4])
local mine = {}
for _, k in ipairs(step[2]) do
  local v = redis.call('GET', k)
  if v and (string.match(v, '^(.*):%d+$') or v) == ARGV[3] then mine[#mine + 1] = k end
end
return {step[1], mine}
"""
SCAN_COUNT = 2000  # keys a step of held_by_me looks at (~1 ms of Redis)


class Locks:
    def __init__(self, redis: aioredis.Redis, keys: Keys, node_id: str, member_ttl: float) -> None:
        self.redis = redis
        self.keys = keys
        self.node_id = node_id
        self.ttl_ms = int(member_ttl * 1000)
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._update = redis.register_script(UPDATE_LUA)
        self._held = redis.register_script(HELD_LUA)

    async def acquire(self, job_ids: Sequence[str]) -> list[str]:
        got: list[str] = []
        for chunk in chunks(job_ids, LOCK_KEYS):
            idx = await self._acquire(keys=[self.keys.members, *[self.keys.lock(j) for j in chunk]],
                                      args=[self.node_id, self.ttl_ms])
            got.extend(chunk[int(i) - 1] for i in idx)
        return got

    async def set_fences(self, fences: dict[str, int]) -> None:
        for chunk in chunks(list(fences.items()), LOCK_KEYS):
            await self._update(keys=[self.keys.lock(j) for j, _ in chunk],
                               args=[self.node_id, *[f"{self.node_id}:{f}" for _, f in chunk]])

    async def release(self, job_ids: Sequence[str]) -> int:
        """Compare-and-delete: only locks this node holds."""
        n = 0
        for chunk in chunks(job_ids, LOCK_KEYS):
            n += int(await self._update(keys=[self.keys.lock(j) for j in chunk], args=[self.node_id, *[""] * len(chunk)]))
        return n

    async def holders(self, job_ids: Sequence[str]) -> dict[str, str | None]:
        if not job_ids:
            return {}
        vals = cast(list[bytes | None], await self.redis.mget([self.keys.lock(j) for j in job_ids]))
        return {j: (v.decode().rsplit(":", 1)[0] if v else None) for j, v in zip(job_ids, vals, strict=True)}

    async def held_by_me(self) -> list[str]:
        """Every job whose lock names this node (a scan: at start and after a lapse only). A process
        restarted under the same node id finds the locks its predecessor kept. Redis compares each lock's
        holder (HELD_LUA, a few thousand keys a call) and sends back only this node's: the node read and decoded
        every lock's value, a tenth of a sixth node's join at a million jobs."""
        prefix = self.keys.lock_prefix
        found: list[str] = []
        cursor = "0"
        while True:
            cursor_b, keys = await self._held(args=[cursor, f"{prefix}*", self.node_id, SCAN_COUNT])
            found.extend(k.decode()[len(prefix):] for k in keys)
            cursor = cursor_b.decode() if isinstance(cursor_b, bytes) else str(cursor_b)
            if cursor == "0":
                return found
