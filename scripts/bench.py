"""cronring benchmark: a real 3-node cluster, the receiver, MariaDB and Redis on this machine.

Prints one JSON line per scenario, then a table. Every cluster figure is printed beside
"the floor": one plain asyncio + aiohttp process sending the same requests to the same
receiver at the same instants with no coordination at all.

    scripts/bench [--quick] [--only fire,floor,rare,failover,api,scale,memory,stream,glance] [--seconds N] [--tree DIR]
    scripts/bench --only scale --jobs 1000000 --nodes 5

A fire window is a whole minute unless ``--seconds`` says otherwise: every node audits its jobs' last minute
once a minute, so a shorter window holds that audit or not by luck (a 15 s window at 100 fires/s moved by
0.1 CPU-s per 1,000 fires with it). ``--tree DIR`` runs the nodes from another checkout (an earlier release,
``git worktree add DIR release-2``) with this bench, its receiver and its floor: two trees compared the same
hour, pair by pair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import aiomysql  # noqa: E402

from tests.harness import DATABASE_URL, Cluster, wait_for  # noqa: E402
from tests.harness import ROOT as TREE  # noqa: E402

NODE_TREE = TREE  # the checkout whose node/ the cluster runs (--tree)

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))], 1)


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def emit(record: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(record), flush=True)
    return record


# ---------------------------------------------------------------------------- the floor

async def floor_sender(url: str, rate: int, duration: int, mode: str = "prepared") -> dict[str, Any]:
    """Send ``rate`` requests at every whole second for ``duration`` seconds; no coordination at all.

    ``prepared`` (the floor): the fastest plain sender this machine allows, as the node runs (uvloop): one
    session, kept-alive connections, every request's headers and body made before its second, and every send
    task made before it too and started at the instant by one timer (the node claims ahead and arms a timer the
    same way). ``plain``: the floor before issue 22 (made at the instant, JSON encoded per request), to show
    what the change alone moves."""
    conn = aiohttp.TCPConnector(limit=max(100, rate), limit_per_host=0, ttl_dns_cache=None, enable_cleanup_closed=False)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=conn, auto_decompress=False, skip_auto_headers=("User-Agent",)) as s:
        start = int(time.time()) + 3
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        lateness: list[float] = []

        def prepare(i: int, tick: int) -> tuple[dict[str, str], bytes]:
            sched = datetime.fromtimestamp(tick, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            return ({"Content-Type": "application/json", "X-Cron-Job-Id": f"floor-{i}",
                     "X-Cron-Execution-Id": uuid.uuid4().hex, "X-Cron-Scheduled-At": sched, "X-Cron-Fence": "1",
                     "X-Cron-Attempt": "1"}, b'{"i": %d}' % i)

        async def send(go: asyncio.Future[None], tick: int, headers: dict[str, str], body: bytes) -> None:
            await go
            lateness.append((time.time() - tick) * 1000)
            async with s.post(url, data=body, headers=headers) as r:
                await r.read()

        async def plain(i: int, tick: int) -> None:
            sched = datetime.fromtimestamp(tick, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            lateness.append((time.time() - tick) * 1000)
            async with s.post(url, json={"i": i}, headers={
                "X-Cron-Job-Id": f"floor-{i}", "X-Cron-Execution-Id": uuid.uuid4().hex, "X-Cron-Scheduled-At": sched,
                "X-Cron-Fence": "1", "X-Cron-Attempt": "1"}) as r:
                await r.read()

        pending: list[asyncio.Task[None]] = []
        # a second before the window warms the connections up, as the node's are by its earlier fires (the
        # receiver counts only the window's, by the floor- prefix and the instant)
        for k in range(-1, duration):
            tick = start + k
            if mode == "plain":
                await asyncio.sleep(max(0.0, tick - time.time()))
                pending.append(asyncio.ensure_future(asyncio.gather(*(plain(i, tick) for i in range(rate)))))
                continue
            # half a second ahead (the node's claim-ahead): the requests and their tasks, waiting on one future
            await asyncio.sleep(max(0.0, tick - 0.5 - time.time()))
            go: asyncio.Future[None] = loop.create_future()
            pending += [asyncio.ensure_future(send(go, tick, *prepare(i, tick))) for i in range(rate)]
            loop.call_at(loop.time() + (tick - time.time()), go.set_result, None)
        await asyncio.gather(*pending)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"sent": rate * (duration + 1), "cpu_s": round(cpu, 3), "send_late_p99_ms": pct(lateness, 99), "start": start,
            "end": start + duration, "mode": mode}


async def run_floor(receiver_url: str, rate: int, duration: int, mode: str = "prepared") -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "floor", "--url", f"{receiver_url}/hooks/floor", "--rate", str(rate),
        "--duration", str(duration), "--mode", mode, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return json.loads(out.decode().strip().splitlines()[-1])


def receiver_view(deliveries: list[dict[str, Any]], start: int, end: int, prefix: str | None = None) -> dict[str, Any]:
    by_tick: dict[tuple[str, str], set[str]] = defaultdict(set)
    late: list[float] = []
    for d in deliveries:
        if not d["scheduledAt"] or (prefix and not (d["jobId"] or "").startswith(prefix)):
            continue
        t = ts(d["scheduledAt"]).timestamp()
        if start <= t < end:
            by_tick[(d["jobId"], d["scheduledAt"])].add(d["executionId"])
            if d["latenessMs"] is not None:
                late.append(d["latenessMs"])
    return {"ticks": len(by_tick), "duplicates": sum(1 for v in by_tick.values() if len(v) > 1),
            "late_p50_ms": pct(late, 50), "late_p99_ms": pct(late, 99), "late_max_ms": pct(late, 100)}


# ---------------------------------------------------------------------------- scenarios

async def start_cluster(name: str, jobs: int, nodes: int = 3, schedule: str = "* * * * * *", **env: str) -> tuple[Cluster, list[str]]:
    c = Cluster(name, CRONRING_HEARTBEAT_INTERVAL="1", CRONRING_MEMBER_TTL="3", CRONRING_RESYNC_INTERVAL="5",
                CRONRING_LOG_LEVEL="info", **env)
    await c.start_receiver()
    # the jobs exist before the nodes start (through the store, as an import would)
    await c.start_node(f"{name}-1", cwd=NODE_TREE)
    ids = await c.create_jobs_bulk(jobs, schedule=schedule) if jobs else []
    for i in range(2, nodes + 1):
        await c.start_node(f"{name}-{i}", wait=False, cwd=NODE_TREE)
    for n in c.nodes.values():
        await c.wait_healthy(n)
    await c.wait_members(set(c.nodes))
    return c, ids


async def wait_all_firing(c: Cluster, ids: list[str], timeout: float = 60) -> None:
    want = set(ids)

    async def ok() -> bool:
        stats = await c.get_json(f"{c.receiver.url}/stats")
        return want <= set(stats["jobs"])

    await wait_for(ok, timeout, "every job to fire", interval=0.5)


RARE = ["0 */12 29 2 *", *(f"{m} */12 29 2 *" for m in range(1, 20))]  # rare interval schedules (security round 2)


async def hammer_previews(c: Cluster, stop: asyncio.Event) -> int:
    """A reader asking for 100-fire previews of rare interval schedules, two at a time, on every node."""
    sent = 0
    async with aiohttp.ClientSession() as s:
        async def one(url: str, schedule: str) -> None:
            async with s.post(f"{url}/api/schedules/preview", json={"schedule": schedule, "count": 100}) as r:
                await r.read()

        while not stop.is_set():
            for node in c.nodes.values():
                await asyncio.gather(one(node.url, RARE[sent % len(RARE)]), one(node.url, RARE[(sent + 1) % len(RARE)]))
                sent += 2
            await asyncio.sleep(0.05)
    return sent


async def scenario_fire(rate: int, duration: int, *, rare: bool = False) -> dict[str, Any]:
    """``rate`` every-second jobs; with ``rare``, also jobs with rare interval schedules and a reader
    hammering previews of them during the measurement (their cost must not move the lateness)."""
    c, ids = await start_cluster(f"fire{rate}{'rare' if rare else ''}", rate)
    stop = asyncio.Event()
    hammer: asyncio.Task[int] | None = None
    try:
        if rare:
            for schedule in RARE:
                await c.create_job(schedule=schedule)
        await wait_all_firing(c, ids)
        await asyncio.sleep(2)
        if rare:
            hammer = asyncio.create_task(hammer_previews(c, stop))
        start = int(time.time()) + 1
        await asyncio.sleep(start - time.time())
        cpu0 = {n: cpu_seconds(node.pid) for n, node in c.nodes.items()}
        await asyncio.sleep(duration)
        stop.set()
        previews = await hammer if hammer else 0
        end = start + duration
        cpu = sum(cpu_seconds(node.pid) - cpu0[n] for n, node in c.nodes.items())
        rss = max(rss_mb(node.pid) for node in c.nodes.values())
        await asyncio.sleep(2)
        view = receiver_view(await c.deliveries(), start, end)
        rows = await c.executions()
        send_late = [r["lateness_ms"] for r in rows if r["lateness_ms"] is not None and start <= r["scheduled_at"].replace(tzinfo=UTC).timestamp() < end]
        expected = rate * duration
        for node in c.nodes.values():
            node.kill()
        floor = await run_floor(c.receiver.url, rate, duration)
        fview = receiver_view(await c.deliveries(), floor["start"], floor["end"], prefix="floor-")
        fires = view["ticks"]
        rec = {
            "scenario": "fire", "rate": rate, "seconds": duration, "expected": expected, "delivered": fires,
            **({"rare_jobs": len(RARE), "previews_during": previews} if rare else {}),
            "missed": expected - fires, "duplicates": view["duplicates"],
            "send_late_p50_ms": pct(send_late, 50), "send_late_p99_ms": pct(send_late, 99), "send_late_max_ms": pct(send_late, 100),
            "recv_late_p50_ms": view["late_p50_ms"], "recv_late_p99_ms": view["late_p99_ms"], "recv_late_max_ms": view["late_max_ms"],
            "node_cpu_s_per_1000": round(cpu / max(1, fires) * 1000, 3), "rss_mb_max": round(rss, 1),
            "floor_cpu_s_per_1000": round(floor["cpu_s"] / max(1, floor["sent"]) * 1000, 3),
            "floor_recv_late_p50_ms": fview["late_p50_ms"], "floor_recv_late_p99_ms": fview["late_p99_ms"],
            "floor_recv_late_max_ms": fview["late_max_ms"],
        }
        rec["cpu_ratio"] = round(rec["node_cpu_s_per_1000"] / rec["floor_cpu_s_per_1000"], 2) if rec["floor_cpu_s_per_1000"] else None
        rec["late_p99_ratio"] = round(rec["recv_late_p99_ms"] / rec["floor_recv_late_p99_ms"], 2) if rec["floor_recv_late_p99_ms"] else None
        return emit(rec)
    finally:
        stop.set()
        await c.close()


async def scenario_floor(rate: int, duration: int, pairs: int = 2) -> list[dict[str, Any]]:
    """The floor itself, both ways, alternating (plain, prepared) pair by pair against one receiver: what the
    prepared sender buys (issue 22: the floor must be the fastest plain sender, or the ratios flatter us)."""
    c = Cluster("floor")
    out: list[dict[str, Any]] = []
    try:
        await c.start_receiver()
        for k in range(pairs):
            for mode in ("plain", "prepared"):
                f = await run_floor(c.receiver.url, rate, duration, mode)
                v = receiver_view(await c.deliveries(), f["start"], f["end"], prefix="floor-")
                out.append(emit({"scenario": "floor", "pair": k + 1, "mode": mode, "rate": rate, "delivered": v["ticks"],
                                 "recv_late_p50_ms": v["late_p50_ms"], "recv_late_p99_ms": v["late_p99_ms"],
                                 "recv_late_max_ms": v["late_max_ms"],
                                 "cpu_s_per_1000": round(f["cpu_s"] / max(1, f["sent"]) * 1000, 3)}))
    finally:
        await c.close()
    return out


async def scenario_rare(rate: int, duration: int) -> dict[str, Any]:
    """The same every-second load without and with rare interval schedules plus a reader previewing them,
    in the same run: the receiver's lateness should not move (the loop is never held by schedule work)."""
    plain = await scenario_fire(rate, duration)
    rare = await scenario_fire(rate, duration, rare=True)
    return emit({"scenario": "rare", "rate": rate, "rare_jobs": len(RARE), "previews_during": rare["previews_during"],
                 "recv_late_p99_ms": [plain["recv_late_p99_ms"], rare["recv_late_p99_ms"]],
                 "recv_late_max_ms": [plain["recv_late_max_ms"], rare["recv_late_max_ms"]],
                 "send_late_p99_ms": [plain["send_late_p99_ms"], rare["send_late_p99_ms"]],
                 "delivered": [plain["delivered"], rare["delivered"]], "duplicates": rare["duplicates"],
                 "late_p99_ratio_rare_to_plain": round(rare["recv_late_p99_ms"] / plain["recv_late_p99_ms"], 2)
                 if plain["recv_late_p99_ms"] else None})


