"""Two teams on one cluster: labels, tokens limited to a label selector, apply files with --selector and --prune,
bulk actions. Each team's token tries every route of the API (from the OpenAPI document) on the other team's job:
nothing is seen, nothing changes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.e2e.fixtures import cluster_fixture
from tests.e2e.test_ecosystem import cli
from tests.harness import Cluster, wait_for

ROOT_TOKEN = "root-token-000001"
BILLING = "billing-token-0002"
SEARCH = "search-token-00003"
TOKENS = (f"root={ROOT_TOKEN}:admin; billing={BILLING}:admin:team=billing;"
          f"search={SEARCH}:admin:team in (search, search-infra),tier!=secret; reader=reader-token-4:read")


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


cluster = cluster_fixture("teams", "team-1", "team-2", token=ROOT_TOKEN, CRONRING_API_TOKENS=TOKENS)


def team_file(cluster: Cluster, team: str, names: list[str]) -> str:
    jobs = "".join(f"""  - name: {n}
    uri: {cluster.receiver.url}/webhook
    schedule: '0 3 * * *'
    labels: {{team: {team}, tier: batch}}
""" for n in names)
    return f"jobs:\n{jobs}"


async def api(c: Cluster, method: str, path: str, token: str, **kw: Any) -> tuple[int, Any]:
    status, body, _ = await c.request(method, f"{c.any_node().url}{path}", headers=auth(token), **kw)
    return status, body


@pytest.fixture(scope="module")
async def teams(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    d = tmp_path_factory.mktemp("teams")
    for team, token, names in (("billing", BILLING, ["invoices", "dunning", "ledger-close"]),
                               ("search", SEARCH, ["reindex", "crawl"])):
        f = d / f"{team}.yaml"
        f.write_text(team_file(cluster, team, names))
        code, out = await cli(cluster, "--token", token, "jobs", "apply", "-f", str(f), "--selector", f"team={team}",
                              "--prune")
        assert code == 0 and out.count("create") == len(names), out
    # billing drops a job from its file: --prune deletes it, and only it
    f = d / "billing.yaml"
    f.write_text(team_file(cluster, "billing", ["invoices", "dunning"]))
    code, out = await cli(cluster, "--token", BILLING, "jobs", "apply", "-f", str(f), "--selector", "team=billing",
                          "--prune")
    assert code == 0 and "delete     ledger-close" in out and "reindex" not in out and "crawl" not in out, out
    # a file with a job outside its selector is refused before anything is sent
    f.write_text(team_file(cluster, "search", ["sneaky"]))
    code, out = await cli(cluster, "--token", BILLING, "jobs", "apply", "-f", str(f), "--selector", "team=billing")
    assert code == 1 and "do not match --selector" in out, out
    _, everything = await api(cluster, "GET", "/api/crons", ROOT_TOKEN)
    by_team: dict[str, dict[str, str]] = {"billing": {}, "search": {}}
    for j in everything:
        by_team[j["labels"]["team"]][j["name"]] = j["id"]
    assert set(by_team["billing"]) == {"invoices", "dunning"} and set(by_team["search"]) == {"reindex", "crawl"}
    return by_team


async def test_each_team_sees_only_its_jobs(cluster: Cluster, teams: dict[str, dict[str, str]]) -> None:
    for token, mine, theirs in ((BILLING, "billing", "search"), (SEARCH, "search", "billing")):
        s, listed = await api(cluster, "GET", "/api/crons", token)
        assert s == 200 and {j["id"] for j in listed} == set(teams[mine].values()), listed
        s, listed = await api(cluster, "GET", f"/api/crons?label=team={theirs}", token)
        assert s == 200 and listed == []
        s, listed = await api(cluster, "GET", f"/api/crons?q={next(iter(teams[theirs]))}", token)  # search too
        assert s == 200 and listed == []
        s, rows = await api(cluster, "GET", "/api/audit", token)  # (its deleted job's rows too: labels stay)
        assert s == 200 and rows and not {r["jobId"] for r in rows} & set(teams[theirs].values()), rows
        assert {r["actor"] for r in rows} == {mine}, rows
    # the unscoped token and label filters (AND, !=, in)
    s, listed = await api(cluster, "GET", "/api/crons?label=tier=batch&label=team!=billing", ROOT_TOKEN)
    assert {j["name"] for j in listed} == {"reindex", "crawl"}
    s, listed = await api(cluster, "GET", "/api/crons?label=team in (billing,nobody)", ROOT_TOKEN)
    assert {j["name"] for j in listed} == {"invoices", "dunning"}
    for bad in ("team=a=b", "team in ()", "=x", "team in (a", "a b", "Team_=x", "x" * 1001):
        s, body = await api(cluster, "GET", "/api/crons", ROOT_TOKEN, params={"label": bad})
        assert s == 400, (bad, s, body)


@pytest.mark.parametrize("token,theirs", [(BILLING, ("search", "reindex")), (SEARCH, ("billing", "invoices"))])
async def test_every_route_on_the_other_teams_job_is_not_found(cluster: Cluster, teams: dict[str, dict[str, str]],
                                                                token: str, theirs: tuple[str, str]) -> None:
    url = cluster.any_node().url
    doc = await cluster.get_json(f"{url}/api/openapi.json", headers=auth(ROOT_TOKEN))
    their_id = teams[theirs[0]][theirs[1]]
    _, before = await api(cluster, "GET", f"/api/crons/{their_id}", ROOT_TOKEN)
    tried = 0
    for path, ops in doc["paths"].items():
        if "{id}" not in path:
            continue
        concrete = path.replace("{id}", their_id).replace("{v}", "1").replace("{bid}", "0" * 16)
        for method, op in ops.items():
            body = (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("example")
            kw: dict[str, Any] = {"json": body if body is not None else {}} if method in ("post", "put", "patch") else {}
            status, resp = await api(cluster, method.upper(), concrete, token, **kw)
            assert status in (404, 400), (method, path, status, resp)  # 400: a body refused before the lookup
            if status == 400:  # then with a valid body it is still not found
                valid = {"/api/crons/{id}/skip": {"count": 1}, "/api/crons/{id}/restore": {"version": 1},
                         "/api/crons/{id}/backfill": {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}}
                status, resp = await api(cluster, method.upper(), concrete, token, json=valid.get(path, {}))
                assert status == 404, (method, path, status, resp)
            tried += 1
    assert tried >= 15, tried
    # the bulk routes name it by id: passed over
    for action in ("pause", "run", "delete"):
        status, resp = await api(cluster, "POST", f"/api/crons/{action}", token, json={"ids": [their_id]})
        assert status == 200 and resp["matched"] == 0, resp
    _, after = await api(cluster, "GET", f"/api/crons/{their_id}", ROOT_TOKEN)
    assert after["version"] == before["version"] and not after["paused"], after
    _, execs = await api(cluster, "GET", f"/api/crons/{their_id}/executions", ROOT_TOKEN)
    assert execs == [], execs  # no run-now got through either
    # the dashboard's pages as well
    for page in (f"/jobs/{their_id}", f"/jobs/{their_id}/edit", f"/jobs/{their_id}/row"):
        status, _ = await api(cluster, "GET", page, token)
        assert status == 404, page


async def test_a_scoped_token_cannot_create_or_move_a_job_outside_its_selector(
        cluster: Cluster, teams: dict[str, dict[str, str]]) -> None:
    for labels in ({}, {"team": "search"}, {"team": "billing-x"}):
        s, body = await api(cluster, "POST", "/api/crons", BILLING, json={
            "schedule": "0 4 * * *", "uri": f"{cluster.receiver.url}/webhook", "labels": labels})
        assert s == 403 and "team=billing" in body["error"], (labels, s, body)
    mine = teams["billing"]["invoices"]
    s, body = await api(cluster, "PATCH", f"/api/crons/{mine}", BILLING, json={"labels": {"team": "search"}})
    assert s == 403 and "team=billing" in body["error"], body
    s, body = await api(cluster, "PATCH", f"/api/crons/{mine}", BILLING, json={"labels": {
        "team": "billing", "tier": "batch", "owner": "ana"}})
    assert s == 200 and body["labels"] == {"owner": "ana", "team": "billing", "tier": "batch"}, body
    s, body = await api(cluster, "PUT", "/api/calendars/holidays", BILLING, json={"dates": ["2026-12-25"]})
    assert s == 403 and "cluster-wide" in body["error"], body
    s, body = await api(cluster, "PATCH", f"/api/crons/{mine}", "reader-token-4", json={"retries": 1})
    assert s == 403


async def test_bulk_actions_stay_inside_the_tokens_selector(cluster: Cluster, teams: dict[str, dict[str, str]]) -> None:
    s, dry = await api(cluster, "POST", "/api/crons/pause", BILLING, json={"selector": "tier=batch", "dryRun": True})
    assert s == 200 and dry["dryRun"] and {j["id"] for j in dry["jobs"]} == set(teams["billing"].values()), dry
    s, _ = await api(cluster, "GET", f"/api/crons/{teams['billing']['invoices']}", ROOT_TOKEN)
    s, done = await api(cluster, "POST", "/api/crons/pause", BILLING, json={"selector": "tier=batch",
                                                                            "note": "month end"})
    assert s == 200 and all(j["ok"] for j in done["jobs"]) and done["matched"] == 2, done
    _, everything = await api(cluster, "GET", "/api/crons", ROOT_TOKEN)
    paused = {j["name"] for j in everything if j["paused"]}
    assert paused == {"invoices", "dunning"}, paused
    # ids outside the selector are passed over, not touched
    s, done = await api(cluster, "POST", "/api/crons/resume", BILLING, json={
        "ids": [teams["search"]["crawl"], teams["billing"]["dunning"]]})
    assert s == 200 and [j["id"] for j in done["jobs"]] == [teams["billing"]["dunning"]], done
    s, rows = await api(cluster, "GET", f"/api/audit?jobId={teams['billing']['invoices']}&action=pause", ROOT_TOKEN)
    assert rows[0]["actor"] == "billing" and rows[0]["note"] == "month end", rows
    for bad in ({}, {"selector": "team in ("}, {"ids": "x"}, {"selector": "a=b", "dryRun": "yes"},
                {"selector": "a=b", "extra": 1}):
        s, body = await api(cluster, "POST", "/api/crons/resume", BILLING, json=bad)
        assert s == 400, (bad, body)
    code, out = await cli(cluster, "--token", BILLING, "jobs", "resume", "-l", "tier=batch")
    assert code == 0 and "2 job(s) match" in out, out


async def test_a_scoped_stream_carries_only_its_jobs(cluster: Cluster, teams: dict[str, dict[str, str]]) -> None:
    import aiohttp

    url = cluster.any_node().url
    theirs, mine = teams["search"]["crawl"], teams["billing"]["dunning"]
    seen: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as s, s.get(f"{url}/api/crons/status/stream", headers=auth(BILLING)) as r:
        buf = b""

        async def read_until(pred: Any) -> None:
            nonlocal buf
            while True:
                chunk = await r.content.readany()
                assert chunk, "the stream ended"
                buf = (buf + chunk).replace(b"\r\n", b"\n")
                while b"\n\n" in buf:
                    raw, buf = buf.split(b"\n\n", 1)
                    event = next((ln[6:].decode() for ln in raw.split(b"\n") if ln.startswith(b"event:")), "message")
                    data = "".join(ln[5:].decode().strip() for ln in raw.split(b"\n") if ln.startswith(b"data:"))
                    seen.append((event.strip(), data))
                    if pred(event.strip(), data):
                        return

        async with asyncio.timeout(15):
            await read_until(lambda e, d: e == "message" and d.startswith("{"))
        snapshot = json.loads(seen[-1][1])
        assert {c["id"] for c in snapshot["crons"]} == set(teams["billing"].values()), snapshot
        assert snapshot["totalCrons"] == 2
        # the other team's run first, then ours: ours arriving proves the stream went on past theirs
        s1, _ = await api(cluster, "POST", f"/api/crons/{theirs}/run", ROOT_TOKEN)
        await wait_for(lambda: _ran(cluster, theirs), 15, "the other team's run to finish")
        s2, _ = await api(cluster, "POST", f"/api/crons/{mine}/run", ROOT_TOKEN)
        assert s1 == s2 == 202
        async with asyncio.timeout(15):
            await read_until(lambda e, d: e == "executions" and mine in d)
    assert not any(theirs in d for _, d in seen), [x for x in seen if theirs in x[1]]


async def _ran(cluster: Cluster, job_id: str) -> bool:
    _, rows, _ = await cluster.request("GET", f"{cluster.any_node().url}/api/crons/{job_id}/executions",
                                       headers=auth(ROOT_TOKEN))
    return any(e["state"] not in ("claimed", "running") for e in rows)
