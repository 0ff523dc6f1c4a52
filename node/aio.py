"""Small asyncio building blocks shared by the node's loops."""

from __future__ import annotations

import asyncio
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


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for an event at most ``timeout`` seconds; True if it was set.

    ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11 ``wait_for`` can swallow
    a cancellation that lands as the event is set, and a loop that swallows its cancellation
    never lets the node shut down (seen when a peer's leave message arrived during SIGTERM).
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
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


LAG_PROBE = 0.25  # seconds between the loop monitor's wake-ups: a stall longer than this is always seen (every 50 ms tripled an idle node's CPU)


async def watch_loop(observe: Callable[[float], None], warn: Callable[[float], None], *, warn_after: float = 0.5) -> None:
    """Measure how late the event loop wakes a timer, forever: ``observe(lag)`` each time, ``warn(lag)`` when
    it was held for longer than ``warn_after`` (a request or loop that blocks it stalls the heartbeat)."""
    while True:
        start = time.perf_counter()
        await asyncio.sleep(LAG_PROBE)
        lag = max(0.0, time.perf_counter() - start - LAG_PROBE)
        observe(lag)
        if lag > warn_after:
            warn(lag)


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
