"""Pure parts besides schedules: the ring, job validation, firing helpers, settings."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from node.cluster.messages import (
    EXECUTION_EVENT_FIELDS,
    ExecutionBatch,
    JobEvent,
    MembershipEvent,
    MessageError,
    execution_event,
    unpack,
)
from node.cluster.ring import Ring, moved
from node.model.jobs import ValidationError, masked_headers, validate
from node.model.times import now_iso, rfc3339, tick_iso
from node.scheduling.firing import backoff_delay, parse_retry_after, render, sign
from node.scheduling.outbound import OutboundDenied, OutboundPolicy
from node.settings import ApiToken, Settings, SettingsError

SEED_EXAMPLE = {
    "uri": "http://external-service:8080/webhook", "httpMethod": "POST",
    "body": {"event": "scheduled_task", "timestamp": "{{timestamp}}", "data": {"type": "backup"}},
    "schedule": "0 2 * * *", "timeZone": "UTC",
}


def test_ring_owner_is_stable_and_moves_about_one_nth() -> None:
    ids = [f"job-{i}" for i in range(20_000)]
    r3 = Ring(["a:1", "c:3", "b:2"])
    assert r3.members == ("a:1", "b:2", "c:3")
    assert {r3.owner(j) for j in ids} == {"a:1", "b:2", "c:3"}
    assert Ring(["b:2", "a:1", "c:3"]).owner("job-7") == r3.owner("job-7")
    r4 = Ring(["a:1", "b:2", "c:3", "d:4"])
    share = len(moved(r3, r4, ids)) / len(ids)
    assert 0.15 < share < 0.40  # about 1/4 moves to the newcomer
    # only jobs that move go to the newcomer
    assert all(r4.owner(j) == "d:4" for j in moved(r3, r4, ids))
    assert Ring(["x"]).owner("anything") == "x"
    assert Ring([]).owner("anything") is None


def test_seed_example_validates_unchanged() -> None:
    job = validate(SEED_EXAMPLE)
    assert job.method == "POST" and job.schedule == "0 2 * * *" and job.body["event"] == "scheduled_task"


@pytest.mark.parametrize(("payload", "field"), [
    ({**SEED_EXAMPLE, "schedule": "every day"}, "schedule"),
    ({**SEED_EXAMPLE, "timeZone": "Europe/Atlantis"}, "timeZone"),
    ({**SEED_EXAMPLE, "uri": "ftp://x/y"}, "uri"),
    ({**SEED_EXAMPLE, "uri": "file:///etc/passwd"}, "uri"),
    ({**SEED_EXAMPLE, "retries": "3"}, "retries"),
    ({**SEED_EXAMPLE, "retries": True}, "retries"),
    ({**SEED_EXAMPLE, "timeoutMs": 10**12}, "timeoutMs"),
    ({**SEED_EXAMPLE, "surprise": 1}, "surprise"),
    ({**SEED_EXAMPLE, "httpMethod": "BREW"}, "httpMethod"),
    ({**SEED_EXAMPLE, "headers": {"Bad Header": "x"}}, "headers"),
    ({**SEED_EXAMPLE, "headers": {"X-Ok": "a\r\nInjected: 1"}}, "headers"),
    ({**SEED_EXAMPLE, "headers": {"X-Cron-Fence": "99"}}, "headers"),
    ({**SEED_EXAMPLE, "body": "x" * 70_000}, "body"),
    ({**SEED_EXAMPLE, "name": "a\x00b"}, "name"),
    ({**SEED_EXAMPLE, "misfirePolicy": "sometimes"}, "misfirePolicy"),
    ({"schedule": "* * * * *"}, "uri"),
    ({"uri": "http://0/", "schedules": None}, "schedule"),  # (the fuzz found a 500: no schedule, none listed)
    ({"uri": "http://0/", "schedules": []}, "schedules"),
])
def test_validation_names_the_field(payload: dict, field: str) -> None:
    with pytest.raises(ValidationError) as e:
        validate(payload)
    assert field in e.value.details


def test_partial_update_keeps_other_fields() -> None:
    base = validate(SEED_EXAMPLE)
    new = validate({"paused": True, "version": 3, "id": "ignored"}, base=base)
    assert new.paused and new.uri == base.uri


def test_masked_headers() -> None:
    assert masked_headers({"Authorization": "Bearer x", "X-Api-Key": "k", "X-Trace": "t"}) == {
        "Authorization": "***", "X-Api-Key": "***", "X-Trace": "t"}


def test_signature_matches_documented_scheme() -> None:
    header = sign("s3cret", 1700000000, b'{"a":1}')
    mac = hmac.new(b"s3cret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"


def test_render_templates() -> None:
    assert render("x={{jobId}}&a={{attempt}}", {"jobId": "j1", "attempt": "2"}) == "x=j1&a=2"


def test_backoff_is_exponential_capped_and_honours_retry_after() -> None:
    job = validate({**SEED_EXAMPLE, "retries": 5, "retryBackoffMs": 1000, "retryMaxBackoffMs": 5000})
    assert backoff_delay(job, 1, None, rnd=lambda: 1.0) == 1.0
    assert backoff_delay(job, 2, None, rnd=lambda: 1.0) == 2.0
    assert backoff_delay(job, 2, None, rnd=lambda: 0.0) == 1.0  # jitter: half fixed, half random
    assert backoff_delay(job, 10, None, rnd=lambda: 1.0) == 5.0  # capped
    assert backoff_delay(job, 1, 3.0, rnd=lambda: 0.0) == 3.0  # Retry-After wins
    assert backoff_delay(job, 1, 999.0, rnd=lambda: 0.0) == 5.0  # ... within the cap


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


def test_outbound_policy() -> None:
    p = OutboundPolicy()
    for bad in ("169.254.169.254", "fe80::1", "[fe80::1]", "metadata.google.internal", "::ffff:169.254.169.254"):
        with pytest.raises(OutboundDenied):
            p.check_host(bad)
    for ok in ("10.0.0.5", "192.168.1.1", "127.0.0.1", "example.internal"):
        p.check_host(ok)
    with pytest.raises(OutboundDenied):
        OutboundPolicy(deny=["10.0.0.0/8"]).check_host("10.1.2.3")
    OutboundPolicy(allow=["169.254.169.254/32"]).check_host("169.254.169.254")


def test_messages_roundtrip_and_reject_garbage() -> None:
    ev = JobEvent(op="created", id="abc", version=1)
    assert unpack(ev.pack()) == ev
    for junk in (b"", b"\xc1", json.dumps({"v": 1}).encode()):
        with pytest.raises(MessageError):
            unpack(junk)
    m = MembershipEvent(op="handover", node_id="n1", epoch=3, detail={"jobs": ["a", "b"]})
    assert unpack(m.pack()) == m


def test_an_execution_on_the_stream_is_the_record_s_fields() -> None:
    """The stream's execution events are the Execution record's fields the live views read, the instant
    spelled as everywhere else; a batch of them survives the wire."""
    from datetime import UTC, datetime

    from node.model.executions import Execution, ExecutionKind, ExecutionState

    e = Execution(id="e1", job_id="j1", scheduled_at=datetime(2026, 3, 29, 1, tzinfo=UTC), kind=ExecutionKind.CATCHUP,
                  state=ExecutionState.SUCCEEDED, node="n1", fence=7, attempts=1, status_code=200, duration_ms=12,
                  lateness_ms=3)
    d = execution_event(e, "x")
    assert tuple(d) == EXECUTION_EVENT_FIELDS
    assert d == {"id": "e1", "job_id": "j1", "scheduled_at": "2026-03-29T01:00:00.000Z", "state": "succeeded",
                 "kind": "catchup", "node": "n1", "fence": 7, "attempt": 1, "status_code": 200, "duration_ms": 12,
                 "lateness_ms": 3, "error": None, "at": "x"}
    batch = unpack(ExecutionBatch(events=[d, d]).pack())
    assert isinstance(batch, ExecutionBatch) and batch.events == [d, d]


def test_rfc3339_is_utc_milliseconds() -> None:
    from datetime import UTC, datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    t = datetime(2026, 3, 29, 1, 0, 0, 123999, tzinfo=UTC)
    assert rfc3339(t) == "2026-03-29T01:00:00.123Z"
    assert rfc3339(t.astimezone(ZoneInfo("Europe/Lisbon"))) == "2026-03-29T01:00:00.123Z"
    assert rfc3339(t.astimezone(timezone(timedelta(hours=-3)))) == "2026-03-29T01:00:00.123Z"
    assert rfc3339(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"
    assert rfc3339(None) is None


def test_the_cached_spellings_match_rfc3339() -> None:
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    t = datetime(2026, 7, 1, 1, 0, 0, 123456, tzinfo=ZoneInfo("Europe/Lisbon"))
    assert tick_iso(t) == rfc3339(t) == "2026-07-01T00:00:00.123Z"
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    now = datetime.fromisoformat(now_iso().replace("Z", "+00:00"))
    assert before <= now + timedelta(milliseconds=1) and now <= datetime.now(UTC)



def test_settings_fail_clearly() -> None:
    with pytest.raises(SettingsError, match="CRONRING_MEMBER_TTL"):
        Settings.load([], {"CRONRING_MEMBER_TTL": "abc"})
    with pytest.raises(SettingsError, match="mysql://"):
        Settings.load([], {"CRONRING_DATABASE_URL": "postgres://x/y"})
    with pytest.raises(SettingsError, match="twice"):
        Settings.load([], {"CRONRING_MEMBER_TTL": "1", "CRONRING_HEARTBEAT_INTERVAL": "1"})
    assert Settings.load([], {"CRONRING_SEARCH_BUDGET": "0"}).search_budget == 0.0  # (one window a request)
    for bad in ("-1", "31", "soon"):
        with pytest.raises(SettingsError, match="CRONRING_SEARCH_BUDGET"):
            Settings.load([], {"CRONRING_SEARCH_BUDGET": bad})
    s = Settings.load(["--port", "9999"], {"CRONRING_API_TOKENS": "readtoken1:read,admintoken1"})
    assert s.port == 9999 and s.node_id.endswith(":9999")
    assert {t: (i.scope, i.name) for t, i in s.api_tokens.items()} == {
        "readtoken1": ("read", "token-1"), "admintoken1": ("admin", "token-2")}
    # named: name=token[:scope]; the unnamed form is named by a digest, the same on every node
    s = Settings.load([], {"CRONRING_API_TOKENS": "ci-bot=abcdefgh12:admin, alice@ops=zyxwvuts98:read, plaintoken1"})
    assert s.api_tokens["abcdefgh12"] == ApiToken("ci-bot", "admin")
    assert s.api_tokens["zyxwvuts98"] == ApiToken("alice@ops", "read")
    assert s.api_tokens["plaintoken1"].name == "token-3"  # by its place: a digest would let readers test guesses
    # limited to a selector (kubectl syntax, commas inside it too)
    s = Settings.load([], {"CRONRING_API_TOKENS": "billing=abcdefgh12:admin:team=billing,env!=dev;"
                                                  "ops=zyxwvuts98:read:team in (ops, sre); plain=qwertyuiop"})
    assert str(s.api_tokens["abcdefgh12"].selector) == "team=billing,env!=dev"
    assert str(s.api_tokens["zyxwvuts98"].selector) == "team in (ops,sre)"
    assert s.api_tokens["qwertyuiop"].selector is None and s.api_tokens["qwertyuiop"].scope == "admin"
    s = Settings.load([], {"CRONRING_API_TOKENS": "a=abcdefgh12:admin:team in (x, y)"})
    assert str(s.api_tokens["abcdefgh12"].selector) == "team in (x,y)"
    # commas between entries when one has a selector: refused, never read as a second, unscoped admin token
    for ambiguous in ("billing=abcdefgh12:admin:team=billing,environment=production",
                      "billing=abcdefgh12:admin:team=billing,env!=dev", "a=abcdefgh12:admin:t in (x, y),b=zyxwvuts98:read"):
        with pytest.raises(SettingsError, match="separated from the others by ';'"):
            Settings.load([], {"CRONRING_API_TOKENS": ambiguous})
    for bad, why in (("a=abcdefgh12,a=qwertyuiop", "two tokens are named"), ("x=short", "at least 8"),
                     ("x=abcdefgh12:write", "scope must be"), ("x=abcdefgh12:admin:team in (", "expected"),
                     ("abcdefgh12:admin:team=x", "needs a name")):
        with pytest.raises(SettingsError, match=why):
            Settings.load([], {"CRONRING_API_TOKENS": bad})


async def test_a_loop_stops_even_when_its_cancellation_comes_out_as_a_timeout() -> None:
    """Python 3.11: a cancel landing as an inner asyncio.timeout expires surfaces as TimeoutError (redis-py's
    socket timeout during a blocking XREAD). The stream reader logged it and read again, for ever, and the
    node's stop waited on it (7 stops overran in a 30-minute soak). Loops now stop when asked to."""
    import asyncio

    from node.dashboard.stream import StreamHub

    from node.cluster.keys import Keys
    from node.web.app import _supervise

    class Redis:  # XREAD blocks; a cancel arrives as a timeout, as redis-py lets it out
        async def xrevrange(self, *a, **k):
            return []

        async def xread(self, *a, **k):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise TimeoutError("Timeout reading from 127.0.0.1:6379") from None

    for coro in (StreamHub(Redis(), Keys("t")).run(), _supervise("hub", StreamHub(Redis(), Keys("t")).run)):
        task = asyncio.create_task(coro)
        await asyncio.sleep(0.05)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=3)
        assert done, "the loop did not stop when cancelled"
        assert task.cancelled()


