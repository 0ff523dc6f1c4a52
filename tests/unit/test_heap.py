"""The heap keeper: long-lived records leave the cyclic collector's walks once they have grown by a step."""

from __future__ import annotations

import gc
import time

from node.aio import HeapKeeper


def test_records_grown_by_a_step_are_frozen_and_a_full_collection_skips_them() -> None:
    keeper = HeapKeeper(step=1_000)
    try:
        gc.unfreeze()
        assert not keeper.look(999) and gc.get_freeze_count() == 0
        records = [{"id": i, "headers": {}, "labels": ()} for i in range(200_000)]  # ~400k tracked objects
        t = time.perf_counter()
        gc.collect()
        walked = time.perf_counter() - t
        assert keeper.look(len(records)) and gc.get_freeze_count() >= len(records)
        t = time.perf_counter()
        gc.collect()
        frozen = time.perf_counter() - t
        print(f"full collection: {walked * 1000:.1f} ms walking the records, {frozen * 1000:.1f} ms with them frozen")
        assert not any(o is records[7] for o in gc.get_objects())  # out of every generation the collector walks
        assert not keeper.look(len(records) + 999)  # less than a step since
        assert not keeper.look(10)  # shrank: the next step counts from here
        assert keeper.look(1_010) and keeper.freezes == 2
    finally:
        gc.unfreeze()


def test_a_freeze_hands_freed_memory_back_to_the_system() -> None:
    """Where the C library has malloc_trim (glibc, here): after a growth by a step, the pages freed by the burst
    that made it go back to the system (resident memory falls)."""
    def resident_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    keeper = HeapKeeper(step=1_000)
    trims: list[int] = []
    real = keeper.trim
    keeper.trim = lambda: trims.append(1) or real()  # type: ignore[method-assign,func-returns-value]
    try:
        # a burst: many short-lived mid-sized blocks interleaved with the few that stay (a takeover's rows
        # and definitions, and the packed jobs it keeps)
        kept, burst = [], []
        for i in range(100_000):
            burst.append(bytes(700) + str(i).encode())
            if i % 50 == 0:
                kept.append(bytes(90) + str(i).encode())
        burst.clear()
        before = resident_mb()
        assert keeper.look(len(kept) * 50) and trims == [1]
        after = resident_mb()
        print(f"resident {before:.1f} -> {after:.1f} MB")
        assert after < before
    finally:
        gc.unfreeze()
