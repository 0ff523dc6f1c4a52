"""Plots for BENCHMARKS.md from the bench's own JSON lines (``scripts/bench ... > run.jsonl``).

    scripts/plot run.jsonl [more.jsonl ...] [--out docs/bench]

Draws what the lines hold, each with the floor where one applies:
* ``fire-cpu.png``: node CPU-s per 1,000 fires against fires/s (and the floor's);
* ``fire-lateness.png``: receiver lateness p99 against fires/s (and the floor's);
* ``memory-rss.png``: one node's RSS against the jobs it owns (and the baseline with none);
* ``memory-startup.png``: start-up to every job owned against the job count.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def records(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        for line in p.read_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return out


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(path)


def fire(recs: list[dict[str, Any]], out: Path) -> None:
    runs = [r for r in recs if r.get("scenario") == "fire"]
    if not runs:
        return
    by: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by[r["rate"]].append(r)
    rates = sorted(by)
    for key, floor_key, name, label in (
            ("node_cpu_s_per_1000", "floor_cpu_s_per_1000", "fire-cpu.png", "CPU-s per 1,000 fires"),
            ("recv_late_p99_ms", "floor_recv_late_p99_ms", "fire-lateness.png", "receiver lateness p99, ms")):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for rate in rates:
            ax.scatter([rate] * len(by[rate]), [r[key] for r in by[rate]], color="tab:blue", s=14)
            ax.scatter([rate] * len(by[rate]), [r[floor_key] for r in by[rate]], color="tab:gray", s=14, marker="x")
        ax.plot(rates, [sum(r[key] for r in by[x]) / len(by[x]) for x in rates], color="tab:blue",
                label="cronring, 3 nodes (all coordination)")
        ax.plot(rates, [sum(r[floor_key] for r in by[x]) / len(by[x]) for x in rates], color="tab:gray",
                linestyle="--", label="the floor (one plain sender)")
        ax.set_xscale("log")
        ax.set_xticks(rates, [str(x) for x in rates])
        ax.set_xlabel("fires per second")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        _save(fig, out / name)


def memory(recs: list[dict[str, Any]], out: Path) -> None:
    runs = [r for r in recs if r.get("scenario") == "memory"]
    if not runs:
        return
    fig, ax = plt.subplots(figsize=(6, 3.6))
    fig2, ax2 = plt.subplots(figsize=(6, 3.6))
    for k, r in enumerate(runs):
        pts = r["points"]
        jobs = [p["jobs"] for p in pts]
        ax.plot(jobs, [p["rss_mb"] for p in pts], marker="o", label=f"run {k + 1}: {r.get('bytes_per_owned_job')} B/job")
        ax.axhline(r["baseline_rss_mb"], color="tab:gray", linestyle="--", linewidth=0.8)
        if k == 0:  # issue 22's target: 500 bytes per owned job beyond the baseline
            top = max(jobs)
            ax.plot([0, top], [r["baseline_rss_mb"], r["baseline_rss_mb"] + top * 500 / 2**20], color="tab:green",
                    linestyle=":", label="target: 500 B/job")
        ax2.plot(jobs, [p["startup_to_all_owned_s"] for p in pts], marker="o", label=f"run {k + 1}")
    ax.set_xlabel("jobs owned by one node")
    ax.set_ylabel("RSS, MB (dashed: none owned)")
    ax.legend(fontsize=8)
    ax2.set_xlabel("jobs")
    ax2.set_ylabel("start-up to all owned, s")
    ax2.legend(fontsize=8)
    _save(fig, out / "memory-rss.png")
    _save(fig2, out / "memory-startup.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/bench"))
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    recs = records(a.runs)
    fire(recs, a.out)
    memory(recs, a.out)


if __name__ == "__main__":
    main()
