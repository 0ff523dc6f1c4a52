"""Highly available backends with real processes: three nodes fire every-second jobs against a private
Redis primary + replica watched by three Sentinels (``redis+sentinel://``) and a private MariaDB
primary + semi-synchronous replica (a two-host ``CRONRING_DATABASE_URL``), while users create, edit,
run and delete other jobs. Faults: kill -9 the Redis primary (the Sentinels promote the replica),
kill -9 the MariaDB primary (the test promotes the replica, as an operator or an orchestrator
would), and a Redis failover during a scale-up.

Verdict as in the fault suite: zero duplicates, every tick delivered or given a fate in the ledger,
no unaccounted instant. Each test prints how long nothing was fired ("quiet") and how many ticks the
misfire policy accounted for; the README's figures come from these lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from tests.chaos.ha_backends import MariaDBHA, RedisHA
from tests.chaos.test_faults import verdict, wait_until_all_firing
from tests.chaos.witness import Verdict, ts
from tests.harness import ARTIFACTS, ROOT, Cluster, wait_for

pytestmark = [pytest.mark.ha, pytest.mark.slow]  # not `chaos`: CI repeats that group; this runs once per run

JOBS = 9


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def backends(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RedisHA, MariaDBHA]]:
    """(Asked for before ``make_cluster``: the clusters are torn down first, while their Redis and MariaDB are
    still there to be cleaned; the other way round each teardown waited ~12 s on dead Sentinels.)"""
    log_dir = ARTIFACTS / "logs" / f"ha-{request.node.name}"
    redis, mariadb = RedisHA(log_dir), MariaDBHA(log_dir)
    try:
        await asyncio.gather(redis.start(), mariadb.start())
        print(f"backends up: Redis + Sentinels {redis.start_seconds:.1f} s, MariaDB pair {mariadb.start_seconds:.1f} s")
        yield redis, mariadb
    finally:
        await asyncio.gather(redis.stop(), mariadb.stop())


async def ha_cluster(make_cluster, backends: tuple[RedisHA, MariaDBHA], name: str, nodes: int) -> tuple[Cluster, list[str]]:
    redis, mariadb = backends
    c: Cluster = await make_cluster(name, redis_url=redis.sentinel_url())
    c.database_url = mariadb.url(c.database)  # both hosts: the nodes find the writable one
    point_witness_at_primary(c, mariadb)
    await c.start_nodes(*(f"{name}-{i}" for i in range(1, nodes + 1)))
    jobs = [(await c.create_job(schedule="* * * * * *", name=f"ha{i}"))["id"] for i in range(JOBS)]
    await wait_until_all_firing(c, jobs)
    return c, jobs


def point_witness_at_primary(c: Cluster, mariadb: MariaDBHA) -> None:
    """The test's own reads of execution rows go to the current primary."""
    assert mariadb.primary is not None
    c.db_private, c.db_host, c.db_port = True, "127.0.0.1", mariadb.primary.port


@contextlib.asynccontextmanager
async def users(c: Cluster) -> AsyncIterator[dict[str, int]]:
    """Users at work through any node while the backends fail: create, edit, pause, run and delete jobs
    of their own (not the judged ones). During an outage the API may answer 503, never a 500."""
    seen: dict[str, int] = {}
    rng = random.Random(7)  # noqa: S311
    mine: list[str] = []
    stop = asyncio.Event()

    async def one() -> None:
        node = rng.choice([n for n in c.nodes.values() if n.alive()])
        op = rng.choice(["create", "edit", "pause", "resume", "run", "delete"] if mine else ["create"])
        if op == "create":
            status, body, _ = await c.request("POST", f"{node.url}/api/crons", json={
                "uri": f"{c.receiver.url}/webhook", "schedule": "*/5 * * * * *", "name": f"user{rng.randrange(10**6)}"})
            if status == 201:
                mine.append(body["id"])
        else:
            job = rng.choice(mine)
            method, path, payload = {
                "edit": ("PATCH", f"/api/crons/{job}", {"schedule": rng.choice(["*/5 * * * * *", "*/7 * * * * *"])}),
                "pause": ("POST", f"/api/crons/{job}/pause", None), "resume": ("POST", f"/api/crons/{job}/resume", None),
                "run": ("POST", f"/api/crons/{job}/run", None), "delete": ("DELETE", f"/api/crons/{job}", None)}[op]
            status, body, _ = await c.request(method, f"{node.url}{path}", json=payload)
            if op == "delete" and status == 200:
                mine.remove(job)
        seen[str(status)] = seen.get(str(status), 0) + 1
        assert status < 500 or status == 503, (op, status, body)

    async def loop() -> None:
        while not stop.is_set():
            try:
                await one()
            except (TimeoutError, OSError):  # the chosen node may be between answers; the next try goes on
                seen["no answer"] = seen.get("no answer", 0) + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rng.uniform(0.1, 0.5))

    task = asyncio.create_task(loop())
    try:
        yield seen
    finally:
        stop.set()
        await task  # re-raises a 500 the users met


