"""Response assertions, pure: what passes, what fails and how it says so; the refusals at validation."""

from __future__ import annotations

import json

import pytest

from node.model.assertions import check_body, check_expect_json, parse_path, same, too_slow
from node.model.jobs import ValidationError, validate


def test_json_equality_is_strict_about_booleans_all_the_way_down() -> None:
    assert same(1, 1.0) and same({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not same(True, 1) and not same([True], [1]) and not same({"x": True}, {"x": 1.0})
    assert not same("1", 1) and not same({"a": 1}, {"a": 1, "b": 2}) and not same([1], [1, 1])


def test_paths_of_the_subset() -> None:
    assert parse_path('$.items[0]["a b"].id') == ("items", 0, "a b", "id")
    assert parse_path("$") == ()
    for bad in ("items", "$..a", "$.a[-1]", "$[*]", "$.a.", "$" + ".a" * 120):
        with pytest.raises(ValueError):
            parse_path(bad)


def test_a_deep_or_broken_response_fails_the_assertion_never_the_run() -> None:
    checks = (("$.a", 1),)
    assert check_body(None, checks, "[" * 60_000, False) == "expectJson: the response is not JSON (or nests too deeply)"
    assert check_body(None, checks, "{", True).startswith("expectJson: the response's first 65536 bytes is not JSON")
    assert check_body(None, checks, '{"a": true}', False) == "expectJson $.a: expected 1, got true"
    assert check_body("/^ok$/m", (), "x\nok\ny", False) is None


def test_what_an_assertion_quotes_is_masked_before_it_is_cut() -> None:
    secret = "s3cr3t-" + "x" * 80
    why = check_body(None, (("$.token", "other"),), json.dumps({"token": secret}), False, secrets=[secret])
    assert why is not None and secret[:20] not in why and "***" in why


def test_validation_refuses_what_is_not_json_or_nests_too_deep() -> None:
    for bad in ([{"path": "$.a", "equals": float("nan")}], [{"path": "$.a", "equals": float("inf")}],
                [{"path": "$.a", "equals": [[[[[[[[[[[[1]]]]]]]]]]]]}]):
        with pytest.raises(ValueError):
            check_expect_json(bad)
    with pytest.raises(ValidationError) as e:
        validate({"uri": "http://127.0.0.1:9/", "schedule": "* * * * *", "body": {"x": float("nan")}})
    assert "body" in e.value.details
    assert too_slow(100, 101) == "too slow: 101 ms > maxDurationMs 100" and too_slow(100, 100) is None
