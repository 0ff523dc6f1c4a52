"""create_app(): resources and loops in start order, torn down in reverse.

Start: settings → Redis client, MariaDB pool (lazily: the node starts and answers
503 while MariaDB is down) → bus → catalogue → membership → scheduler loops.
Stop (SIGTERM): stop claiming → send what was claimed, finish in-flight runs
(bounded) → release locks → leave the member set → close.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from functools import partial

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from .. import __version__, dashboard, metrics  # type: ignore[attr-defined]  # dashboard: node/__init__
from ..aio import LOOP_LAG, HeapKeeper, Tasks, raise_if_cancelling
from ..cluster import redisconn
from ..cluster.bus import Bus
from ..cluster.catalogue import Catalogue
from ..cluster.fencing import Locks
from ..cluster.keys import EVENTS_STREAM_LENGTH, Keys
from ..cluster.membership import Membership
from ..cluster.messages import BackfillEvent, CancelEvent, JobEvent, Record
from ..model.alerts import AlertType
from ..model.backfills import Backfill
from ..model.errors import StoreUnavailable
from ..scheduling.alerting import AlertSender
from ..scheduling.audit import Auditor
from ..scheduling.backfill import BackfillRunner
from ..scheduling.firing import Firer
from ..scheduling.outbound import OutboundPolicy
from ..scheduling.outcomes import Outcomes, Publisher
from ..scheduling.ownership import Ownership
from ..scheduling.pulse import PULSE_KEPT, PULSE_SECONDS
from ..scheduling.retention import Retention
from ..scheduling.scheduler import Scheduler
from ..settings import Settings
from ..store import Store
from ..store.health import relevant as health_relevant
from . import api, apidocs
from .actions import ClusterCancels, JobCompletions, announce, end_pauses
from .auth import auth_middleware
from .errors import error_middleware
from .runtime import RUNTIME, Runtime

log = structlog.get_logger("app")
REDIS_RETRY = Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1)


def build_runtime(settings: Settings) -> Runtime:
    """The composition root: every part built once, here, and handed the collaborators it needs (each
    repository behind its consumer's Protocol). Nothing else builds its own collaborators."""
    keys = Keys(settings.namespace)
    # One quick retry (a pooled connection found dead after a Redis restart), not redis-py 8's default
    # of 10 with up to 1 s backoff each: with 2 s socket timeouts that stretched one command over half
    # a minute of outage, far past the lease; the heartbeat loop owns retrying across an outage.
    redis = redisconn.connect(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0,
                              health_check_interval=10, retry=REDIS_RETRY)
    store = Store(settings.database, keep_per_job=settings.history_per_job)
    bus = Bus(redis, keys)
    catalogue = Catalogue(store.jobs, settings.resync_interval, calendar_feed=store.calendars, node_id=settings.node_id)
    membership = Membership(
        redis=redis, keys=keys, node_id=settings.node_id, url=settings.advertise_url, version=__version__,
        heartbeat_interval=settings.heartbeat_interval, member_ttl=settings.member_ttl,
    )
    locks = Locks(redis, keys, settings.node_id, settings.member_ttl)
    firer = Firer(node_id=settings.node_id, signing_secret=settings.signing_secret,
                  policy=OutboundPolicy(settings.outbound_allow, settings.outbound_deny),
                  pool_size=settings.http_pool_size)
    tasks = Tasks()
    ownership = Ownership(node_id=settings.node_id, takeovers=store.executions, definitions=store.jobs,
                          history=store.history, locks=locks, lease=membership, catalogue=catalogue,
                          member_ttl=settings.member_ttl, tasks=tasks)
    outcomes = Outcomes(store.executions, Publisher(redis, keys), node_id=settings.node_id,
                        claimer=lambda: membership.claimer)
    scheduler = Scheduler(node_id=settings.node_id, claims=store.executions, ownership=ownership, outcomes=outcomes,
                          firer=firer, membership=membership, catalogue=catalogue, tasks=tasks,
                          claim_ahead=settings.claim_ahead,
                          completions=JobCompletions(store.jobs, store.backfills, catalogue, bus, keys,
                                                      settings.node_id),
                          cancels=ClusterCancels(bus, keys, settings.node_id))
    ownership.hooks = scheduler  # the scheduler drives the ownership; the ownership tells it what changed
    outcomes.recorder.health = lambda batch: store.health.record(batch, settings.node_id)
    outcomes.recorder.relevant = health_relevant

    async def auto_paused(job_ids: list[str]) -> None:  # announced as any pause is (the owner stops at once)
        for job in await store.jobs.get_many(job_ids):
            await announce(catalogue, bus, keys, JobEvent(op="paused", id=job.id, version=job.version, paused=True,
                                                          origin=settings.node_id, name=job.name))

    outcomes.recorder.on_paused = auto_paused

    def node_down(dead: list[str], epoch: int) -> None:
        for node in dead:
            tasks.spawn(_quietly(store.alerts.add(f"down:{node}:{epoch}", str(AlertType.NODE_DOWN), None, {
                "node": node, "detectedBy": settings.node_id, "epoch": epoch})))

    membership.on_dead = node_down

    async def unaccounted(job_id: str, first: datetime, count: int) -> None:  # a bug in cronring: say it loudly
        await store.alerts.add(f"unaccounted:{job_id}:{first.isoformat()}", str(AlertType.TICKS_UNACCOUNTED), job_id,
                               {"count": count, "first": first.isoformat(), "node": settings.node_id})
    alerts = AlertSender(store.alerts, firer, node_id=settings.node_id, claimer=lambda: membership.claimer,
                         alert_url=settings.alert_url, alert_format=settings.alert_format, fresh=membership.fresh)

    def tell_backfill(b: Backfill) -> None:  # progress on the events stream (the job page's bar)
        rec = BackfillEvent(backfill=b.to_api()).pack()
        tasks.spawn(_quietly(redis.xadd(keys.events_stream, {b"r": rec}, maxlen=EVENTS_STREAM_LENGTH, approximate=True)))

    backfills = BackfillRunner(node_id=settings.node_id, store=store.backfills, claims=store.executions,
                               sends=scheduler, fresh=membership.fresh, tell=tell_backfill)
    membership.owned_count = lambda: len(ownership.owned)
    bus.handlers.append(catalogue.on_record)

    def on_cancel(rec: Record) -> None:
        if isinstance(rec, CancelEvent):
            scheduler.cancel_local(rec.execution_ids, rec.reason)

    bus.handlers.append(on_cancel)
    bus.handlers.append(lambda rec: membership.kick() if getattr(rec, "kind", "") == "node" and
                        getattr(rec, "op", "") in ("join", "leave") else None)

    async def resync_after_reconnect() -> None:
        catalogue.request_full()

    bus.on_reconnect.append(resync_after_reconnect)
    auditor = Auditor(store.history, lambda: ownership.owned, calendars=lambda: catalogue.calendars)
    auditor.on_unaccounted = unaccounted
    return Runtime(settings=settings, version=__version__, keys=keys, redis=redis, store=store, bus=bus,
                   catalogue=catalogue, membership=membership, locks=locks, firer=firer, tasks=tasks,
                   ownership=ownership, scheduler=scheduler, backfills=backfills, alerts=alerts,
                   auditor=auditor,
                   retention=Retention(store.history, lambda: ownership.owned, keep=settings.history_per_job))


async def _quietly(aw: Awaitable[object]) -> None:
    try:
        await aw
    except Exception as e:  # (a progress event lost: the next one, a second later, says the same and more)
        log.debug("event not published", error=str(e))


async def _supervise(name: str, fn: object) -> None:
    """Run a loop forever; a crash is logged and the loop restarted after a pause."""
    while True:
        try:
            await fn()  # type: ignore[operator]
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            raise_if_cancelling()
            log.exception("loop crashed; restarting", loop=name)
            await asyncio.sleep(1.0)


def _loop_lag(lag: float) -> None:
    metrics.LOOP_LAG.observe(lag)
    if lag > LOOP_BLOCKED_AFTER:  # held longer than half a heartbeat: say so (the nemesis reads it)
        log.warning("event loop was blocked", seconds=round(lag, 3))


LOOP_BLOCKED_AFTER = 0.5


async def resources(app: web.Application) -> AsyncIterator[None]:
    r = app[RUNTIME]
    await r.firer.start()
    try:
        await r.store.start()
    except StoreUnavailable as e:
        log.warning("MariaDB unavailable at start; the API answers 503 until it returns", error=str(e))
    yield
    for name, close in (("outbound HTTP", r.firer.close), ("MariaDB", r.store.close), ("Redis", lambda: redisconn.close(r.redis))):
        try:
            await asyncio.wait_for(close(), 5)
        except (TimeoutError, OSError, aioredis.RedisError) as e:
            log.warning("closing a client failed; exiting anyway", client=name, error=f"{type(e).__name__}: {e}")
    app[STOP].done()  # the last step of the stop: the watchdogs stand down


class Stop:
    """The node's stop, begun the moment SIGTERM reaches aiohttp (``on_shutdown``: the listening socket is
    closed, requests in flight are still being served) rather than after aiohttp has drained them: an API
    request or a stream still open must not hold the hand-over back. Bounded: a stop that overruns its
    budget (a bug) logs every task's stack and exits with status 1, so a stop never hangs; a loop blocked
    outright is caught by ``faulthandler``, which dumps the threads' stacks and exits a little later."""

    def __init__(self, r: Runtime) -> None:
        self.r = r
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.task: asyncio.Task[None] | None = None
        self.watchdog: asyncio.TimerHandle | None = None

    @property
    def budget(self) -> float:
        # shutdown (grace) + leave (2 s) + drain (grace) + its heartbeat (2 s) + gone (2 s) + loops (5 s)
        # + closes (3 x 5 s) + flushes
        return 2 * self.r.settings.shutdown_grace + 30.0

    def begin(self) -> asyncio.Task[None]:
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name="stop")
            self.watchdog = asyncio.get_running_loop().call_later(self.budget, self._overran)
            faulthandler.dump_traceback_later(self.budget + 10.0, exit=True)
        return self.task

    def done(self) -> None:
        """Stopped in time: disarm the watchdogs (an in-process app in a test must not end its process)."""
        if self.watchdog is not None:
            self.watchdog.cancel()
            faulthandler.cancel_dump_traceback_later()

    async def on_shutdown(self, app: web.Application) -> None:
        self.begin()

    async def _run(self) -> None:
        r, s = self.r, self.r.scheduler
        log.info("node stopping: finishing claimed and in-flight work", grace_s=r.settings.shutdown_grace)
        await s.shutdown(r.settings.shutdown_grace)
        r.membership.stop()
        if "membership" in self.tasks:
            await asyncio.wait([self.tasks["membership"]], timeout=2)
        await r.membership.leave()  # out of the ring at once: peers take over without waiting for member_ttl
        draining = asyncio.create_task(r.membership.draining(), name="draining")  # our claimer stays live ...
        try:
            await s.drain(r.settings.shutdown_grace)  # ... while runs in flight finish and record their outcomes
        finally:
            draining.cancel()
            await asyncio.wait([draining], timeout=2)
        await r.membership.gone()

    def _overran(self) -> None:
        stacks = {}
        for t in asyncio.all_tasks():
            out = io.StringIO()
            t.print_stack(limit=10, file=out)
            stacks[t.get_name()] = out.getvalue()
        log.error("stop overran its budget: exiting", budget_s=self.budget, tasks=stacks)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