def test_the_redis_client_retries_once_and_quickly() -> None:
    """redis-py 8 retries a failed command 10 times with up to 1 s backoff by default: with 2 s socket
    timeouts one command could outlast the lease many times over. The node's client retries once."""
    from node.settings import Settings
    from node.web.app import build_runtime

    r = build_runtime(Settings.load([], {}))
    retry = r.redis.get_retry()
    assert retry is not None and retry._retries == 1
    assert retry._backoff.compute(1) <= 0.2


def test_library_log_records_are_json_lines_too(capsys) -> None:
    """aiohttp's, asyncio's and the drivers' stdlib records come out as the node's own JSON lines."""
    import json
    import logging

    import structlog

    from node import logs

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("info", "json")
        logging.getLogger("aiohttp.server").warning("Error handling request %s", "x")
        structlog.get_logger("node").warning("own line", a=1)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        structlog.reset_defaults()
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert lines[0]["event"] == "Error handling request x" and lines[0]["logger"] == "aiohttp.server"
    assert lines[0]["level"] == "warning" and lines[0]["timestamp"].endswith("Z")
    assert lines[1]["event"] == "own line" and lines[1]["a"] == 1


def test_apply_compares_and_shows_secrets_masked() -> None:
    from node.cli import _shown, plan_apply

    have = {"id": "a", "name": "s", "uri": "http://ops:***@h/x?api_key=***", "schedule": "0 3 * * *",
            "headers": {"Authorization": "***", "X-Team": "ops"}}
    want = {"name": "s", "uri": "http://ops:pw@h/x?api_key=k1", "schedule": "0 3 * * *",
            "headers": {"Authorization": "Bearer t", "X-Team": "ops"}}
    assert plan_apply([have], [want], False) == [("unchanged", have, {})]
    assert plan_apply([have], [want], False, rotate_secrets=True)[0][2] == {"uri": want["uri"],
                                                                            "headers": want["headers"]}
    (action, _, diff), = plan_apply([have], [{**want, "uri": "http://ops:pw@h2/x?api_key=k1"}], False)
    # a new target travels with its secrets (a new origin needs them again), and is shown masked
    assert action == "update" and diff["headers"] == want["headers"]
    assert _shown("uri", diff["uri"]) == "http://ops:***@h2/x?api_key=***"
    assert _shown("headers", diff["headers"]) == {"Authorization": "***", "X-Team": "ops"}