async def scenario_idle(duration: int) -> dict[str, Any]:
    """Three nodes with nothing to fire: the fixed cost per second (heartbeats, stream reader, re-syncs)."""
    c, _ = await start_cluster("idle", 0)
    try:
        await asyncio.sleep(3)
        cpu0 = {n: cpu_seconds(node.pid) for n, node in c.nodes.items()}
        await asyncio.sleep(duration)
        cpu = sum(cpu_seconds(node.pid) - cpu0[n] for n, node in c.nodes.items())
        return emit({"scenario": "idle", "nodes": len(c.nodes), "seconds": duration,
                     "cpu_s_per_s_all_nodes": round(cpu / duration, 4)})
    finally:
        await c.close()


async def scenario_failover(rate: int) -> dict[str, Any]:
    c, ids = await start_cluster("failover", rate)
    try:
        await wait_all_firing(c, ids)
        await asyncio.sleep(3)
        start = time.time()
        recent = [d for d in await c.deliveries() if ts(d["arrivedAt"]).timestamp() > start - 1.5]
        owner = {d["jobId"]: d["node"] for d in recent}
        victim = max(c.nodes, key=lambda n: sum(1 for o in owner.values() if o == n))
        victim_jobs = {j for j, o in owner.items() if o == victim}
        killed = time.time()
        c.nodes[victim].kill()

        async def back() -> bool:
            seen = {d["jobId"] for d in await c.deliveries()
                    if d["jobId"] in victim_jobs and d["node"] != victim and ts(d["arrivedAt"]).timestamp() > killed}
            return seen == victim_jobs

        await wait_for(back, 30, "takeover", interval=0.1)
        first: dict[str, float] = {}
        for d in await c.deliveries():
            t = ts(d["arrivedAt"]).timestamp()
            if d["jobId"] in victim_jobs and d["node"] != victim and t > killed:
                first[d["jobId"]] = min(first.get(d["jobId"], t), t)
        await asyncio.sleep(3)
        end = int(time.time()) - 1
        view = receiver_view(await c.deliveries(), int(start), end)
        rows = await c.executions()
        missed_rows = sum(r["missed_count"] for r in rows if r["state"] in ("missed", "skipped")
                          and int(start) <= r["scheduled_at"].replace(tzinfo=UTC).timestamp() < end)
        abandoned = sum(1 for r in rows if r["state"] == "abandoned")
        expected = rate * (end - int(start))
        return emit({"scenario": "failover", "rate": rate, "jobs_moved": len(victim_jobs),
                     "takeover_p50_s": round(statistics.median(v - killed for v in first.values()), 2),
                     "takeover_max_s": round(max(v - killed for v in first.values()), 2),
                     "bound_s": 3 + 1, "expected_ticks": expected, "delivered": view["ticks"],
                     "by_policy_misfire": missed_rows, "abandoned": abandoned,
                     "unexplained": expected - view["ticks"] - missed_rows - abandoned, "duplicates": view["duplicates"]})
    finally:
        await c.close()


