"""Highly available backends as real private processes on loopback, for failover tests.

RedisHA: a redis-server primary, one replica and three Sentinels (quorum 2).
MariaDBHA: a mariadbd primary and one semi-synchronous (AFTER_SYNC) GTID replica.

Both keep their data in a temp dir (removed by stop()) and their logs in `log_dir`; stop() kills every
process they started, also after a start that failed half way; both are usable as `async with`.
Waiting is always on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiomysql
import redis.asyncio as aioredis

from tests.harness import Proc, free_port, wait_for

HOST = "127.0.0.1"


async def _kill(proc: Proc | None, timeout: float = 10) -> None:
    """SIGKILL and reap without blocking the loop."""
    if proc is None or proc.popen is None:
        return
    proc.signal(signal.SIGKILL)
    await wait_for(lambda: not proc.alive(), timeout, f"{proc.name} to die")


def _check_alive(proc: Proc) -> None:
    if not proc.alive():
        raise AssertionError(f"{proc.name} exited ({proc.popen.returncode if proc.popen else None}):\n"
                             f"{proc.log()[-3000:]}")


# ---------------------------------------------------------------------------------------------- Redis


async def _redis_cmd(port: int, *args: Any) -> Any:
    r = aioredis.Redis(host=HOST, port=port, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
    try:
        return await r.execute_command(*args)
    finally:
        await r.aclose()


def _pairs(reply: dict[str, Any] | list[Any]) -> dict[str, Any]:
    """A Sentinel state reply as a dict (redis-py may or may not have parsed the flat list already)."""
    return dict(reply) if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))


class _Backend:
    """``async with``: started on entry, every process stopped on exit (or when the start fails)."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()


