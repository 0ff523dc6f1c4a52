"""cronring.verify, the receiver toolkit: the pure signature and fence checks, the checks together with
their stores (in memory, real Redis, real MariaDB), and both middlewares over real HTTP (aiohttp's test
server; a Starlette-style ASGI app under uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import aiomysql
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node import verify
from node.verify import (
    Delivery,
    MemoryFenceStore,
    MemoryIdempotencyStore,
    MySQLFenceStore,
    MySQLIdempotencyStore,
    Prior,
    Reason,
    RedisFenceStore,
    RedisIdempotencyStore,
    Rejected,
    Verifier,
    VerifyMiddleware,
    fence_is_stale,
    sign,
    verify_signature,
)
from tests.harness import ROOT, wait_for

SECRETS = ("current-secret", "previous-secret")
NOW = 1_800_000_000
BODY = b'{"jobId":"j1","executionId":"e1"}'


def headers(body: bytes = BODY, *, key: str = "e1", fence: int = 3, job: str = "j1", secret: str = SECRETS[0],
            t: int = NOW, **extra: str) -> dict[str, str]:
    """What a node sends for one execution (see node/scheduling/firing.py)."""
    return {"X-Cron-Job-Id": job, "X-Cron-Execution-Id": key, "Idempotency-Key": key,
            "X-Cron-Scheduled-At": "2027-01-15T08:00:00.000Z", "X-Cron-Fence": str(fence), "X-Cron-Attempt": "1",
            "X-Cron-Node": "n1", "X-Cron-Signature": sign(secret, body, timestamp=t), **extra}


def reason_of(call: Callable[[], Any]) -> Reason:
    with pytest.raises(Rejected) as e:
        call()
    return e.value.reason


# -- the pure signature check ---------------------------------------------------------------------


def test_signature_by_the_current_and_the_previous_secret() -> None:
    ok = verify_signature(SECRETS, sign("current-secret", BODY, timestamp=NOW), BODY, now=NOW)
    assert ok.timestamp == NOW and ok.secret_index == 0 and not ok.rotated
    rotated = verify_signature(SECRETS, sign("previous-secret", BODY, timestamp=NOW), BODY, now=NOW + 299)
    assert rotated.secret_index == 1 and rotated.rotated


def test_the_node_and_the_toolkit_sign_alike() -> None:
    from node.scheduling.firing import sign as node_sign

    assert node_sign("s3cret", NOW, BODY) == sign("s3cret", BODY, timestamp=NOW)


@pytest.mark.parametrize(("header", "body", "now", "reason"), [
    (None, BODY, NOW, Reason.MISSING),
    ("", BODY, NOW, Reason.MISSING),
    (sign("wrong-secret", BODY, timestamp=NOW), BODY, NOW, Reason.BAD_SIGNATURE),  # re-signed with a wrong secret
    (sign("current-secret", BODY, timestamp=NOW), BODY + b" ", NOW, Reason.BAD_SIGNATURE),  # tampered body
    (sign("current-secret", BODY, timestamp=NOW).replace(f"t={NOW}", f"t={NOW + 1}"), BODY, NOW,
     Reason.BAD_SIGNATURE),  # the time moved, not the MAC
    (sign("current-secret", BODY, timestamp=NOW - 301), BODY, NOW, Reason.EXPIRED),  # stale timestamp
    (sign("current-secret", BODY, timestamp=NOW + 301), BODY, NOW, Reason.EXPIRED),  # from a clock ahead
    ("garbage", BODY, NOW, Reason.MALFORMED),
    ("t=abc,v1=" + "0" * 64, BODY, NOW, Reason.MALFORMED),
    (f"t={NOW}", BODY, NOW, Reason.MALFORMED),
    (f"t={NOW},v1=zz", BODY, NOW, Reason.MALFORMED),
    (f"t={NOW},v1=" + "é" * 64, BODY, NOW, Reason.MALFORMED),  # never a TypeError from compare_digest
    ("t=" + "9" * 13 + ",v1=" + "0" * 64, BODY, NOW, Reason.MALFORMED),
    ("t=1,v1=" + "0" * 64 + "," * 5000, BODY, NOW, Reason.MALFORMED),
])
def test_signature_rejections(header: str | None, body: bytes, now: int, reason: Reason) -> None:
    assert reason_of(lambda: verify_signature(SECRETS, header, body, now=now)) is reason
    assert Rejected(reason).status == 401


def test_signature_details() -> None:
    good = sign("current-secret", BODY, timestamp=NOW)
    # one secret given as a string is one secret, not one per character
    assert verify_signature("current-secret", good, BODY, now=NOW).secret_index == 0
    assert verify_signature(b"current-secret", good, BODY, now=NOW).secret_index == 0
    # upper-case hex, spaces, an unknown field (a future scheme) and several v1 entries (a sender rotating)
    t, v1 = good.split(",")
    mac = v1.removeprefix("v1=").upper()
    assert verify_signature(SECRETS, f"{t}, v2=abc, v1={'0' * 64}, v1={mac}", BODY, now=NOW).secret_index == 0
    assert verify_signature(SECRETS, good, BODY, now=NOW + 1000, tolerance=1000)
    with pytest.raises(ValueError):
        verify_signature((), good, BODY, now=NOW)
    with pytest.raises(ValueError):
        Verifier(["", ""])
    assert Rejected(Reason.EXPIRED).payload() == {"error": "expired", "details": "expired"}


@pytest.mark.parametrize(("fence", "highest", "stale"), [(5, None, False), (5, 5, False), (6, 5, False),
                                                         (4, 5, True), (0, 1, True), (0, -1, False)])
def test_fence_is_stale(fence: int, highest: int | None, stale: bool) -> None:
    assert fence_is_stale(fence, highest) is stale


def test_importing_the_toolkit_pulls_in_no_third_party_package() -> None:
    probe = ("import sys, node.verify\n"
             "heavy = {m.split('.')[0] for m in sys.modules} & {'aiohttp', 'redis', 'aiomysql', 'asyncmy', 'pymysql', 'yarl'}\n"
             "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# -- the checks together, with in-memory stores -------------------------------------------------------


def memory_verifier(**kw: Any) -> Verifier:
    return Verifier(SECRETS, fences=MemoryFenceStore(), idempotency=MemoryIdempotencyStore(), clock=lambda: NOW, **kw)


async def rejected(v: Verifier, hdrs: dict[str, str], body: bytes = BODY) -> Rejected:
    with pytest.raises(Rejected) as e:
        await v.check(hdrs, body)
    return e.value


async def test_check_passes_a_delivery_then_answers_its_replay_without_running_it() -> None:
    v = memory_verifier()
    d = await v.check(headers(), BODY)
    assert (d.job_id, d.execution_id, d.idempotency_key, d.fence, d.attempt, d.node) == ("j1", "e1", "e1", 3, 1, "n1")
    assert d.scheduled_at == "2027-01-15T08:00:00.000Z" and d.signed.secret_index == 0
    e = await rejected(v, headers())  # the same execution while its handler still runs
    assert e.reason is Reason.IN_FLIGHT and e.status == 425 and e.headers["Retry-After"] == "1"
    await d.finish(200)
    e = await rejected(v, headers(secret="previous-secret"))  # a redelivery, re-signed (any good secret)
    assert e.reason is Reason.REPLAYED and e.status == 200 and e.headers["Idempotent-Replayed"] == "true"
    assert e.payload() == {"replayed": True, "idempotencyKey": "e1", "details": "already handled; not run again"}
    assert (await v.check(headers(key="e2"), BODY)).execution_id == "e2"  # the next execution runs


async def test_a_failed_handler_releases_the_key_so_the_retry_runs() -> None:
    v = memory_verifier()
    for status in (500, 503, 429, 408):  # statuses cronring retries
        d = await v.check(headers(key=f"k{status}"), BODY)
        await d.finish(status)
        await (await v.check(headers(key=f"k{status}"), BODY)).finish(201)  # the retry runs the handler again
        assert (await rejected(v, headers(key=f"k{status}"))).status == 201  # and its answer is what duplicates get
    d = await v.check(headers(key="k400"), BODY)
    await d.finish(400)  # not retried by cronring: a redelivery gets the same answer, not a second run
    assert (await rejected(v, headers(key="k400"))).status == 400


async def test_check_rejects_stale_fences_and_raises_the_highest() -> None:
    v = memory_verifier()
    await (await v.check(headers(key="a", fence=5), BODY)).finish(200)
    await (await v.check(headers(key="b", fence=5), BODY)).finish(200)  # equal: the same owner
    e = await rejected(v, headers(key="c", fence=4))
    assert e.reason is Reason.STALE_FENCE and e.status == 409 and "deposed" in e.detail
    await (await v.check(headers(key="d", fence=7), BODY)).finish(200)
    assert (await rejected(v, headers(key="e", fence=6))).reason is Reason.STALE_FENCE
    assert (await v.check(headers(key="f", fence=1, job="other"), BODY)).fence == 1  # per job
    # a stale one claimed no key: once refused, the same key from the right owner still runs
    assert (await v.check(headers(key="c", fence=7), BODY)).idempotency_key == "c"


async def test_check_order_and_header_rules() -> None:
    v = memory_verifier()
    # a forged request touches no store: a wrong secret with a huge fence leaves the job's highest alone
    assert (await rejected(v, headers(fence=99, secret="wrong"))).reason is Reason.BAD_SIGNATURE
    assert (await rejected(v, headers(BODY + b"x"))).reason is Reason.BAD_SIGNATURE  # tampered (signed other bytes)
    assert (await rejected(v, headers(t=NOW - 600))).reason is Reason.EXPIRED
    await (await v.check(headers(fence=3), BODY)).finish(200)
    for bad in ({"X-Cron-Fence": "-1"}, {"X-Cron-Fence": "x"}, {"X-Cron-Fence": "1" * 19},
                {"Idempotency-Key": "k" * 256}, {"Idempotency-Key": "é" * 128}, {"X-Cron-Job-Id": "j" * 256}):
        e = await rejected(v, headers(key="h", **bad))
        assert e.reason is Reason.BAD_HEADERS and e.status == 400, bad
    assert (await v.check(headers(key="k" * 255), BODY)).idempotency_key == "k" * 255  # 255 bytes: the most
    assert (await v.check(headers(key="a", **{"X-Cron-Attempt": "9" * 40}), BODY)).attempt is None  # checked by none
    for missing in ("Idempotency-Key", "X-Cron-Fence", "X-Cron-Job-Id"):
        h = {k: val for k, val in headers(key="m").items() if k != missing}
        assert (await rejected(v, h)).reason is Reason.BAD_HEADERS, missing
    # header names in any case, as ASGI's byte pairs or a dict
    raw = [(k.lower().encode(), val.encode()) for k, val in headers(key="raw").items()]
    assert (await v.check(raw, BODY)).idempotency_key == "raw"
    assert (await v.check({k.upper(): val for k, val in headers(key="up").items()}, BODY)).fence == 3
    # without stores only the signature is checked, and the headers need not be there
    plain = Verifier(SECRETS, clock=lambda: NOW)
    d = await plain.check({"X-Cron-Signature": sign(SECRETS[0], b"", timestamp=NOW), "X-Cron-Fence": "x"}, b"")
    assert d.job_id is None and d.fence is None
    await d.finish(500)  # nothing to release


async def test_module_level_check() -> None:
    ok = await verify.check(headers(), BODY, secrets=SECRETS, now=NOW)
    assert isinstance(ok, Delivery)
    with pytest.raises(Rejected):
        await verify.check(headers(), BODY, secrets="another", now=NOW)


async def test_memory_idempotency_store_expires_and_is_bounded() -> None:
    clock = [0.0]
    s = MemoryIdempotencyStore(max_keys=3, ttl=100, in_flight_ttl=10, clock=lambda: clock[0])
    assert await s.claim("a", "t1") is None
    clock[0] = 11  # in flight past in_flight_ttl: its handler died; the key is free again
    assert await s.claim("a", "t2") is None
    await s.complete("a", "t1", 200)  # the lapsed claim cannot complete it
    assert await s.claim("a", "t3") == Prior(None)
    await s.complete("a", "t2", 200)
    clock[0] = 110
    assert await s.claim("a", "t4") == Prior(200)
    clock[0] = 112  # past ttl after its completion
    assert await s.claim("a", "t5") is None
    for k in "bcde":
        assert await s.claim(k, "t") is None
    assert len(s) == 3  # the oldest written were forgotten
    assert await s.claim("e", "t") == Prior(None)


# -- the store contract, against each store ---------------------------------------------------------

REDIS_URL = os.environ.get("CRONRING_TEST_REDIS_URL")
DATABASE_URL = os.environ.get("CRONRING_TEST_DATABASE_URL")


@contextlib.asynccontextmanager
async def redis_stores(ttl: int = 100, in_flight_ttl: int = 10) -> AsyncIterator[tuple[Any, Any, Any]]:
    if not REDIS_URL:
        pytest.skip("CRONRING_TEST_REDIS_URL is not set")
    prefix = f"cronring-test:verify:{os.getpid()}:{secrets.token_hex(4)}:"
    r = aioredis.from_url(REDIS_URL)
    try:
        yield (RedisFenceStore(r, prefix=prefix + "fence:"),
               RedisIdempotencyStore(r, prefix=prefix + "idem:", ttl=ttl, in_flight_ttl=in_flight_ttl), r)
    finally:
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


@contextlib.asynccontextmanager
async def mysql_stores(ttl: int = 100, in_flight_ttl: int = 10) -> AsyncIterator[tuple[Any, Any, Any]]:
    if not DATABASE_URL:
        pytest.skip("CRONRING_TEST_DATABASE_URL is not set")
    from node.store import DatabaseURL

    u = DatabaseURL.parse(DATABASE_URL)
    name = f"cronring_vt_{secrets.token_hex(4)}"
    admin = await aiomysql.connect(host=u.host, port=u.port, user=u.user, password=u.password, autocommit=True)
    try:
        async with admin.cursor() as cur:
            await cur.execute(f"CREATE DATABASE `{name}`")
        pool = await aiomysql.create_pool(host=u.host, port=u.port, user=u.user, password=u.password, db=name,
                                          minsize=1, maxsize=10)  # autocommit off, as by default: the stores commit
        try:
            fences, idem = MySQLFenceStore(pool), MySQLIdempotencyStore(pool, ttl=ttl, in_flight_ttl=in_flight_ttl)
            await fences.create_table()
            await idem.create_table()
            await idem.create_table()  # IF NOT EXISTS: safe at every start
            yield fences, idem, pool
        finally:
            pool.close()
            await pool.wait_closed()
    finally:
        async with admin.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@contextlib.asynccontextmanager
async def memory_stores(ttl: int = 100, in_flight_ttl: int = 10) -> AsyncIterator[tuple[Any, Any, Any]]:
    yield MemoryFenceStore(), MemoryIdempotencyStore(ttl=ttl, in_flight_ttl=in_flight_ttl), None


STORES = {"memory": memory_stores, "redis": redis_stores, "mysql": mysql_stores}


@pytest.mark.parametrize("kind", list(STORES))
async def test_store_contract(kind: str) -> None:
    async with STORES[kind]() as (fences, idem, _):
        # fences: equal passes, lower is stale, higher raises the highest; per job
        assert [await fences.advance("j", f) for f in (5, 5, 4, 6, 5, 6)] == [True, True, False, True, False, True]
        assert await fences.advance("other", 1)
        # keys: new, then in flight, then done with its status
        assert await idem.claim("k1", "a" * 32) is None
        assert await idem.claim("k1", "b" * 32) == Prior(None)
        await idem.release("k1", "b" * 32)  # not the holder: nothing happens
        await idem.complete("k1", "b" * 32, 200)
        assert await idem.claim("k1", "c" * 32) == Prior(None)
        await idem.complete("k1", "a" * 32, 204)
        assert await idem.claim("k1", "d" * 32) == Prior(204)
        await idem.release("k1", "a" * 32)  # a handled key is not released
        assert await idem.claim("k1", "e" * 32) == Prior(204)
        # released while in flight: the next delivery claims it
        assert await idem.claim("k2", "f" * 32) is None
        await idem.release("k2", "f" * 32)
        assert await idem.claim("k2", "0" * 32) is None
        # keys are compared exactly (no case folding, any characters)
        assert await idem.claim("K1", "1" * 32) is None
        assert await idem.claim("exécution-✓", "2" * 32) is None
        assert await idem.claim("exécution-✓", "3" * 32) == Prior(None)


@pytest.mark.parametrize("kind", list(STORES))
async def test_store_races(kind: str) -> None:
    async with STORES[kind]() as (fences, idem, _):
        tokens = [secrets.token_hex(16) for _ in range(20)]
        got = await asyncio.gather(*(idem.claim("race", t) for t in tokens))
        assert got.count(None) == 1 and all(g == Prior(None) for g in got if g is not None)
        ok = await asyncio.gather(*(fences.advance("race", f) for f in range(1, 21)))
        assert ok[-1] and await fences.advance("race", 20) and not await fences.advance("race", 19)


async def test_redis_store_sets_ttls() -> None:
    async with redis_stores(ttl=1000, in_flight_ttl=30) as (_, idem, r):
        assert await idem.claim("t", "a" * 32) is None
        assert 0 < await r.ttl(idem.prefix + "t") <= 30
        await idem.complete("t", "a" * 32, 200)
        assert 30 < await r.ttl(idem.prefix + "t") <= 1000
        assert await r.get(idem.prefix + "t") == b"d:200"


async def test_mysql_store_takes_over_expired_rows_and_purges() -> None:
    async with mysql_stores() as (_, idem, pool):
        assert await idem.claim("old", "a" * 32) is None
        await idem.complete("old", "a" * 32, 200)
        assert await idem.claim("stuck", "b" * 32) is None  # in flight, and its handler died
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT idem_key, status, expires_at > UTC_TIMESTAMP(6) FROM cronring_idempotency "
                              "ORDER BY idem_key")
            assert await cur.fetchall() == ((b"old", 200, 1), (b"stuck", None, 1))
            await cur.execute("UPDATE cronring_idempotency SET expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND")
            await conn.commit()
        assert await idem.claim("stuck", "c" * 32) is None  # expired: taken over
        assert await idem.purge() == 1  # "old"
        assert await idem.claim("old", "d" * 32) is None
    with pytest.raises(ValueError):
        MySQLIdempotencyStore(None, table="x; DROP TABLE y")


@pytest.mark.parametrize("kind", list(STORES))
async def test_a_verifier_on_each_store(kind: str) -> None:
    async with STORES[kind]() as (fences, idem, _):
        v = Verifier(SECRETS, fences=fences, idempotency=idem, clock=lambda: NOW)
        key = f"exec-{secrets.token_hex(4)}"
        d = await v.check(headers(key=key, fence=2), BODY)
        await d.finish(200)
        assert (await rejected(v, headers(key=key, fence=2))).reason is Reason.REPLAYED
        assert (await rejected(v, headers(key="new", fence=1))).reason is Reason.STALE_FENCE


# -- the aiohttp middleware, through aiohttp's test client -------------------------------------------


@contextlib.asynccontextmanager
async def aiohttp_client(paths: Any = None) -> AsyncIterator[tuple[TestClient, list[dict[str, Any]]]]:
    runs: list[dict[str, Any]] = []

    async def tick(request: web.Request) -> web.Response:
        delivery = verify.delivery_of(request)
        runs.append({"key": delivery.idempotency_key, "body": await request.json()})  # the body is read again
        if request.query.get("fail"):
            raise web.HTTPServiceUnavailable(text="later")
        return web.json_response({"done": delivery.execution_id})

    async def open_page(request: web.Request) -> web.Response:
        return web.json_response({"open": True})

    v = Verifier(SECRETS, fences=MemoryFenceStore(), idempotency=MemoryIdempotencyStore())
    app = web.Application(middlewares=[verify.aiohttp_middleware(v, paths=paths)])
    app.router.add_post("/cron/tick", tick)
    app.router.add_get("/health", open_page)
    async with TestClient(TestServer(app)) as client:
        yield client, runs


async def test_aiohttp_middleware() -> None:
    async with aiohttp_client(paths=["/cron"]) as (client, runs):
        now = int(time.time())
        r = await client.post("/cron/tick", data=BODY, headers=headers(t=now))
        assert r.status == 200 and await r.json() == {"done": "e1"}
        assert runs == [{"key": "e1", "body": json.loads(BODY)}]
        r = await client.post("/cron/tick", data=BODY, headers=headers(t=now))  # replayed
        assert r.status == 200 and r.headers["Idempotent-Replayed"] == "true"
        assert (await r.json())["replayed"] is True and len(runs) == 1
        r = await client.post("/cron/tick", data=BODY + b" ", headers=headers(key="e2", t=now))  # tampered
        assert r.status == 401 and (await r.json())["error"] == "bad-signature"
        r = await client.post("/cron/tick", data=BODY, headers=headers(key="e3", t=now, secret="wrong"))
        assert r.status == 401
        r = await client.post("/cron/tick", data=BODY, headers=headers(key="e4", t=now - 3600))
        assert r.status == 401 and (await r.json())["error"] == "expired"
        r = await client.post("/cron/tick", data=BODY, headers=headers(key="e5", t=now, fence=2))
        assert r.status == 409 and (await r.json())["error"] == "stale-fence"
        r = await client.post("/cron/tick?fail=1", data=BODY, headers=headers(key="e6", t=now))
        assert r.status == 503  # the handler's HTTPException: the key is released
        r = await client.post("/cron/tick", data=BODY, headers=headers(key="e6", t=now, secret="previous-secret"))
        assert r.status == 200 and [x["key"] for x in runs] == ["e1", "e6", "e6"]
        assert (await client.get("/health")).status == 200  # outside paths: not checked
        assert (await client.post("/cronjobs", data=BODY)).status == 404  # /cron covers /cron/…, not /cronjobs


# -- the ASGI middleware: a Starlette-style app under a real server ----------------------------------


class MiniRequest:
    """What Starlette's Request does with ``receive``: ``body()`` gathers http.request messages."""

    def __init__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]]) -> None:
        self.scope, self._receive, self._body = scope, receive, None
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

    async def body(self) -> bytes:
        if self._body is None:
            chunks = []
            while True:
                message = await self._receive()
                assert message["type"] == "http.request", message
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        return json.loads(await self.body())


