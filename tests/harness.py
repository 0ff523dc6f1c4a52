"""Real processes for tests: cronring nodes, the receiver, private redis-servers, a TCP proxy.

Each Cluster has its own MariaDB database and Redis namespace, and removes them
when it is closed. Waiting is always on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import aiomysql
import pymysql
import redis.asyncio as aioredis

warnings.filterwarnings("ignore", category=pymysql.Warning)  # DROP DATABASE IF EXISTS notes
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
REDIS_URL = os.environ.get("CRONRING_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get("CRONRING_TEST_DATABASE_URL", "mysql://root@127.0.0.1:3306/cronring")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(count: int = 1) -> int:
    """The first of `count` consecutive free ports, chosen *below* the kernel's ephemeral range: a port
    the kernel handed out (bind to 0) is free now, but any outgoing connection may take it (or its
    neighbour, for `--base-port N` that uses N+1…) before the process that is meant to listen on it
    starts; ports below the range are only ever taken by someone binding them on purpose."""
    high = _ephemeral_low() - count
    rng = secrets.SystemRandom()
    for _ in range(200):
        first = rng.randrange(10000, high)
        if all(_bindable(first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports below {high}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def db_url(database: str, *, host: str | None = None, port: int | None = None) -> str:
    u = urlparse(DATABASE_URL)
    auth = u.netloc.rsplit("@", 1)[0] + "@" if "@" in u.netloc else ""
    return f"mysql://{auth}{host or u.hostname}:{port or u.port or 3306}/{database}"


async def wait_for(pred: Callable[[], Awaitable[Any]] | Callable[[], Any], timeout: float, what: str,
                   interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            res = pred()
            if asyncio.iscoroutine(res):
                res = await res
            if res:
                return res
        except Exception as e:  # the condition may raise while a server starts
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))
        await asyncio.sleep(interval)


class Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.cwd = cwd  # where it runs: `python -m node` imports the node/ found there (an older release's checkout)
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.popen = subprocess.Popen(self.args, env=self.env, stdout=fh, stderr=subprocess.STDOUT, cwd=self.cwd,
                                      start_new_session=True)
        fh.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass

    async def terminate(self, timeout: float = 30) -> int | None:
        if not self.alive():
            return self.popen.returncode if self.popen else None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        await wait_for(lambda: not self.alive(), timeout, f"{self.name} to exit")
        return self.popen.returncode if self.popen else None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Node(Proc):
    def __init__(self, name: str, port: int, env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> None:
        super().__init__(name, [sys.executable, "-m", "node"], env, log_path, cwd)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


class Receiver(Proc):
    def __init__(self, port: int, log_dir: Path, secrets_: str = "") -> None:
        env = {**os.environ, "RECEIVER_SIGNING_SECRET": secrets_}
        super().__init__("receiver", [sys.executable, "-m", "receiver", "--port", str(port), "--log-file",
                                      str(log_dir / "deliveries.log")], env, log_dir / "receiver.out")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


class RedisServer(Proc):
    """A private redis-server owned by one test (it may restart it empty)."""

    def __init__(self, port: int, log_dir: Path) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        super().__init__("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                         dict(os.environ), log_dir / f"redis-{port}.log")
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    async def ready(self) -> None:
        async def ping() -> bool:
            r = aioredis.from_url(self.url)
            try:
                return bool(await r.ping())
            finally:
                await r.aclose()

        await wait_for(ping, 10, "private redis to answer")


class TcpProxy:
    """A TCP proxy the test controls: cut() drops every connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.open = True

    async def start(self) -> TcpProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, uw}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    if not self.open:
                        break
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()
                self.writers.discard(w)

        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))

    def cut(self) -> None:
        self.open = False
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