async def quiet_seconds(c: Cluster, jobs: list[str], fault_at: datetime) -> float:
    """The longest time, from one second before the fault on, in which no judged job's tick arrived."""
    arrivals = sorted(ts(d["arrivedAt"]) for d in await c.deliveries() if d["jobId"] in jobs)
    window = [a for a in arrivals if a >= fault_at - timedelta(seconds=1)]
    return max((b - a).total_seconds() for a, b in zip(window, window[1:], strict=False)) if len(window) > 1 else 0.0


async def firing_again(c: Cluster, jobs: list[str], after: datetime) -> None:
    await wait_until_all_firing(c, jobs, since=after)


async def judged(c: Cluster, jobs: list[str], start: datetime, fault_at: datetime) -> tuple[Verdict, float]:
    """Once the last outcomes are written: the fault suite's verdict, and the seconds nothing fired."""
    await asyncio.sleep(2)
    return await verdict(c, jobs, start), await quiet_seconds(c, jobs, fault_at)


async def live_events(c: Cluster, url: str, seen: list[datetime]) -> None:
    """A dashboard's live stream on one node, reconnecting as a browser does: when each
    `executions` event arrived."""
    while True:
        try:
            async with c.session().get(f"{url}/api/crons/status/stream",
                                       timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as r:
                async for line in r.content:
                    if line.startswith(b"event: executions"):
                        seen.append(now())
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.5)


async def test_redis_primary_killed_sentinels_promote(backends, make_cluster) -> None:
    redis, _ = backends
    c, jobs = await ha_cluster(make_cluster, backends, "harkill", 3)
    start = now()
    events: list[datetime] = []
    stream = asyncio.create_task(live_events(c, c.any_node().url, events))
    try:
        async with users(c) as statuses:
            await asyncio.sleep(2)
            killed_at = now()
            old = await redis.kill_primary()
            new = await redis.wait_failover(old)
            promoted = (now() - killed_at).total_seconds()
            await firing_again(c, jobs, now())
            recovered = now()
            # the events-stream reader followed the failover too: the open dashboard goes on updating
            await wait_for(lambda: any(t > recovered for t in events), 20, "the live stream to carry executions again")
            await asyncio.sleep(2)
    finally:
        stream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream
    await c.wait_members(set(c.nodes), timeout=20)
    v, quiet = await judged(c, jobs, start, killed_at)
    print(f"Redis primary killed ({old} -> {new}): Sentinels promoted in {promoted:.1f} s; nothing fired for "
          f"{quiet:.1f} s; {v.summary()}; users saw {statuses}")