def _server_cpu(name: str) -> float | None:
    """A server's CPU seconds so far (``mariadbd``, ``redis-server``), when it runs on this machine and may be read
    (else None)."""
    try:
        pid = int(subprocess.run(["pidof", name], capture_output=True, text=True, check=True).stdout.split()[0])
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError, subprocess.CalledProcessError):
        return None


def _mariadb_cpu() -> float | None:
    return _server_cpu("mariadbd")


async def scenario_api(requests: int) -> list[dict[str, Any]]:
    c, _ = await start_cluster("api", 0)
    out = []
    try:
        urls = [n.url for n in c.nodes.values()]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
            async def run(op: str, targets: list[str], ids: list[str]) -> dict[str, Any]:
                lat: list[float] = []
                made: list[str] = []
                sem = asyncio.Semaphore(32)

                async def one(i: int) -> None:
                    base = targets[i % len(targets)]
                    async with sem:
                        t0 = time.perf_counter()
                        if op == "create":
                            async with s.post(f"{base}/api/crons", json={"uri": f"{c.receiver.url}/webhook", "schedule": "0 3 * * *", "name": f"b{i}"}) as r:
                                made.append((await r.json())["id"])
                        elif op == "list":
                            async with s.get(f"{base}/api/crons?limit=50") as r:
                                await r.read()
                        elif op == "get":
                            async with s.get(f"{base}/api/crons/{ids[i % len(ids)]}") as r:
                                await r.read()
                        else:
                            async with s.put(f"{base}/api/crons/{ids[i % len(ids)]}", json={"name": f"u{i}"}) as r:
                                await r.read()
                        assert r.status < 400, r.status
                        lat.append((time.perf_counter() - t0) * 1000)

                pids = [n.pid for n in c.nodes.values() if n.url in targets]
                cpu0, db0 = sum(cpu_seconds(p) for p in pids), _mariadb_cpu()
                t0 = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(requests)))
                wall = time.perf_counter() - t0
                cpu, db = sum(cpu_seconds(p) for p in pids) - cpu0, _mariadb_cpu()
                return {"ops_per_s": round(requests / wall), "p99_ms": pct(lat, 99), "made": made,
                        # CPU per request: the node(s) asked, and MariaDB (where this machine runs it)
                        "node_cpu_ms_per_op": round(cpu * 1000 / requests, 3),
                        "mariadb_cpu_ms_per_op": round((db - db0) * 1000 / requests, 3) if db and db0 else None}

            ids: list[str] = []
            for label, targets in (("one node", urls[:1]), ("round-robin x3", urls)):
                for op in ("create", "list", "get", "update"):
                    res = await run(op, targets, ids)
                    ids += res.pop("made")
                    out.append(emit({"scenario": "api", "target": label, "op": op, **res}))
    finally:
        await c.close()
    return out


