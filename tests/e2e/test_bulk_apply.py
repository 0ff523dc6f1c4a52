"""Bulk apply (issue 22) against a real node: ``POST /api/crons/apply`` validates a batch as a whole and writes it in
one transaction or not at all (rows, history, audit, events), as the single routes would write each job; the client
library's ``apply_jobs`` and ``cronring jobs apply`` go through it, and fall back to one request per job on a node
without it. The node reaches MariaDB through a proxy the last test cuts (a 503, never a 500)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml
from aiohttp import web

from node.cluster.messages import JobEvent, unpack
from tests.e2e.test_ecosystem import cli
from tests.harness import DATABASE_URL, REDIS_URL, Cluster, TcpProxy, free_port, wait_for

ROOT_TOKEN = "bulk-root-token-001"
BILLING = "bulk-billing-token-02"
READER = "bulk-reader-token-03"
TOKENS = f"root={ROOT_TOKEN}:admin; billing={BILLING}:admin:team=billing; reader={READER}:read"
APPLY_LIMIT = 1 << 20  # CRONRING_MAX_APPLY_BODY_BYTES here: 1 MiB (the default API limit is 256 KiB)
SECRET = "sekrit-Tq93Lx"  # a header's value
PASSWORD = "pw-Hn27Rv"  # a target's password


@pytest.fixture(scope="module")
async def bulk() -> AsyncIterator[tuple[Cluster, TcpProxy]]:
    u = urlparse(DATABASE_URL)
    proxy = await TcpProxy(u.hostname or "127.0.0.1", u.port or 3306).start()
    c = Cluster("bulk", CRONRING_API_TOKENS=TOKENS, CRONRING_MAX_APPLY_BODY_BYTES=str(APPLY_LIMIT))
    c.db_host, c.db_port = "127.0.0.1", proxy.port
    try:
        await c.start_node("bulk-1")
        yield c, proxy
    finally:
        await c.close()
        await proxy.close()


@pytest.fixture
def cluster(bulk: tuple[Cluster, TcpProxy]) -> Cluster:
    return bulk[0]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def api(c: Cluster, method: str, path: str, token: str = ROOT_TOKEN, **kw: Any) -> tuple[int, Any]:
    status, body, _ = await c.request(method, f"{c.any_node().url}{path}", headers=auth(token), **kw)
    return status, body


async def apply(c: Cluster, jobs: list[Any], token: str = ROOT_TOKEN, **extra: Any) -> tuple[int, Any]:
    return await api(c, "POST", "/api/crons/apply", token, json={"jobs": jobs, **extra})


def spec(prefix: str, i: int, **fields: Any) -> dict[str, Any]:
    return {"name": f"{prefix}-{i:04d}", "uri": f"http://127.0.0.1:9/hook/{prefix}/{i}", "schedule": "0 3 * * *",
            **fields}


async def scalar(c: Cluster, sql: str, *args: Any) -> Any:
    conn = await c.db_conn()
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, args)
            return (await cur.fetchone())[0]
    finally:
        conn.close()


async def named(c: Cluster, prefix: str) -> dict[str, dict[str, Any]]:
    """The live jobs whose name starts with ``prefix-``, by name (every page)."""
    out: dict[str, dict[str, Any]] = {}
    cursor = ""
    while True:
        status, body, headers = await c.request("GET", f"{c.any_node().url}/api/crons?limit=500&q={prefix}-{cursor}",
                                                headers=auth(ROOT_TOKEN))
        assert status == 200, body
        out.update({j["name"]: j for j in body if j["name"].startswith(f"{prefix}-")})
        if "X-Next-Cursor" not in headers:
            return out
        cursor = f"&cursor={headers['X-Next-Cursor']}"


async def audit_rows(c: Cluster) -> int:
    return int(await scalar(c, "SELECT COUNT(*) FROM audit_log"))


async def stream_tip(c: Cluster) -> str:
    r = aioredis.from_url(REDIS_URL)
    try:
        last = await r.xrevrange(f"{c.namespace}:events", count=1)
        return last[0][0].decode() if last else "0-0"
    finally:
        await r.aclose()


async def job_events(c: Cluster, since: str) -> list[JobEvent]:
    """The job events the node put on the cluster's events stream after ``since``."""
    r = aioredis.from_url(REDIS_URL)
    try:
        entries = await r.xrange(f"{c.namespace}:events", min=f"({since}")
    finally:
        await r.aclose()
    records = [unpack(fields[b"r"]) for _, fields in entries]
    return [x for x in records if isinstance(x, JobEvent)]


