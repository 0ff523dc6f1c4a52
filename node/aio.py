"""Small asyncio building blocks shared by the node's loops."""

from __future__ import annotations

import asyncio


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
