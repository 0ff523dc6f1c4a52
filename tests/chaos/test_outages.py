"""Dependency outages with real servers stopped and started: the node answers 503, stops firing,
and recovers by itself without a restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from tests.chaos.test_faults import JOBS, TTL, verdict, wait_until_all_firing
from tests.chaos.witness import ts
from tests.harness import Cluster, Proc, RedisServer, free_port, port_open, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def now() -> datetime:
    return datetime.now(UTC)


class MariaDB(Proc):
    """A private MariaDB server the test can stop and start (data kept between runs)."""

    def __init__(self, datadir: str, port: int, log_dir) -> None:
        exe = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        user = os.environ.get("USER") or "root"
        super().__init__("mariadb", [exe, "--no-defaults", f"--datadir={datadir}", f"--port={port}",
                                     "--bind-address=127.0.0.1", f"--socket={datadir}/mysqld.sock",
                                     f"--pid-file={datadir}/mysqld.pid", f"--user={user}", "--skip-log-bin",
                                     "--innodb-buffer-pool-size=64M"], dict(os.environ), log_dir / f"mariadb-{port}.log")
        self.port = port


def install_db(datadir: str) -> None:
    user = os.environ.get("USER") or "root"
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--auth-root-authentication-method=normal",
                    "--skip-test-db", f"--user={user}"], check=True, capture_output=True)


async def test_mariadb_stopped_then_started(make_cluster, tmp_path) -> None:
    datadir = str(tmp_path / "mariadb")
    await asyncio.to_thread(install_db, datadir)
    port = free_port()
    c: Cluster = await make_cluster("dbdown")
    db = MariaDB(datadir, port, c.dir).start()
    try:
        await wait_for(lambda: port_open(port), 30, "private MariaDB to listen")
        c.db_host, c.db_port, c.db_private = "127.0.0.1", port, True
        node = await c.start_node("dbdown-1")
        jobs = [(await c.create_job(schedule="* * * * * *"))["id"] for _ in range(JOBS // 2)]
        await wait_until_all_firing(c, jobs)
        start = now()
        await asyncio.sleep(1)
        db.signal(signal.SIGTERM)
        await wait_for(lambda: not db.alive(), 30, "MariaDB to stop")
        stopped = now()
        status, body, headers = await c.request("GET", f"{node.url}/api/crons")
        assert status == 503 and headers.get("Retry-After") and body["error"].startswith("database unavailable")
        status, body, _ = await c.request("POST", f"{node.url}/api/crons", json={"uri": "http://x/", "schedule": "@daily"})
        assert status == 503
        h = (await c.request("GET", f"{node.url}/api/health"))
        assert h[0] == 503 and h[1]["database"] == "disconnected"
        status, ready, _ = await c.request("GET", f"{node.url}/readyz")
        assert status == 503 and ready["checks"]["database"] is False, ready
        assert (await c.request("GET", f"{node.url}/livez"))[0] == 200  # alive: it recovers by itself
        await asyncio.sleep(3)
        sent = [d for d in await c.deliveries() if ts(d["arrivedAt"]) > stopped + timedelta(seconds=1)]
        assert not sent, f"requests without a claim while MariaDB was down: {sent[:3]}"
        db = MariaDB(datadir, port, c.dir).start()
        await wait_for(lambda: port_open(port), 30, "MariaDB to listen again")
        back = now()

        async def healthy() -> bool:
            return (await c.request("GET", f"{node.url}/api/health"))[0] == 200

        await wait_for(healthy, 30, "the node to recover by itself")
        await wait_until_all_firing(c, jobs, since=back + timedelta(seconds=1))
        await asyncio.sleep(2)
        await verdict(c, jobs, start)
    finally:
        db.signal(signal.SIGTERM)
        await wait_for(lambda: not db.alive(), 30, "MariaDB to stop at the end")


async def test_redis_down_for_a_while(make_cluster) -> None:
    port = free_port()
    c0: Cluster = await make_cluster("rdown0", receiver=False)
    redis = RedisServer(port, c0.dir).start()
    try:
        await redis.ready()
        c: Cluster = await make_cluster("rdown", redis_url=redis.url)
        await c.start_nodes("rdown-1", "rdown-2")
        jobs = [(await c.create_job(schedule="* * * * * *"))["id"] for _ in range(JOBS // 2)]
        await wait_until_all_firing(c, jobs)
        start = now()
        await asyncio.sleep(1)
        redis.kill()
        down = now()
        await asyncio.sleep(TTL + 2)
        late = [d for d in await c.deliveries() if ts(d["arrivedAt"]) > down + timedelta(seconds=TTL)]
        assert not late, f"a node kept firing after its lease lapsed: {late[:3]}"
        h = await c.request("GET", f"{c.any_node().url}/api/health")
        assert h[0] == 503 and h[1]["redis"] == "disconnected"
        status, ready, _ = await c.request("GET", f"{c.any_node().url}/readyz")
        assert status == 503 and ready["checks"]["redis"] is False and ready["checks"]["membership"] is False, ready
        redis = RedisServer(port, c0.dir).start()
        await redis.ready()
        back = now()
        await c.wait_members(set(c.nodes), timeout=20)
        await wait_until_all_firing(c, jobs, since=back + timedelta(seconds=1))
        await asyncio.sleep(2)
        await verdict(c, jobs, start)
    finally:
        redis.kill()
