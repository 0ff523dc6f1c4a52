"""No route shows a job's secrets to anyone, and search is no oracle for them (security issue, High 1-2).

A job carries secrets in four places: a token header, an X-Api-Key header, the password in
its target's userinfo and a credential-named query parameter. Every API route from the OpenAPI
document and every dashboard page is read as a reader and as an admin, and each response is searched
for the bytes of those secrets and of the signing secret. The stream and the node's log are searched too.
"""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from tests.e2e.fixtures import cluster_fixture
from tests.harness import Cluster, wait_for

ADMIN = "admin-token-abcdef123"
READER = "read-token-abcdef1234"
SIGNING = "signing-secret-Zq81xV"
AUTH_SECRET = "Bearer s3cr3t-AuthValue-77"
KEY_SECRET = "k3y-Qw9PzL2m"
URI_PASSWORD = "pa55-Ur1xKq"
QUERY_SECRET = "qtok-Mv7Rk2"
KEY_SECRET_2 = "k3y-Second-Hq4Tn"  # an edited secret: versions, the audit log and restore carry both
ALERT_SECRET = "al3rt-Tok-Pz6Wd"  # in an alertUri's query
SECRETS = (AUTH_SECRET.split()[1], KEY_SECRET, URI_PASSWORD, QUERY_SECRET, SIGNING, KEY_SECRET_2, ALERT_SECRET)


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


cluster = cluster_fixture("secrets", "secrets-1", CRONRING_API_TOKENS=f"{ADMIN}:admin,{READER}:read",
                          CRONRING_SIGNING_SECRET=SIGNING)


@pytest.fixture(scope="module")
async def secret_job(cluster: Cluster) -> dict:
    port = cluster.receiver.url.rsplit(":", 1)[1]
    uri = f"http://svc:{URI_PASSWORD}@127.0.0.1:{port}/webhook?api_key={QUERY_SECRET}&plain=visible"
    status, body, _ = await cluster.request(
        "POST", f"{cluster.any_node().url}/api/crons", headers=auth(ADMIN),
        json={"name": "nightly-report", "uri": uri, "schedule": "* * * * * *",
              "headers": {"X-Service-Token": AUTH_SECRET, "X-Api-Key": KEY_SECRET, "X-Plain": "visible-value"}},
    )
    assert status == 201, body
    return body


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