class MiniApp:
    """A FastAPI-shaped app: ``@app.post(path)`` handlers take a request and return (status, JSON)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Callable[[MiniRequest], Awaitable[tuple[int, Any]]]] = {}

    def post(self, path: str) -> Callable[[Any], Any]:
        def add(fn: Any) -> Any:
            self.routes[("POST", path)] = fn
            return fn
        return add

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        fn = self.routes.get((scope["method"], scope["path"]))
        status, payload = (404, {"error": "not found"}) if fn is None else await fn(MiniRequest(scope, receive))
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


class _InProcess:
    """uvicorn.Server without its signal handlers (the test process keeps its own)."""

    def __new__(cls, config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            def capture_signals(self) -> Any:
                return contextlib.nullcontext()

        return Server(config)


@contextlib.asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """``app`` under uvicorn on a loopback port, in this event loop; yields its base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = _InProcess(uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started or task.done(), 15, "uvicorn to start")
        assert not task.done(), task
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


def guarded_app(verifier: Verifier, **kw: Any) -> tuple[VerifyMiddleware, list[dict[str, Any]], dict[str, Any]]:
    app = MiniApp()
    runs: list[dict[str, Any]] = []
    control: dict[str, Any] = {"gate": None}

    @app.post("/cron/tick")
    async def tick(request: MiniRequest) -> tuple[int, Any]:
        delivery = verify.delivery_of(request)
        runs.append({"key": delivery.idempotency_key, "body": await request.json(), "headers": request.headers})
        if control["gate"] is not None:
            await control["gate"].wait()
        if b"boom" in await request.body():
            raise RuntimeError("the handler failed")
        return 200, {"done": delivery.execution_id}

    return VerifyMiddleware(app, verifier, **kw), runs, control


