"""Counting what arrived: per (job, scheduled_at), from the receiver (the witness) and the execution rows."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.harness import Cluster


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@dataclass
class Verdict:
    ticks: int = 0
    delivered: int = 0
    by_policy: int = 0  # misfire rows (missed/skipped) and abandoned rows
    duplicates: list[tuple[str, str, set[str]]] = field(default_factory=list)
    unexplained: list[tuple[str, datetime]] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)
    first_arrival_after: dict[str, datetime] = field(default_factory=dict)
    policy_rows: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"ticks={self.ticks} delivered={self.delivered} by_policy={self.by_policy} "
                f"duplicates={len(self.duplicates)} unexplained={len(self.unexplained)} "
                f"max_late_ms={max(self.late_ms) if self.late_ms else None}")


async def judge(cluster: Cluster, job_ids: list[str], start: datetime, end: datetime) -> Verdict:
    """Every whole second in [start, end] of every every-second job: delivered once, or accounted for."""
    deliveries = await cluster.deliveries()
    rows = await cluster.executions()
    v = Verdict()
    execs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for d in deliveries:
        if d["jobId"] in job_ids and d["scheduledAt"]:
            execs[(d["jobId"], d["scheduledAt"])].add(d["executionId"])
            if d["latenessMs"] is not None:
                t = ts(d["scheduledAt"])
                if start <= t <= end:
                    v.late_ms.append(d["latenessMs"])
    for (job, tick), ids in execs.items():
        if len(ids) > 1:
            v.duplicates.append((job, tick, ids))
    covered: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    abandoned: set[tuple[str, datetime]] = set()
    for r in rows:
        sa = r["scheduled_at"].replace(tzinfo=UTC)
        if r["state"] in ("missed", "skipped"):
            lo = (r["missed_from"] or r["scheduled_at"]).replace(tzinfo=UTC)
            covered[r["job_id"]].append((lo, sa))
        elif r["state"] == "abandoned":
            abandoned.add((r["job_id"], sa))
        else:
            continue
        if start <= sa <= end + timedelta(seconds=1):
            v.policy_rows.append({k: r[k] for k in ("job_id", "scheduled_at", "state", "node", "fence", "error",
                                                    "missed_count", "missed_from", "claimed_at")})
    delivered = {(j, ts(t)) for (j, t) in execs}
    for job in job_ids:
        t = start.replace(microsecond=0) + timedelta(seconds=1)
        while t <= end:
            v.ticks += 1
            if (job, t) in delivered:
                v.delivered += 1
            elif (job, t) in abandoned or any(lo <= t <= hi for lo, hi in covered[job]):
                v.by_policy += 1
            else:
                v.unexplained.append((job, t))
            t += timedelta(seconds=1)
    return v


def arrivals_after(deliveries: list[dict[str, Any]], job_ids: set[str], after: datetime, not_node: str) -> dict[str, datetime]:
    """For each job, the first arrival after ``after`` sent by a node other than ``not_node``."""
    out: dict[str, datetime] = {}
    for d in deliveries:
        if d["jobId"] in job_ids and d["node"] != not_node:
            a = ts(d["arrivedAt"])
            if a > after and (d["jobId"] not in out or a < out[d["jobId"]]):
                out[d["jobId"]] = a
    return out
