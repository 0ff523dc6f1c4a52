"""The outbound policy in a real node: no spelling of a denied address gets a request out.

A stand-in for a denied target (think 169.254.169.254) listens on 127.0.0.2 in the test
process and counts requests; the node denies 127.0.0.2/32 by configuration. Every job is
either refused at create time with a 400 naming the outbound policy, or accepted and its
executions fail with an outbound policy error; the stand-in stays at 0 requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from yarl import URL

from tests.harness import Cluster, wait_for
from tests.local_server import CountingServer

STANDIN = "127.0.0.2"


@pytest.fixture
async def servers() -> AsyncIterator[tuple[CountingServer, CountingServer]]:
    standin, redirector = await CountingServer(STANDIN).start(), await CountingServer("127.0.0.1").start()
    yield standin, redirector
    await standin.close()
    await redirector.close()


def spellings(port: int) -> dict[str, str]:
    """A dozen spellings of the stand-in, as job URIs."""
    return {
        "plain": f"http://127.0.0.2:{port}/",
        "fullwidth digits": f"http://\uff11\uff12\uff17.\uff10.\uff10.\uff12:{port}/",
        "ideographic dots": f"http://127\u30020\u30020\u30022:{port}/",
        "fullwidth dots": f"http://127\uff0e0\uff0e0\uff0e2:{port}/",
        "halfwidth dots": f"http://127\uff610\uff610\uff612:{port}/",
        "decimal": f"http://2130706434:{port}/",
        "hex": f"http://0x7f.0x0.0x0.0x2:{port}/",
        "octal": f"http://0177.0.0.02:{port}/",
        "short": f"http://127.2:{port}/",
        "trailing dot": f"http://127.0.0.2.:{port}/",
        "userinfo": f"http://127.0.0.1@127.0.0.2:{port}/",
        "ipv4-mapped": f"http://[::ffff:127.0.0.2]:{port}/",
        "ipv4-compatible": f"http://[::127.0.0.2]:{port}/",
        "nat64": f"http://[64:ff9b::7f00:2]:{port}/",
        "nat64 local-use": f"http://[64:ff9b:1::127.0.0.2]:{port}/",
        "6to4": f"http://[2002:7f00:2::1]:{port}/",
    }


async def test_no_spelling_of_a_denied_address_reaches_it(
    make_cluster: Callable[..., Awaitable[Cluster]], servers: tuple[CountingServer, CountingServer]
) -> None:
    standin, redirector = servers
    c = await make_cluster("outb", receiver=False, CRONRING_OUTBOUND_DENY=f"{STANDIN}/32")
    node = await c.start_node("outb-1")
    jobs: dict[str, Any] = {name: {"uri": uri} for name, uri in spellings(standin.port).items()}
    # Accepted at create time (the target is allowed) but redirected, with a followed Location, to the stand-in.
    for name, location in (("redirect fullwidth", f"http://\uff11\uff12\uff17.\uff10.\uff10.\uff12:{standin.port}/"),
                           ("redirect ideographic", f"http://127\u30020\u30020\u30022:{standin.port}/"),
                           ("redirect mapped", f"http://[::ffff:127.0.0.2]:{standin.port}/")):
        jobs[name] = {"uri": str(URL(f"http://127.0.0.1:{redirector.port}/r").with_query(to=location)),
                      "followRedirects": True}

    accepted: dict[str, str] = {}
    for name, fields in jobs.items():
        status, body, _ = await c.request("POST", f"{node.url}/api/crons",
                                          json={"schedule": "* * * * * *", "name": name, **fields})
        assert status in (201, 400), (name, status, body)
        if status == 400:
            assert "outbound policy" in body["details"]["uri"], (name, body)
        else:
            accepted[name] = body["id"]
    # every direct spelling is refused up front; the redirects can only be caught at send time
    assert set(accepted) == {n for n in jobs if n.startswith("redirect")}, accepted

    async def finished(job_id: str) -> list[dict[str, Any]]:
        status, rows, _ = await c.request("GET", f"{node.url}/api/crons/{job_id}/executions")
        assert status == 200, rows
        return [r for r in rows if r["state"] not in ("claimed", "running")]

    async def each_finished_twice() -> bool:
        counts = [len(await finished(j)) for j in accepted.values()]
        return min(counts) >= 2

    await wait_for(each_finished_twice, 20, "every accepted job to finish two executions")
    for name, job_id in accepted.items():
        for row in await finished(job_id):
            assert row["state"] == "failed" and "outbound policy" in (row["error"] or ""), (name, row)
            assert row["attempts"] == 1, (name, row)  # a policy refusal is not retried
    assert len(redirector.hits) >= 2 * len(accepted)  # the node did fire: only the denied hop was refused
    assert standin.hits == []
    assert node.alive()
