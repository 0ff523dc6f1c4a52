"""The e2e suites' clusters: one way to start a module's nodes (and the receiver) and to tear them down
afterwards, also when the start itself fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.harness import Cluster, wait_for


def cluster_fixture(name: str, *nodes: str, receiver: bool = True, receiver_secrets: str = "",
                    token: str | None = None, **env: str) -> Callable[..., Any]:
    """A module-scoped ``cluster`` fixture: ``nodes`` started with ``env`` (and the receiver), each seeing
    all the others before the first test (asked with ``token`` where the API needs one)."""

    @pytest.fixture(scope="module")
    async def cluster() -> AsyncIterator[Cluster]:
        c = Cluster(name, **env)
        try:
            if receiver:
                await c.start_receiver(receiver_secrets)
            for n in nodes:
                await c.start_node(n)
            if len(nodes) > 1:
                headers = {"Authorization": f"Bearer {token}"} if token else {}

                async def all_see_all() -> bool:
                    for n in c.nodes.values():
                        status, view, _ = await c.request("GET", f"{n.url}/api/cluster", headers=headers)
                        if status != 200 or {m["id"] for m in view["members"]} != set(nodes):
                            return False
                    return True

                await wait_for(all_see_all, 15, f"{sorted(nodes)} to see each other")
            yield c
        finally:
            await c.close()

    return cluster