def test_export_writes_secrets_as_placeholders_that_apply_expands(tmp_path) -> None:
    import pytest
    import yaml

    from node.cli import CliError, export_jobs, load_file, plan_apply

    listed = [{"id": "a", "name": "billing sync", "uri": "http://ops:***@h/x", "schedule": "0 3 * * *",
               "timeZone": "UTC", "headers": {"Authorization": "***", "X-Team": "ops"}, "paused": False},
              {"id": "b", "name": "", "uri": "http://h/", "schedule": "@daily"}]  # unnamed: not exported
    doc, needed = export_jobs(listed)
    assert needed == ["CRONRING_SECRET_BILLING_SYNC_AUTHORIZATION", "CRONRING_SECRET_BILLING_SYNC_URI"]
    (job,) = doc["jobs"]
    assert job["headers"]["Authorization"] == "${CRONRING_SECRET_BILLING_SYNC_AUTHORIZATION}"
    assert job["uri"] == "http://ops:${CRONRING_SECRET_BILLING_SYNC_URI}@h/x" and "id" not in job
    f = tmp_path / "jobs.yaml"
    f.write_text(yaml.safe_dump(doc))
    env = {"CRONRING_SECRET_BILLING_SYNC_AUTHORIZATION": "Bearer t", "CRONRING_SECRET_BILLING_SYNC_URI": "pw"}
    (loaded,) = load_file(str(f), env)
    assert loaded["headers"]["Authorization"] == "Bearer t" and loaded["uri"] == "http://ops:pw@h/x"
    assert plan_apply(listed, [loaded], False)[0][0] == "unchanged"  # a round trip changes nothing
    f2 = tmp_path / "literal.yaml"
    f2.write_text("jobs:\n  - name: j\n    body: 'cost: $${AMOUNT}'\n")
    assert load_file(str(f2), {})[0]["body"] == "cost: ${AMOUNT}"  # $${X} is the text ${X}
    with pytest.raises(CliError, match="CRONRING_SECRET_BILLING_SYNC_URI"):
        load_file(str(f), {"CRONRING_SECRET_BILLING_SYNC_AUTHORIZATION": "x"})  # never an empty secret