async def api_requests(c: Cluster, route: str, method: str) -> float:
    """How many requests the node served on a route (its latency histogram's count)."""
    _, text = await api(c, "GET", "/metrics")
    for labels, value in re.findall(r"^cronring_api_request_duration_seconds_count\{([^}]*)\} (\S+)$", text, re.M):
        if dict(re.findall(r'(\w+)="([^"]*)"', labels)) == {"route": route, "method": method}:
            return float(value)
    return 0.0


# ---- the route --------------------------------------------------------------------------------------------


async def test_a_batch_is_created_with_history_audit_and_events(cluster: Cluster) -> None:
    tip, audited = await stream_tip(cluster), await audit_rows(cluster)
    specs = [spec("first", i, labels={"team": "billing" if i % 2 else "search"}) for i in range(300)]
    s, body = await apply(cluster, specs)
    assert s == 200, body
    assert (body["created"], body["updated"], body["unchanged"], body["dryRun"]) == (300, 0, 0, False)
    assert [(j["index"], j["name"], j["version"], j["result"]) for j in body["jobs"]] == [
        (i, f"first-{i:04d}", 1, "created") for i in range(300)]
    ids = [j["id"] for j in body["jobs"]]
    assert len(set(ids)) == 300 and all(re.fullmatch("[0-9a-f]{16}", i) for i in ids)
    listed = await named(cluster, "first")
    assert {n: j["id"] for n, j in listed.items()} == {j["name"]: j["id"] for j in body["jobs"]}
    one = listed["first-0007"]
    assert (one["uri"], one["schedule"], one["labels"], one["version"]) == (
        "http://127.0.0.1:9/hook/first/7", "0 3 * * *", {"team": "billing"}, 1)
    assert one["nextRunAt"]  # the node's own view of it
    ph = ",".join(["%s"] * 300)
    assert await scalar(cluster, f"SELECT COUNT(*) FROM job_history WHERE version = 1 AND job_id IN ({ph})", *ids) == 300
    assert await audit_rows(cluster) - audited == 300
    assert await scalar(cluster, "SELECT COUNT(*) FROM audit_log WHERE action = 'create' AND actor = 'root' AND"
                                 f" via = 'api' AND node = 'bulk-1' AND to_version = 1 AND job_id IN ({ph})", *ids) == 300
    events = await job_events(cluster, tip)
    assert sorted((e.op, e.id, e.version, e.origin) for e in events) == sorted(("created", i, 1, "bulk-1") for i in ids)
    s, versions = await api(cluster, "GET", f"/api/crons/{ids[0]}/versions")
    assert s == 200 and [v["version"] for v in versions] == [1] and versions[0]["change"]["action"] == "create"


async def test_unchanged_writes_nothing_and_changes_bump_versions(cluster: Cluster) -> None:
    specs = [spec("same", i) for i in range(20)]
    specs[0] |= {"uri": f"http://ops:{PASSWORD}@127.0.0.1:9/hook/same/0", "headers": {"X-Api-Key": SECRET}}
    s, body = await apply(cluster, specs)
    assert s == 200 and body["created"] == 20, body
    # every job sent back as the API shows it (read-only fields, masked secrets): all unchanged, nothing written
    shown = list((await named(cluster, "same")).values())
    assert next(j for j in shown if j["name"] == "same-0000")["headers"] == {"X-Api-Key": "***"}
    tip, audited = await stream_tip(cluster), await audit_rows(cluster)
    s, body = await apply(cluster, shown)
    assert s == 200 and (body["created"], body["updated"], body["unchanged"]) == (0, 0, 20), body
    assert {j["result"] for j in body["jobs"]} == {"unchanged"} and {j["version"] for j in body["jobs"]} == {1}
    assert await audit_rows(cluster) == audited and await job_events(cluster, tip) == []
    # the secrets are still the ones stored (a masked value sent back keeps them)
    by_name = {j["name"]: j for j in shown}
    spec_col = await scalar(cluster, "SELECT spec FROM jobs WHERE id = %s", by_name["same-0000"]["id"])
    assert SECRET in spec_col and PASSWORD in await scalar(cluster, "SELECT spec FROM jobs WHERE id = %s",
                                                           by_name["same-0000"]["id"])
    # five new schedules, three renames, two pauses; the other ten as they are
    changes: list[dict[str, Any]] = []
    for i in range(20):
        job = by_name[f"same-{i:04d}"]
        change: dict[str, Any] = {"id": job["id"]}
        if i < 5:
            change["schedule"] = "*/10 * * * *"
        elif i < 8:
            change["name"] = f"same-renamed-{i}"
        elif i < 10:
            change["paused"] = True
        else:
            change["schedule"] = job["schedule"]  # the same value: unchanged
        changes.append(change)
    s, body = await apply(cluster, changes)
    assert s == 200 and (body["created"], body["updated"], body["unchanged"]) == (0, 10, 10), body
    assert [j["result"] for j in body["jobs"]] == ["updated"] * 10 + ["unchanged"] * 10
    assert [j["version"] for j in body["jobs"]] == [2] * 10 + [1] * 10
    assert await audit_rows(cluster) - audited == 10
    events = await job_events(cluster, tip)
    assert sorted((e.id, e.version) for e in events) == sorted((c["id"], 2) for c in changes[:10])
    assert {e.paused for e in events if e.id in {c["id"] for c in changes[8:10]}} == {True}
    s, paused = await api(cluster, "GET", f"/api/crons/{changes[8]['id']}")
    assert paused["paused"] and paused["pausedBy"] == "root", paused
    s, rows = await api(cluster, "GET", f"/api/audit?jobId={changes[5]['id']}")
    assert rows[0]["action"] == "update" and rows[0]["changes"] == {"name": ["same-0005", "same-renamed-5"]}, rows
    assert (rows[0]["fromVersion"], rows[0]["toVersion"]) == (1, 2)
    # a new schedule restarts the timetable from the edit; a rename does not
    restarted = await scalar(cluster, "SELECT active_since = updated_at FROM jobs WHERE id = %s", changes[0]["id"])
    kept = await scalar(cluster, "SELECT active_since < updated_at FROM jobs WHERE id = %s", changes[5]["id"])
    assert restarted == 1 and kept == 1
    s, versions = await api(cluster, "GET", f"/api/crons/{changes[0]['id']}/versions")
    assert [(v["version"], v["job"]["schedule"]) for v in versions] == [(2, "*/10 * * * *"), (1, "0 3 * * *")]


