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


# The schema says what validation does (security round 2, Low 9): whatever the schema calls invalid is
# refused with a 4xx, and whatever it calls valid on an operation whose schema is exact (every rule of
# its inputs said in the schema) is not refused as bad input.
EXACT = {("GET", "/api/crons"), ("GET", "/api/crons/{id}"), ("GET", "/api/crons/{id}/executions"),
         ("GET", "/api/crons/{id}/ticks"), ("GET", "/api/crons/{id}/preview"), ("DELETE", "/api/crons/{id}")}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_schema_says_what_validation_does(case, node_url: str) -> None:
    from schemathesis.checks import negative_data_rejection, positive_data_acceptance

    if case.path.endswith("stream") or case.path == "/api/crons/status-stream":
        return
    checks = [negative_data_rejection]
    if (case.method.upper(), case.path) in EXACT:
        checks.append(positive_data_acceptance)
    case.call_and_validate(base_url=node_url, timeout=10, checks=checks)