async def test_mariadb_primary_killed_replica_promoted(backends, make_cluster) -> None:
    _, mariadb = backends
    c, jobs = await ha_cluster(make_cluster, backends, "hamkill", 3)
    start = now()
    async with users(c) as statuses:
        await asyncio.sleep(2)
        killed_at = now()
        old = await mariadb.kill_primary()
        await asyncio.sleep(1.0)  # an operator's (or an orchestrator's) reaction time
        new = await mariadb.promote_replica()
        promoted = (now() - killed_at).total_seconds()
        point_witness_at_primary(c, mariadb)
        await firing_again(c, jobs, now())
        await asyncio.sleep(2)
    v, quiet = await judged(c, jobs, start, killed_at)
    for n in c.nodes.values():  # every node moved to the new primary, says so, and shows it
        assert "MariaDB primary changed" in n.log(), n.name
        db = (await c.get_json(f"{n.url}/api/cluster"))["backends"]["database"]
        assert db["primary"] == f"127.0.0.1:{new}" and db["switches"] >= 1 and db["mode"] == "primary-switch", db
        assert "cronring_database_primary_switches_total 1.0" in await (await c.session().get(f"{n.url}/metrics")).text()
    shown = await asyncio.create_subprocess_exec(sys.executable, "-m", "node", "--url", c.any_node().url, "cluster",
                                                 cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    out = (await shown.communicate())[0].decode()
    assert "Redis: through Sentinel, service cronring" in out and f"writes to 127.0.0.1:{new}" in out, out
    print(f"MariaDB primary killed ({old} -> {new}, promoted after {promoted:.1f} s): nothing fired for "
          f"{quiet:.1f} s; {v.summary()}; users saw {statuses}")


async def test_redis_failover_during_scale_up(backends, make_cluster) -> None:
    redis, _ = backends
    c, jobs = await ha_cluster(make_cluster, backends, "hascale", 2)
    start = now()
    async with users(c) as statuses:
        await asyncio.sleep(1.5)
        await c.start_node("hascale-3", wait=False)
        await asyncio.sleep(0.5)  # it is connecting, joining, taking its share of the ring
        killed_at = now()
        old = await redis.kill_primary()
        new = await redis.wait_failover(old)
        await c.wait_healthy(c.nodes["hascale-3"], timeout=30)
        await c.wait_members(set(c.nodes), timeout=30)
        await firing_again(c, jobs, now())
        await asyncio.sleep(2)
    v, quiet = await judged(c, jobs, start, killed_at)

    async def new_node_fires() -> bool:
        return any(d["node"] == "hascale-3" and ts(d["arrivedAt"]) > killed_at for d in await c.deliveries())

    await wait_for(new_node_fires, 20, "the node that joined during the failover to fire its share")
    print(f"Redis failover during a scale-up ({old} -> {new}): nothing fired for {quiet:.1f} s; {v.summary()}; "
          f"users saw {statuses}")


async def test_store_follows_a_switchover_refuses_two_primaries_and_bounds_a_frozen_host(backends) -> None:
    """The store alone against the MariaDB pair: a planned switch-over (the primary made read-only,
    the replica promoted) is noticed by the next probe and followed; two writable hosts are refused
    (two fence sequences would follow); a frozen host (SIGSTOP: it accepts connections, never greets)
    costs a bounded wait, not a hang."""
    from node.model.errors import StoreUnavailable
    from node.model.jobs import validate
    from node.store import DatabaseURL, Store

    _, mariadb = backends
    old = mariadb.primary
    url = DatabaseURL.parse(mariadb.url("cronring_ha_store"))
    store = Store(url, connect_timeout=1.0)
    spec = validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * *"})
    try:
        await store.start()
        assert store.db.primary_name == f"127.0.0.1:{old.port}" and store.db.switches == 0
        first = await store.jobs.create(spec, 100)
        await old.query("SET GLOBAL read_only=ON")
        assert not await store.ping()  # noticed at once: not ready (a probe does not wait for a promotion)
        new = await mariadb.promote_replica()
        second = await store.jobs.create(spec, 100)
        assert store.db.primary_name == f"127.0.0.1:{new}" and store.db.switches == 1
        assert {j.id for j in await store.jobs.page(limit=10, cursor=None, q=None, paused=None)} == {first.id, second.id}
        assert await store.ping()

        await old.query("SET GLOBAL read_only=OFF")  # an operator's mistake: two primaries
        other = Store(url, connect_timeout=1.0)
        with pytest.raises(StoreUnavailable, match="more than one writable"):
            await other.start()
        await other.close()
        await old.query("SET GLOBAL read_only=ON")

        mariadb.primary.signal(signal.SIGSTOP)  # the primary freezes: nothing is writable
        try:
            frozen = Store(url, connect_timeout=1.0)
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(StoreUnavailable, match="no writable"):
                await frozen.start()
            took = asyncio.get_running_loop().time() - t0
            await frozen.close()
            print(f"a frozen primary cost {took:.1f} s to give up on (connect timeout 1 s)")
            assert took < 10
        finally:
            mariadb.primary.signal(signal.SIGCONT)
    finally:
        await store.close()