async def test_a_reopen_restarts_the_timetable_as_put_does(cluster: Cluster) -> None:
    """A completed job (maxRuns reached) reopened by a higher maxRuns: as PUT, the apply sets active_since to the
    edit, so the instants that passed while it was completed are not fired (they were, at once, through apply)."""
    every_second = {"schedule": "* * * * * *", "maxRuns": 1, "misfirePolicy": "fire_all", "misfireGraceSeconds": 60}
    ids = {}
    for how in ("put", "apply"):
        s, job = await api(cluster, "POST", "/api/crons", json=spec("reopen", len(ids), **every_second))
        assert s == 201, job
        ids[how] = job["id"]

    async def completed() -> bool:
        return await scalar(cluster, "SELECT COUNT(*) FROM jobs WHERE completed_at IS NOT NULL AND id IN (%s, %s)",
                            *ids.values()) == 2

    await wait_for(completed, 20, "both jobs to complete")
    await asyncio.sleep(4)  # four instants pass while they are completed
    s, body = await api(cluster, "PUT", f"/api/crons/{ids['put']}", json={"maxRuns": 4})
    assert s == 200, body
    s, body = await apply(cluster, [{"id": ids["apply"], "maxRuns": 4}])
    assert s == 200 and body["updated"] == 1, body
    await asyncio.sleep(3)
    out = {}
    for how, job_id in ids.items():
        reopened = await scalar(cluster, "SELECT valid_from FROM job_history WHERE job_id = %s AND version = 3", job_id)
        since = await scalar(cluster, "SELECT active_since FROM jobs WHERE id = %s", job_id)
        stale = await scalar(cluster, "SELECT COUNT(*) FROM executions WHERE job_id = %s AND scheduled_at > (SELECT"
                                      " MIN(scheduled_at) FROM executions WHERE job_id = %s) AND scheduled_at < %s",
                             job_id, job_id, reopened)
        out[how] = {"active_since_is_the_reopen": since == reopened, "completed_period_instants_fired": stale}
    assert out["put"] == {"active_since_is_the_reopen": True, "completed_period_instants_fired": 0}, out
    assert out["apply"] == out["put"], out


