"""Membership: a heartbeat per node by one Lua script on Redis server time.

The script refreshes this node's score in the members sorted set, drops members
silent for longer than ``member_ttl``, bumps the ring epoch on any change and
returns the live set. The heartbeat result is the truth; pub/sub join and
leave messages only make peers look sooner.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import redis.asyncio as aioredis
import structlog

from .. import metrics
from ..aio import raise_if_cancelling, wait_event
from ..model.times import rfc3339
from .keys import EVENTS_STREAM_LENGTH, HANDOVER_LOG_LENGTH, Keys
from .messages import MembershipEvent, NodeInfo, unpack
from .ring import Ring

log = structlog.get_logger("membership")

HEARTBEAT_LUA = """
-- KEYS: members, member info, epoch, draining. ARGV: me, member_ttl ms, my info, mode:
-- '0' a heartbeat; '2' draining (out of the ring, my claimer still live while my last runs finish);
-- '1' gone for good.
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local me = ARGV[1]
local mode = ARGV[4]
local changed = 0
local prev = redis.call('ZSCORE', KEYS[1], me)
local was_member = 0
if prev and (now - tonumber(prev)) <= ttl then was_member = 1 end
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ttl))
for _, id in ipairs(dead) do
  redis.call('ZREM', KEYS[1], id)
  if not redis.call('ZSCORE', KEYS[4], id) then redis.call('HDEL', KEYS[2], id) end
  changed = 1
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. (now - ttl))) do
  redis.call('ZREM', KEYS[4], id)
  if not redis.call('ZSCORE', KEYS[1], id) then redis.call('HDEL', KEYS[2], id) end
end
if mode == '1' then
  if redis.call('ZREM', KEYS[1], me) == 1 then changed = 1 end
  redis.call('ZREM', KEYS[4], me)
  redis.call('HDEL', KEYS[2], me)
elseif mode == '2' then
  if redis.call('ZREM', KEYS[1], me) == 1 then changed = 1 end
  redis.call('ZADD', KEYS[4], now, me)
  redis.call('HSET', KEYS[2], me, ARGV[3])
else
  redis.call('ZADD', KEYS[1], now, me)
  redis.call('ZREM', KEYS[4], me)
  redis.call('HSET', KEYS[2], me, ARGV[3])
  if was_member == 0 then changed = 1 end
end
if changed == 1 then redis.call('INCR', KEYS[3]) end
local epoch = tonumber(redis.call('GET', KEYS[3]) or '0')
return {now, epoch, was_member, dead, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'), redis.call('HGETALL', KEYS[2]),
        redis.call('ZRANGE', KEYS[4], 0, -1)}
"""


HANDOVER_LEVEL = 1  # NodeInfo.handover of this release (see messages.NodeInfo)
RELEASE = 3  # NodeInfo.release of this release


def new_claimer() -> str:
    return secrets.token_hex(8)


@dataclass(slots=True)
class View:
    """This node's view of the cluster after its last heartbeat."""

    members: dict[str, int] = field(default_factory=dict)  # node_id -> server ms of last heartbeat
    server_now_ms: int = 0
    epoch: int = 0
    ring: Ring = field(default_factory=lambda: Ring(()))
    claimers: dict[str, str] = field(default_factory=dict)  # node_id -> its claimer id (members that told one)
    handover: int = 0  # the lowest NodeInfo.handover among the members (0 if any is a release-2 node)
    release: int = 0  # the oldest release among the members (NodeInfo.release; 0: older than release 3)
    releases: dict[str, int] = field(default_factory=dict)  # node_id -> the release it runs


def _claimers(members: dict[str, int], info_flat: list[bytes], draining: set[str]
              ) -> tuple[dict[str, str], int, dict[str, int]]:
    """Each live claimer id (of a member, or of a node draining its last runs), the lowest hand-over level
    among the members, and the release each member runs, from the info hash."""
    claimers: dict[str, str] = {}
    levels: dict[str, int] = {}
    releases: dict[str, int] = {}
    for i in range(0, len(info_flat) - 1, 2):
        node = info_flat[i].decode()
        if node not in members and node not in draining:
            continue
        try:
            rec = unpack(info_flat[i + 1])
        except ValueError:
            continue
        if isinstance(rec, NodeInfo):
            if rec.claimer:
                claimers[node] = rec.claimer
            if node in members:
                levels[node] = rec.handover
                releases[node] = rec.release
    handover = min((levels.get(n, 0) for n in members), default=0)
    return claimers, handover, {n: releases.get(n, 0) for n in members}