def test_client_errors_by_status() -> None:
    from node.client import ApiError, BadRequest, Conflict, NotFound, Unavailable, error_for

    e = error_for(400, b'{"error": "invalid input", "details": {"uri": "bad"}}')
    assert isinstance(e, BadRequest) and e.status == 400 and e.details == {"uri": "bad"} and "invalid input" in str(e)
    assert isinstance(error_for(404, b""), NotFound) and isinstance(error_for(412, b"{}"), Conflict)
    assert isinstance(error_for(503, b"<html>"), Unavailable)  # a proxy's page, not JSON
    assert type(error_for(502, b"[]")) is ApiError


def test_fastjson_is_compact_json_and_takes_what_orjson_refuses() -> None:
    import json

    from node import fastjson

    doc = {"a": [1, 2.5, None, True], "é": "ü", "n": 2**70}  # 2**70: orjson refuses integers beyond 64 bits
    assert json.loads(fastjson.dumps(doc)) == doc
    assert fastjson.dumps({"a": 1}) == '{"a":1}'
    assert fastjson.loads(b'{"x": [1, "y"]}') == {"x": [1, "y"]}


def test_apply_expands_only_secrets_and_only_where_they_are_masked(tmp_path) -> None:
    """Security round 2, Medium 2: a job file written by someone else pulled ``${CRONRING_TOKEN}`` (the CLI's
    own admin credential) into a target, printed it with --diff and showed it to every reader."""
    import pytest

    from node.cli import CliError, _shown, load_file

    env = {"CRONRING_TOKEN": "admin-token-123", "HOME": "/root", "CRONRING_SECRET_J_X": "s3cret", "API_KEY": "k-999",
           "CRONRING_SECRET_PROD_AUTH": "prod-secret", "CRONRING_SECRET_J_AT": "p@ss/w0rd", "CRONRING_SECRET_J_Q": "a#b&c=1"}

    def load(text: str, allow: tuple[str, ...] = ()) -> dict:
        f = tmp_path / "jobs.yaml"
        f.write_text("jobs:\n  - name: j\n    schedule: '@daily'\n" + text)
        return load_file(str(f), env, allow)[0]

    for text in ("    uri: 'http://h/?token=${CRONRING_TOKEN}'\n",
                 "    uri: 'http://u:${CRONRING_TOKEN}@h/'\n",
                 "    uri: 'http://h/'\n    headers: {Authorization: 'Bearer ${CRONRING_TOKEN}'}\n"):
        with pytest.raises(CliError, match="CRONRING_TOKEN.*never expanded"):
            load(text, allow=("CRONRING_TOKEN",))  # not even when asked for
    with pytest.raises(CliError, match=r"\$\{HOME\}.*not expanded: only CRONRING_SECRET_"):
        load("    uri: 'http://u:${HOME}@h/'\n")
    for text in ("    uri: 'http://h/${CRONRING_SECRET_J_X}'\n",  # the path shows: not a secret's place
                 "    uri: 'http://${CRONRING_SECRET_J_X}/'\n",
                 "    uri: 'http://h/'\n    body: {k: '${CRONRING_SECRET_J_X}'}\n",
                 "    uri: 'http://h/'\n    headers: {X-Team: '${CRONRING_SECRET_J_X}'}\n",
                 "    uri: 'http://h/'\n    name: '${CRONRING_SECRET_J_X}'\n"):
        with pytest.raises(CliError, match="not expanded here|may stand only"):
            load(text)
    # another job's secret, to this job's target (fresh-eyes review: a PR could send prod's key anywhere)
    with pytest.raises(CliError, match="another job's secret"):
        load("    uri: 'http://h/'\n    headers: {Authorization: '${CRONRING_SECRET_PROD_AUTH}'}\n")
    # a raw @ / # & in a URI secret would move the host or the parameters and show the rest unmasked
    for text in ("    uri: 'http://u:${CRONRING_SECRET_J_AT}@h/'\n", "    uri: 'http://h/?api_key=${CRONRING_SECRET_J_Q}'\n"):
        with pytest.raises(CliError, match="percent-encode"):
            load(text)
    job = load("    uri: 'http://u:${CRONRING_SECRET_J_X}@h/p?api_key=${API_KEY}&q=1'\n"
               "    headers: {Authorization: 'Bearer ${CRONRING_SECRET_J_X}', X-Team: 'ops $${LITERAL}'}\n",
               allow=("API_KEY",))
    assert job["uri"] == "http://u:s3cret@h/p?api_key=k-999&q=1"
    assert job["headers"] == {"Authorization": "Bearer s3cret", "X-Team": "ops ${LITERAL}"}
    shown = json.dumps({k: _shown(k, v) for k, v in job.items()})  # what --diff and --dry-run print
    assert "s3cret" not in shown and "k-999" not in shown