async def test_one_bad_item_writes_nothing_and_names_it_without_its_secrets(cluster: Cluster) -> None:
    s, existing = await api(cluster, "POST", "/api/crons", json=spec("held", 0))
    assert s == 201
    tip, audited = await stream_tip(cluster), await audit_rows(cluster)
    specs: list[Any] = [spec("bad", i) for i in range(40)]
    specs[12] |= {"timeoutMs": 0, "headers": {"X-Api-Key": SECRET},
                  "uri": f"http://ops:{PASSWORD}@127.0.0.1:9/hook?api_key={SECRET}x"}
    specs[33]["schedule"] = "61 * * * *"
    specs[20] = {"id": existing["id"], "schedule": "0 4 * * *"}  # a good update in a bad batch: not written either
    specs.append({"id": "0123456789abcdef", "retries": 1})  # no such job
    specs.append({"uri": f"https://user:{PASSWORD}@[::1/x", "schedule": "* * * * *", "name": "unparsable"})
    s, body = await apply(cluster, specs)
    assert s == 400, body
    assert body["error"] == "4 of 42 job(s) refused: nothing was written"
    assert body["details"] == {"refused": 4, "jobs": 42}  # the items once, in items
    by_index = {i["index"]: i for i in body["items"]}
    assert sorted(by_index) == [12, 33, 40, 41], body
    assert (by_index[12]["name"], by_index[12]["status"], by_index[12]["error"]) == ("bad-0012", 400, "invalid input")
    assert by_index[12]["fields"]["timeoutMs"] == "must be between 1 and 300000"
    assert list(by_index[33]["fields"]) == ["schedule"] and "61" in by_index[33]["fields"]["schedule"], by_index[33]
    assert by_index[40] == {"index": 40, "name": None, "id": "0123456789abcdef", "status": 404, "error": "not found",
                            "fields": {"id": "no such job"}}
    text = json.dumps(body)
    assert SECRET not in text and PASSWORD not in text, text
    assert await named(cluster, "bad") == {}
    assert (await api(cluster, "GET", f"/api/crons/{existing['id']}"))[1]["version"] == 1
    assert await audit_rows(cluster) == audited and await job_events(cluster, tip) == []


async def test_a_scoped_token_as_on_the_single_routes(cluster: Cluster) -> None:
    s, theirs = await api(cluster, "POST", "/api/crons", json=spec("scoped", 0, labels={"team": "search"}))
    s, mine = await api(cluster, "POST", "/api/crons", json=spec("scoped", 1, labels={"team": "billing"}))
    audited = await audit_rows(cluster)
    # creating outside its selector: 403 (each such item), nothing written
    s, body = await apply(cluster, [spec("scoped", 2, labels={"team": "billing"}), spec("scoped", 3)], BILLING)
    assert s == 403 and [(i["index"], i["status"]) for i in body["items"]] == [(1, 403)], body
    assert "team=billing" in body["items"][0]["error"]
    # another team's job does not exist for it (its name is not told either); relabelling out of it is a 403
    s, body = await apply(cluster, [{"id": theirs["id"], "retries": 2}], BILLING)
    assert s == 400 and body["items"] == [{"index": 0, "name": None, "id": theirs["id"], "status": 404,
                                           "error": "not found", "fields": {"id": "no such job"}}], body
    s, body = await apply(cluster, [{"id": mine["id"], "labels": {"team": "search"}}], BILLING)
    assert s == 403 and body["items"][0]["name"] == "scoped-0001", body
    assert await audit_rows(cluster) == audited and "scoped-0002" not in await named(cluster, "scoped")
    # inside it: written, audited as the token's
    s, body = await apply(cluster, [{"id": mine["id"], "retries": 2}, spec("scoped", 4, labels={"team": "billing"})],
                          BILLING)
    assert s == 200 and (body["created"], body["updated"]) == (1, 1), body
    s, rows = await api(cluster, "GET", f"/api/audit?jobId={mine['id']}")
    assert (rows[0]["actor"], rows[0]["action"], rows[0]["changes"]) == ("billing", "update", {"retries": [0, 2]})
    s, body = await apply(cluster, [spec("scoped", 5)], READER)
    assert s == 403 and "read-only" in body["error"], body


async def test_a_dry_run_answers_and_writes_nothing(cluster: Cluster) -> None:
    s, job = await api(cluster, "POST", "/api/crons", json=spec("dry", 0))
    tip, audited = await stream_tip(cluster), await audit_rows(cluster)
    s, body = await apply(cluster, [spec("dry", 1), {"id": job["id"], "retries": 3}, {"id": job["id"]}], dryRun=True)
    assert s == 400 and body["items"][0]["index"] == 2 and "also item 1" in body["items"][0]["error"], body
    s, body = await apply(cluster, [spec("dry", 1), {"id": job["id"], "retries": 3}], dryRun=True)
    assert s == 200 and body["dryRun"] is True and (body["created"], body["updated"]) == (1, 1), body
    assert body["jobs"] == [{"index": 0, "id": None, "name": "dry-0001", "version": 1, "result": "created"},
                            {"index": 1, "id": job["id"], "name": "dry-0000", "version": 2, "result": "updated"}]
    assert list(await named(cluster, "dry")) == ["dry-0000"]
    assert (await api(cluster, "GET", f"/api/crons/{job['id']}"))[1]["retries"] == 0
    assert await audit_rows(cluster) == audited and await job_events(cluster, tip) == []