class Membership:
    def __init__(
        self, *, redis: aioredis.Redis, keys: Keys, node_id: str, url: str, version: str,
        heartbeat_interval: float, member_ttl: float, owned_count: Callable[[], int] = lambda: 0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.node_id = node_id
        self.url = url
        self.version = version
        self.heartbeat_interval = heartbeat_interval
        self.member_ttl = member_ttl
        self.owned_count = owned_count  # told in every heartbeat; the composition root points it at the ownership
        self.started_at = time.time()
        self.claimer = new_claimer()  # this incarnation's id in the executions it claims (new after a lapse)
        self.view = View()
        self.changed = asyncio.Event()  # set when the member set changes
        self.lapsed = asyncio.Event()  # set when our own heartbeat lapsed: drop everything
        self.claimers_changed = asyncio.Event()  # set when a member's claimer id appeared or went (a restart)
        self._script = redis.register_script(HEARTBEAT_LUA)
        self._last_ok: float | None = None  # monotonic time a successful heartbeat was *sent*
        self._kick = asyncio.Event()
        self.joined_once = False
        self._stopping = False
        # members this node's heartbeat expired (died, not left): (their ids, the epoch) — the node.down alert
        self.on_dead: Callable[[list[str], int], None] | None = None

    # A node may send only while its lease is surely valid in the eyes of peers:
    # peers expire it member_ttl after the server time of its last heartbeat, which
    # is later than when we sent it, so measuring from the send is conservative.
    @property
    def lapse_after(self) -> float:
        return self.member_ttl - 0.5 * self.heartbeat_interval

    def fresh(self) -> bool:
        """May this node send now? Not once a lapse was detected (until the scheduler has dropped
        everything and cleared it), not once heartbeats stopped or the node left."""
        return self.lease_left() > 0

    def lease_left(self) -> float:
        """Seconds the lease surely lasts (0 when it cannot be trusted): a bound for connecting."""
        if self._last_ok is None or self._stopping or self.lapsed.is_set():
            return 0.0
        return max(0.0, self.lapse_after - (time.monotonic() - self._last_ok))

    def heartbeat_age(self) -> float | None:
        return None if self._last_ok is None else time.monotonic() - self._last_ok

    def kick(self) -> None:
        """Heartbeat now (a peer announced a join or leave)."""
        self._kick.set()

    def stop(self) -> None:
        """No more heartbeats (a flag, not only a cancellation: a stopping node must never rejoin)."""
        self._stopping = True
        self._kick.set()

    async def beat(self, *, leave: bool = False, draining: bool = False) -> View:
        if self._stopping and not (leave or draining):
            return self.view
        sent = time.monotonic()
        info = NodeInfo(id=self.node_id, url=self.url, version=self.version, started_at=self.started_at,
                        owned=self.owned_count(), epoch=self.view.epoch, claimer=self.claimer,
                        handover=HANDOVER_LEVEL, release=RELEASE).pack()
        res = await self._script(
            keys=[self.keys.members, self.keys.member_info, self.keys.epoch, self.keys.draining],
            args=[self.node_id, int(self.member_ttl * 1000), info, "1" if leave else "2" if draining else "0"],
        )
        now_ms, epoch, was_member, dead, flat, info_flat, draining_flat = res
        members = {flat[i].decode(): int(float(flat[i + 1])) for i in range(0, len(flat), 2)}
        if leave or draining:
            return self.view
        lapsed_here = self._last_ok is not None and (sent - self._last_ok) >= self.lapse_after
        if self.joined_once and (not was_member or lapsed_here):
            # Expired by peers, Redis restarted empty, or we were silent too long:
            # whatever we owned may be someone else's now.
            log.warning("own heartbeat lapsed; dropping ownership and rejoining", was_member=bool(was_member))
            self._lapse()
        claimers, handover, releases = _claimers(members, info_flat, {d.decode() for d in draining_flat})
        releases[self.node_id] = RELEASE
        if not self.lapsed.is_set():
            claimers[self.node_id] = self.claimer  # (after a lapse: our new id is told at the next beat)
        old = self.view
        self.view = View(members=members, server_now_ms=int(now_ms), epoch=int(epoch),
                         ring=old.ring if set(old.members) == set(members) else Ring(members),
                         claimers=claimers, handover=handover, release=min(releases.values(), default=RELEASE),
                         releases=releases)
        self._last_ok = sent
        metrics.MEMBERS.set(len(members))
        metrics.EPOCH.set(int(epoch))
        if old.claimers != claimers and self.joined_once:
            self.claimers_changed.set()
        if dead and self.on_dead is not None:  # expired by this beat's script: one survivor sees each
            self.on_dead([d.decode() for d in dead], int(epoch))
        if set(old.members) != set(members) or not self.joined_once:
            joined = sorted(set(members) - set(old.members))
            left = sorted(set(old.members) - set(members))
            log.info("membership changed", epoch=int(epoch), members=sorted(members), joined=joined, left=left,
                     expired=[d.decode() for d in dead])
            self.changed.set()
        if not self.joined_once:
            self.joined_once = True
            await self.announce("join")
        return self.view

    def _lapse(self) -> None:
        """Our lease lapsed: drop everything (the scheduler does, on ``lapsed``) and claim under a new id
        from now on, so peers treat what we claimed before as a lost node's (abandoned or re-sent)."""
        self.claimer = new_claimer()
        self.lapsed.set()

    # ---- the lease, as ownership sees it (scheduling.ownership.Lease) ----------------------

    @property
    def ring(self) -> Ring:
        return self.view.ring

    @property
    def epoch(self) -> int:
        return self.view.epoch

    def older_members(self) -> dict[str, int]:
        """Members running an older release than this one (a rolling upgrade under way): node -> release."""
        return {n: v for n, v in self.view.releases.items() if v < RELEASE}

    @property
    def handover_ok(self) -> bool:
        """Every member hands over with runs in flight (none is a release-2 node)."""
        return self.view.handover >= HANDOVER_LEVEL

    async def log_handover(self, direction: str, job_ids: list[str]) -> None:
        """A pass's hand-overs in one direction, for the cluster page (a capped list) and the live stream."""
        rec = MembershipEvent(op="handover", node_id=self.node_id, epoch=self.view.epoch,
                              detail={"direction": direction, "jobs": len(job_ids), "sample": job_ids[:5],
                                      "at": rfc3339(datetime.now(UTC))})
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(self.keys.handovers, rec.pack())
            pipe.ltrim(self.keys.handovers, 0, HANDOVER_LOG_LENGTH - 1)
            pipe.xadd(self.keys.events_stream, {b"r": rec.pack()}, maxlen=EVENTS_STREAM_LENGTH, approximate=True)
            await pipe.execute()
        except Exception as e:  # the log line is the record; the dashboard's list may miss one
            log.debug("hand-over record not published", error=str(e))

    def live_claimers(self) -> set[str]:
        """The claimer ids of the live members (ours among them while our lease holds)."""
        return set(self.view.claimers.values())

    async def announce(self, op: str, **detail: object) -> None:
        try:
            payload = MembershipEvent(op=op, node_id=self.node_id, epoch=self.view.epoch, detail=dict(detail)).pack()
            pipe = self.redis.pipeline(transaction=False)
            pipe.publish(self.keys.membership_channel, payload)
            pipe.xadd(self.keys.events_stream, {b"r": payload}, maxlen=EVENTS_STREAM_LENGTH, approximate=True)
            await pipe.execute()
        except Exception as e:  # announcements are hints; the heartbeat is the truth
            log.debug("announce failed", error=str(e))

    async def run(self) -> None:
        backoff = self.heartbeat_interval
        while not self._stopping:
            try:
                await self.beat()
                backoff = self.heartbeat_interval
            except asyncio.CancelledError:
                raise
            except Exception as e:
                raise_if_cancelling()
                log.warning("heartbeat failed", error=f"{type(e).__name__}: {e}")
                backoff = min(self.heartbeat_interval, backoff)
                if self._last_ok is not None and not self.fresh() and not self.lapsed.is_set():
                    log.warning("heartbeat lease lapsed while Redis is unreachable; stopping all firing")
                    self._lapse()
            self._kick.clear()
            await wait_event(self._kick, backoff)

    async def leave(self) -> None:
        """Out of the ring at once (peers take our jobs over without waiting for member_ttl), but still a
        live claimer: our runs in flight are seen as such (a forbid tick skips, nobody settles them as
        orphans) while ``drain`` lets them finish. ``gone`` ends that."""
        try:
            await self.beat(draining=True)
            await self.announce("leave")
        except Exception as e:
            log.warning("leave failed; peers will expire us after member_ttl", error=str(e))

    async def draining(self) -> None:
        """While the last runs finish: keep our claimer live (a heartbeat out of the ring)."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.beat(draining=True)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                raise_if_cancelling()
                log.debug("draining heartbeat failed", error=str(e))

    async def gone(self) -> None:
        """Our last runs are done: no trace of us stays in the member set (peers settle what is still open)."""
        try:
            await self.beat(leave=True)
        except Exception as e:
            log.warning("final leave failed; peers will expire our claimer after member_ttl", error=str(e))

    async def infos(self) -> dict[str, NodeInfo]:
        raw = await self.redis.hgetall(self.keys.member_info)
        out: dict[str, NodeInfo] = {}
        for k, v in raw.items():
            try:
                rec = unpack(cast(bytes, v))
            except ValueError:
                continue
            if isinstance(rec, NodeInfo):
                out[cast(bytes, k).decode()] = rec
        return out
