"""The CLI with declarative apply, the OpenAPI document against the real routes, and /metrics."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
import yaml

from node.web.openapi import EXAMPLE_JOB
from tests.e2e.fixtures import cluster_fixture
from tests.harness import ROOT, Cluster, wait_for

cluster = cluster_fixture("eco", "eco-1", "eco-2")


async def cli(cluster: Cluster, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    env = {**os.environ, "CRONRING_URL": cluster.any_node().url, **(env or {})}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "node", *args, cwd=ROOT, env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_apply_is_idempotent_prunes_and_dry_runs(cluster: Cluster, tmp_path) -> None:
    code, out = await cli(cluster, "jobs", "apply", "-f", "examples/jobs.yaml")
    assert code == 0 and out.count("create") == 3, out
    code, out = await cli(cluster, "jobs", "apply", "-f", "examples/jobs.yaml")
    assert code == 0 and "0 change(s)" in out and out.count("unchanged") == 3, out
    jobs = (await cluster.request("GET", f"{cluster.any_node().url}/api/crons"))[1]
    assert {j["name"]: j["delivery"] for j in jobs}["automated-backup"] == "at_least_once"
    code, out = await cli(cluster, "jobs", "ticks", next(j["id"] for j in jobs if j["name"] == "health-monitoring"),
                          "--from", "2030-01-01T00:00:00Z", "--to", "2030-01-01T00:10:00Z")
    assert code == 0 and out.count("not due yet") == 10 and "pending 10" in out, out  # every minute: 10 in 10 min
    # the dashboard of the other node shows them
    page = await cluster.session().get(f"{cluster.nodes['eco-2'].url}/")
    html = await page.text()
    assert all(n in html for n in ("automated-backup", "health-monitoring", "data-processing"))
    smaller = tmp_path / "jobs.yaml"
    smaller.write_text("jobs:\n  - name: health-monitoring\n    uri: http://monitoring:9090/collect-metrics\n"
                       "    httpMethod: GET\n    schedule: '*/5 * * * *'\n    timeZone: America/Sao_Paulo\n")
    code, out = await cli(cluster, "jobs", "apply", "-f", str(smaller), "--prune", "--dry-run")
    assert code == 0 and "update" in out and out.count("delete") == 2 and "dry run" in out
    assert len((await cluster.request("GET", f"{cluster.any_node().url}/api/crons"))[1]) == 3
    code, out = await cli(cluster, "jobs", "apply", "-f", str(smaller), "--prune")
    jobs = (await cluster.request("GET", f"{cluster.any_node().url}/api/crons"))[1]
    assert [(j["name"], j["schedule"]) for j in jobs] == [("health-monitoring", "*/5 * * * *")]
    code, out = await cli(cluster, "jobs", "list")
    assert "health-monitoring" in out
    code, out = await cli(cluster, "jobs", "list", "-q", "monitoring:9090")  # the server's search: the target too
    assert code == 0 and "health-monitoring" in out, out
    code, out = await cli(cluster, "jobs", "list", "-q", "no-such-job")
    assert code == 0 and "health-monitoring" not in out, out
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs:\n  - name: x\n    uri: ftp://x\n    schedule: '* * * * *'\n")
    code, out = await cli(cluster, "jobs", "apply", "-f", str(bad))
    assert code == 1 and "uri" in out


async def test_apply_with_secrets_converges_and_never_prints_them(cluster: Cluster, tmp_path) -> None:
    """The API masks secrets, so apply compares the file in the masked form: a job with an
    Authorization header and a password in its URI reaches "0 change(s)" on the second run (it was
    re-sent on every run), and no plan, diff or dry run prints the secrets (they landed in CI logs)."""
    token, password = "Bearer apply-secret-7f3a9c", "pw-apply-5d2e8b"
    recv = cluster.receiver.url.replace("http://", f"http://ops:{password}@")
    spec = tmp_path / "secret.yaml"

    def write(schedule: str) -> None:  # one job with an Authorization header, one with a password in its URI
        spec.write_text(f"jobs:\n  - name: secret-header\n    uri: {cluster.receiver.url}/webhook\n"
                        f"    schedule: '{schedule}'\n    headers:\n      Authorization: {token}\n      X-Team: ops\n"
                        f"  - name: secret-uri\n    uri: {recv}/webhook?api_key={password}\n    schedule: '0 3 * * *'\n")

    write("0 3 * * *")
    outputs = []
    code, out = await cli(cluster, "jobs", "apply", "-f", str(spec))
    outputs.append(out)
    assert code == 0 and out.count("create") == 2, out
    code, out = await cli(cluster, "jobs", "apply", "-f", str(spec))
    outputs.append(out)
    assert code == 0 and "0 change(s)" in out, out
    code, out = await cli(cluster, "jobs", "apply", "-f", str(spec), "--diff", "--exit-code")
    outputs.append(out)
    assert code == 0 and "0 change(s)" in out, out
    write("0 4 * * *")  # drift: the CI check says so, with a readable diff, and changes nothing
    code, out = await cli(cluster, "jobs", "apply", "-f", str(spec), "--diff", "--exit-code")
    outputs.append(out)
    assert code == 2 and 'schedule: "0 3 * * *" -> "0 4 * * *"' in out, out
    code, out = await cli(cluster, "jobs", "apply", "-f", str(spec), "--dry-run")
    outputs.append(out)
    assert "update" in out and "dry run" in out, out
    code, out = await cli(cluster, "jobs", "apply", "-f", str(spec))
    outputs.append(out)
    assert code == 0 and "1 change(s)" in out, out
    code, out = await cli(cluster, "jobs", "apply", "-f", str(spec), "--rotate-secrets")
    outputs.append(out)
    assert code == 0 and "2 change(s)" in out, out
    # export: the apply format, secrets as placeholders; applied back with them set, nothing changes
    exported = tmp_path / "exported.yaml"
    code, out = await cli(cluster, "jobs", "export", "-f", str(exported))
    outputs.append(out + exported.read_text())
    assert code == 0 and "CRONRING_SECRET_SECRET_HEADER_AUTHORIZATION" in exported.read_text(), out
    code, out = await cli(cluster, "jobs", "apply", "-f", str(exported), "--diff", "--exit-code",
                          env={"CRONRING_SECRET_SECRET_HEADER_AUTHORIZATION": token,
                               "CRONRING_SECRET_SECRET_URI_URI": password, "CRONRING_SECRET_SECRET_URI_URI_2": password})
    outputs.append(out)
    assert code == 0 and "0 change(s)" in out, out
    code, out = await cli(cluster, "jobs", "list", "-o", "yaml")
    outputs.append(out)
    assert code == 0 and "name: secret-header" in out, out
    for out in outputs:
        assert token.split()[1] not in out and password not in out, out
    # the secrets were kept through every update: the target still receives them
    ids = {j["name"]: j["id"] for j in (await cluster.request("GET", f"{cluster.any_node().url}/api/crons"))[1]}
    body = (await cluster.request("GET", f"{cluster.any_node().url}/api/crons/{ids['secret-header']}"))[1]
    assert body["headers"]["Authorization"] == "***", body
    body = (await cluster.request("GET", f"{cluster.any_node().url}/api/crons/{ids['secret-uri']}"))[1]
    assert ":***@" in body["uri"] and "api_key=***" in body["uri"], body
    conn = await cluster.db_conn()
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT GROUP_CONCAT(spec) FROM jobs WHERE id IN (%s, %s)",
                              (ids["secret-header"], ids["secret-uri"]))
            (stored,) = await cur.fetchone()
    finally:
        conn.close()
    assert token in stored and password in stored


async def test_cluster_command_lists_nodes(cluster: Cluster) -> None:
    code, out = await cli(cluster, "cluster")
    assert code == 0 and "eco-1" in out and "eco-2" in out and "epoch" in out
    assert "Redis: one server" in out and "MariaDB: one server (127.0.0.1:" in out, out


async def test_openapi_matches_routes_and_examples_work(cluster: Cluster) -> None:
    url = cluster.any_node().url
    spec = (await cluster.request("GET", f"{url}/api/openapi.json"))[1]
    from aiohttp import web

    from node.web import api
    app = web.Application()
    api.setup(app)
    routes = set()
    for r in app.router.routes():
        path = r.resource.canonical.replace("{id:[0-9a-f]{1,32}}", "{id}")
        if r.method != "HEAD":
            routes.add((path, r.method.lower()))
    routes |= {("/api/crons/status/stream", "get"), ("/api/crons/status-stream", "get")}
    documented = {(p, m) for p, ops in spec["paths"].items() for m in ops}
    assert routes == documented, (routes ^ documented)
    status, body, _ = await cluster.request("POST", f"{url}/api/crons", json={**EXAMPLE_JOB, "uri": f"{cluster.receiver.url}/webhook"})
    assert status == 201, body
    req = spec["paths"]["/api/schedules/preview"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert (await cluster.request("POST", f"{url}/api/schedules/preview", json=req))[0] == 200


async def test_metrics_show_fires_and_lateness(cluster: Cluster) -> None:
    await cluster.create_job(schedule="* * * * * *", name="metered")

    async def fired() -> str | None:
        texts = [(await cluster.request("GET", f"{n.url}/metrics"))[1] for n in cluster.nodes.values()]
        return "\n".join(texts) if any('cronring_fires_total{state="succeeded"}' in t for t in texts) else None

    text = await wait_for(fired, 15, "a fire in /metrics")
    assert "cronring_fire_lateness_seconds_bucket" in text and "cronring_members 2.0" in text
    assert "cronring_claims_total" in text and "cronring_ring_epoch" in text


async def test_the_client_library_sync_and_async(cluster: Cluster) -> None:
    """node.client against a real node: the same calls on Client and AsyncClient, errors as exceptions."""
    from node.client import AsyncClient, BadRequest, Client, NotFound

    url = cluster.any_node().url
    spec = {"name": "client-lib", "uri": f"{cluster.receiver.url}/webhook", "schedule": "0 5 * * *"}
    sync = Client(url)
    job = await asyncio.to_thread(sync.create_job, spec)
    assert job["name"] == "client-lib" and job["paused"] is False
    assert (await asyncio.to_thread(sync.pause, job["id"]))["paused"] is True
    assert (await asyncio.to_thread(sync.update_job, job["id"], {"schedule": "0 6 * * *"}))["schedule"] == "0 6 * * *"
    assert any(j["id"] == job["id"] for j in await asyncio.to_thread(sync.list_jobs, "client-lib"))
    with pytest.raises(BadRequest) as bad:
        await asyncio.to_thread(sync.create_job, {**spec, "schedule": "not cron"})
    assert bad.value.status == 400 and "schedule" in bad.value.details
    async with AsyncClient(url) as c:
        got = await c.get_job(job["id"])
        assert got["schedule"] == "0 6 * * *" and got["paused"] is True
        assert (await c.resume(job["id"]))["paused"] is False
        ledger = await c.ticks(job["id"], "2030-01-01T00:00:00Z", "2030-01-03T00:00:00Z")
        assert ledger["counts"]["pending"] == 2  # 06:00 on each of two days
        assert (await c.cluster())["members"]
        await c.delete_job(job["id"])
        with pytest.raises(NotFound):
            await c.get_job(job["id"])
    with pytest.raises(NotFound):
        await asyncio.to_thread(sync.get_job, job["id"])


ROUND_TRIP = """\
calendars:
  - name: eco-holidays
    timeZone: Europe/Lisbon
    dates: ['2026-12-25', '2027-01-01']
    ranges: [{from: '2026-08-01T00:00:00', to: '2026-08-16T00:00:00'}]
    weekdays: [0]
    description: days off