async def test_limits_and_malformed_requests(cluster: Cluster) -> None:
    s, body = await apply(cluster, [spec("many", i) for i in range(1001)])
    assert s == 400 and "at most 1000 jobs per request" in body["error"], body
    # this route's body limit is its own: above the API's 256 KiB, bounded by CRONRING_MAX_APPLY_BODY_BYTES
    padding = "x" * 1000
    s, body = await apply(cluster, [spec("big", i, body={"pad": padding}) for i in range(500)], dryRun=True)
    assert s == 200 and body["created"] == 500, body  # ~0.55 MB
    s, body = await apply(cluster, [spec("big", i, body={"pad": padding}) for i in range(1000)], dryRun=True)
    assert s == 413 and body["details"] == {"limit": APPLY_LIMIT}, body  # ~1.1 MB
    s, body = await apply(cluster, [])
    assert s == 200 and body == {"dryRun": False, "created": 0, "updated": 0, "unchanged": 0, "jobs": []}
    for bad in ({}, {"jobs": {}}, {"jobs": [], "dryRun": "yes"}, {"jobs": [], "extra": 1}, [], {"jobs": None}):
        s, body = await api(cluster, "POST", "/api/crons/apply", json=bad)
        assert s == 400, (bad, body)
    status, body, _ = await cluster.request("POST", f"{cluster.any_node().url}/api/crons/apply", data=b"{nope",
                                            headers={**auth(ROOT_TOKEN), "Content-Type": "application/json"})
    assert status == 400, body
    status, body, _ = await cluster.request("POST", f"{cluster.any_node().url}/api/crons/apply", data=b"jobs",
                                            headers={**auth(ROOT_TOKEN), "Content-Type": "text/plain"})
    assert status == 415, body


async def test_a_missing_calendar_is_named_on_its_items(cluster: Cluster) -> None:
    s, _ = await api(cluster, "PUT", "/api/calendars/bulk-holidays", json={"dates": ["2026-12-25"]})
    assert s in (200, 201)
    s, body = await apply(cluster, [spec("cal", 0, excludeCalendars=["bulk-holidays"]),
                                    spec("cal", 1, excludeCalendars=["bulk-holidays", "no-such-cal"])])
    assert s == 400 and [(i["index"], list(i["fields"])) for i in body["items"]] == [(1, ["excludeCalendars"])], body
    assert body["items"][0]["fields"]["excludeCalendars"] == "no such calendar: no-such-cal"
    s, body = await apply(cluster, [spec("cal", 0, excludeCalendars=["bulk-holidays"])])
    assert s == 200 and body["created"] == 1
    s, body = await apply(cluster, [{"id": body["jobs"][0]["id"], "retries": 1}])  # it keeps naming it
    assert s == 200 and body["updated"] == 1, body
    s, body = await api(cluster, "DELETE", "/api/calendars/bulk-holidays")
    assert s == 409  # a job names it (locked in share mode when the batch was written)


# ---- the client library -------------------------------------------------------------------------------------


async def test_the_client_applies_in_batches_and_reports_a_refused_one(cluster: Cluster) -> None:
    from node.client import AsyncClient, BadRequest, Client

    url = cluster.any_node().url
    sync = Client(url, ROOT_TOKEN)
    seen: list[tuple[int, int]] = []
    specs = [spec("lib", i) for i in range(250)]
    done = await asyncio.to_thread(sync.apply_jobs, specs, batch=100, progress=lambda d, t: seen.append((d, t)))
    assert (done["created"], done["batches"], seen) == (250, 3, [(100, 250), (200, 250), (250, 250)])
    assert [j["index"] for j in done["jobs"]] == list(range(250))
    ids = [j["id"] for j in done["jobs"]]
    async with AsyncClient(url, ROOT_TOKEN) as c:
        again = await c.apply_jobs([{"id": i, **s} for i, s in zip(ids, specs, strict=True)], batch=120)
        assert (again["unchanged"], again["batches"]) == (250, 3)
        dry = await c.apply_jobs([{"id": ids[0], "retries": 4}], dry_run=True)
        assert dry["dryRun"] and dry["jobs"][0]["result"] == "updated"
    # a refused second batch: the first was written, the error names the item by its place in the whole list
    more = [spec("libmore", i) for i in range(250)]
    more[180]["retries"] = 99
    with pytest.raises(BadRequest) as refused:
        await asyncio.to_thread(sync.apply_jobs, more, batch=100)
    e = refused.value
    assert e.status == 400 and [i["index"] for i in e.details] == [180] and e.details[0]["name"] == "libmore-0180"
    assert e.applied is not None and (e.applied["batches"], e.applied["created"]) == (1, 100)
    assert sorted(await named(cluster, "libmore")) == [f"libmore-{i:04d}" for i in range(100)]