async def test_asgi_middleware_under_uvicorn() -> None:
    v = Verifier(SECRETS, fences=MemoryFenceStore(), idempotency=MemoryIdempotencyStore())
    app, runs, control = guarded_app(v, paths="/cron", max_body=64 * 1024)
    async with serve_asgi(app) as url, aiohttp.ClientSession() as http:
        now = int(time.time())

        async def post(body: bytes = BODY, *, chunked: bool = False, **kw: Any) -> tuple[int, Any, Any]:
            async def chunks() -> AsyncIterator[bytes]:
                for i in range(0, len(body), 7):
                    yield body[i:i + 7]

            data: Any = chunks() if chunked else body
            async with http.post(f"{url}/cron/tick", data=data, headers=headers(body, t=now, **kw)) as r:
                return r.status, await r.json(), r.headers

        status, got, _ = await post(chunked=True)  # many http.request messages, buffered, replayed as one
        assert status == 200 and got == {"done": "e1"} and runs[0]["body"] == json.loads(BODY)
        status, got, h = await post()
        assert status == 200 and got["replayed"] is True and h["Idempotent-Replayed"] == "true" and len(runs) == 1
        assert (await post(key="e2", secret="wrong"))[:2] == (401, {"error": "bad-signature", "details": (
            "the signature matches no secret (wrong secret, or an altered body)")})
        status, got, _ = await post(key="e3", fence=1)
        assert status == 409 and got["error"] == "stale-fence"
        status, got, _ = await post(key="e4", secret="previous-secret")  # rotation
        assert status == 200 and [r["key"] for r in runs] == ["e1", "e4"]
        big = b'{"x":"' + b"y" * 70_000 + b'"}'
        assert (await post(big, key="e5", chunked=True))[:2] == (413, {"error": "too-large",
                                                                       "details": "a body over 65536 bytes"})

        # a duplicate while the first runs gets 425; a handler that raises releases the key
        control["gate"] = asyncio.Event()
        first = asyncio.create_task(post(key="e6"))
        await wait_for(lambda: len(runs) == 3, 10, "the first delivery's handler to start")
        status, got, h = await post(key="e6")
        assert status == 425 and got["error"] == "in-flight" and h["Retry-After"] == "1"
        control["gate"].set()
        assert (await first)[0] == 200
        control["gate"] = None
        boom = b'{"boom":1}'
        for _ in range(2):  # the retry of a delivery whose handler raised runs it again
            async with http.post(f"{url}/cron/tick", data=boom, headers=headers(boom, key="e7", t=now)) as r:
                assert r.status == 500  # uvicorn's answer to the exception
        assert [r["key"] for r in runs] == ["e1", "e4", "e6", "e7", "e7"]  # the retry ran it again
        async with http.post(f"{url}/elsewhere", data=b"{}") as r:
            assert r.status == 404  # outside paths: the app answers, unchecked