STOP: web.AppKey[Stop] = web.AppKey("stop", Stop)


async def operations(r: Runtime) -> None:
    """Every few seconds: pauses whose end has come are resumed; every ten minutes, the audit log and the alerts
    older than CRONRING_AUDIT_DAYS go."""
    last_purge = 0.0
    while True:
        await asyncio.sleep(OPERATIONS_EVERY)
        try:
            await end_pauses(r)
            if time.monotonic() - last_purge > 600:
                last_purge = time.monotonic()
                await r.store.audit.purge(r.settings.audit_days)
                await r.store.alerts.purge(r.settings.audit_days)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise_if_cancelling()
            log.warning("operations pass failed; will retry", error=str(e))


OPERATIONS_EVERY = 2.0
HEAP_EVERY = 1.0


async def keep_heap(r: Runtime) -> None:
    """Every second: once the owned jobs and the catalogue have grown by 20,000 records, freeze them out of the
    garbage collector's full walks (aio.HeapKeeper: they held the loop for up to a second at 200,000 jobs)."""
    keeper = HeapKeeper()
    while True:
        await asyncio.sleep(HEAP_EVERY)
        records = len(r.scheduler.owned) + r.catalogue.live_count()
        if keeper.look(records):
            log.info("long-lived records kept out of the collector", records=records, freezes=keeper.freezes)


