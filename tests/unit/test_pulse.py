"""The node's pulse (scheduling/pulse.py) and the cluster charts' geometry (dashboard/charts.py), pure."""

from __future__ import annotations

from node.dashboard.charts import STYLES, charts, nice

from node.cluster.messages import PulseEvent, unpack
from node.scheduling.pulse import LATENESS_KEPT, PULSE_KEPT, PULSE_SECONDS, Pulse

T0 = 1_765_000_000  # a multiple of 10


def test_a_slot_closes_with_its_counts_and_percentiles_and_the_next_starts_empty() -> None:
    p = Pulse("n1", T0 + 3)
    for ms in range(100):
        p.note("succeeded", ms)
    p.note("failed", 5000)
    assert p.close(T0 + 9.9) == []  # not over yet
    (ev,) = p.close(T0 + 10.1)
    assert (ev.node_id, ev.at, ev.seconds, ev.states) == ("n1", T0, 10, {"succeeded": 100, "failed": 1})
    assert (ev.p50_ms, ev.p99_ms, ev.max_ms) == (50, 99, 5000)
    assert isinstance(unpack(ev.pack()), PulseEvent) and unpack(ev.pack()) == ev
    (quiet,) = p.close(T0 + 20.5)  # an idle slot is reported, as zeros
    assert (quiet.at, quiet.states, quiet.p99_ms) == (T0 + 10, {}, None)


def test_slots_skipped_by_a_held_loop_are_reported_empty_at_most_the_kept_window() -> None:
    p = Pulse("n1", T0)
    p.note("succeeded", 1)
    events = p.close(T0 + 35)
    assert [e.at for e in events] == [T0, T0 + 10, T0 + 20] and events[0].states == {"succeeded": 1}
    events = p.close(T0 + 35 + 3600)
    assert len(events) == 1 + PULSE_KEPT // PULSE_SECONDS  # the slot, then the window's worth of empty ones


def test_lateness_past_the_cap_is_sampled_not_grown() -> None:
    p = Pulse("n1", T0)
    for k in range(LATENESS_KEPT * 3):
        p.note("succeeded", k % 1000)
    assert len(p.lateness) == LATENESS_KEPT
    (ev,) = p.close(T0 + 10)
    assert ev.states == {"succeeded": LATENESS_KEPT * 3} and ev.max_ms == 999


def pulse(nodes: dict[str, list[tuple[int, dict[str, int], int | None]]]) -> dict:
    slots = list(range(T0, T0 + PULSE_KEPT, PULSE_SECONDS))
    return {"seconds": PULSE_SECONDS, "slots": slots,
            "nodes": {n: [{"at": T0 + 10 * i, "states": s, "p50Ms": late, "p99Ms": late, "maxMs": late}
                          for i, s, late in pts] for n, pts in nodes.items()}}


def test_charts_stack_states_break_a_dead_nodes_line_and_mark_handovers() -> None:
    a = [(i, {"succeeded": 100, "failed": 10}, 20) for i in range(90)]
    b = [(i, {"succeeded": 50}, 40) for i in range(30)] + [(i, {"succeeded": 50}, 40) for i in range(60, 90)]
    ch = charts(pulse({"a": a, "b": b}), [{"at": "2025-12-06T06:00:00Z", "node": "a", "direction": "in",
                                            "jobs": 7, "epoch": 3}], members=["a"])
    assert ch["totals"] == {"delivered": 100 * 90 + 50 * 60, "failed": 10 * 90, "other": 0}
    assert ch["rate_top"] == nice((100 + 10 + 50) / 10) == 20
    na, nb = ch["nodes"]
    assert (na["color"], na["dash"]) == STYLES[0] and (nb["color"], nb["dash"]) == STYLES[1]  # told apart by dashes
    assert len(na["rate_lines"]) == 1 and len(nb["rate_lines"]) == 2  # b's silence breaks its line
    assert na["member"] and not nb["member"]
    assert ch["late_top"] == 50
    bars = [b for b in ch["bars"] if b["group"] == "failed"]
    assert len(bars) == 90 and all(b["h"] > 0 for b in bars)
    (mark,) = ch["marks"]
    assert "a took in 7 job(s) (epoch 3)" in mark["title"] and mark["title"].startswith("06:00:00")


def test_nice_rounds_up_to_one_two_or_five() -> None:
    assert [nice(v) for v in (0, 0.3, 1, 1.5, 3, 7, 12, 480)] == [1, 0.5, 1, 2, 5, 10, 20, 500]


def test_past_the_cap_the_sample_is_uniform_and_the_max_is_the_true_one() -> None:
    p = Pulse("n1", T0)
    for _ in range(LATENESS_KEPT):  # the first half: fast
        p.note("succeeded", 1)
    for k in range(LATENESS_KEPT):  # the second half: slow, one spike
        p.note("succeeded", 100_000 if k == 7 else 1_000)
    slow = sum(v >= 1_000 for v in p.lateness) / LATENESS_KEPT
    assert 0.45 < slow < 0.55  # half of the sample from each half (the early values did not stay)
    (ev,) = p.close(T0 + 10)
    assert ev.max_ms == 100_000 and ev.p99_ms == 1_000
