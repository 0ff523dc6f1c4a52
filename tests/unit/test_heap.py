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