async def pulse(r: Runtime) -> None:
    """Every PULSE_SECONDS: the node's slots that are over (what it sent, zeros included) to the events stream (the
    cluster page's live charts) and to the pulse ZSET (their first draw: every node's last PULSE_KEPT seconds)."""
    p = r.scheduler.outcomes.pulse
    while True:
        await asyncio.sleep(PULSE_SECONDS - time.time() % PULSE_SECONDS + 0.05)
        now = time.time()
        events = p.close(now)
        if not events:
            continue
        try:
            async with r.redis.pipeline(transaction=False) as pipe:
                for ev in events:
                    packed = ev.pack()
                    pipe.xadd(r.keys.events_stream, {b"r": packed}, maxlen=EVENTS_STREAM_LENGTH, approximate=True)
                    pipe.zadd(r.keys.pulse, {packed: ev.at})
                pipe.zremrangebyscore(r.keys.pulse, "-inf", now - PULSE_KEPT - PULSE_SECONDS)
                pipe.expire(r.keys.pulse, 2 * PULSE_KEPT)  # (a cluster gone for good leaves nothing behind)
                await pipe.execute()
        except (aioredis.RedisError, OSError) as e:
            log.debug("pulse not published", error=str(e))  # (a gap in the charts, as Redis had one)


async def loops(app: web.Application) -> AsyncIterator[None]:
    r = app[RUNTIME]
    s = r.scheduler
    stop = app[STOP]
    tasks = [
        asyncio.create_task(_supervise(name, fn), name=name)
        for name, fn in (
            ("bus", r.bus.run), ("catalogue", r.catalogue.run), ("membership", r.membership.run),
            ("reconcile", s.run_reconcile), ("timer", s.run_timer), ("recorder", s.outcomes.recorder.run),
            ("publisher", s.outcomes.publisher.run), ("retention", r.retention.run), ("audit", r.auditor.run),
            ("alerts", r.alerts.run), ("operations", partial(operations, r)), ("pulse", partial(pulse, r)),
            ("backfills", r.backfills.run), ("heap", partial(keep_heap, r)),
        )
    ]
    LOOP_LAG.observers[:] = [_loop_lag]  # the node's own timers tell how late they woke (aio.LoopLag)
    stop.tasks = {t.get_name(): t for t in tasks}
    log.info("node started", node=r.settings.node_id, url=r.settings.advertise_url, version=r.version)
    yield
    await stop.begin()  # begun at SIGTERM already; here too for a cleanup without a shutdown
    for t in tasks:
        t.cancel()
    # bounded: a stop must never hang on a loop that does not end
    _done, stuck = await asyncio.wait(tasks + r.tasks.running(), timeout=5)
    if stuck:
        log.warning("loops still running at stop", loops=sorted(t.get_name() for t in stuck))
    log.info("node stopped", node=r.settings.node_id)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response: no sniffing, no framing, no referrer to other sites, no framework version."""
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    h["Server"] = "cronring"


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware, auth_middleware],
        handler_args={"max_field_size": settings.max_header_bytes, "max_line_size": settings.max_header_bytes,
                      "max_headers": settings.max_headers},
    )
    app[RUNTIME] = build_runtime(settings)
    app[STOP] = Stop(app[RUNTIME])
    app.on_shutdown.append(app[STOP].on_shutdown)  # first: before the streams close
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(loops)
    api.setup(app)
    apidocs.setup(app)  # Swagger UI over /api/openapi.json (an HTML page: not in the document itself)
    dashboard.setup(app)
    return app