def test_terminal_output_escapes_what_would_deceive_a_terminal() -> None:
    from node.cli import printable

    assert printable("plain é name") == "plain é name"
    assert printable("a\u202eevil\x1b[2Jb\u009b\u2028c") == "a\\u202eevil\\x1b[2Jb\\x9b\\u2028c"
    assert printable("x\u061cy\u200bz\ufeff") == "x\\u061cy\\u200bz\\ufeff"


def test_yaml_output_is_safe_for_a_terminal_and_reads_back_as_it_was() -> None:
    """printable() on YAML text turned a body's U+200F into six characters that a later apply kept."""
    import yaml

    from node.cli import export_jobs, printable, yaml_text

    for data in ({"body": {"msg": "שלום\u200f!"}}, {"name": "café"}, {"h": "\x1b[2J"}):
        text = yaml_text(data)
        assert printable(text) == text and yaml.safe_load(text) == data
    assert "café" in yaml_text({"name": "café"})  # readable when nothing deceives
    doc, _ = export_jobs([{"name": "j", "uri": "http://h/", "schedule": "@daily", "body": {"t": "${NOT_A_VAR}"}}])
    assert doc["jobs"][0]["body"] == {"t": "$${NOT_A_VAR}"}  # apply reads it back as the text ${NOT_A_VAR}