async def test_asgi_middleware_driven_directly() -> None:
    """The ASGI callable with a hand-made scope: other scopes and paths pass through, a client that leaves
    before its body is complete is not answered, and the inner app reads the whole body once."""
    v = Verifier(SECRETS, clock=lambda: NOW)
    app, runs, _ = guarded_app(v)

    async def call(scope: dict[str, Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        queue = list(messages)

        async def receive() -> dict[str, Any]:
            return queue.pop(0) if queue else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        await app(scope, receive, send)
        return sent

    def http_scope(hdrs: dict[str, str]) -> dict[str, Any]:
        return {"type": "http", "method": "POST", "path": "/cron/tick",
                "headers": [(k.lower().encode(), val.encode()) for k, val in hdrs.items()]}

    sent = await call(http_scope(headers()), [{"type": "http.request", "body": BODY[:10], "more_body": True},
                                              {"type": "http.request", "body": BODY[10:], "more_body": False}])
    assert sent[0]["status"] == 200 and runs[0]["body"] == json.loads(BODY)
    with pytest.raises(LookupError):
        verify.delivery_of({"type": "http"})
    assert await call(http_scope(headers(key="gone")), [{"type": "http.request", "body": b"{", "more_body": True},
                                                        {"type": "http.disconnect"}]) == []
    sent = await call(http_scope({}), [{"type": "http.request", "body": b"{}"}])
    assert sent[0]["status"] == 401 and json.loads(sent[1]["body"])["error"] == "missing"
    sent = await call({"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert len(runs) == 1
