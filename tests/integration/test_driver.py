"""The store's driver (asyncmy) at its edges: a connection cut during its handshake, a statement cancelled in the
middle, callers queued for a small pool. Real MariaDB, a real socket that hangs up."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading

import uvloop

from node.model.errors import StoreUnavailable
from node.model.jobs import validate
from node.store import DatabaseURL, Store
from node.store.connection import Database


def _resetting_listener() -> tuple[socket.socket, int]:
    """A host that accepts and resets at once (a proxy cut, a host dying mid-handshake)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                c, _ = ls.accept()
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()

    threading.Thread(target=serve, daemon=True).start()
    return ls, ls.getsockname()[1]


async def test_a_connection_cut_during_its_handshake_is_an_outage_not_a_crash() -> None:
    """Under uvloop (as the node runs) the driver raises RuntimeError ("Transport does not expose socket
    instance") when the socket is reset during its handshake: the store answers StoreUnavailable (a 503), never
    a 500, and the health ping says not ready. (Run on a uvloop of its own, in a thread: the test's loop is
    never blocked.)"""
    ls, port = _resetting_listener()

    async def scenario() -> list[str]:
        db = Database(DatabaseURL.parse(f"mysql://root@127.0.0.1:{port}/cronring_nowhere"), connect_timeout=1.0)
        seen = []
        try:
            for _ in range(5):
                try:
                    await db.fetchone("SELECT 1")
                    seen.append("answered")
                except StoreUnavailable:
                    seen.append("unavailable")
                except Exception as e:  # the bug: a RuntimeError out of the store
                    seen.append(f"{type(e).__name__}: {e}")
            seen.append(f"ping {await db.ping()}")
        finally:
            await db.close()
        return seen

    try:
        seen = await asyncio.to_thread(uvloop.run, scenario())
    finally:
        ls.close()
    assert seen == ["unavailable"] * 5 + ["ping False"]


async def test_a_statement_cancelled_in_the_middle_never_hands_its_connection_on(store: Store) -> None:
    """One connection, a SLEEP cancelled half-way: the next caller gets a working connection, and its own
    answer (never the cancelled statement's late result); the pool's permit came back."""
    small = Store(store.db.url, pool_size=1)
    try:
        task = asyncio.create_task(small.db.fetchone("SELECT SLEEP(3) AS s"))
        await asyncio.sleep(0.3)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        row = await asyncio.wait_for(small.db.fetchone("SELECT 42 AS answer"), 2)
        assert row == {"answer": 42}
        rows = await asyncio.gather(*(small.db.fetchone("SELECT %s AS n", (i,)) for i in range(20)))
        assert [r["n"] for r in rows if r] == list(range(20))
    finally:
        await small.close()


async def test_callers_queued_for_the_pool_are_served_in_arrival_order(store: Store) -> None:
    """Two connections, 30 callers: each gets its connection in the order it asked (the gate before the pool),
    so a caller that has waited is never passed by newer ones."""
    db = Database(store.db.url, pool_size=2)
    order: list[int] = []

    async def one(i: int) -> None:
        async for attempt in db.attempts():
            async with attempt as cur:
                order.append(i)
                await cur.execute("SELECT SLEEP(0.01)")

    try:
        await db.start()
        tasks = []
        for i in range(30):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0)  # arrivals in a known order
        await asyncio.gather(*tasks)
        assert order == list(range(30))
    finally:
        await db.close()


async def test_a_row_read_again_is_decoded_once_and_any_change_is_seen(store: Store) -> None:
    """The API's reads keep decoded rows by their whole text: the same row gives the same Job, and a change to
    any column (an edit, a counter the scheduler bumps without a new version) gives a new one at once."""
    job = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * *"}), 100)
    a, _ = await store.jobs.get_and_last(job.id)
    b, _ = await store.jobs.get_and_last(job.id)
    assert a is b and a.runs == 0
    await store.db.execute("UPDATE jobs SET runs = runs + 1, fail_streak = 2 WHERE id = %s", (job.id,))
    c, _ = await store.jobs.get_and_last(job.id)
    assert c is not a and (c.runs, c.fail_streak, c.version) == (1, 2, a.version)
    (p,) = await store.jobs.page(limit=10, cursor=None, q=None, paused=None)
    assert p is c
    big = await store.jobs.create(validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * *",
                                            "body": "x" * 10_000}), 100)
    d, _ = await store.jobs.get_and_last(big.id)
    e, _ = await store.jobs.get_and_last(big.id)
    assert d is not e and d == e  # a big row is decoded each time, never kept
