"""The alert sender on fakes: what it POSTs (JSON or Slack's text), to which URL, and what it does with each
answer (sent, retried with backoff, failed for good, unrouted); plus the kubectl selector grammar."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from node.model.alerts import Alert, AlertState, summary
from node.model.labels import LabelError, parse_selector
from node.scheduling.alerting import MAX_ATTEMPTS, AlertSender, backoff, body_of

AT = datetime(2030, 1, 1, tzinfo=UTC)


def _alert(aid: str = "a1", type_: str = "job.failing", job: str | None = "j1", attempts: int = 1) -> Alert:
    return Alert(id=aid, type=type_, job_id=job, at=AT, state=AlertState.SENDING, attempts=attempts,
                 payload={"streak": 1, "node": "n1", "execution": {"statusCode": 500, "error": None}})


class Outbox:
    def __init__(self, due: list[Alert], targets: dict[str, tuple[str, str | None, dict[str, Any]]]) -> None:
        self.due, self.targets_ = due, targets
        self.finished: list[tuple[str, AlertState, dict[str, Any]]] = []

    async def claim(self, claimer: str, *, lease_seconds: float, limit: int = 20) -> list[Alert]:
        assert limit == 1  # one at a time: the lease outlasts its one POST
        out, self.due = self.due[:limit], self.due[limit:]
        return out

    async def finish(self, alert_id_: str, claimer: str, state: AlertState, **kw: Any) -> None:
        self.finished.append((alert_id_, state, kw))

    async def targets(self, job_ids: Any) -> dict[str, tuple[str, str | None, dict[str, Any]]]:
        return {j: self.targets_[j] for j in job_ids if j in self.targets_}


class Poster:
    def __init__(self, answers: list[tuple[int | None, str | None]]) -> None:
        self.answers, self.sent = answers, []

    async def post(self, uri: str, body: bytes, headers: dict[str, str], *, timeout: float = 10.0
                   ) -> tuple[int | None, str | None]:
        self.sent.append((uri, json.loads(body), headers))
        return self.answers.pop(0)


def _sender(outbox: Outbox, poster: Poster, url: str = "http://alerts/x", fmt: str = "json") -> AlertSender:
    return AlertSender(outbox, poster, node_id="n1", claimer=lambda: "c1", alert_url=url, alert_format=fmt,
                       fresh=lambda: True)


async def test_an_alert_goes_to_its_jobs_alert_uri_else_the_clusters_signed_and_keyed() -> None:
    outbox = Outbox([_alert("a1"), _alert("a2", job="j2"), _alert("a3", "node.down", None)],
                    {"j1": ("nightly", "http://team/hook", {"team": "billing"}), "j2": ("other", None, {})})
    poster = Poster([(200, None), (204, None), (200, None)])
    sender = _sender(outbox, poster)
    assert await sender.pass_once() == 1 and await sender.pass_once() == 1 and await sender.pass_once() == 1
    (u1, b1, h1), (u2, _, _), (u3, b3, _) = poster.sent
    assert (u1, u2, u3) == ("http://team/hook", "http://alerts/x", "http://alerts/x")
    assert h1 == {"Idempotency-Key": "a1", "X-Cronring-Alert": "job.failing"}
    assert b1["job"] == {"id": "j1", "name": "nightly", "labels": {"team": "billing"}} and b1["streak"] == 1
    assert b1["at"] == "2030-01-01T00:00:00.000Z" and "job" not in b3 and b3["type"] == "node.down"
    assert [f[1] for f in outbox.finished] == [AlertState.SENT] * 3


async def test_answers_decide_retry_failure_or_unrouted() -> None:
    outbox = Outbox([_alert("a1"), _alert("a2"), _alert("a3", attempts=MAX_ATTEMPTS), _alert("a4")],
                    {"j1": ("n", None, {})})
    poster = Poster([(503, None), (404, None), (None, "timed out after 10 s")])
    sender = _sender(outbox, poster)
    for _ in range(3):
        await sender.pass_once()
    states = [(f[0], f[1], f[2].get("retry_in")) for f in outbox.finished]
    assert states == [("a1", AlertState.PENDING, backoff(1)), ("a2", AlertState.FAILED, None),
                      ("a3", AlertState.FAILED, None)], states  # a 4xx fails at once; the last attempt fails
    unrouted = Outbox([_alert("a5")], {"j1": ("n", None, {})})
    await _sender(unrouted, Poster([]), url="").pass_once()
    assert unrouted.finished[0][1] == AlertState.UNROUTED
    assert [backoff(n) for n in (1, 2, 5, 20)] == [2.0, 4.0, 32.0, 600.0]


def test_slack_format_is_one_line_of_text() -> None:
    doc = json.loads(body_of(_alert(), {"id": "j1", "name": "nightly", "labels": {}}, "slack"))
    assert doc == {"text": "[cronring] job nightly is failing: HTTP 500"}
    assert summary({"type": "node.down", "node": "n2"}) == "[cronring] node n2 is down"
    assert "recovered after 4 failed runs" in summary({"type": "job.recovered", "streak": 4, "job": {"id": "x"}})


@pytest.mark.parametrize("text,canonical", [
    ("team=billing", "team=billing"), ("team==billing", "team=billing"), ("team!=billing,tier", "team!=billing,tier"),
    (" team in (a, b) , !legacy", "team in (a,b),!legacy"), ("app.kubernetes.io/name notin (x)",
                                                            "app.kubernetes.io/name notin (x)"), ("team=", "team="),
])
def test_selectors_read_as_kubectl_reads_them(text: str, canonical: str) -> None:
    assert str(parse_selector(text)) == canonical


@pytest.mark.parametrize("text", ["", ",", "team=a=b", "team in ()", "team in (a", "a b", "Team_=x", "=x",
                                  "team in a", "!", "team=a,", "x" * 1001, "team=" + "v" * 64])
def test_bad_selectors_are_refused(text: str) -> None:
    with pytest.raises(LabelError):
        parse_selector(text)


def test_selectors_match_as_kubectl_matches() -> None:
    labels = {"team": "billing", "tier": "batch"}
    assert parse_selector("team=billing,tier in (batch, web)").matches(labels)
    assert parse_selector("env!=prod").matches(labels)  # no key: != matches
    assert parse_selector("env notin (prod)").matches(labels)
    assert not parse_selector("env in (prod)").matches(labels)
    assert parse_selector("!env,team").matches(labels) and not parse_selector("!team").matches(labels)