async def test_the_client_fits_its_batches_to_the_nodes_body_limit(cluster: Cluster) -> None:
    """CRONRING_MAX_APPLY_BODY_BYTES is 1 MiB here, the client sends up to 4 MiB a request: the 413 names the node's
    limit (nothing written) and the client sends the rest in batches that fit it."""
    from node.client import Client

    before = await api_requests(cluster, "/api/crons/apply", "POST")
    many = [spec("fat", i, body={"pad": "x" * 3000}) for i in range(400)]  # ~1.3 MiB in all, ~3 KiB a job
    done = await asyncio.to_thread(Client(cluster.any_node().url, ROOT_TOKEN).apply_jobs, many)
    assert (done["created"], done["batches"]) == (400, 2), {k: v for k, v in done.items() if k != "jobs"}
    assert await api_requests(cluster, "/api/crons/apply", "POST") - before == 3  # the 413, then two that fit
    assert len(await named(cluster, "fat")) == 400


# ---- the CLI ------------------------------------------------------------------------------------------------


def jobs_file(path: Any, prefix: str, n: int) -> str:
    """A file of ``n`` jobs labelled ``suite: <prefix>`` (applied with ``--selector suite=<prefix>``: its diff and
    ``--prune`` leave the other tests' jobs alone)."""
    jobs = [spec(prefix, i, labels={"suite": prefix}) for i in range(n)]
    path.write_text(yaml.safe_dump({"jobs": jobs}, sort_keys=False))
    return str(path)


async def test_cli_apply_goes_through_the_bulk_route(cluster: Cluster, tmp_path: Any) -> None:
    f = tmp_path / "cli.yaml"
    bulk_before = await api_requests(cluster, "/api/crons/apply", "POST")
    single_before = await api_requests(cluster, "/api/crons", "POST")
    code, out = await cli(cluster, "--token", ROOT_TOKEN, "jobs", "apply", "-f", jobs_file(f, "cli", 400), "-l",
                          "suite=cli")
    assert code == 0 and out.count("  create     cli-") == 400 and "400 change(s)" in out, out[-2000:]
    assert "sent 400 job(s) in 1 request(s): 400 new" in out and "400/400 job(s) done" in out, out[-500:]
    assert await api_requests(cluster, "/api/crons/apply", "POST") - bulk_before == 1
    assert await api_requests(cluster, "/api/crons", "POST") == single_before
    code, out = await cli(cluster, "--token", ROOT_TOKEN, "jobs", "apply", "-f", str(f), "-l", "suite=cli")
    assert code == 0 and out.count("unchanged") == 400 and "0 change(s)" in out, out[-500:]
    assert await api_requests(cluster, "/api/crons/apply", "POST") - bulk_before == 1  # nothing to send
    doc = yaml.safe_load(f.read_text())
    for job in doc["jobs"][:40]:
        job["schedule"] = "15 3 * * *"
    doc["jobs"] = doc["jobs"][:370]  # the last 30 go with --prune
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, out = await cli(cluster, "--token", ROOT_TOKEN, "jobs", "apply", "-f", str(f), "--prune", "-l", "suite=cli")
    assert code == 0 and out.count("  update     cli-") == 40 and out.count("  delete     cli-") == 30, out[-2000:]
    assert "pruned 30 job(s)" in out and "70 change(s)" in out, out[-500:]
    jobs = await named(cluster, "cli")
    assert len(jobs) == 370 and {j["version"] for n, j in jobs.items() if n < "cli-0040"} == {2}
    assert {j["schedule"] for n, j in jobs.items() if n < "cli-0040"} == {"15 3 * * *"}
    rows = await scalar(cluster, "SELECT COUNT(*) FROM audit_log WHERE via = 'cli' AND action = 'update'")
    assert rows >= 40


async def test_cli_stops_at_a_refused_batch_and_says_how_far_it_got(cluster: Cluster, tmp_path: Any) -> None:
    f = tmp_path / "half.yaml"
    doc = {"jobs": [spec("half", i) for i in range(1500)]}
    doc["jobs"][1200]["timeoutMs"] = -5
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, out = await cli(cluster, "--token", ROOT_TOKEN, "jobs", "apply", "-f", str(f))
    assert code == 1, out[-2000:]
    assert "job #1201 half-1200: invalid input: timeoutMs: must be between 1 and 300000" in out, out[-2000:]
    assert "1000 of 1500 job(s) applied before it, in 1 batch(es)" in out, out[-2000:]
    assert "change(s)" not in out.splitlines()[-1]
    assert len(await named(cluster, "half")) == 1000


