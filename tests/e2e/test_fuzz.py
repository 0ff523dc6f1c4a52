"""schemathesis against /api/openapi.json of a real node: never a 5xx, whatever the input (bounded run)."""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from node.web.openapi import spec
from tests.harness import Cluster

schema = schemathesis.openapi.from_dict(spec())
# valid and invalid inputs alike (negative mode breaks the schema on purpose), NUL bytes included
schema.config.generation.update(modes=list(schemathesis.GenerationMode), allow_x00=True)


@pytest.fixture(scope="module")
def node_url():
    c = Cluster("fuzz")
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(c.start_node("fuzz-1", CRONRING_RUN_NOW_PER_MINUTE="1000"))
        loop.run_until_complete(c.http.close())
        yield c.any_node().url
    finally:
        loop.run_until_complete(c.close())
        loop.close()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_5xx(case, node_url: str) -> None:
    if case.path.endswith("stream") or case.path == "/api/crons/status-stream":
        return  # an endless stream; covered by its own tests
    response = case.call(base_url=node_url, timeout=10)
    assert response.status_code < 500 or (response.status_code == 503 and case.path == "/api/health"), (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}")