jobs:
  - name: eco-every-knob
    uri: http://127.0.0.1:9/hook
    schedules: ['H 9 * * 1-5', '0 12 L * *', '30 8 * * 5L']
    timeZone: Europe/Lisbon
    startAt: '2026-01-01T00:00:00.000Z'
    endAt: '2099-01-01T00:00:00.000Z'
    maxRuns: 500
    jitterSeconds: 120
    dstPolicy: {gap: skip, overlap: both}
    excludeCalendars: [eco-holidays]
    concurrencyPolicy: buffer_all
    pauseAfterFailures: 5
    alertUri: http://127.0.0.1:9/alerts/eco
    labels: {team: eco, tier: batch}
    expectBody: /^ok$/i
    expectJson: [{path: '$.items[0]["a b"]', equals: {x: [1, true]}}]
    maxDurationMs: 1500
  - name: eco-once
    uri: http://127.0.0.1:9/hook
    schedule: '@at 2099-12-24T18:00:00'
    timeZone: America/Sao_Paulo
    concurrencyPolicy: replace
"""


async def test_apply_round_trips_every_scheduling_field_and_the_calendars(cluster: Cluster, tmp_path) -> None:
    f = tmp_path / "sched.yaml"
    f.write_text(ROUND_TRIP)
    code, out = await cli(cluster, "jobs", "apply", "-f", str(f))
    assert code == 0 and "create     calendar eco-holidays" in out and out.count("create") == 3, out
    code, out = await cli(cluster, "jobs", "apply", "-f", str(f), "--diff", "--exit-code")
    assert code == 0 and "0 change(s)" in out, out
    jobs = {j["name"]: j for j in (await cluster.request("GET", f"{cluster.any_node().url}/api/crons"))[1]}
    knob = jobs["eco-every-knob"]
    assert knob["schedules"] == ["H 9 * * 1-5", "0 12 L * *", "30 8 * * 5L"] and knob["maxRuns"] == 500
    assert knob["dstPolicy"] == {"gap": "skip", "overlap": "both"} and knob["excludeCalendars"] == ["eco-holidays"]
    assert knob["concurrencyPolicy"] == "buffer_all" and jobs["eco-once"]["state"] == "waiting"
    assert knob["pauseAfterFailures"] == 5 and knob["alertUri"] == "http://127.0.0.1:9/alerts/eco"
    assert knob["labels"] == {"team": "eco", "tier": "batch"} and knob["maxDurationMs"] == 1500
    assert knob["expectBody"] == "/^ok$/i" and knob["expectJson"] == [{"path": '$.items[0]["a b"]',
                                                                       "equals": {"x": [1, True]}}]
    # export writes what apply reads back unchanged (calendars included, defaults left out)
    exported = tmp_path / "exported.yaml"
    code, out = await cli(cluster, "jobs", "export", "-f", str(exported))
    assert code == 0, out
    text = exported.read_text()
    assert "eco-holidays" in text and "dstPolicy" in text and "jitterSeconds: 120" in text
    assert "jitterSeconds: 0" not in text and "pauseAfterFailures: 0" not in text  # a default is left out
    assert "pauseAfterFailures: 5" in text
    doc = yaml.safe_load(text)  # (this module's other tests' jobs, one with a secret, are left out)
    doc["jobs"] = [j for j in doc["jobs"] if j["name"].startswith("eco-")]
    assert len(doc["jobs"]) == 2
    exported.write_text(yaml.safe_dump(doc))
    code, out = await cli(cluster, "jobs", "apply", "-f", str(exported), "--diff", "--exit-code")
    assert code == 0 and "0 change(s)" in out, out
    # a change to the calendar is seen, and pruning removes what the file no longer has (calendars after jobs)
    f.write_text(ROUND_TRIP.replace("weekdays: [0]", "weekdays: [0, 6]"))
    code, out = await cli(cluster, "jobs", "apply", "-f", str(f), "--diff", "--exit-code")
    assert code == 2 and "update     calendar eco-holidays" in out, out
    f.write_text("calendars: []\njobs: []\n")
    code, out = await cli(cluster, "jobs", "apply", "-f", str(f), "--prune")
    assert code == 0 and "delete     calendar eco-holidays" in out, out
    assert (await cluster.request("GET", f"{cluster.any_node().url}/api/calendars"))[1] == []
    # the calendars command
    cal = tmp_path / "cal.yaml"
    cal.write_text("timeZone: UTC\nweekdays: [6]\n")
    code, out = await cli(cluster, "calendars", "put", "weekends", "-f", str(cal))
    assert code == 0 and "version 1" in out, out
    code, out = await cli(cluster, "calendars", "list")
    assert code == 0 and "weekends" in out, out
    code, out = await cli(cluster, "calendars", "delete", "weekends")
    assert code == 0, out


async def test_operations_through_the_cli_and_the_client(cluster: Cluster) -> None:
    """Pause with a note and an end, versions with a diff, restore, the audit log (via cli) and alerts: the CLI
    and both clients."""
    from node.client import AsyncClient, Client

    url = cluster.any_node().url
    job = await cluster.create_job(schedule="0 0 1 1 *", name="eco-ops")
    jid = job["id"]
    code, out = await cli(cluster, "jobs", "pause", jid, "--note", "quarter close", "--until", "2099-01-01T00:00:00Z")
    assert code == 0 and "paused until 2099-01-01T00:00:00.000Z: quarter close" in out, out
    code, out = await cli(cluster, "jobs", "update", jid, '{"retries": 3}')
    assert code == 0, out
    code, out = await cli(cluster, "jobs", "versions", jid)
    assert code == 0 and "pause" in out and "update" in out and "create" in out, out
    code, out = await cli(cluster, "jobs", "versions", jid, "--diff", "1", "3")
    assert code == 0 and "retries: 0 -> 3" in out and "paused: false -> true" in out, out
    code, out = await cli(cluster, "jobs", "restore", jid, "1")
    assert code == 0 and "restored version 1 as version 4" in out, out
    code, out = await cli(cluster, "audit", "--job", jid, "-o", "json")
    rows = yaml.safe_load(out)
    assert code == 0 and [(r["action"], r["via"]) for r in rows] == [
        ("restore", "cli"), ("update", "cli"), ("pause", "cli"), ("create", "api")], rows
    code, out = await cli(cluster, "audit", "--job", jid, "--action", "pause")
    assert code == 0 and "quarter close" in out and "restore" not in out, out
    code, out = await cli(cluster, "audit", "--action", "drop")
    assert code == 1 and "action must be one of" in out, out
    code, out = await cli(cluster, "alerts")
    assert code == 0 and "TYPE" in out, out
    code, out = await cli(cluster, "jobs", "list", "--state", "failing")
    assert code == 0 and "eco-ops" not in out, out

    c = Client(url)
    assert c.get_job(jid)["paused"] is False  # version 1 was not paused
    assert [v["version"] for v in c.versions(jid)][:2] == [4, 3]
    paused = c.pause(jid, "from the client")
    assert paused["pausedReason"] == "from the client"
    assert c.audit(job_id=jid, limit=1)[0]["via"] == "api"
    assert c.restore(jid, 3)["retries"] == 3
    async with AsyncClient(url) as ac:
        assert (await ac.resume(jid, "done"))["paused"] is False
        assert (await ac.version(jid, 1))["job"]["retries"] == 0
        assert (await ac.audit(job_id=jid, action="resume"))[0]["note"] == "done"
        assert isinstance(await ac.alerts(limit=5), list)
        assert all(j["failStreak"] > 0 for j in await ac.list_jobs(state="failing"))