def test_a_trusted_proxy_matches_on_a_dual_stack_listener() -> None:
    """With CRONRING_HOST=:: an IPv4 proxy arrives as ::ffff:a.b.c.d, which is not in 10.0.0.0/8 as such."""
    from node.web.auth import _trusted, _within

    nets = _trusted(("10.0.0.0/8", "fd00::/8"))
    assert _within("10.1.2.3", nets) and _within("::ffff:10.1.2.3", nets) and _within("[fd00::1]", nets)
    assert not _within("::ffff:192.168.0.1", nets) and not _within("192.168.0.1", nets) and not _within("x", nets)


def test_a_job_stored_before_the_retry_floor_reads_with_it() -> None:
    """Low 7's floor: an old job's retryBackoffMs 0 read back as 0 made its own GET, echoed in a PUT, a 400."""
    from node.model.jobs import RETRY_FLOOR_MS, Job, validate

    job = validate({"uri": "http://h/", "schedule": "@daily"}, max_body_bytes=1024)
    row = {"id": "j1", "name": "old", "schedule": "@daily", "time_zone": "UTC", "paused": 0, "version": 1, "fence": 1,
           "spec": json.dumps({**job.spec(), "retry_backoff_ms": 0, "retry_max_backoff_ms": 50})}
    old = Job.from_row(row)
    assert old.retry_backoff_ms == old.retry_max_backoff_ms == RETRY_FLOOR_MS
    assert validate({k: v for k, v in old.to_api().items() if k != "id"}, max_body_bytes=1024).retry_backoff_ms == 100


def test_a_forms_number_takes_ascii_digits_only() -> None:
    """str.isdigit() takes "²" and "١", which int() refuses or reads: the dashboard's forms answered a 500."""
    from node.dashboard.views import _number

    assert _number("12") == 12 and _number("0") == 0
    assert [_number(x) for x in ("²", "١٢", "", "-1", "1.5", " 3", "9" * 19)] == [None] * 7