async def fill_jobs(c: Cluster, n: int, schedule: str, chunk: int = 100_000) -> None:
    """``n`` jobs like one made through the store, copied by MariaDB itself (a million in about a minute; the
    API's bulk path is measured on its own): new random ids, the same definition, a history row each."""
    if n <= 0:
        return
    (template,) = await c.create_jobs_bulk(1, schedule=schedule)
    conn = await c.db_conn()
    cols = "name, schedule, time_zone, paused, spec, version, fence, active_since, created_at, updated_at"
    try:
        async with conn.cursor() as cur:
            left = n - 1
            while left > 0:
                k = min(chunk, left)
                sql = (f"INSERT INTO jobs (id, {cols}) SELECT LOWER(HEX(RANDOM_BYTES(8))), {cols}"  # noqa: S608 (an int)
                       f" FROM jobs JOIN seq_1_to_{k} WHERE jobs.id = %s")
                await cur.execute(sql, (template,))
                left -= k
            await cur.execute("INSERT IGNORE INTO job_history (job_id, version, valid_from, schedule, time_zone, paused,"
                              " deleted, name, spec, completed) SELECT id, version, updated_at, schedule, time_zone,"
                              " paused, 0, name, spec, 0 FROM jobs")
    finally:
        conn.close()


async def buffer_pool_mb(mb: int | None = None) -> int:
    """MariaDB's InnoDB buffer pool in MB; set to ``mb`` first when given (it resizes online)."""
    u = urlparse(DATABASE_URL)
    conn = await aiomysql.connect(host=u.hostname, port=u.port or 3306, user=u.username or "root",
                                  password=u.password or "", autocommit=True)
    try:
        async with conn.cursor() as cur:
            if mb:
                await cur.execute(f"SET GLOBAL innodb_buffer_pool_size = {int(mb) * 1024 * 1024}")
                for _ in range(600):  # the resize runs in the background: wait until it is done
                    await cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_resize_status'")
                    row = await cur.fetchone()
                    if not row or not row[1] or "complete" in str(row[1]).lower() or "finished" in str(row[1]).lower():
                        break
                    await asyncio.sleep(0.1)
            await cur.execute("SELECT @@innodb_buffer_pool_size")
            (size,) = await cur.fetchone()
            return int(size) // (1024 * 1024)
    finally:
        conn.close()


