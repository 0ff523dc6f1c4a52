"""The cluster page's charts, as geometry for the server-rendered SVG (templates/_charts.html): fires per second by
state (stacked bars), fires per second by node and lateness p99 by node (a line each, told apart by colour and
by dash pattern), with the hand-overs of the window as marks on the time axis. Numbers only: names and titles
are escaped by the template."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

WIDTH, HEIGHT = 900, 150
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 20
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
# a node's line: a colour and a dash pattern, so two nodes differ without colour
STYLES = [("#2563eb", ""), ("#d97706", "7 3"), ("#059669", "2 2"), ("#db2777", "9 3 2 3"), ("#7c3aed", "4 4"),
          ("#0891b2", "1 3"), ("#65a30d", "12 4"), ("#dc2626", "6 2 1 2")]
GROUPS = (("delivered", ("succeeded",)), ("failed", ("failed", "timed_out")), ("other", ()))


def nice(top: float) -> float:
    """A round number at or above ``top`` for the y axis (1, 2, 5 times a power of ten)."""
    if top <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(top))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= top)


def _group(state: str) -> str:
    return next((g for g, states in GROUPS if state in states), "other")


def charts(pulse: dict[str, Any], handovers: list[dict[str, Any]], members: list[str]) -> dict[str, Any]:
    slots: list[int] = pulse["slots"]
    seconds: int = pulse["seconds"]
    if not slots:
        return {"empty": True}
    first, span = slots[0], slots[-1] + seconds - slots[0]
    bar_w = PLOT_W / len(slots)

    def x(t: float) -> float:
        return round(LEFT + (t - first) / span * PLOT_W, 1)

    index = {at: i for i, at in enumerate(slots)}
    stacks = [dict.fromkeys((g for g, _ in GROUPS), 0) for _ in slots]
    nodes = []
    for k, (node, points) in enumerate(pulse["nodes"].items()):
        color, dash = STYLES[k % len(STYLES)]
        rate: list[tuple[int, float]] = []
        late: list[tuple[int, float]] = []
        for p in points:
            i = index.get(p["at"])
            if i is None:
                continue
            n = 0
            for state, c in p["states"].items():
                stacks[i][_group(state)] += c
                n += c
            rate.append((p["at"], n / seconds))
            if p["p99Ms"] is not None:
                late.append((p["at"], float(p["p99Ms"])))
        nodes.append({"node": node, "color": color, "dash": dash, "member": node in members, "rate": rate,
                      "late": late, "last": rate[-1][1] if rate else None})
    rate_top = nice(max((sum(s.values()) / seconds for s in stacks), default=0))
    node_top = nice(max((v for n in nodes for _, v in n["rate"]), default=0))
    late_top = nice(max((v for n in nodes for _, v in n["late"]), default=0))

    def y(v: float, top: float) -> float:
        return round(TOP + PLOT_H - min(v, top) / top * PLOT_H, 1)

    def lines(series: list[tuple[int, float]], top: float) -> list[str]:
        """Polyline point lists, broken where a slot has no point (a node down, or Redis away); a lone point is a
        short flat line across its slot, so it shows."""
        out: list[str] = []
        run: list[str] = []
        prev = None
        for at, v in series:
            if prev is not None and at - prev > seconds and run:
                out.append(" ".join(run))
                run = []
            run.append(f"{x(at + seconds / 2)},{y(v, top)}")
            prev = at
            if len(run) == 1:
                run.insert(0, f"{x(at)},{y(v, top)}")
        if run:
            out.append(" ".join(run))
        return out

    bars = []
    for i, s in enumerate(stacks):
        base = 0.0
        for g, _ in GROUPS:
            v = s[g] / seconds
            if v:
                bars.append({"x": round(LEFT + i * bar_w, 1), "w": round(max(bar_w - 1, 1), 1),
                             "y": y(base + v, rate_top), "h": round(y(base, rate_top) - y(base + v, rate_top), 1),
                             "group": g, "title": f"{_clock(slots[i])} UTC: {v:.1f}/s {g}"})
                base += v
    for n in nodes:
        n["rate_lines"] = lines(n["rate"], node_top)
        n["late_lines"] = lines(n["late"], late_top)
    marks = []
    for h in handovers:
        at = _epoch(h.get("at"))
        if at is not None and first <= at <= first + span:
            marks.append({"x": x(at), "title": f"{_clock(at)} UTC: {h['node']} took {h['direction']} {h['jobs']} job(s)"
                                                f" (epoch {h['epoch']})", "direction": h["direction"]})
    ticks = [{"x": x(t), "label": _clock(t)[:5]} for t in range(first + (-first) % 180, first + span + 1, 180)]
    totals = {g: sum(s[g] for s in stacks) for g, _ in GROUPS}
    return {"empty": False, "width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP, "plot_w": PLOT_W,
            "plot_h": PLOT_H, "bottom": TOP + PLOT_H, "bars": bars, "nodes": nodes, "marks": marks, "ticks": ticks,
            "rate_top": rate_top, "node_top": node_top, "late_top": late_top, "totals": totals,
            "from": _clock(first), "to": _clock(first + span), "minutes": span // 60}


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ---- the job page: its ledger as a timeline, its lateness per slot -------------------------------------------

TL_COLUMNS = 240
# which fate a column of many instants shows first (the worst); the rest are stacked below it
FATE_ORDER = ("unaccounted", "failed", "abandoned", "cancelled", "missed", "skipped", "buffered", "running",
              "pending", "excluded", "paused", "completed", "delivered", "trimmed")


def timeline(ticks: list[dict[str, Any]], start: datetime, end: datetime) -> dict[str, Any]:
    """Ticks (the ledger's, as the API shows them) over ``[start, end)`` as at most TL_COLUMNS columns, each the
    instants in its share of the time: stacked segments by fate, worst on top, and a title that says them."""
    span = (end - start).total_seconds()
    cols: dict[int, list[dict[str, Any]]] = {}
    for t in ticks:
        at = datetime.fromisoformat(t["scheduledAt"].replace("Z", "+00:00"))
        k = min(TL_COLUMNS - 1, int((at - start).total_seconds() / span * TL_COLUMNS))
        cols.setdefault(k, []).append(t)
    w = PLOT_W / TL_COLUMNS
    out = []
    for k, items in sorted(cols.items()):
        counts: dict[str, int] = {}
        for t in items:
            counts[t["fate"]] = counts.get(t["fate"], 0) + 1
        order = sorted(counts, key=lambda f: FATE_ORDER.index(f) if f in FATE_ORDER else 0)
        segs, y = [], 4.0
        for f in order:
            h = 28 * counts[f] / len(items)
            segs.append({"fate": f, "y": round(y, 2), "h": round(h, 2)})
            y += h
        first, last = items[0]["scheduledAt"], items[-1]["scheduledAt"]
        odd = next((t for t in items if t["fate"] not in ("delivered", "pending", "trimmed")), None)
        title = (f"{first[:19].replace('T', ' ')}" + (f" to {last[11:19]}" if last != first else "") + " UTC: "
                 + ", ".join(f"{counts[f]} {f}" for f in order) + (f" — {odd['detail']}" if odd else ""))
        out.append({"x": round(LEFT + k * w, 1), "w": round(max(w - 0.5, 0.8), 2), "segs": segs, "title": title,
                    "worst": order[0], "focus": odd is not None})
    ticks_x = [{"x": round(LEFT + i / 6 * PLOT_W, 1),
                "label": _clock(start.timestamp() + i / 6 * span)[:5] if span <= 86_400
                else datetime.fromtimestamp(start.timestamp() + i / 6 * span, UTC).strftime("%a %H:%M")}
               for i in range(7)]
    return {"columns": out, "width": WIDTH, "left": LEFT, "plot_w": PLOT_W, "ticks": ticks_x}


def lateness(rows: list[tuple[datetime, int]], start: datetime, end: datetime, slots: int = 60) -> dict[str, Any]:
    """(scheduled_at, lateness ms) of the runs in ``[start, end)`` as p50 and p99 lines, a point a slot."""
    span = (end - start).total_seconds()
    by: dict[int, list[int]] = {}
    for at, ms in rows:
        if start <= at < end:
            by.setdefault(int((at - start).total_seconds() / span * slots), []).append(ms)
    top = nice(max((max(v) for v in by.values()), default=0))
    p50: list[tuple[float, float, int]] = []
    p99: list[tuple[float, float, int]] = []
    for k in sorted(by):
        v = sorted(by[k])
        x = round(LEFT + (k + 0.5) / slots * PLOT_W, 1)
        for out, ms in ((p50, v[len(v) // 2]), (p99, v[min(len(v) - 1, int(0.99 * len(v)))])):
            out.append((x, round(TOP + PLOT_H - ms / top * PLOT_H, 1), ms))
    return {"p50": p50, "p99": p99, "p50_line": " ".join(f"{x},{y}" for x, y, _ in p50),
            "p99_line": " ".join(f"{x},{y}" for x, y, _ in p99), "top": top, "n": sum(len(v) for v in by.values()),
            "width": WIDTH, "height": HEIGHT, "left": LEFT, "top_px": TOP, "bottom": TOP + PLOT_H, "plot_w": PLOT_W}
