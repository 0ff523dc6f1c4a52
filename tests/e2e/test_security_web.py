"""Browser-facing security (security issue, Medium 5-7 and Low 17) against a real node with tokens:
the login redirect, CSRF on the JSON API and on forms, strict content types, previews for readers."""

from __future__ import annotations

import re

import aiohttp
import pytest

from tests.e2e.fixtures import cluster_fixture
from tests.harness import Cluster

ADMIN = "admin-token-web-123456"
READER = "read-token-web-1234567"


cluster = cluster_fixture("secweb", "secweb-1", receiver=False, CRONRING_API_TOKENS=f"{ADMIN}:admin,{READER}:read")


async def _login(s: aiohttp.ClientSession, url: str, token: str = ADMIN, nxt: str = "/") -> aiohttp.ClientResponse:
    async with s.get(f"{url}/login") as r:
        csrf = (await r.text()).split('name="csrf" value="')[1].split('"')[0]
    async with s.post(f"{url}/login", data={"csrf": csrf, "token": token, "next": nxt}, allow_redirects=False) as r:
        return r


def _jar() -> aiohttp.CookieJar:
    return aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1


@pytest.mark.parametrize("nxt", ["/\t/evil.example", "/\n/evil.example", "/\\evil.example", "//evil.example",
                                 "https://evil.example/", "/\x00/evil", " //evil.example", "/%09/x?ok"])
async def test_login_never_redirects_off_the_node(cluster: Cluster, nxt: str) -> None:
    url = cluster.any_node().url
    async with aiohttp.ClientSession(cookie_jar=_jar()) as s:
        r = await _login(s, url, nxt=nxt)
        assert r.status == 303
        loc = r.headers["Location"]
        assert loc == "/" or (loc.startswith("/") and not loc.startswith("//") and "\t" not in loc), loc
    async with aiohttp.ClientSession(cookie_jar=_jar()) as s:
        r = await _login(s, url, nxt="/jobs/new?x=1")
        assert r.headers["Location"] == "/jobs/new?x=1"  # a real path survives


async def test_cookie_writes_through_the_api_need_the_session_csrf_token(cluster: Cluster) -> None:
    url = cluster.any_node().url
    job = {"uri": "http://127.0.0.1:9/", "schedule": "@daily", "paused": True}
    async with aiohttp.ClientSession(cookie_jar=_jar()) as s:
        assert (await _login(s, url)).status == 303
        # what a page on a sibling origin could send without a preflight
        async with s.post(f"{url}/api/crons", data=b'{"uri":"http://127.0.0.1:9/","schedule":"@daily"}',
                          headers={"Content-Type": "text/plain; x=+json"}) as r:
            assert r.status == 403
        async with s.post(f"{url}/api/crons", json=job) as r:
            assert r.status == 403 and "X-CSRF-Token" in (await r.json())["error"]
        async with s.get(f"{url}/") as r:
            token = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', await r.text()).group(1)
        async with s.post(f"{url}/api/crons", json=job, headers={"X-CSRF-Token": token}) as r:
            assert r.status == 201, await r.text()
            jid = (await r.json())["id"]
        # a body-less write (what resumed a job before)
        async with s.post(f"{url}/api/crons/{jid}/resume") as r:
            assert r.status == 403
        async with s.post(f"{url}/api/crons/{jid}/resume", headers={"X-CSRF-Token": "0" * 32}) as r:
            assert r.status == 403
        # bearer clients are unaffected (no cookie, no CSRF), and content types are parsed, not matched
    for ctype in ("text/plain; x=+json", "application/jsonx", "text/json", "application/x+json"):
        status, _, _ = await cluster.request("POST", f"{url}/api/crons", data=b'{"uri":"http://127.0.0.1:9/"}',
                                             headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": ctype})
        assert status == 415, ctype
    status, body, _ = await cluster.request("POST", f"{url}/api/crons/{jid}/resume",
                                            headers={"Authorization": f"Bearer {ADMIN}"})
    assert status == 200 and body["paused"] is False


async def test_a_planted_csrf_cookie_does_not_pass_the_form_check(cluster: Cluster) -> None:
    url = cluster.any_node().url
    status, job, _ = await cluster.request("POST", f"{url}/api/crons", json={"uri": "http://127.0.0.1:9/",
                                                                              "schedule": "@daily"},
                                           headers={"Authorization": f"Bearer {ADMIN}"})
    assert status == 201
    async with aiohttp.ClientSession(cookie_jar=_jar()) as s:
        assert (await _login(s, url)).status == 303
        planted = "a" * 32
        s.cookie_jar.update_cookies({"cronring_csrf": planted})
        async with s.post(f"{url}/jobs/{job['id']}/pause", data={"csrf": planted}, allow_redirects=False) as r:
            assert r.status == 403
        async with s.get(f"{url}/jobs/{job['id']}") as r:
            csrf = (await r.text()).split('name="csrf" value="')[1].split('"')[0]
        async with s.post(f"{url}/jobs/{job['id']}/pause", data={"csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 303
    assert (await cluster.request("GET", f"{url}/api/crons/{job['id']}",
                                  headers={"Authorization": f"Bearer {READER}"}))[1]["paused"] is True


async def test_a_preview_is_a_read(cluster: Cluster) -> None:
    url = cluster.any_node().url
    status, body, _ = await cluster.request("POST", f"{url}/api/schedules/preview",
                                            json={"schedule": "*/5 * * * *", "timeZone": "Europe/Lisbon"},
                                            headers={"Authorization": f"Bearer {READER}"})
    assert status == 200 and len(body["fires"]) == 10
    status, _, _ = await cluster.request("POST", f"{url}/api/crons", json={"uri": "http://127.0.0.1:9/",
                                                                           "schedule": "@daily"},
                                         headers={"Authorization": f"Bearer {READER}"})
    assert status == 403
