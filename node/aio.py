"""Small asyncio building blocks shared by the node's loops."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable, Coroutine
from typing import Any


def raise_if_cancelling() -> None:
    """For a loop's ``except Exception``: if this task was asked to stop, stop now.

    On Python 3.11 a cancellation that lands as an inner ``asyncio.timeout`` expires comes out as
    ``TimeoutError`` (redis-py's socket timeouts, a blocking XREAD); a retrying client can also eat
    it. A loop that logs the error and goes round again then never ends, and the node's stop waits
    for it (seen: the stream reader held a stop 35 s after Redis restarted)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class LoopLag:
    """How late the event loop wakes the node's own timers: a loop held by CPU-bound work (or a blocking
    call) wakes every timer late, the heartbeat's among them. Measured on the timers the node has anyway
    (``wait_event``'s: the heartbeat every second, the scheduler's, the catalogue's), never with a timer of
    its own: a probe waking every 0.25 s cost an idle three-node cluster a third more CPU (0.0090 against
    0.0065 CPU-s/s), as each wake-up of an idle process is paid in full."""

    __slots__ = ("observers",)

    def __init__(self) -> None:
        self.observers: list[Callable[[float], None]] = []

    def woke(self, late: float) -> None:
        for fn in self.observers:
            fn(late)


LOOP_LAG = LoopLag()


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for an event at most ``timeout`` seconds; True if it was set. A timeout tells ``LOOP_LAG`` how
    late it woke.

    ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11 ``wait_for`` can swallow
    a cancellation that lands as the event is set, and a loop that swallows its cancellation
    never lets the node shut down (seen when a peer's leave message arrived during SIGTERM).
    """
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        if LOOP_LAG.observers:
            LOOP_LAG.woke(max(0.0, time.perf_counter() - start - timeout))
        return False


SLICE_SECONDS = 0.005  # CPU-bound work on the loop yields after this long: a small fraction of a heartbeat


class Slices:
    """Cooperative slicing of CPU-bound work that runs on the event loop (schedule previews, ledgers,
    next fire times of a page of jobs): ``await slices.pause()`` after each step yields to the loop once
    ``seconds`` of work have passed since the last yield, so no request holds the loop (and with it the
    heartbeat and every timer) for longer than about one step more than that."""

    __slots__ = ("deadline", "seconds", "yields")

    def __init__(self, seconds: float = SLICE_SECONDS) -> None:
        self.seconds = seconds
        self.deadline = time.perf_counter() + seconds
        self.yields = 0

    async def pause(self) -> None:
        if time.perf_counter() >= self.deadline:
            await asyncio.sleep(0)
            self.yields += 1
            self.deadline = time.perf_counter() + self.seconds


class Tasks:
    """Tasks a part of the node starts and does not await (a send, a reload, a log write): kept, so none is
    collected mid-flight, and waited for at the stop. One set for the scheduler and the ownership."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[None], None] = {}  # (a dict: in the order they started)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[task] = None
        task.add_done_callback(lambda t: self._tasks.pop(t, None))
        return task

    def running(self) -> list[asyncio.Task[None]]:
        return [t for t in self._tasks if not t.done()]

    async def wait(self, timeout: float) -> None:
        """Until every task has ended, or ``timeout`` seconds (the rest go on)."""
        running = self.running()
        if running:
            await asyncio.wait(running, timeout=timeout)


class HeapKeeper:
    """Keeps the cyclic garbage collector off the node's long-lived records.

    CPython's full collection walks every tracked object, and it runs whenever the objects that survived
    earlier collections have grown by a quarter. A node taking 200,000 jobs over holds ~2 M of them (jobs,
    their dicts and tuples, owned records, the catalogue), so each such collection held the loop for 0.3-0.9 s
    on this machine, several times during one takeover: long enough, with five nodes on two cores, to lapse
    a heartbeat. Once the records have grown by ``step`` since the last look, ``gc.freeze()`` moves everything
    alive now out of the collector's reach (it costs nothing: the lists are spliced), and collections walk
    only what came after. The records are acyclic and are still freed by reference counting when they go;
    only a cycle that was alive at a freeze and dies later stays (a few, at most, per freeze)."""

    def __init__(self, step: int = 20_000) -> None:
        self.step = step
        self.base = 0
        self.freezes = 0
        self.trim = _malloc_trim()

    def look(self, records: int) -> bool:
        """``records``: the node's long-lived records now (owned jobs plus catalogue entries).

        A growth this large is a takeover or a catalogue read, which leave freed memory behind them (rows,
        definitions decoded then packed): glibc's ``malloc_trim`` hands the free pages back to the system (a
        node that took 100,000 jobs over: 5 MB less resident; well under a millisecond a call)."""
        if records - self.base >= self.step:
            gc.freeze()
            self.trim()
            self.base = records
            self.freezes += 1
            return True
        self.base = min(self.base, records)  # shrank (jobs left): grow again from here
        return False


def _malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)``, or nothing where the C library has none (musl)."""
    name = ctypes.util.find_library("c")
    try:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        trim = None
    if trim is None:
        return lambda: None
    return lambda: trim(0)
