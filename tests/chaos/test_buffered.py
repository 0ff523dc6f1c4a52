"""A buffered tick survives its owner: a graceful stop (a hand-over) and a ``kill -9``.

A ``buffer_all`` job every 2 s against a target that answers after 5 s: while a run is in flight, the next
ticks wait as ``buffered`` rows (claimed, never sent). Its owner then goes:

* SIGTERM: it hands the job over at once (its run in flight drains there, a live claimer's); the new owner
  takes the buffered rows as its own queue and sends them, one at a time, once that run has ended;
* ``kill -9``: the run in flight is lost with its node (at most once: abandoned); the buffered rows were never
  sent, so the survivor's takeover makes them its queue and sends them.

Either way: never two requests of the job in flight at once, no instant sent twice, every instant of the
window accounted for in the ledger (delivered, abandoned with the killed node, or missed past the grace), and
the buffered instants that were waiting at the fault delivered by the survivor.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest
from aiohttp import web

from tests.chaos.test_faults import no_unaccounted_ticks
from tests.harness import Cluster, wait_for
from tests.local_server import LocalServer

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

DELAY = 5.0


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


class Target:
    def __init__(self) -> None:
        self.arrivals: list[dict] = []
        self.inflight: dict[str, int] = defaultdict(int)

    async def handle(self, request: web.Request) -> web.Response:
        job = request.headers.get("X-Cron-Job-Id", "")
        self.inflight[job] += 1
        self.arrivals.append({"job": job, "tick": request.headers.get("X-Cron-Scheduled-At", ""),
                              "node": request.headers.get("X-Cron-Node"), "at": time.time(),
                              "overlap": self.inflight[job] - 1})
        try:
            await asyncio.sleep(DELAY)
        finally:
            self.inflight[job] -= 1
        return web.Response(text="ok")


async def _buffered_rows(c: Cluster, jid: str) -> list[dict]:
    return [r for r in await c.executions() if r["job_id"] == jid and r["state"] == "buffered"]


@pytest.mark.parametrize("fault", ["sigterm", "kill"])
async def test_buffered_ticks_survive_their_owner(make_cluster, fault: str) -> None:
    target = Target()
    async with LocalServer(target.handle) as srv:
        c: Cluster = await make_cluster(f"buf{fault}")
        await c.start_nodes(f"buf{fault}-1", f"buf{fault}-2")
        start = datetime.now(UTC)
        job = await c.create_job(schedule="*/2 * * * * *", uri=f"http://127.0.0.1:{srv.port}/", timeoutMs=30000,
                                 concurrencyPolicy="buffer_all", misfireGraceSeconds=60)
        jid = job["id"]
        await wait_for(lambda: _has_buffered(c, jid, 2), 30, "two ticks buffered behind the slow run")
        owner = (await c.get_json(f"{c.any_node().url}/api/crons/{jid}"))["owner"].split(":")[0]
        waiting = {_naive(r["scheduled_at"]) for r in await _buffered_rows(c, jid)}
        fault_at = datetime.now(UTC)
        if fault == "kill":
            c.nodes[owner].kill()
        else:
            assert await c.nodes[owner].terminate(timeout=45) == 0
        survivor = next(n for name, n in c.nodes.items() if name != owner)
        await wait_for(lambda: _sent_by(target, jid, waiting, survivor.name), 40,
                       "the survivor to send the ticks that were buffered at the fault")
        await c.request("POST", f"{survivor.url}/api/crons/{jid}/pause")
        end = datetime.now(UTC)
        await asyncio.sleep(DELAY + 1)
        overlaps = [a for a in target.arrivals if a["overlap"]]
        assert not overlaps, f"two requests of the job in flight at once: {overlaps[:3]}"
        ticks = Counter(a["tick"] for a in target.arrivals)
        assert all(n == 1 for n in ticks.values()), f"an instant sent twice: {[t for t, n in ticks.items() if n > 1]}"
        _, led, _ = await c.request("GET", f"{survivor.url}/api/crons/{jid}/ticks",
                                    params={"from": start.isoformat(), "to": end.isoformat()})
        fates = Counter(t["fate"] for t in led["ticks"])
        assert fates["unaccounted"] == 0, fates
        allowed = {"delivered", "buffered", "running", "missed", "paused"} | ({"abandoned"} if fault == "kill" else set())
        assert set(fates) <= allowed, fates
        print(f"{fault}: {len(waiting)} buffered at the fault ({fault_at:%H:%M:%S}), all sent by {survivor.name}; "
              f"fates {dict(fates)}")
        await no_unaccounted_ticks(c, [jid], start, end)


def _naive(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC)


async def _has_buffered(c: Cluster, jid: str, n: int) -> bool:
    return len(await _buffered_rows(c, jid)) >= n


def _sent_by(target: Target, jid: str, instants: set[datetime], node: str) -> bool:
    sent = {_ts(a["tick"]): a["node"] for a in target.arrivals if a["job"] == jid}
    return all(sent.get(t) == node for t in instants)


async def test_a_run_its_node_died_with_counts_as_in_flight_until_its_timeout(make_cluster) -> None:
    """The owner is killed a moment after a run began: the target is still serving that request (nobody can tell
    it), so the survivor sends the buffered ticks only once the run's timeout has passed since it was sent —
    never two requests of the job in flight (CI found the survivor sending at its takeover, 3.5 s in)."""
    target = Target()
    async with LocalServer(target.handle) as srv:
        c: Cluster = await make_cluster("bufearly")
        await c.start_nodes("bufearly-1", "bufearly-2")
        start = datetime.now(UTC)
        job = await c.create_job(schedule="*/2 * * * * *", uri=f"http://127.0.0.1:{srv.port}/", timeoutMs=8000,
                                 concurrencyPolicy="buffer_all", misfireGraceSeconds=60)
        jid = job["id"]
        await wait_for(lambda: _has_buffered(c, jid, 1), 30, "a tick buffered behind the slow run")
        seen = len(target.arrivals)
        await wait_for(lambda: len(target.arrivals) > seen, 30, "the next run to begin")  # (the queue's next send)
        owner = (await c.get_json(f"{c.any_node().url}/api/crons/{jid}"))["owner"].split(":")[0]
        c.nodes[owner].kill()
        killed_at = time.time()
        survivor = next(n for name, n in c.nodes.items() if name != owner)
        await wait_for(lambda: any(a["node"] == survivor.name and a["at"] > killed_at for a in target.arrivals), 45,
                       "the survivor to send a buffered tick")
        first = min(a["at"] for a in target.arrivals if a["node"] == survivor.name and a["at"] > killed_at)
        await c.request("POST", f"{survivor.url}/api/crons/{jid}/pause")
        await asyncio.sleep(DELAY + 1)
        overlaps = [a for a in target.arrivals if a["overlap"]]
        assert not overlaps, f"two requests of the job in flight at once: {overlaps[:3]}"
        assert first - killed_at >= DELAY - 1, "the survivor sent while the lost run was surely still in flight"
        ticks = Counter(a["tick"] for a in target.arrivals)
        assert all(n == 1 for n in ticks.values())
        await no_unaccounted_ticks(c, [jid], start, datetime.now(UTC))