class Cluster:
    """Nodes sharing one database and one Redis namespace, plus a receiver witness."""

    def __init__(self, name: str, *, redis_url: str = REDIS_URL, **node_env: str) -> None:
        self.name = name
        self.tag = f"{name}_{os.getpid()}_{secrets.token_hex(3)}"
        self.database = f"cronring_t_{self.tag}"[:64]
        self.namespace = f"cronring-test:{self.tag}"
        self.redis_url = redis_url
        self.db_host: str | None = None
        self.db_port: int | None = None
        self.db_private = False  # True when db_host/db_port is a private server rather than a proxy
        self.database_url: str | None = None  # the nodes' CRONRING_DATABASE_URL, when not one host (HA tests)
        self.dir = ARTIFACTS / "logs" / self.tag
        self.nodes: dict[str, Node] = {}
        self.receiver: Receiver | None = None
        self.node_env = {
            "CRONRING_HEARTBEAT_INTERVAL": "0.5", "CRONRING_MEMBER_TTL": "2", "CRONRING_RESYNC_INTERVAL": "2",
            "CRONRING_SHUTDOWN_GRACE": "5", "CRONRING_LOG_FORMAT": "json", **node_env,
        }
        self.http: aiohttp.ClientSession | None = None

    # -- processes
    def env_for(self, node_id: str, port: int, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRONRING_")}
        env.update(self.node_env)
        env.update({
            "CRONRING_REDIS_URL": self.redis_url,
            "CRONRING_DATABASE_URL": self.database_url or db_url(self.database, host=self.db_host, port=self.db_port),
            "CRONRING_NAMESPACE": self.namespace, "CRONRING_NODE_ID": node_id, "CRONRING_PORT": str(port),
        })
        env.update(extra)
        return env

    async def start_node(self, node_id: str, *, wait: bool = True, cwd: Path = ROOT, **extra: str) -> Node:
        """``cwd``: the checkout whose node/ it runs (another release's, for an upgrade test)."""
        port = free_port()
        node = Node(node_id, port, self.env_for(node_id, port, **extra), self.dir / f"{node_id}.log", cwd)
        self.nodes[node_id] = node
        node.start()
        if wait:
            await self.wait_healthy(node)
        return node

    async def start_nodes(self, *node_ids: str) -> list[Node]:
        """Start several nodes at once; return when all are healthy and see each other."""
        nodes = [await self.start_node(n, wait=False) for n in node_ids]
        for node in nodes:
            await self.wait_healthy(node)
        await self.wait_members(set(self.nodes))
        return nodes

    async def restart_node(self, node_id: str, **extra: str) -> Node:
        old = self.nodes[node_id]
        node = Node(node_id, old.port, {**old.env, **extra}, old.log_path, old.cwd)
        self.nodes[node_id] = node
        node.start()
        await self.wait_healthy(node)
        return node

    async def start_receiver(self, secrets_: str = "") -> Receiver:
        self.receiver = Receiver(free_port(), self.dir, secrets_).start()
        await wait_for(lambda: self.get_json(f"{self.receiver.url}/health"), 15, "receiver to answer")
        return self.receiver

    async def wait_healthy(self, node: Node, timeout: float = 30) -> None:
        async def ok() -> bool:
            if not node.alive():
                raise AssertionError(f"{node.name} exited:\n{node.log()[-3000:]}")
            async with self.session().get(f"{node.url}/api/health") as r:
                return r.status == 200

        await wait_for(ok, timeout, f"{node.name} to be healthy")

    async def wait_members(self, expected: set[str], timeout: float = 15, via: Node | None = None) -> dict[str, Any]:
        async def check() -> Any:
            for n in ([via] if via else [n for n in self.nodes.values() if n.alive()]):
                c = await self.get_json(f"{n.url}/api/cluster")
                if {m["id"] for m in c["members"]} != expected:
                    return None
            return True

        return await wait_for(check, timeout, f"members == {sorted(expected)}")

    # -- http
    def session(self) -> aiohttp.ClientSession:
        if self.http is None or self.http.closed:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        return self.http

    async def get_json(self, url: str, **kw: Any) -> Any:
        async with self.session().get(url, **kw) as r:
            r.raise_for_status()
            return await r.json()

    async def request(self, method: str, url: str, **kw: Any) -> tuple[int, Any, Any]:
        async with self.session().request(method, url, **kw) as r:
            text = await r.text()
            try:
                import json

                body = json.loads(text) if text else None
            except ValueError:
                body = text
            return r.status, body, r.headers

    def any_node(self) -> Node:
        return next(n for n in self.nodes.values() if n.alive())

    async def create_job(self, via: Node | None = None, **fields: Any) -> dict[str, Any]:
        node = via or self.any_node()
        payload = {"uri": f"{self.receiver.url}/webhook" if self.receiver else "http://127.0.0.1:9/", **fields}
        status, body, _ = await self.request("POST", f"{node.url}/api/crons", json=payload)
        assert status == 201, (status, body)
        return body

    async def create_jobs_bulk(self, n: int, **fields: Any) -> list[str]:
        """Many jobs straight into MariaDB (through the store), then a re-sync picks them up."""
        from node.model.jobs import validate
        from node.store import DatabaseURL, Store

        store = Store(DatabaseURL.parse(db_url(self.database, host=self.db_host, port=self.db_port)))
        await store.start()
        job = validate({"uri": f"{self.receiver.url}/webhook", **fields})
        ids = await store.jobs.create_many([job] * n)
        await store.close()
        return ids

    async def deliveries(self) -> list[dict[str, Any]]:
        assert self.receiver is not None
        return await self.get_json(f"{self.receiver.url}/deliveries")

    async def executions(self) -> list[dict[str, Any]]:
        conn = await self.db_conn()
        try:
            async with conn.cursor(aiomysql.DictCursor) as cur:
                await cur.execute("SELECT * FROM executions")
                return list(await cur.fetchall())
        finally:
            conn.close()

    async def db_conn(self) -> aiomysql.Connection:
        """A direct connection to the cluster's database (through no test proxy)."""
        u = urlparse(DATABASE_URL)
        host, port = (self.db_host, self.db_port) if self.db_private else (u.hostname, u.port or 3306)
        return await aiomysql.connect(host=host, port=port, user=u.username or "root",
                                      password=u.password or "", db=self.database, autocommit=True)

    # -- teardown
    async def close(self) -> None:
        for n in self.nodes.values():
            n.signal(signal.SIGCONT)
            n.kill()
        if self.receiver is not None:
            self.receiver.kill()
        if self.http is not None:
            await self.http.close()
        u = urlparse(DATABASE_URL)
        try:
            conn = await aiomysql.connect(host=u.hostname, port=u.port or 3306, user=u.username or "root",
                                          password=u.password or "", autocommit=True)
            async with conn.cursor() as cur:
                await cur.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
            conn.close()
        except Exception:
            pass
        from node.cluster import redisconn

        r = redisconn.connect(self.redis_url, socket_timeout=2, socket_connect_timeout=2)  # Sentinel URLs too
        try:
            async with asyncio.timeout(20):
                keys = [k async for k in r.scan_iter(match=f"{self.namespace}:*", count=1000)]
                for i in range(0, len(keys), 500):
                    await r.delete(*keys[i : i + 500])
        except Exception:
            pass
        finally:
            await redisconn.close(r)
