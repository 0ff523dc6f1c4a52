from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.harness import Cluster


@pytest.fixture
async def make_cluster() -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    """Start clusters for a test; every one is torn down (processes, database, namespace) after it."""
    clusters: list[Cluster] = []

    async def make(name: str = "c", *, receiver: bool = True, receiver_secrets: str = "", **env: str) -> Cluster:
        c = Cluster(name, **env)
        clusters.append(c)
        if receiver:
            await c.start_receiver(receiver_secrets)
        return c

    yield make
    for c in clusters:
        await c.close()
