"""The outcome recorder under load: a flush ends while outcomes keep arriving, and flushes side by side
never write one row twice (a hand-over of 89 jobs with runs in flight, at 500 fires a second, once kept
one node rewriting the same batch until its ticks went 2 s late: found by scripts/bench)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from node.model.executions import Execution, ExecutionState
from node.scheduling.outcomes import Recorder


class SlowSink:
    """A store that takes a round trip per batch and remembers every row it was given."""

    def __init__(self) -> None:
        self.written: Counter[tuple[str, ExecutionState]] = Counter()
        self.batches = 0

    async def record(self, executions) -> None:
        await asyncio.sleep(0.002)
        self.batches += 1
        for e in executions:
            self.written[(e.id, e.state)] += 1


def _outcome(i: int, state: ExecutionState = ExecutionState.SUCCEEDED) -> Execution:
    return Execution(id=f"e{i}", job_id=f"j{i % 50}", scheduled_at=datetime(2026, 12, 3, tzinfo=UTC), state=state,
                     fence=1, node="n1")


async def test_flushes_side_by_side_end_under_load_and_write_each_row_once() -> None:
    sink = SlowSink()
    rec = Recorder(sink, running_after=60)
    stop = asyncio.Event()
    produced = 0

    async def producer() -> None:  # outcomes keep coming, faster than one flush a batch can write them
        nonlocal produced
        while not stop.is_set():
            for _ in range(20):
                rec.put(_outcome(produced))
                produced += 1
            await asyncio.sleep(0)

    running = [_outcome(100_000 + i, ExecutionState.RUNNING) for i in range(50)]
    for r in running:
        rec.put(r)  # held back (running_after)
    task = asyncio.create_task(producer())
    try:
        async with asyncio.timeout(30):  # each flush writes what it found: they end though the buffer never empties
            await asyncio.gather(*(rec.write_now({r.id}) for r in running), rec.flush(), rec.flush())
    finally:
        stop.set()
        await task
    assert all(sink.written[(r.id, ExecutionState.RUNNING)] == 1 for r in running)  # each before its release
    await rec.flush()
    assert max(sink.written.values()) == 1, sink.written.most_common(3)  # no row written twice
    assert sum(sink.written.values()) == produced + len(running) - len(rec.buffer)
    assert sink.batches < 3 * (produced // 500 + 50), sink.batches  # no batch written over and over


async def test_everything_writes_held_back_running_rows_too() -> None:
    sink = SlowSink()
    rec = Recorder(sink, running_after=60)
    rec.put(_outcome(1, ExecutionState.RUNNING))
    rec.put(_outcome(2))
    await rec.flush()
    assert set(sink.written) == {("e2", ExecutionState.SUCCEEDED)}
    await rec.flush(everything=True)
    assert sink.written[("e1", ExecutionState.RUNNING)] == 1 and not rec.buffer and not rec.running


async def test_the_health_step_runs_at_most_once_a_second_and_misses_nothing() -> None:
    """At 100 fires/s the recorder flushes ~20 small batches a second; the health step (a read each) gathers them
    into one a second, and every outcome reaches it once."""
    sink = SlowSink()
    rec = Recorder(sink, running_after=60)
    rec.HEALTH_EVERY = 0.3
    steps: list[tuple[float, int]] = []
    seen: list[str] = []

    async def health(batch: Any) -> list[str]:
        steps.append((asyncio.get_running_loop().time(), len(batch)))
        seen.extend(e.id for e in batch)
        return []

    rec.health = health
    runner = asyncio.create_task(rec.run())
    try:
        for k in range(60):  # 60 small flushes over ~1.2 s
            rec.put(_outcome(k))
            rec.wake.set()
            await asyncio.sleep(0.02)
        deadline = asyncio.get_running_loop().time() + 5
        while len(seen) < 60 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        runner.cancel()
    assert sorted(seen) == sorted(f"e{k}" for k in range(60))  # each once
    gaps = [b[0] - a[0] for a, b in zip(steps, steps[1:], strict=False)]
    assert len(steps) <= 6 and all(g >= 0.29 for g in gaps), steps