@pytest.fixture
async def older_node(cluster: Cluster) -> AsyncIterator[str]:
    """A node of an older release in front of the real one: no bulk apply, no bulk delete (404)."""
    target = cluster.any_node().url
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and request.path in ("/api/crons/apply", "/api/crons/delete"):
            return web.json_response({"error": "Not Found", "details": None}, status=404)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type",
                                                                             "x-cronring-client")}
        async with session.request(request.method, target + request.path_qs, headers=headers,
                                   data=await request.read()) as r:
            kept = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "x-next-cursor", "etag")}
            return web.Response(body=await r.read(), status=r.status, headers=kept)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


async def test_cli_falls_back_to_one_request_per_job_on_an_older_node(cluster: Cluster, older_node: str,
                                                                       tmp_path: Any) -> None:
    f = tmp_path / "old.yaml"
    single_before = await api_requests(cluster, "/api/crons", "POST")
    code, out = await cli(cluster, "--url", older_node, "--token", ROOT_TOKEN, "jobs", "apply", "-f",
                          jobs_file(f, "old", 30), "-l", "suite=old")
    assert code == 0 and out.count("  create     old-") == 30, out
    assert "sent 30 job(s) in 30 request(s): 30 new" in out, out
    assert await api_requests(cluster, "/api/crons", "POST") - single_before == 30
    doc = yaml.safe_load(f.read_text())
    doc["jobs"] = doc["jobs"][:25]
    doc["jobs"][0]["retries"] = 1
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, out = await cli(cluster, "--url", older_node, "--token", ROOT_TOKEN, "jobs", "apply", "-f", str(f), "--prune",
                          "-l", "suite=old")
    assert code == 0 and "pruned 5 job(s)" in out and "6 change(s)" in out, out
    jobs = await named(cluster, "old")
    assert len(jobs) == 25 and jobs["old-0000"]["retries"] == 1 and jobs["old-0000"]["version"] == 2


# ---- a node with the default limits (8 MiB a bulk apply) --------------------------------------------------------


@pytest.fixture(scope="module")
async def roomy() -> AsyncIterator[Cluster]:
    c = Cluster("bulkroomy", CRONRING_API_TOKENS=TOKENS)
    try:
        await c.start_node("roomy-1")
        yield c
    finally:
        await c.close()


async def post_raw(c: Cluster, raw: bytes) -> tuple[int, Any, float]:
    """POST a raw body to the bulk route while /livez is asked every 10 ms: the answer, and the longest /livez took
    (how long the node's loop was held)."""
    url = c.any_node().url
    lat: list[float] = []
    stop = False

    async def pinger() -> None:
        while not stop:
            t = time.perf_counter()
            async with c.session().get(f"{url}/livez") as r:
                await r.read()
            lat.append(time.perf_counter() - t)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(pinger())
    await asyncio.sleep(0.2)
    try:
        status, body, _ = await c.request("POST", f"{url}/api/crons/apply", data=raw,
                                          headers={**auth(ROOT_TOKEN), "Content-Type": "application/json"})
        await asyncio.sleep(0.3)
    finally:
        stop = True
        await task
    return status, body, max(lat)


async def test_a_body_of_millions_of_small_values_does_not_hold_the_loop(roomy: Cluster) -> None:
    """One item whose body is 2.8 million ``{}`` (8 MiB): parsed, walked and serialised in one step it held the loop
    3.5 s and the node dropped out of its own ring (a new epoch). The values are counted before the body is parsed:
    a 413. An item of more values than the job body limit (fewer than the request's) is refused before it is
    serialised to be measured."""
    n = (8 * 1024 * 1024 - 4096) // 3
    raw = ('{"jobs":[{"name":"fat","uri":"http://127.0.0.1:9/","schedule":"0 3 * * *","body":['
           + ",".join(["{}"] * n) + "]}]}").encode()
    s, before = await api(roomy, "GET", "/api/cluster")
    status, body, held = await post_raw(roomy, raw)
    assert status == 413 and body["details"] == {"limit": 8 * 1024 * 1024, "values": 200_000}, body
    s, after = await api(roomy, "GET", "/api/cluster")
    assert held < 0.5 and after["epoch"] == before["epoch"], (held, before["epoch"], after["epoch"])
    raw = ('{"jobs":[{"name":"dense","uri":"http://127.0.0.1:9/","schedule":"0 3 * * *","body":['
           + ",".join(["1"] * 100_000) + "]}]}").encode()
    status, body, held = await post_raw(roomy, raw)
    assert status == 400 and body["items"][0]["fields"] == {
        "body": "has more than 65536 values; the limit is 65536 bytes"}, body
    assert held < 0.5, held