async def scenario_scale(jobs: int, nodes: int = 3, ticking: int = 20, pool_mb: int | None = None) -> dict[str, Any]:
    """``jobs`` in MariaDB (``ticking`` of them every second, the rest yearly): ``nodes`` nodes start at once; then
    one more joins. Every-second jobs keep firing through it all: duplicates and unaccounted ticks are counted.
    ``pool_mb``: MariaDB's buffer pool for the run (put back afterwards): it should hold the jobs table."""
    from node.cluster.ring import Ring

    c = Cluster("scale", CRONRING_HEARTBEAT_INTERVAL="1", CRONRING_MEMBER_TTL="3", CRONRING_RESYNC_INTERVAL="5")
    pool_was = await buffer_pool_mb()
    pool = await buffer_pool_mb(pool_mb) if pool_mb and pool_mb != pool_was else pool_was
    if pool * 1024 < jobs * 1.5:
        print(f"scale: MariaDB's buffer pool is {pool} MB, less than the ~{jobs * 1.5 / 1024:.0f} MB the jobs table"
              " wants: the takeover will read from disk (--db-buffer-pool-mb)", file=sys.stderr)
    try:
        await c.start_receiver()
        seed = await c.start_node("scale-seed", cwd=NODE_TREE)
        tf = time.time()
        ticking_ids = [(await c.create_job(schedule="* * * * * *"))["id"] for _ in range(ticking)]
        seed.kill()  # (before the fill: alone, it would take every job over as they come)
        await fill_jobs(c, jobs - ticking, "0 0 1 1 *")
        fill_s = time.time() - tf
        await asyncio.sleep(4)  # the seed's membership expires
        t0 = time.time()
        servers0 = {name: _server_cpu(name) for name in ("mariadbd", "redis-server")}
        started = [await c.start_node(f"scale-{i}", wait=False, cwd=NODE_TREE) for i in range(1, nodes + 1)]
        ticks_from = datetime.now(UTC).replace(microsecond=0)

        async def fired() -> bool:
            return any(d["jobId"] in ticking_ids and ts(d["arrivedAt"]).timestamp() > t0 for d in await c.deliveries())

        await wait_for(fired, 300, "the first fire after start-up", interval=0.1)
        first_fire = time.time() - t0

        async def owned(ns: list[Any]) -> list[int]:
            return [(await c.get_json(f"{n.url}/api/cluster"))["ownedHere"] for n in ns]

        progress: list[tuple[float, int]] = []

        async def all_owned() -> bool:
            counts = await owned(started)
            if not progress or time.time() - t0 - progress[-1][0] >= 10:  # the curve, even when it never ends
                progress.append((round(time.time() - t0, 1), sum(counts)))
                print(json.dumps({"scale_progress_s": progress[-1][0], "owned": counts}), file=sys.stderr, flush=True)
            return sum(counts) == jobs

        await wait_for(all_owned, 900, "every job owned", interval=0.5)
        owned_all = time.time() - t0
        # where the takeover's CPU went: the nodes, MariaDB, Redis (the bench's own polling is small)
        takeover_cpu = {"nodes": round(sum(cpu_seconds(n.pid) for n in started), 1)}
        for name, was in servers0.items():
            now_cpu = _server_cpu(name)
            takeover_cpu[name] = round(now_cpu - was, 1) if now_cpu is not None and was is not None else None
        await asyncio.sleep(2)
        rss = [rss_mb(n.pid) for n in started]
        before = await owned(started)
        t1 = time.time()
        extra = await c.start_node(f"scale-{nodes + 1}", wait=False, cwd=NODE_TREE)

        async def settled() -> bool:
            counts = await owned(started + [extra])
            return counts[-1] > 0 and sum(counts) == jobs

        await wait_for(settled, 900, "the join to settle", interval=0.5)
        join_settle = time.time() - t1
        after = await owned(started + [extra])
        rss_after = [rss_mb(n.pid) for n in started + [extra]]
        await asyncio.sleep(3)
        ticks_to = datetime.now(UTC).replace(microsecond=0)
        # every tick of the every-second jobs from start-up to now: one delivery at most, and a fate for each
        deliveries = [d for d in await c.deliveries() if d["jobId"] in ticking_ids]
        keys = [(d["jobId"], d.get("scheduledAt")) for d in deliveries]
        fates: dict[str, int] = defaultdict(int)
        for j in ticking_ids:
            book = await c.get_json(f"{extra.url}/api/crons/{j}/ticks?from={ticks_from.isoformat().replace('+00:00', 'Z')}"
                                    f"&to={(ticks_to - timedelta(seconds=2)).isoformat().replace('+00:00', 'Z')}")
            for fate, k in (book.get("counts") or {}).items():
                fates[fate] += k
        reads = await scale_reads(c, extra.url)
        ring_before, ring_after = Ring([f"n{i}" for i in range(nodes)]), Ring([f"n{i}" for i in range(nodes + 1)])
        tr = time.perf_counter()
        sample = [uuid.uuid4().hex[:16] for _ in range(100_000)]
        pure = sum(1 for j in sample if ring_before.owner(j) != ring_after.owner(j)) / len(sample)
        ring_ms = (time.perf_counter() - tr) * 1000
        return emit({"scenario": "scale", "jobs": jobs, "nodes": nodes, "ticking_jobs": ticking,
                     "fill_s": round(fill_s, 1), "startup_to_first_fire_s": round(first_fire, 2),
                     "startup_to_all_owned_s": round(owned_all, 2),
                     "takeover_cpu_s": takeover_cpu, "rss_mb_per_node": [round(x, 1) for x in rss],
                     "owned_over_time": progress,
                     "owned_per_node": before, "join_settle_s": round(join_settle, 2),
                     "share_moved_to_new": round(after[-1] / jobs, 3), "share_moved_pure_ring": round(pure, 3),
                     "owned_per_node_after": after, "rss_mb_per_node_after": [round(x, 1) for x in rss_after],
                     "ticking_deliveries": len(deliveries), "ticking_duplicates": len(keys) - len(set(keys)),
                     "ticking_fates": dict(fates), "unaccounted": fates.get("unaccounted", 0),
                     "ring_owner_us": round(ring_ms * 1000 / (2 * len(sample)), 2), "innodb_buffer_pool_mb": pool,
                     "reads": reads})
    finally:
        await c.close()
        if pool != pool_was:
            await buffer_pool_mb(pool_was)


