"""Overlap policies against a slow target on two real nodes: buffer_one, buffer_all and replace (forbid and allow
are the fault suite's). The receiver is the witness of what was in flight when: with a fixed delay D, a request
that arrived at a is in flight over [a, a + D]."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.fixtures import cluster_fixture
from tests.harness import Cluster, wait_for

cluster = cluster_fixture("overlap", "ov-a", "ov-b")


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def arrivals(c: Cluster, jid: str) -> list[dict[str, Any]]:
    return sorted((d for d in await c.deliveries() if d["jobId"] == jid), key=lambda d: d["arrivedAt"])


async def ledger(c: Cluster, jid: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    status, body, _ = await c.request("GET", f"{c.any_node().url}/api/crons/{jid}/ticks",
                                      params={"from": iso(start), "to": iso(end)})
    assert status == 200, body
    return body["ticks"]


async def _run(c: Cluster, policy: str, delay_ms: int, seconds: float, **fields: Any
               ) -> tuple[str, datetime, datetime, list[dict[str, Any]]]:
    start = datetime.now(UTC)
    job = await c.create_job(schedule="* * * * * *", concurrencyPolicy=policy,
                             uri=f"{c.receiver.url}/hooks/slow?delay_ms={delay_ms}", timeoutMs=20000, **fields)
    await asyncio.sleep(seconds)
    status, _, _ = await c.request("POST", f"{c.any_node().url}/api/crons/{job['id']}/pause")
    assert status == 200
    paused = datetime.now(UTC)
    await asyncio.sleep(delay_ms / 1000 + 2)  # what was buffered or in flight has ended
    return job["id"], start, paused, await arrivals(c, job["id"])


def _never_two_in_flight(got: list[dict[str, Any]], delay_ms: int) -> None:
    for a, b in zip(got, got[1:], strict=False):
        gap = (ts(b["arrivedAt"]) - ts(a["arrivedAt"])).total_seconds() * 1000
        assert gap >= delay_ms - 150, f"two requests in flight at once: {a} then {b} ({gap:.0f} ms apart)"


async def test_buffer_one_waits_for_the_run_and_keeps_one_tick(cluster: Cluster) -> None:
    delay = 2500
    jid, start, paused, got = await _run(cluster, "buffer_one", delay, 9.5)
    assert len(got) >= 3, got
    _never_two_in_flight(got, delay)
    assert len({d["scheduledAt"] for d in got}) == len(got)  # no instant twice
    # each run after the first starts the moment the one before it ends: its tick waited in the buffer
    for a, b in zip(got, got[1:], strict=False):
        assert (ts(b["arrivedAt"]) - ts(a["arrivedAt"])).total_seconds() < delay / 1000 + 1.2, (a, b)
    ticks = await ledger(cluster, jid, start, paused)
    fates = Counter(t["fate"] for t in ticks)
    assert fates["delivered"] == len(got) and fates["unaccounted"] == 0, fates
    full = [t for t in ticks if t["fate"] == "skipped"]
    assert full and all("buffer_one" in t["detail"] for t in full), ticks


async def test_buffer_all_runs_every_tick_in_order_within_the_grace(cluster: Cluster) -> None:
    delay = 1500
    jid, start, paused, got = await _run(cluster, "buffer_all", delay, 9.5, misfireGraceSeconds=2)
    _never_two_in_flight(got, delay)
    instants = [ts(d["scheduledAt"]) for d in got]
    assert instants == sorted(instants) and len(set(instants)) == len(instants)  # in order, once each
    ticks = await ledger(cluster, jid, start, paused)
    fates = Counter(t["fate"] for t in ticks)
    assert fates["unaccounted"] == 0 and fates["delivered"] == len(got) >= 4, fates
    # a second's ticks at a run a second and a half: the queue grows, and what waited past the grace is missed
    late = [t for t in ticks if t["fate"] == "missed"]
    assert late and all("past the misfire grace" in t["detail"] for t in late), ticks
    for d in got:  # none started later than the grace after its instant
        assert (ts(d["arrivedAt"]) - ts(d["scheduledAt"])).total_seconds() < 2 + 0.6, d


async def test_replace_aborts_the_run_in_flight_and_records_it_cancelled(cluster: Cluster) -> None:
    delay = 3500
    jid, start, paused, got = await _run(cluster, "replace", delay, 6.5)
    assert len(got) >= 5, got  # every tick went, each cutting the one before it short
    rows = {r["id"]: r for r in await cluster.executions() if r["job_id"] == jid}
    cancelled = [r for r in rows.values() if r["state"] == "cancelled"]
    assert len(cancelled) >= len(got) - 2, sorted((r["scheduled_at"], r["state"]) for r in rows.values())
    assert all("replaced by a later tick" in (r["error"] or "") for r in cancelled)
    ticks = await ledger(cluster, jid, start, paused)
    fates = Counter(t["fate"] for t in ticks)
    assert fates["cancelled"] == len(cancelled) and fates["unaccounted"] == 0, fates
    status, body, _ = await cluster.request("GET", f"{cluster.any_node().url}/api/crons/{jid}/executions")
    assert any(e["state"] == "cancelled" for e in body)


async def test_a_run_now_elsewhere_makes_a_buffer_tick_wait(cluster: Cluster) -> None:
    """The run in flight is another node's (a run-now there): the tick is buffered by the claim statement and goes
    once that run has ended (the owner looks every second)."""
    delay = 3000
    job = await cluster.create_job(schedule="*/10 * * * * *", concurrencyPolicy="buffer_one",
                                   uri=f"{cluster.receiver.url}/hooks/slow?delay_ms={delay}", timeoutMs=20000)
    jid = job["id"]

    async def owner() -> str | None:
        _, j, _ = await cluster.request("GET", f"{cluster.any_node().url}/api/crons/{jid}")
        return j.get("owner")

    await wait_for(owner, 10, "an owner")
    own = (await owner() or "").split(":")[0]
    other = next(n for n in cluster.nodes.values() if n.name != own)
    # a run-now on the other node a little before the next tick, so the tick comes while it is in flight
    nxt = ts(job["nextRunAt"])
    while (nxt - datetime.now(UTC)).total_seconds() < 2:
        nxt += timedelta(seconds=10)
    await asyncio.sleep(max(0.0, (nxt - datetime.now(UTC)).total_seconds() - 1.5))
    status, body, _ = await cluster.request("POST", f"{other.url}/api/crons/{jid}/run")
    assert status == 202, body
    await wait_for(lambda: _delivered(cluster, jid, nxt), 15, "the buffered tick")
    await cluster.request("DELETE", f"{cluster.any_node().url}/api/crons/{jid}")
    got = await arrivals(cluster, jid)
    manual = next(d for d in got if not d["scheduledAt"].endswith(".000Z"))
    tick = next(d for d in got if ts(d["scheduledAt"]) == nxt)
    assert ts(tick["arrivedAt"]) >= ts(manual["arrivedAt"]) + timedelta(milliseconds=delay - 150), (manual, tick)


async def _delivered(c: Cluster, jid: str, instant: datetime) -> bool:
    return any(ts(d["scheduledAt"]) == instant for d in await arrivals(c, jid))
