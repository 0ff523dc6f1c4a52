"""One Redis pub/sub subscription per node, fanned out to in-process handlers
(the catalogue, membership hints). Live views read the events stream instead
(dashboard/stream.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis
import structlog

from ..aio import raise_if_cancelling
from ..batching import chunks
from .keys import EVENTS_STREAM_LENGTH, Keys
from .messages import MessageError, Record, unpack

log = structlog.get_logger("bus")

Handler = Callable[[Record], None]


class Bus:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.handlers: list[Handler] = []
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self.connected = asyncio.Event()

    async def publish(self, channel: str, record: Record) -> None:
        """Publish on a channel and append to the events stream, in one round trip."""
        await self.publish_many(channel, [record])

    async def publish_many(self, channel: str, records: Sequence[Record], per_trip: int = 250) -> None:
        """``publish`` for many records: one round trip per ``per_trip`` of them (a bulk apply's events)."""
        for part in chunks(records, per_trip):
            pipe = self.redis.pipeline(transaction=False)
            for record in part:
                payload = record.pack()
                pipe.publish(channel, payload)
                pipe.xadd(self.keys.events_stream, {b"r": payload}, maxlen=EVENTS_STREAM_LENGTH, approximate=True)
            await pipe.execute()

    def _dispatch(self, payload: bytes) -> None:
        try:
            record = unpack(payload)
        except MessageError as e:
            log.warning("ignored a message", error=str(e))
            return
        for h in self.handlers:
            try:
                h(record)
            except Exception:
                log.exception("bus handler failed")

    async def run(self) -> None:
        first = True
        backoff = 0.2
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self.keys.channels)
                self.connected.set()
                if not first:
                    log.info("pub/sub reconnected; full re-sync")
                    for cb in self.on_reconnect:
                        await cb()
                first = False
                backoff = 0.2
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is not None and msg["type"] == "message":
                        self._dispatch(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                raise_if_cancelling()
                self.connected.clear()
                log.warning("pub/sub connection lost", error=f"{type(e).__name__}: {e}")
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
            finally:
                with contextlib.suppress(Exception):  # a broken connection may fail to close: it is gone anyway
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
