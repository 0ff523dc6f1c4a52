"""Smoke tests for the HA backend harness: a Sentinel failover and a semi-sync MariaDB promotion."""

from __future__ import annotations

import time

import pytest
from redis.asyncio.sentinel import Sentinel

from tests.chaos.ha_backends import MariaDBHA, RedisHA
from tests.harness import ARTIFACTS, wait_for

pytestmark = [pytest.mark.ha]


async def test_redis_sentinel_failover() -> None:
    async with RedisHA(ARTIFACTS / "logs" / f"ha-redis-{time.time_ns()}") as ha:
        print(f"\nRedisHA started in {ha.start_seconds:.2f}s; {ha.sentinel_url()}")
        assert ha.sentinel_url().startswith("redis+sentinel://127.0.0.1:")
        sentinel = Sentinel(ha.sentinel_addrs(), socket_timeout=1, sentinel_kwargs={"socket_timeout": 1})
        master = sentinel.master_for("cronring", socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
        try:
            await master.set("before", "1")
            assert await master.execute_command("WAIT", 1, 2000) == 1  # on the replica before the kill
            old = await ha.primary_port()
            t0 = time.monotonic()
            assert await ha.kill_primary() == old

            async def write() -> bool:
                return bool(await master.set("after", "2"))

            await wait_for(write, 30, "a write through master_for after the failover", interval=0.1)
            write_s = time.monotonic() - t0
            new = await ha.wait_failover(old, timeout=30)
            assert new != old
            assert await master.get("before") == "1"
            assert await master.get("after") == "2"
            print(f"Redis: kill -> successful write {write_s:.2f}s; Sentinels agree on {new} at "
                  f"{time.monotonic() - t0:.2f}s")

            t1 = time.monotonic()
            assert await ha.restart_old_primary_as_replica() == old
            print(f"Redis: old primary back as replica in {time.monotonic() - t1:.2f}s")
        finally:
            await master.aclose()
            for s in sentinel.sentinels:
                await s.aclose()


async def test_mariadb_semi_sync_promotion() -> None:
    async with MariaDBHA(ARTIFACTS / "logs" / f"ha-mariadb-{time.time_ns()}") as ha:
        print(f"\nMariaDBHA started in {ha.start_seconds:.2f}s (install-db {ha.install_seconds:.2f}s); {ha.url('cronring')}")
        assert ha.primary is not None and ha.replica is not None
        primary, replica = ha.primary, ha.replica
        await primary.query("CREATE DATABASE cronring",
                            "CREATE TABLE cronring.t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB",
                            "INSERT INTO cronring.t VALUES (1, 'before')")

        async def on_replica(row_id: int) -> bool:
            return bool(await replica.query(("SELECT v FROM cronring.t WHERE id = %s", (row_id,))))

        await wait_for(lambda: on_replica(1), 10, "row 1 on the replica")
        s = await primary.status("Rpl_semi_sync_master_%")
        assert s["Rpl_semi_sync_master_status"] == "ON" and s["Rpl_semi_sync_master_clients"] == "1"
        assert int(s["Rpl_semi_sync_master_yes_tx"]) >= 3 and s["Rpl_semi_sync_master_no_tx"] == "0"
        assert (await replica.status("Rpl_semi_sync_slave_status"))["Rpl_semi_sync_slave_status"] == "ON"
        assert (await replica.query("SELECT @@read_only AS ro"))[0]["ro"] == 1

        t0 = time.monotonic()
        old = await ha.kill_primary()
        new = await ha.promote_replica()
        assert new == replica.port != old and ha.primary is replica
        await replica.query("INSERT INTO cronring.t VALUES (2, 'after')")
        print(f"MariaDB: kill -> promoted -> insert {time.monotonic() - t0:.2f}s")
        rows = await replica.query("SELECT id FROM cronring.t ORDER BY id")
        assert [r["id"] for r in rows] == [1, 2]

        t1 = time.monotonic()
        assert await ha.demote_old_primary_as_replica() == old
        assert ha.replica is not None
        demoted = ha.replica
        await replica.query("INSERT INTO cronring.t VALUES (3, 'semi-sync again')")
        await wait_for(lambda: demoted.query("SELECT id FROM cronring.t WHERE id = 3"), 10, "row 3 on the old primary")
        print(f"MariaDB: old primary back as replica in {time.monotonic() - t1:.2f}s")