class RedisHA(_Backend):
    """A private Redis primary + replica watched by three Sentinels; no persistence.

    `sentinel_url()` is the `redis+sentinel://…` URL for the service; `kill_primary()` SIGKILLs whichever
    server the Sentinels currently report as primary, `wait_failover()` returns the new primary's port.
    """

    def __init__(self, log_dir: Path, service: str = "cronring", *, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 3000) -> None:
        self.log_dir = log_dir
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.dir: Path | None = None
        self.servers: dict[int, Proc] = {}  # redis-servers by port (a killed one stays until restarted)
        self.sentinels: dict[int, Proc] = {}
        self.killed: list[int] = []  # ports of primaries killed by kill_primary(), newest last
        self.start_seconds: float | None = None

    # -- lifecycle

    def _server(self, port: int, replicaof: int | None = None) -> Proc:
        assert self.dir is not None
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        args = [exe, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--dbfilename", f"dump-{port}.rdb", "--daemonize", "no",
                "--replica-priority", "100", "--min-replicas-to-write", "0", "--replica-read-only", "yes",
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        if replicaof is not None:
            args += ["--replicaof", HOST, str(replicaof)]
        return Proc(f"redis-{port}", args, dict(os.environ), self.log_dir / f"redis-{port}.log")

    def _sentinel(self, port: int, primary: int) -> Proc:
        assert self.dir is not None
        conf = self.dir / f"sentinel-{port}.conf"  # Sentinel rewrites its own conf: one writable file each
        s = self.service
        conf.write_text("\n".join([
            f"port {port}", f"bind {HOST}", "daemonize no", f'dir "{self.dir}"', 'logfile ""',
            "sentinel resolve-hostnames no",
            f"sentinel monitor {s} {HOST} {primary} 2",
            f"sentinel down-after-milliseconds {s} {self.down_after_ms}",
            f"sentinel failover-timeout {s} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {s} 1",
        ]) + "\n")
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        return Proc(f"sentinel-{port}", [exe, str(conf), "--sentinel"], dict(os.environ),
                    self.log_dir / f"sentinel-{port}.log")

    async def start(self, timeout: float = 30) -> None:
        t0 = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="cronring-redis-ha-"))
        base = free_port(5)
        primary, replica = base, base + 1
        self.servers[primary] = self._server(primary).start()
        self.servers[replica] = self._server(replica, replicaof=primary).start()
        # The replica is linked before the Sentinels start, so their first INFO of the primary lists it
        # (otherwise discovery waits for the next 10 s INFO period).
        await self._wait_replica_linked(replica, primary, timeout)
        for port in range(base + 2, base + 5):
            self.sentinels[port] = self._sentinel(port, primary).start()
        await self._wait_sentinels(primary, {replica}, timeout)
        self.start_seconds = time.monotonic() - t0

    async def stop(self) -> None:
        procs = [*self.sentinels.values(), *self.servers.values()]
        await asyncio.gather(*(_kill(p) for p in procs), return_exceptions=True)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # -- addresses
    @property
    def sentinel_ports(self) -> list[int]:
        return sorted(self.sentinels)

    def sentinel_url(self, db: int = 0, service: str | None = None) -> str:
        hosts = ",".join(f"{HOST}:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{service or self.service}/{db}"

    def sentinel_addrs(self) -> list[tuple[str, int]]:
        """For redis.asyncio.sentinel.Sentinel(...)."""
        return [(HOST, p) for p in self.sentinel_ports]

    @staticmethod
    def url(port: int, db: int = 0) -> str:
        return f"redis://{HOST}:{port}/{db}"

    # -- state
    async def sentinel_master(self, sentinel_port: int) -> dict[str, Any]:
        return _pairs(await _redis_cmd(sentinel_port, "SENTINEL", "MASTER", self.service))

    async def sentinel_replicas(self, sentinel_port: int) -> list[dict[str, Any]]:
        return [_pairs(r) for r in await _redis_cmd(sentinel_port, "SENTINEL", "REPLICAS", self.service)]

    async def primary_port(self) -> int:
        """The primary's port as the first Sentinel that answers reports it."""
        last: Exception | None = None
        for sp, proc in sorted(self.sentinels.items()):
            if not proc.alive():
                continue
            try:
                addr = await _redis_cmd(sp, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            except Exception as e:
                last = e
                continue
            if addr:
                return int(addr[1])
        raise AssertionError(f"no Sentinel reports a primary for {self.service}" + (f" (last error: {last!r})" if last else ""))

    async def _wait_replica_linked(self, replica: int, primary: int, timeout: float) -> None:
        async def linked() -> bool:
            _check_alive(self.servers[replica])
            _check_alive(self.servers[primary])
            role = await _redis_cmd(replica, "ROLE")
            return role[0] == "slave" and int(role[2]) == primary and role[3] == "connected"

        await wait_for(linked, timeout, f"redis {replica} to be a linked replica of {primary}")

    async def _wait_sentinels(self, primary: int, replicas: set[int], timeout: float) -> None:
        """Every live Sentinel reports `primary` (up), knows the others, and sees `replicas` up and linked."""
        others = len(self.sentinels) - 1

        async def agreed() -> bool:
            for sp, proc in self.sentinels.items():
                _check_alive(proc)
                m = await self.sentinel_master(sp)
                flags = set(m["flags"].split(","))
                if int(m["port"]) != primary or flags & {"s_down", "o_down", "disconnected"}:
                    return False
                if int(m["num-other-sentinels"]) != others or int(m["num-slaves"]) < len(replicas):
                    return False
                up = {int(r["port"]) for r in await self.sentinel_replicas(sp)
                      if r.get("master-link-status") == "ok" and not set(r["flags"].split(",")) & {"s_down", "disconnected"}}
                if not replicas <= up:
                    return False
            return True

        await wait_for(agreed, timeout, f"Sentinels to agree on primary {primary} with replicas {sorted(replicas)}",
                       interval=0.1)

    # -- faults
    async def kill_primary(self) -> int:
        """SIGKILL the current primary; return its port."""
        port = await self.primary_port()
        await _kill(self.servers[port])
        self.killed.append(port)
        return port

    async def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """The new primary's port, once every live Sentinel names the same one (not `old_port`) and it
        answers ROLE as master."""

        async def promoted() -> int | None:
            ports = set()
            for sp, proc in self.sentinels.items():
                if proc.alive():
                    addr = await _redis_cmd(sp, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                    ports.add(int(addr[1]) if addr else None)
            if len(ports) != 1:
                return None
            port = ports.pop()
            if port is None or port == old_port:
                return None
            role = await _redis_cmd(port, "ROLE")
            return port if role[0] == "master" else None

        return await wait_for(promoted, timeout, f"Sentinels to fail over from {old_port}", interval=0.1)

    async def restart_old_primary_as_replica(self, timeout: float = 30) -> int:
        """Restart the last primary killed by kill_primary() as a replica of the current primary (empty: no
        persistence) and wait until every Sentinel lists it as a linked replica; return its port.

        It is started with --replicaof the current primary rather than as a primary for Sentinel to
        convert: an empty restarted primary would otherwise accept writes for a moment."""
        old = self.killed[-1]
        primary = await self.primary_port()
        assert primary != old, "no failover happened since the primary was killed"
        self.servers[old] = self._server(old, replicaof=primary).start()
        self.killed.pop()
        await self._wait_replica_linked(old, primary, timeout)
        await self._wait_sentinels(primary, {old}, timeout)
        return old


# -------------------------------------------------------------------------------------------- MariaDB


class MariaDBServer(Proc):
    """One mariadbd with its own datadir, socket and pid file; /etc/mysql is ignored (--no-defaults)."""

    def __init__(self, name: str, port: int, server_id: int, datadir: Path, rundir: Path, log_dir: Path, *,
                 read_only: bool) -> None:
        self.port = port
        self.server_id = server_id
        self.datadir = datadir
        self.rundir = rundir
        self.read_only = read_only
        super().__init__(name, [], dict(os.environ), log_dir / f"mariadb-{name}-{port}.log")
        self.args = [shutil.which("mariadbd") or "/usr/sbin/mariadbd", *self.options()]

    def options(self) -> list[str]:
        return [
            "--no-defaults", "--user=root", f"--datadir={self.datadir}", f"--port={self.port}", f"--bind-address={HOST}",
            f"--socket={self.rundir}/{self.name}.sock", f"--pid-file={self.rundir}/{self.name}.pid",
            "--skip-name-resolve", "--performance-schema=OFF", *SMALL, f"--tmpdir={_tmpdir(self.datadir)}",
            f"--server-id={self.server_id}", "--log-bin=mariadb-bin", "--relay-log=relay-bin", "--binlog-format=ROW",
            "--gtid-strict-mode=1", "--log-slave-updates", "--skip-slave-start",
            # Semi-sync is built into MariaDB >= 10.3 (no plugin). The master side is enabled on the
            # primary only: enabled on a server with no replica, every commit would wait for the timeout.
            "--rpl-semi-sync-slave-enabled=ON",
            f"--rpl-semi-sync-master-enabled={'OFF' if self.read_only else 'ON'}",
            "--rpl-semi-sync-master-wait-point=AFTER_SYNC", "--rpl-semi-sync-master-timeout=10000",
            f"--read-only={'ON' if self.read_only else 'OFF'}",
        ]

    def restart(self, *, read_only: bool) -> MariaDBServer:
        """A fresh process on the same datadir and port (the old one must be dead)."""
        assert not self.alive()
        log_dir = self.log_path.parent
        return MariaDBServer(self.name, self.port, self.server_id, self.datadir, self.rundir, log_dir,
                             read_only=read_only).start()

    def url(self, database: str = "") -> str:
        return f"mysql://root@{HOST}:{self.port}/{database}"

    async def connect(self, database: str | None = None, timeout: float = 5) -> aiomysql.Connection:
        return await aiomysql.connect(host=HOST, port=self.port, user="root", password="", db=database,
                                      autocommit=True, connect_timeout=timeout)

    async def query(self, *statements: str | tuple[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
        """Run statements in order on one connection; the rows of the last one."""
        conn = await self.connect()
        try:
            rows: list[dict[str, Any]] = []
            async with conn.cursor(aiomysql.DictCursor) as cur:
                for st in statements:
                    sql, params = (st, None) if isinstance(st, str) else st
                    await cur.execute(sql, params)
                    rows = list(await cur.fetchall())
            return rows
        finally:
            conn.close()

    async def status(self, like: str) -> dict[str, str]:
        return {r["Variable_name"]: r["Value"] for r in await self.query(("SHOW GLOBAL STATUS LIKE %s", (like,)))}

    async def ready(self, timeout: float = 60) -> None:
        async def answers() -> bool:
            _check_alive(self)
            return bool(await self.query("SELECT 1"))

        await wait_for(answers, timeout, f"{self.name} ({self.port}) to answer", interval=0.1)


def _tmpdir(datadir: Path) -> Path:
    path = datadir.parent / f"tmp-{datadir.name}"
    path.mkdir(exist_ok=True)
    return path


SMALL = ["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--innodb-log-buffer-size=4M",
         "--key-buffer-size=1M", "--max-connections=200"]


async def _install_db(datadir: Path, log: Path) -> None:
    exe = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
    p = await asyncio.create_subprocess_exec(
        exe, "--no-defaults", "--user=root", f"--datadir={datadir}", "--auth-root-authentication-method=normal",
        "--skip-test-db", "--skip-name-resolve", *SMALL[:2],
        # its own temporary directory: two installs (or a server) sharing /tmp collide on temp table names
        f"--tmpdir={_tmpdir(datadir)}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await p.communicate()
    await asyncio.to_thread(log.write_bytes, out)
    if p.returncode != 0:
        raise AssertionError(f"mariadb-install-db {datadir} failed ({p.returncode}):\n{out.decode(errors='replace')[-3000:]}")


class MariaDBHA(_Backend):
    """A private MariaDB primary + one semi-synchronous GTID replica (read_only), root without a password.

    `primary`/`replica` are the current roles: promote_replica() swaps them (the old primary, dead,
    becomes `replica` until demote_old_primary_as_replica())."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.dir: Path | None = None
        self.servers: list[MariaDBServer] = []  # in URL order, fixed for the pair's life
        self.primary: MariaDBServer | None = None
        self.replica: MariaDBServer | None = None
        self.start_seconds: float | None = None
        self.install_seconds: float | None = None


    async def start(self, timeout: float = 60) -> None:
        t0 = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="crmdb-"))  # short: the socket paths live here
        base = free_port(2)
        names = [("a", base, 1), ("b", base + 1, 2)]
        await asyncio.gather(*(_install_db(self.dir / n, self.log_dir / f"mariadb-install-{n}.log") for n, _, _ in names))
        self.install_seconds = time.monotonic() - t0
        for (name, port, sid), read_only in zip(names, (False, True), strict=True):
            self.servers.append(MariaDBServer(name, port, sid, self.dir / name, self.dir, self.log_dir,
                                              read_only=read_only).start())
        self.primary, self.replica = self.servers
        await asyncio.gather(*(s.ready(timeout) for s in self.servers))
        await self._replicate(self.replica, self.primary, "slave_pos", timeout)
        self.start_seconds = time.monotonic() - t0

    async def _replicate(self, replica: MariaDBServer, primary: MariaDBServer, use_gtid: str, timeout: float) -> None:
        await replica.query(
            f"CHANGE MASTER TO MASTER_HOST='{HOST}', MASTER_PORT={primary.port}, MASTER_USER='root', "
            f"MASTER_PASSWORD='', MASTER_USE_GTID={use_gtid}, MASTER_CONNECT_RETRY=1",
            "START SLAVE")

        async def running() -> bool:
            st = (await replica.query("SHOW SLAVE STATUS"))[0]
            if st["Last_IO_Errno"] or st["Last_SQL_Errno"]:
                raise AssertionError(f"replication {primary.name}->{replica.name} failed: IO {st['Last_IO_Error']!r} "
                                     f"SQL {st['Last_SQL_Error']!r}")
            if st["Slave_IO_Running"] != "Yes" or st["Slave_SQL_Running"] != "Yes":
                return False
            s = await primary.status("Rpl_semi_sync_master_%")
            return s["Rpl_semi_sync_master_clients"] == "1" and s["Rpl_semi_sync_master_status"] == "ON"

        await wait_for(running, timeout, f"semi-sync replication {primary.name}->{replica.name}", interval=0.1)

    async def stop(self) -> None:
        await asyncio.gather(*(_kill(s) for s in self.servers), return_exceptions=True)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # -- addresses
    def url(self, database: str) -> str:
        """Both servers, in their fixed start order (not by role)."""
        return "mysql://root@" + ",".join(f"{HOST}:{s.port}" for s in self.servers) + f"/{database}"

    def primary_url(self, database: str) -> str:
        assert self.primary is not None
        return self.primary.url(database)

    def replica_url(self, database: str) -> str:
        assert self.replica is not None
        return self.replica.url(database)

    # -- faults and operator actions
    async def kill_primary(self) -> int:
        """SIGKILL the primary; return its port."""
        assert self.primary is not None
        await _kill(self.primary)
        return self.primary.port

    async def promote_replica(self, timeout: float = 30) -> int:
        """Make the replica the primary, as an operator would; return its port.

        The IO thread is stopped first and the SQL thread left to apply everything already received
        (semi-sync acknowledged transactions may sit unapplied in the relay log, which RESET SLAVE ALL
        would delete)."""
        new, old = self.replica, self.primary
        assert new is not None and old is not None
        await new.query("STOP SLAVE IO_THREAD")
        st = (await new.query("SHOW SLAVE STATUS"))[0]
        io_pos = st["Gtid_IO_Pos"]
        if io_pos:
            res = await new.query(("SELECT MASTER_GTID_WAIT(%s, %s) AS r", (io_pos, timeout)))
            if res[0]["r"] != 0:
                st = (await new.query("SHOW SLAVE STATUS"))[0]
                raise AssertionError(f"{new.name} did not apply its relay log up to {io_pos} "
                                     f"(SQL error: {st['Last_SQL_Error']!r})")
        await new.query(
            "STOP SLAVE", "RESET SLAVE ALL",
            # Semi-sync master for symmetry; with no replica connected it must not make commits wait.
            "SET GLOBAL rpl_semi_sync_master_wait_no_slave=OFF",
            "SET GLOBAL rpl_semi_sync_master_enabled=ON",
            "SET GLOBAL read_only=OFF")
        self.primary, self.replica = new, old
        return new.port

    async def demote_old_primary_as_replica(self, timeout: float = 60) -> int:
        """Restart the dead old primary (crash recovery) read_only as a semi-sync replica of the current
        primary, from its own GTID position (current_pos); return its port. Fails loudly if the old
        primary has transactions the new one lacks (gtid_strict_mode)."""
        old, primary = self.replica, self.primary
        assert old is not None and primary is not None and not old.alive()
        new_proc = old.restart(read_only=True)
        self.servers[self.servers.index(old)] = new_proc
        self.replica = new_proc
        await new_proc.ready(timeout)
        await self._replicate(new_proc, primary, "current_pos", timeout)
        return new_proc.port
