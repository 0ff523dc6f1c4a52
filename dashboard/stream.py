"""The cluster-wide live stream (SSE), identical whichever node serves it.

One reader of the Redis events stream per node fans out to a bounded queue per
client. Stream entry ids are cluster-wide, so a client resumes on any node with
Last-Event-ID. A client that falls behind overflows its queue and is told to
resync (it reconnects and gets a fresh snapshot); it never stalls the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from typing import Any

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from .. import fastjson, metrics
from ..aio import raise_if_cancelling
from ..cluster.keys import Keys
from ..cluster.messages import ExecutionBatch, JobEvent, MembershipEvent, MessageError, Record, unpack
from ..model.labels import Selector
from ..web.auth import caller
from ..web.errors import TooManyRequests
from ..web.presentation import enrich
from ..web.runtime import RUNTIME

log = structlog.get_logger("stream")

QUEUE_SIZE = 1000
RETRY_MS = 3000
PING_SECONDS = 15
SNAPSHOT_JOBS = 200


# An event as every client receives it: (stream entry id, SSE event name, JSON data), serialised once.
Wire = tuple[str, str, str]


CLOSE: Wire = ("", "", "")  # the node is stopping: the stream ends


class Listener:
    __slots__ = ("queue", "overflowed", "closed", "caller")

    def __init__(self, maxsize: int, caller: str = "") -> None:
        self.queue: asyncio.Queue[Wire] = asyncio.Queue(maxsize)
        self.overflowed = False
        self.closed = False
        self.caller = caller

    def close(self) -> None:
        """Wake the consumer and end its stream (a full queue wakes it anyway; it looks at ``closed``)."""
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(CLOSE)

    def offer(self, item: Wire) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True  # the consumer sees it at its next get and tells its client to resync


class StreamHub:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.listeners: set[Listener] = set()
        self.last_id = "0-0"
        self.responses: weakref.WeakSet[EventSourceResponse] = weakref.WeakSet()
        self.closing = False
        self.snapshot: tuple[float, asyncio.Future[tuple[str, str]]] | None = None  # (when, being or built)

    def listen(self, caller: str = "") -> Listener:
        listener = Listener(QUEUE_SIZE, caller)
        self.listeners.add(listener)
        if self.closing:
            listener.close()
        return listener

    def unlisten(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    def close(self) -> None:
        """The node is stopping: every open stream ends now (clients reconnect to another node), so
        no stream holds the stop back."""
        self.closing = True
        for listener in list(self.listeners):
            listener.close()

    async def run(self) -> None:
        started = False
        while True:
            try:
                if not started:
                    newest = await self.redis.xrevrange(self.keys.events_stream, count=1)
                    self.last_id = newest[0][0].decode() if newest else "0-0"
                    started = True
                res = await self.redis.xread({self.keys.events_stream: self.last_id}, block=1000, count=1000)
                for _stream, entries in res or []:
                    for entry_id, fields in entries:
                        self.last_id = entry_id.decode()
                        if not self.listeners:
                            continue  # nobody watching this node: keep the position, skip the decoding
                        rec = _decode(fields)
                        if rec is None:
                            continue
                        wire = wire_of(self.last_id, rec)
                        for listener in list(self.listeners):
                            listener.offer(wire)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                raise_if_cancelling()
                log.warning("events stream read failed", error=f"{type(e).__name__}: {e}")
                started = False
                await asyncio.sleep(1.0)

    async def replay(self, after: str) -> list[Wire] | None:
        """Entries after ``after``; None when they are no longer all kept (the client must resync)."""
        try:
            first = await self.redis.xrange(self.keys.events_stream, count=1)
            if first and _id_lt(after, first[0][0].decode()) and after != "0-0":
                return None
            entries = await self.redis.xrange(self.keys.events_stream, min=f"({after}", count=QUEUE_SIZE)
        except Exception:
            return None
        if len(entries) >= QUEUE_SIZE:
            return None
        out = []
        for entry_id, fields in entries:
            rec = _decode(fields)
            if rec is not None:
                out.append(wire_of(entry_id.decode(), rec))
        return out


def _id_lt(a: str, b: str) -> bool:
    def key(x: str) -> tuple[int, int]:
        ms, _, seq = x.partition("-")
        return int(ms), int(seq or 0)

    return key(a) < key(b)


def _decode(fields: dict[bytes, bytes]) -> Record | None:
    try:
        return unpack(fields[b"r"])
    except (KeyError, MessageError):
        return None


def wire_of(entry_id: str, rec: Record) -> Wire:
    if isinstance(rec, ExecutionBatch):
        return entry_id, "executions", fastjson.dumps(rec.events)
    if isinstance(rec, JobEvent):
        return entry_id, "job", fastjson.dumps(rec.to_dict())
    if isinstance(rec, MembershipEvent):
        return entry_id, "node", fastjson.dumps(rec.to_dict())
    return entry_id, rec.kind, fastjson.dumps(rec.to_dict())


HUB: web.AppKey[StreamHub] = web.AppKey("stream_hub", StreamHub)
SNAPSHOT_FRESH = 1.0  # seconds a built snapshot is handed to the clients that connect meanwhile


async def snapshot(request: web.Request) -> tuple[str, str]:
    """The first event of a stream, as JSON, and the stream position it was built from: built once for
    every client connecting within SNAPSHOT_FRESH (200 clients reconnecting at once built 200 snapshots
    and stalled the node's loop for 2 s). A client handed a snapshot built before it listened replays
    the events since that position (status_stream)."""
    hub = request.app[HUB]
    now = asyncio.get_running_loop().time()
    if hub.snapshot is not None and now - hub.snapshot[0] < SNAPSHOT_FRESH:
        return await asyncio.shield(hub.snapshot[1])
    task = asyncio.ensure_future(_build_snapshot(request))
    hub.snapshot = (now, task)
    return await asyncio.shield(task)


async def _build_snapshot(request: web.Request, selector: Selector | None = None) -> tuple[str, str]:
    r = request.app[RUNTIME]
    since = request.app[HUB].last_id  # what happens from here on reaches the clients as events
    crons: list[dict[str, Any]] = []
    total = None
    try:
        jobs = await r.store.jobs.page(limit=SNAPSHOT_JOBS, cursor=None, q=None, paused=None, selector=selector)
        crons = [{k: d[k] for k in ("id", "name", "schedule", "uri", "running", "lastExecutedAt", "isLocked", "owner",
                                    "state", "nextRunAt")} for d in await enrich(r, jobs)]
        total = await r.store.jobs.count(selector)
    except Exception as e:
        log.warning("snapshot without jobs", error=str(e))
    return fastjson.dumps({"instanceId": r.settings.node_id, "totalCrons": total, "activeCrons": len(r.ownership.owned),
                           "epoch": r.membership.view.epoch, "members": sorted(r.membership.view.members),
                           "crons": crons}), since


class Scope:
    """What a token limited to a selector may see of the stream: events of the jobs it matches (their ids,
    read again when a job event names one it does not know: a job created or relabelled meanwhile), and the
    cluster's own events. A scoped stream parses what it forwards; the others do not pay for it."""

    PASS = frozenset({"node", "node-info", "calendar", "pulse"})
    RELOAD_EVERY = 1.0  # at most one re-read of the ids a second

    def __init__(self, r: Any, selector: Selector) -> None:
        self.r, self.selector = r, selector
        self.ids: set[str] = set()
        self.loaded = 0.0

    async def load(self) -> None:
        self.loaded = asyncio.get_running_loop().time()
        self.ids = set(await self.r.store.jobs.ids_matching(self.selector))

    async def admit(self, name: str, data: str) -> str | None:
        if name in self.PASS:
            return data
        doc = json.loads(data)
        if name == "executions":
            kept = [e for e in doc if e.get("job_id") in self.ids]
            return fastjson.dumps(kept) if kept else None
        job_id = doc.get("id") if name == "job" else (doc.get("backfill") or {}).get("jobId") if name == "backfill" else None
        if job_id is None:
            return None
        if job_id not in self.ids and name == "job" and \
                asyncio.get_running_loop().time() - self.loaded >= self.RELOAD_EVERY:
            try:
                await self.load()
            except Exception as e:
                log.warning("scoped stream: could not read its jobs", error=str(e))
        if name == "job" and doc.get("op") == "deleted":
            return data if job_id in self.ids else None  # (its labels were read while it lived)
        if name == "job" and job_id in self.ids:  # a change may have moved it out of the selector: read it
            try:
                job = await self.r.store.jobs.get(job_id)
                if not self.selector.matches(job.labels):
                    self.ids.discard(job_id)
            except Exception as e:  # gone meanwhile, or the store away: its next event decides
                log.info("scoped stream: could not read a job's labels", job=job_id, error=str(e))
        return data if job_id in self.ids else None


async def status_stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    settings = request.app[RUNTIME].settings
    who = caller(request)
    if len(hub.listeners) >= settings.stream_max_clients:
        raise TooManyRequests(f"this node serves at most {settings.stream_max_clients} live streams "
                              "(CRONRING_STREAM_MAX_CLIENTS); connect to another node or retry")
    if sum(1 for x in hub.listeners if x.caller == who) >= settings.stream_max_per_token:
        raise TooManyRequests(f"at most {settings.stream_max_per_token} live streams per token on a node "
                              "(CRONRING_STREAM_MAX_PER_TOKEN)")
    selector = request.get("selector")
    scope = Scope(request.app[RUNTIME], selector) if selector else None
    if scope is not None:
        await scope.load()
    listened_at = hub.last_id
    listener = hub.listen(who)  # before the snapshot: nothing falls between the two
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    resp: web.StreamResponse = web.Response(status=204)
    try:
        async with sse_response(request, headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"},
                                ping_interval=PING_SECONDS) as resp:
            hub.responses.add(resp)
            replay = await hub.replay(last_event_id) if last_event_id else None
            if replay is None and scope is not None:
                data, since = await _build_snapshot(request, selector)  # its own: only its jobs
                await resp.send(data, id=since, retry=RETRY_MS)
                replay = await hub.replay(since) if since != listened_at else []
                for entry_id, name, data in replay or ():
                    if (data := await scope.admit(name, data)) is not None:
                        await resp.send(data, id=entry_id, event=name)
            elif replay is None:
                data, since = await snapshot(request)
                if since != listened_at:  # a shared snapshot built before we listened: the events since
                    replay = await hub.replay(since)
                    if replay is None:  # no longer all kept: a snapshot of our own
                        data, since = await _build_snapshot(request)
                await resp.send(data, id=since, retry=RETRY_MS)
                for entry_id, name, data in replay or ():
                    await resp.send(data, id=entry_id, event=name)
            else:
                await resp.send(json.dumps({"resumed": True, "after": last_event_id}), event="resumed", retry=RETRY_MS)
                for entry_id, name, data in replay:
                    if scope is not None and (data := await scope.admit(name, data)) is None:
                        continue
                    await resp.send(data, id=entry_id, event=name)
            seen = {w[0] for w in replay} if replay else set()
            while resp.is_connected():
                entry_id, name, data = await listener.queue.get()
                if listener.closed:
                    break
                if listener.overflowed:
                    await resp.send(json.dumps({"reason": "client too slow; reconnect for a fresh snapshot"}),
                                    event="resync")
                    break
                if entry_id in seen:
                    continue
                if scope is not None and (data := await scope.admit(name, data)) is None:
                    continue
                await resp.send(data, id=entry_id, event=name)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    except TimeoutError:
        # aiohttp-sse 3: a client that stopped reading outlasted the send timeout; the library has
        # aborted its connection. Not a server error: it reconnects (and gets a fresh snapshot).
        log.info("stream client stopped reading; disconnected")
    finally:
        hub.unlisten(listener)
    return resp


async def close_streams(app: web.Application) -> None:
    app[HUB].close()
    for resp in list(app[HUB].responses):
        resp.stop_streaming()


def setup(app: web.Application) -> None:
    app[HUB] = StreamHub(app[RUNTIME].redis, app[RUNTIME].keys)
    hub = app[HUB]
    metrics.STREAM_CLIENTS.set_function(lambda: len(hub.listeners))
    app.router.add_get("/api/crons/status/stream", status_stream)
    app.router.add_get("/api/crons/status-stream", status_stream)
    app.on_shutdown.append(close_streams)

    async def hub_ctx(app: web.Application) -> Any:
        task = asyncio.create_task(app[HUB].run())
        yield
        task.cancel()
        # bounded: a stop must never wait on a reader stuck in a dead Redis connection
        _done, stuck = await asyncio.wait([task], timeout=2)
        if stuck:
            log.warning("the events stream reader did not stop within 2 s; leaving it")

    app.cleanup_ctx.append(hub_ctx)