async def test_a_refused_batch_answers_no_more_than_it_was_sent(roomy: Cluster) -> None:
    """1,000 items of 100 unknown keys each: every item's reasons were sent in ``fields`` and again in ``error``, and
    the list twice (``details`` and ``items``): a 2.3 MiB request got a 14 MiB answer. Now the list once, each item's
    first five fields and how many more."""
    items = [{f"unknown_field_{k:03d}": 0 for k in range(100)} for _ in range(1000)]
    raw = json.dumps({"jobs": items, "dryRun": True}).encode()
    status, body, _ = await roomy.request("POST", f"{roomy.any_node().url}/api/crons/apply", data=raw,
                                          headers={**auth(ROOT_TOKEN), "Content-Type": "application/json"})
    assert status == 400 and body["details"] == {"refused": 1000, "jobs": 1000}, str(body)[:500]
    assert len(json.dumps(body)) <= len(raw) // 4, f"{len(raw) // 1024} KiB sent, {len(json.dumps(body)) // 1024} KiB"
    assert body["items"][7] == {"index": 7, "name": None, "id": None, "status": 400,
                                "error": "invalid input (and 97 more field(s))",  # (uri and schedule are required)
                                "fields": {f"unknown_field_{k:03d}": "unknown field" for k in range(5)}}, body["items"][7]


async def test_a_batch_of_big_valid_jobs_is_written(roomy: Cluster) -> None:
    """Each job alone is accepted by POST /api/crons (a 64 KiB body of emoji); 120 of them in one apply (7.5 MiB) were
    one INSERT of ~45 MiB once JSON- and SQL-escaped, past MariaDB's max_allowed_packet: a 503 for a valid batch (and
    the node's database marked unavailable), the loop held ~680 ms escaping it. Now statements of at most 4 MiB."""
    emoji = "\U0001F600" * (16 * 1024 - 8)
    one, body, _ = await roomy.request("POST", f"{roomy.any_node().url}/api/crons", headers={
        **auth(ROOT_TOKEN), "Content-Type": "application/json"}, data=json.dumps(spec("emoji", 0, body=emoji),
                                                                                 ensure_ascii=False).encode())
    assert one == 201, body
    raw = json.dumps({"jobs": [spec("emoji", i, body=emoji) for i in range(1, 121)]}, ensure_ascii=False).encode()
    status, body, held = await post_raw(roomy, raw)
    assert status == 200 and body["created"] == 120, (status, str(body)[:300])
    assert held < 0.5, held
    s, job = await api(roomy, "GET", f"/api/crons/{body['jobs'][119]['id']}")
    assert s == 200 and job["body"] == emoji


# ---- a node with a job cap ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def capped() -> AsyncIterator[Cluster]:
    c = Cluster("bulkcapped", CRONRING_API_TOKENS=TOKENS, CRONRING_MAX_JOBS="5")
    try:
        await c.start_node("capped-1")
        yield c
    finally:
        await c.close()


async def test_a_dry_run_answers_as_the_real_run_would_at_the_job_cap(capped: Cluster) -> None:
    jobs = [spec("cap", i) for i in range(6)]
    dry = await apply(capped, jobs, dryRun=True)
    real = await apply(capped, jobs)
    assert dry == real and dry[0] == 409 and "5 (CRONRING_MAX_JOBS)" in dry[1]["error"], (dry, real)
    s, body = await apply(capped, jobs[:5], dryRun=True)
    assert s == 200 and body["created"] == 5, body


# ---- last: MariaDB away -------------------------------------------------------------------------------------


async def test_mariadb_away_is_a_503_and_nothing_half_written(bulk: tuple[Cluster, TcpProxy]) -> None:
    cluster, proxy = bulk
    proxy.cut()
    try:
        async def refused() -> bool:
            s, body = await apply(cluster, [spec("away", i) for i in range(50)])
            assert s in (200, 503), (s, body)
            return s == 503 and body["error"].startswith("database unavailable")

        await wait_for(refused, 20, "bulk apply to answer 503 while MariaDB is cut off")
    finally:
        proxy.restore()

    async def healthy() -> bool:
        return (await api(cluster, "GET", "/api/health"))[0] == 200

    await wait_for(healthy, 30, "the node to reach MariaDB again")
    assert await named(cluster, "away") == {}