async def scale_reads(c: Cluster, url: str, samples: int = 30) -> dict[str, Any]:
    """The API's and the dashboard's reads at this many jobs, one client after another: ms per request (p50, p99,
    max) for a page, a search many jobs match, a search only the newest job matches (it reads every row before
    it: in steps, each within CRONRING_SEARCH_BUDGET), the dashboard's jobs page and its search; and following
    the rare search to its end: requests, seconds, what it found."""
    await c.create_jobs_bulk(1, schedule="0 0 1 1 *", name="needle-at-the-end", paused=True)  # (past CRONRING_MAX_JOBS)
    kinds = {"api_page": "/api/crons?limit=50", "api_search_common": "/api/crons?limit=50&q=webhook",
             "api_search_rare": "/api/crons?limit=50&q=needle-at", "dashboard_jobs": "/",
             "dashboard_search": "/?q=needle-at"}
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as s:
        async def timed(path: str) -> tuple[float, str | None, Any]:
            t = time.perf_counter()
            async with s.get(url + path) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"GET {path}: {r.status}")
                return (time.perf_counter() - t) * 1000, r.headers.get("X-Next-Cursor"), body
        for kind, path in kinds.items():
            ms = sorted([(await timed(path))[0] for _ in range(samples)])
            out[kind] = {"p50_ms": round(ms[len(ms) // 2], 1), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
                         "max_ms": round(ms[-1], 1)}
        t0, steps, cursor, found = time.perf_counter(), 0, "", []
        while steps < 10_000:
            steps += 1
            _, nxt, body = await timed(f"/api/crons?limit=50&q=needle-at{cursor}")
            found += [j["name"] for j in json.loads(body)]
            if not nxt:
                break
            cursor = f"&cursor={nxt}"
        out["rare_search_to_the_end"] = {"requests": steps, "seconds": round(time.perf_counter() - t0, 2),
                                         "found": found}
    return out


async def scenario_glance(jobs: int, samples: int = 30) -> dict[str, Any]:
    """The dashboard at a glance at this many jobs, one node (issue 23): the jobs page with each row's strip of 20
    ticks (50 every-second jobs on the first page), the forecast computed (a new window each time: never kept) and
    kept, the forecast page and the cluster page with its charts. ms per request, one client after another."""
    c = Cluster("glance", CRONRING_HEARTBEAT_INTERVAL="1", CRONRING_MEMBER_TTL="3", CRONRING_RESYNC_INTERVAL="5",
                CRONRING_LOG_LEVEL="info")
    try:
        await c.start_receiver()
        await c.start_node("glance-1", cwd=NODE_TREE)
        await c.create_jobs_bulk(50, schedule="* * * * * *")  # the first page's rows: strips of every-second ticks
        herd = min(2_000, jobs // 5)
        await fill_jobs(c, herd, "0 * * * *")
        await fill_jobs(c, jobs - herd - 50, "H * * * *")
        url = c.nodes["glance-1"].url
        await wait_for(lambda: _owns(c, url, jobs), 300, f"the node to own {jobs} jobs", interval=2)
        await asyncio.sleep(25)  # (the first page's strips fill: twenty of their every-second instants)
        out: dict[str, Any] = {"scenario": "glance", "jobs": jobs}
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        async with aiohttp.ClientSession() as s:
            async def timed(path: str) -> tuple[float, bytes]:
                t = time.perf_counter()
                async with s.get(url + path) as r:
                    body = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
                    return (time.perf_counter() - t) * 1000, body

            def stats(ms: list[float]) -> dict[str, float]:
                ms = sorted(ms)
                return {"p50_ms": round(ms[len(ms) // 2], 1), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
                        "max_ms": round(ms[-1], 1)}

            _, page = await timed("/")
            out["jobs_page_delivered_ticks"] = page.count(b'class="tick delivered"')
            out["jobs_page_strips"] = stats([(await timed("/"))[0] for _ in range(samples)])
            cold, computed = [], []
            for k in range(5):  # each a window of its own (from is rounded down to its minute): computed, not kept
                f = start + timedelta(minutes=k)
                ms, body = await timed(f"/api/forecast?from={f:%Y-%m-%dT%H:%M:%SZ}")
                cold.append(ms)
                computed.append(json.loads(body)["seconds"])
            doc = json.loads(body)
            out["forecast_computed"] = {**stats(cold), "compute_s": computed, "groups": doc["groups"],
                                        "total": doc["total"], "peak": doc["peak"], "complete": doc["complete"]}
            out["forecast_kept"] = stats([(await timed(f"/api/forecast?from={start:%Y-%m-%dT%H:%M:%SZ}"))[0]
                                          for _ in range(samples)])
            out["forecast_page"] = stats([(await timed("/forecast"))[0] for _ in range(samples)])
            out["cluster_page"] = stats([(await timed("/cluster"))[0] for _ in range(samples)])
        pid = c.nodes["glance-1"].pid
        out["node_rss_mb"] = rss_mb(pid)
        return emit(out)
    finally:
        await c.close()


async def _owns(c: Cluster, url: str, jobs: int) -> bool:
    view = await c.get_json(f"{url}/api/cluster")
    return int(view.get("ownedHere") or 0) >= jobs


async def scenario_memory(counts: list[int]) -> dict[str, Any]:
    """One node owning N yearly jobs, for each N: its RSS once all are owned, and the time from start-up to all
    owned. Bytes per owned job: the slope beyond the node's RSS with none (the interpreter's baseline)."""
    c = Cluster("memory", CRONRING_HEARTBEAT_INTERVAL="1", CRONRING_MEMBER_TTL="3", CRONRING_RESYNC_INTERVAL="5")
    points: list[dict[str, Any]] = []
    try:
        await c.start_receiver()
        have = 0
        for i, n in enumerate(sorted(counts)):
            await fill_jobs(c, n - have, "0 0 1 1 *")
            have = n
            t0 = time.time()
            node = await c.start_node(f"memory-{i}", wait=False, cwd=NODE_TREE)

            async def owned_all(node: Any = node, n: int = n) -> bool:
                try:
                    return (await c.get_json(f"{node.url}/api/cluster"))["ownedHere"] == n
                except (aiohttp.ClientError, OSError):
                    return False

            await wait_for(owned_all, 900, f"{n} jobs owned", interval=0.25)
            startup = time.time() - t0
            await asyncio.sleep(3)
            points.append({"jobs": n, "rss_mb": round(rss_mb(node.pid), 1), "startup_to_all_owned_s": round(startup, 2)})
            node.kill()
            await asyncio.sleep(4)  # its membership expires before the next one starts
        base = points[0]["rss_mb"]
        top = points[-1]
        per_job = (top["rss_mb"] - base) * 1024 * 1024 / top["jobs"] if top["jobs"] else None
        return emit({"scenario": "memory", "points": points, "baseline_rss_mb": base,
                     "bytes_per_owned_job": round(per_job) if per_job else None})
    finally:
        await c.close()


async def scenario_stream(clients: int, rate: int, duration: int) -> dict[str, Any]:
    c, ids = await start_cluster("stream", rate)
    try:
        await wait_all_firing(c, ids)
        node = c.nodes["stream-1"]
        delays: list[float] = []
        received = [0]
        stop = asyncio.Event()

        async def client(s: aiohttp.ClientSession, measure: bool) -> None:
            # every client reads every event; 10 of them also parse and time them, so that the
            # benchmark's own CPU (the same two cores) does not drown the node's delay
            async with s.get(f"{node.url}/api/crons/status/stream") as r:
                event = ""
                while not stop.is_set():
                    raw = await r.content.readline()
                    if not measure:
                        continue
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event == "executions":
                        now = time.time()
                        for ev in json.loads(line[5:]):
                            if ev["at"]:
                                delays.append((now - ts(ev["at"]).timestamp()) * 1000)
                                received[0] += 1
                    elif not line:
                        event = ""

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)) as s:
            tasks = [asyncio.create_task(client(s, i < 10)) for i in range(clients)]
            await asyncio.sleep(3)
            delays.clear()
            cpu0 = cpu_seconds(node.pid)
            await asyncio.sleep(duration)
            cpu = cpu_seconds(node.pid) - cpu0
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return emit({"scenario": "stream", "clients": clients, "rate": rate, "events_timed_by_10_clients": received[0],
                     "event_delay_p50_ms": pct(delays, 50), "event_delay_p99_ms": pct(delays, 99),
                     "node_cpu_s_per_s": round(cpu / duration, 3)})
    finally:
        await c.close()


def table(results: list[dict[str, Any]]) -> None:
    print("\n## fire (receiver lateness and CPU beside the floor)")
    print("| fires/s | delivered | missed | dup | send p99 ms | recv p50/p99/max ms | floor recv p50/p99/max ms | p99 ratio | node CPU-s/1k | beyond idle | floor CPU-s/1k | CPU ratio | RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r["scenario"] == "fire":
            print(f"| {r['rate']} | {r['delivered']}/{r['expected']} | {r['missed']} | {r['duplicates']} | {r['send_late_p99_ms']} | "
                  f"{r['recv_late_p50_ms']}/{r['recv_late_p99_ms']}/{r['recv_late_max_ms']} | "
                  f"{r['floor_recv_late_p50_ms']}/{r['floor_recv_late_p99_ms']}/{r['floor_recv_late_max_ms']} | {r['late_p99_ratio']} | "
                  f"{r['node_cpu_s_per_1000']} | {r.get('node_cpu_s_per_1000_beyond_idle')} | {r['floor_cpu_s_per_1000']} | "
                  f"{r['cpu_ratio']} | {r['rss_mb_max']} |")
    for r in results:
        if r["scenario"] != "fire":
            print("- " + ", ".join(f"{k}={v}" for k, v in r.items()))


async def main(args: argparse.Namespace) -> None:
    only = set(args.only.split(",")) if args.only else {"fire", "rare", "failover", "api", "scale", "memory", "stream",
                                                        "glance"}
    seconds = args.seconds or (8 if args.quick else 15)
    fire_seconds = args.seconds or (15 if args.quick else 60)
    print(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                      "date": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick,
                      "tree": str(NODE_TREE)}), flush=True)
    results: list[dict[str, Any]] = []
    if "fire" in only:
        rates = [int(r) for r in args.rates.split(",")] if args.rates else [100, 500] if args.quick else [100, 500, 1000, 2000]
        idle = await scenario_idle(fire_seconds)
        results.append(idle)
        for rate in rates:
            rec = await scenario_fire(rate, fire_seconds)
            # the same figure with the idle cluster's fixed cost per second taken out, for reading only
            rec["node_cpu_s_per_1000_beyond_idle"] = round(
                rec["node_cpu_s_per_1000"] - idle["cpu_s_per_s_all_nodes"] * 1000 / rate, 3)
            results.append(rec)
    if "floor" in only:
        for rate in [int(r) for r in args.rates.split(",")] if args.rates else [1000]:
            results += await scenario_floor(rate, seconds)
    if "rare" in only:
        results.append(await scenario_rare(300, seconds))
    if "failover" in only:
        results.append(await scenario_failover(500))
    if "api" in only:
        results += await scenario_api(args.requests or (500 if args.quick else 2000))
    if "scale" in only:
        results.append(await scenario_scale(args.jobs or (10_000 if args.quick else 100_000), args.nodes or 3,
                                            pool_mb=args.db_buffer_pool_mb))
    if "memory" in only:
        results.append(await scenario_memory([0, 10_000, 25_000, 50_000, 100_000] if not args.quick else [0, 5_000, 20_000]))
    if "stream" in only:
        results.append(await scenario_stream(50 if args.quick else 200, 500, seconds))
    if "glance" in only:
        results.append(await scenario_glance(args.jobs or (10_000 if args.quick else 100_000)))
    table(results)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "floor":
        p = argparse.ArgumentParser()
        p.add_argument("cmd")
        p.add_argument("--url", required=True)
        p.add_argument("--rate", type=int, required=True)
        p.add_argument("--duration", type=int, required=True)
        p.add_argument("--mode", default="prepared", choices=("prepared", "plain"))
        a = p.parse_args()
        import uvloop  # as the node runs

        print(json.dumps(uvloop.run(floor_sender(a.url, a.rate, a.duration, a.mode))))
        sys.exit(0)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter runs and smaller loads")
    p.add_argument("--only", help="comma-separated scenarios")
    p.add_argument("--rates", help="comma-separated fire rates (default 100,500,1000,2000)")
    p.add_argument("--seconds", type=int, help="the measuring window (default: a minute for fire, 15 s otherwise)")
    p.add_argument("--jobs", type=int, help="scale: jobs in MariaDB (default 100,000)")
    p.add_argument("--db-buffer-pool-mb", type=int,
                   help="scale: MariaDB's InnoDB buffer pool for the run, in MB (set online, put back after)")
    p.add_argument("--requests", type=int, help="api: requests of each kind (default 2,000)")
    p.add_argument("--nodes", type=int, help="scale: nodes started at once (default 3; one more joins after)")
    p.add_argument("--tree", type=Path, help="run the nodes from this checkout (another release), same bench")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    a = p.parse_args()
    if a.tree is not None:
        if not (a.tree / "node" / "__main__.py").exists():
            p.error(f"--tree {a.tree}: no node/__main__.py there")
        NODE_TREE = a.tree.resolve()
    asyncio.run(main(a))
