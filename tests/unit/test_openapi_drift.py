"""The OpenAPI schemas of a job are generated from the definitions validation runs, and agree with it:
the same values go to the published schema (a real JSON Schema validator) and to `validate`."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from node.model.jobs import JOB_FIELDS, READ_ONLY, REQUIRED_FIELDS, ValidationError, validate
from node.web.openapi import spec

BASE = {"uri": "https://example.com/hook", "schedule": "* * * * *"}

# Values of every kind, and around every bound the table uses; each goes to every field.
CORPUS: list[Any] = [
    None, True, False, 0, 1, -1, 99, 100, 599, 600, 300_000, 300_001, 3_600_000, 3_600_001, 604_800, 604_801, 10, 11,
    1.5, "", " ", "a", "x" * 64, "x" * 65, "x" * 200, "x" * 201, "tab\there", "nul\x00", "bell\x07", "del\x7f",
    "line\nbreak", "UTC", "* * * * *", "https://example.com/", "http://h:99999/", "ftp://h/", "https://", "GET", "get",
    "Get", "PATCH", "TRACE", "skip", "fire_once", "fire_all", "allow", "forbid", "at_most_once", "at_least_once",
    "SKIP", [], [200], [200, 204], [99], [200] * 20, [200] * 21, ["200"], {}, {"X-A": "1"}, {"bad name": "1"},
    {"X-A": "a\nb"}, {"X-A": 1}, {f"X-{i}": "v" for i in range(50)}, {f"X-{i}": "v" for i in range(51)},
    {"Host": "h"}, {"X-Cron-Id": "1"}, {"a": {"nested": True}}, "💡 unicode",
]


# the one rule across fields (retryMaxBackoffMs >= retryBackoffMs, in each field's description) kept out of the way
AROUND = {"retryBackoffMs": {"retryMaxBackoffMs": 3_600_000}, "retryMaxBackoffMs": {"retryBackoffMs": 100}}


def _accepted(field: str, value: Any) -> bool:
    try:
        validate({**BASE, **AROUND.get(field, {}), field: value})
    except ValidationError as e:
        assert field in str(e) or field in ("uri", "schedule"), e  # refused for this field, not another
        return False
    return True


def test_published_job_schemas_are_the_field_table() -> None:
    schemas = spec()["components"]["schemas"]
    for name in ("JobInput", "JobPatch"):
        props = schemas[name]["properties"]
        assert {k: v for k, v in props.items() if k not in READ_ONLY} == {k: f.schema for k, f in JOB_FIELDS.items()}
        assert schemas[name]["additionalProperties"] is False
    assert schemas["JobInput"]["required"] == list(REQUIRED_FIELDS) == ["uri", "schedule"]


@pytest.mark.parametrize("field", sorted(JOB_FIELDS))
def test_schema_and_validation_agree(field: str) -> None:
    f = JOB_FIELDS[field]
    schema = jsonschema_rs.validator_for(f.schema)
    disagree = []
    for value in CORPUS:
        published, enforced = schema.is_valid(value), _accepted(field, value)
        if enforced and not published:
            disagree.append(("accepted but the schema refuses", value))  # the schema would mislead every client
        if published != enforced and f.exact:
            disagree.append(("the schema says", published, "validation says", enforced, value))
    assert not disagree, disagree[:5]


def test_whole_documents_agree() -> None:
    """JobInput as a whole: required fields, unknown fields, read-only fields echoed back."""
    job_input = jsonschema_rs.validator_for({**spec()["components"]["schemas"]["JobInput"]})
    cases = [BASE, {"uri": BASE["uri"]}, {**BASE, "unknown": 1}, {**BASE, "id": "abc", "version": 3},
             {**BASE, "retries": 11}, {**BASE, "paused": True, "name": "n"}]
    for doc in cases:
        try:
            validate(doc)
            ok = True
        except ValidationError:
            ok = False
        assert job_input.is_valid(doc) == ok, doc