async def _get(s: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with s.get(url, headers=headers, allow_redirects=False) as r:
        return r.status, await r.text()


async def _operated_job(cluster: Cluster, url: str) -> str:
    """A second job with secrets that went through the operations layer: edited (a new secret), with a secret
    alertUri, failing (alerts), paused with a note, resumed, restored to version 1."""
    port = cluster.receiver.url.rsplit(":", 1)[1]
    status, job, _ = await cluster.request("POST", f"{url}/api/crons", headers=auth(ADMIN), json={
        "name": "operated", "uri": f"http://svc:{URI_PASSWORD}@127.0.0.1:{port}/webhook?api_key={QUERY_SECRET}",
        "schedule": "* * * * * *", "headers": {"X-Api-Key": KEY_SECRET}, "expectStatus": 299,
        "alertUri": f"http://127.0.0.1:{port}/alerts/ops?token={ALERT_SECRET}"})
    assert status == 201, job
    jid = job["id"]
    for method, path, body in (("PATCH", "", {"headers": {"X-Api-Key": KEY_SECRET_2}}),
                               ("POST", "/pause", {"note": "rotating keys"}), ("POST", "/resume", None),
                               ("POST", "/restore", {"version": 1})):
        status, out, _ = await cluster.request(method, f"{url}/api/crons/{jid}{path}", headers=auth(ADMIN), json=body)
        assert status == 200, (path, out)

    async def alerted() -> bool:
        _, rows, _ = await cluster.request("GET", f"{url}/api/alerts?jobId={jid}", headers=auth(READER))
        return any(a["type"] == "job.failing" and a["state"] == "sent" for a in rows)

    await wait_for(alerted, 20, "a job.failing alert sent")
    return jid


async def test_no_route_shows_a_secret(cluster: Cluster, secret_job: dict) -> None:
    url = cluster.any_node().url
    jid = secret_job["id"]
    await wait_for(lambda: _fired(cluster, url, jid), 20, "the job to fire once")
    operated = await _operated_job(cluster, url)
    doc = await cluster.get_json(f"{url}/api/openapi.json", headers=auth(READER))
    streams = {"/api/crons/status/stream", "/api/crons/status-stream"}
    paths = [p.replace("{id}", j).replace("{v}", v) for p, ops in doc["paths"].items() if "get" in ops
             and p not in streams for j in (jid, operated) for v in ("1", "2", "3")]
    assert {"/api/audit", "/api/alerts", f"/api/crons/{operated}/versions/2"} <= set(paths)
    assert "/api/crons/{id}" in doc["paths"] and len(paths) >= 8
    pages = ["/", f"/?q={jid}", f"/jobs/{jid}", f"/jobs/{jid}/edit", f"/jobs/{jid}/row", "/jobs/new", "/cluster",
             f"/jobs/{operated}", f"/jobs/{operated}/edit", "/audit", f"/audit?jobId={operated}"]
    async with aiohttp.ClientSession() as s:
        for token in (READER, ADMIN):
            for path in paths + pages:
                status, text = await _get(s, url + path, auth(token))
                assert status < 500, (path, status)
                assert not leaks(text), (token == ADMIN and "admin" or "reader", path, leaks(text))
        # the stream: snapshot and live events
        async with s.get(f"{url}/api/crons/status/stream", headers=auth(READER)) as r:
            seen = b""
            async with asyncio.timeout(5):
                while b"execution" not in seen:
                    seen += await r.content.readany()
            assert not leaks(seen.decode(errors="replace"))
    log = cluster.nodes["secrets-1"].log()
    assert not leaks(log)
    # the CLI's outputs, as a reader and as an admin
    from tests.e2e.test_ecosystem import cli

    for token in (READER, ADMIN):
        for args in (("jobs", "get", jid), ("jobs", "list", "--json"), ("jobs", "list"), ("jobs", "ticks", jid),
                     ("cluster",)):
            code, out = await cli(cluster, "--token", token, *args)
            assert code == 0 and not leaks(out), (args, leaks(out))


async def _fired(cluster: Cluster, url: str, jid: str) -> bool:
    _, body, _ = await cluster.request("GET", f"{url}/api/crons/{jid}/executions", headers=auth(READER))
    return any(e["state"] == "succeeded" for e in body)


async def test_edit_form_masks_and_saving_it_keeps_the_secrets(cluster: Cluster, secret_job: dict) -> None:
    url = cluster.any_node().url
    jid = secret_job["id"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        status, html = await _get(s, f"{url}/jobs/{jid}/edit", auth(READER))
        assert status == 200 and not leaks(html)
        assert "X-Service-Token: ***" in html and "X-Plain: visible-value" in html and "svc:***@" in html
        # an admin saves the form as shown (masked values): the stored secrets stay
        async with s.get(f"{url}/login") as r:
            csrf = (await r.text()).split('name="csrf" value="')[1].split('"')[0]
        async with s.post(f"{url}/login", data={"csrf": csrf, "token": ADMIN, "next": "/"}, allow_redirects=False) as r:
            assert r.status == 303
        async with s.get(f"{url}/jobs/{jid}/edit") as r:
            html = await r.text()
        csrf = html.split('name="csrf" value="')[1].split('"')[0]  # bound to the login session
        fields = dict(re.findall(r'<input name="(\w+)"[^>]*value="([^"]*)"', html))
        for area in ("headers", "schedule"):  # (textareas: the schedule is one expression a line)
            fields[area] = html.split(f'name="{area}"')[1].split(">", 1)[1].split("</textarea>")[0]
        form = {"csrf": csrf, "version": str(secret_job["version"]), "name": "renamed",
                "uri": fields["uri"].replace("&amp;", "&"), "schedule": fields["schedule"],
                "timeZone": "UTC", "httpMethod": "POST", "headers": fields["headers"], "body": "",
                "misfirePolicy": "fire_once", "concurrencyPolicy": "allow"}
        async with s.post(f"{url}/jobs/{jid}/edit", data=form, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
    conn = await cluster.db_conn()
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT name, spec FROM jobs WHERE id=%s", (jid,))
            name, spec = await cur.fetchone()
    finally:
        conn.close()
    assert name == "renamed"
    for secret in (AUTH_SECRET, KEY_SECRET, URI_PASSWORD, QUERY_SECRET):
        assert secret in spec, secret


@pytest.mark.parametrize("token", [READER, ADMIN])
async def test_search_is_no_oracle_for_secrets(cluster: Cluster, secret_job: dict, token: str) -> None:
    url = cluster.any_node().url

    async def found(q: str) -> bool:
        status, body, _ = await cluster.request("GET", f"{url}/api/crons", params={"q": q}, headers=auth(token))
        assert status == 200
        page_status, html = await _get(cluster.session(), f"{url}/?q={q}", auth(token))
        assert page_status == 200
        return any(j["id"] == secret_job["id"] for j in body)

    # names, ids, schedules, hosts and paths are searchable ...
    assert await found("nightly") or await found("renamed")
    assert await found(secret_job["id"][:6])
    assert await found("127.0.0.1") and await found("/webhook")
    # ... secret values, and their first characters, are not
    for secret in (KEY_SECRET, URI_PASSWORD, QUERY_SECRET, "s3cr3t", "Bearer", "k3y", "svc:", "api_key"):
        assert not await found(secret), secret
