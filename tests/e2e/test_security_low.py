"""The security issue's Low findings (8-16, 18) and the session cookie's server-side expiry, against
real node and receiver processes."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.fixtures import cluster_fixture
from tests.harness import Cluster, wait_for
from tests.local_server import LocalServer

ADMIN = "admin-token-low-123456"
READER = "read-token-low-1234567"
H = {"Authorization": f"Bearer {ADMIN}"}


cluster = cluster_fixture("seclow", "seclow-1", CRONRING_API_TOKENS=f"{ADMIN}:admin,{READER}:read",
                          CRONRING_MAX_JOBS="11", CRONRING_RUN_NOW_PER_MINUTE="3")


async def _create(c: Cluster, **fields) -> tuple[int, dict]:
    status, body, _ = await c.request("POST", f"{c.any_node().url}/api/crons", headers=H,
                                      json={"uri": "http://127.0.0.1:9/", "schedule": "@daily", "paused": True,
                                            **fields})
    return status, body


async def test_a_new_origin_needs_its_secrets_entered_again(cluster: Cluster) -> None:
    status, job = await _create(cluster, headers={"X-Api-Key": "k-123456"})
    assert status == 201 and job["headers"]["X-Api-Key"] == "***"
    url = f"{cluster.any_node().url}/api/crons/{job['id']}"
    # same origin, masked value echoed: kept
    status, body, _ = await cluster.request("PUT", url, headers=H, json={"uri": "http://127.0.0.1:9/other",
                                                                         "headers": {"X-Api-Key": "***"}})
    assert status == 200
    # another origin with the masked value: refused, nothing changed
    status, body, _ = await cluster.request("PUT", url, headers=H, json={"uri": "http://127.0.0.1:10/",
                                                                         "headers": {"X-Api-Key": "***"}})
    assert status == 400 and "X-Api-Key" in body["details"]["headers"]
    assert (await cluster.request("GET", url, headers=H))[1]["uri"] == "http://127.0.0.1:9/other"
    status, body, _ = await cluster.request("PUT", url, headers=H, json={"uri": "http://127.0.0.1:10/",
                                                                         "headers": {"X-Api-Key": "k-new-999"}})
    assert status == 200


async def test_what_a_target_echoes_is_masked(cluster: Cluster) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=500, text=f"you sent {request.headers.get('X-Api-Key')} and "
                                             f"{request.headers.get('Authorization')}")

    async with LocalServer(echo) as srv:
        port = srv.port
        status, job = await _create(cluster, uri=f"http://127.0.0.1:{port}/", schedule="* * * * * *", paused=False,
                                    headers={"X-Api-Key": "echo-secret-77", "Authorization": "Bearer tok-echo-88"})
        assert status == 201

        async def failed_row() -> dict | None:
            _, rows, _ = await cluster.request("GET", f"{cluster.any_node().url}/api/crons/{job['id']}/executions",
                                               headers={"Authorization": f"Bearer {READER}"})
            return next((r for r in rows if r["state"] == "failed"), None)

        row = await wait_for(failed_row, 15, "a failed execution")
        assert "you sent *** and ***" in row["responseExcerpt"], row
        assert "echo-secret-77" not in str(row) and "tok-echo-88" not in str(row)
        await cluster.request("POST", f"{cluster.any_node().url}/api/crons/{job['id']}/pause", headers=H)


@pytest.mark.parametrize("raw", [
    b'{"uri": "http://127.0.0.1:9/", "schedule": "@daily", "timeoutMs": ' + b"9" * 5000 + b"}",
    b'{"uri": "http://127.0.0.1:9/", "schedule": "@daily", "name": "\\ud800"}',
    b'{"uri": "http://127.0.0.1:9/", "schedule": "@daily", "name": "a\\u0001b"}',
    b'{"uri": "http://127.0.0.1:9/", "schedule": "@daily", "headers": {"X-A\\n": "v"}}',
    b'{"uri": "http://127.0.0.1:9/", "schedule": "@daily", "headers": {"X-A": "\\udfff"}}',
    b'{"uri": "http://127.0.0.1:9/", "schedule": "@daily", "body": "\\ud800"}',
])
async def test_hostile_bodies_are_400s(cluster: Cluster, raw: bytes) -> None:
    status, body, _ = await cluster.request("POST", f"{cluster.any_node().url}/api/crons", data=raw,
                                            headers={**H, "Content-Type": "application/json"})
    assert status == 400, body


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"])
async def test_extreme_preview_instants_are_400s(cluster: Cluster, when: str) -> None:
    status, job = await _create(cluster)
    url = cluster.any_node().url
    rh = {"Authorization": f"Bearer {READER}"}
    assert (await cluster.request("GET", f"{url}/api/crons/{job['id']}/preview", params={"from": when},
                                  headers=rh))[0] == 400
    assert (await cluster.request("POST", f"{url}/api/schedules/preview", headers=rh,
                                  json={"schedule": "@yearly", "from": when}))[0] == 400


async def test_the_job_cap_holds_under_concurrent_creates(cluster: Cluster) -> None:
    have = len((await cluster.request("GET", f"{cluster.any_node().url}/api/crons", headers=H))[1])
    codes = await asyncio.gather(*(_create(cluster) for _ in range(40)))
    assert sorted({c for c, _ in codes}) == [201, 409] or have >= 11
    assert len((await cluster.request("GET", f"{cluster.any_node().url}/api/crons", headers=H))[1]) == 11
    deleted = [b["id"] for c, b in codes if c == 201]
    for jid in deleted:  # leave room for the other tests
        await cluster.request("DELETE", f"{cluster.any_node().url}/api/crons/{jid}", headers=H)


async def test_run_now_limit_is_atomic_and_answers_the_right_error(cluster: Cluster) -> None:
    status, job = await _create(cluster)
    url = f"{cluster.any_node().url}/api/crons/{job['id']}/run"
    codes = [r[0] for r in await asyncio.gather(*(cluster.request("POST", url, headers=H) for _ in range(20)))]
    assert sorted(codes).count(202) == 3 and set(codes) == {202, 429}, codes


async def test_a_trickled_body_is_cut_off(cluster: Cluster) -> None:
    node = cluster.any_node()
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(f"POST /api/crons HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{".encode())
        await writer.drain()
        t0 = time.monotonic()
        async with asyncio.timeout(20):
            status_line = await reader.readline()
        assert b"408" in status_line and time.monotonic() - t0 < 15, status_line
    finally:
        writer.close()


async def test_security_headers_and_secure_cookies_behind_https(cluster: Cluster) -> None:
    url = cluster.any_node().url
    async with cluster.session().get(f"{url}/login", headers={"X-Forwarded-Proto": "https"}) as r:
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["Referrer-Policy"] == "same-origin" and r.headers["Server"] == "cronring"
        assert "Secure" in r.headers.get("Set-Cookie", "")
    async with cluster.session().get(f"{url}/api/health") as r:
        assert r.headers["Server"] == "cronring" and "aiohttp" not in r.headers["Server"]


async def test_wrong_tokens_are_throttled(make_cluster) -> None:
    c: Cluster = await make_cluster("throttle", receiver=False)
    await c.start_node("throttle-1", CRONRING_API_TOKENS=f"{ADMIN}:admin")
    url = c.any_node().url
    codes = [(await c.request("GET", f"{url}/api/crons", headers={"Authorization": f"Bearer wrong-{i}"}))[0]
             for i in range(12)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429], codes
    status, _, headers = await c.request("GET", f"{url}/api/crons", headers={"Authorization": "Bearer wrong-x"})
    assert status == 429 and int(headers["Retry-After"]) > 0  # the address's failures wait ...
    # ... but a correct token always passes (security round 2, Medium 3: behind a proxy or a NAT every user
    # shares the address, and ten guesses by anyone locked them all out, dashboard logins too)
    status, _, _ = await c.request("GET", f"{url}/api/crons", headers=H)
    assert status == 200
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:  # cookies for 127.0.0.1
        async with s.get(f"{url}/login") as r:
            csrf = (await r.text()).split('name="csrf" value="')[1].split('"')[0]
        async with s.post(f"{url}/login", data={"csrf": csrf, "token": ADMIN, "next": "/"},
                          allow_redirects=False) as r:
            assert r.status == 303 and "cronring_session" in r.headers.get("Set-Cookie", "")
    async with c.session().get(f"{url}/metrics") as r:
        assert "cronring_auth_failures_total 10.0" in await r.text()
    # without trusted proxies, X-Forwarded-For is the client's to write: it cannot escape the throttle
    status, _, _ = await c.request("GET", f"{url}/api/crons", headers={"Authorization": "Bearer wrong-y",
                                                                       "X-Forwarded-For": "10.9.9.9"})
    assert status == 429


async def test_behind_a_trusted_proxy_the_throttle_counts_each_client(make_cluster) -> None:
    c: Cluster = await make_cluster("proxied", receiver=False)
    await c.start_node("proxied-1", CRONRING_API_TOKENS=f"{ADMIN}:admin", CRONRING_TRUSTED_PROXIES="127.0.0.1/32")
    url = c.any_node().url

    async def call(client: str, token: str = "wrong") -> int:
        # as Traefik forwards: the client's own (maybe forged) header, then the address it came from
        hdrs = {"Authorization": f"Bearer {token}", "X-Forwarded-For": f"203.0.113.66, {client}"}
        return (await c.request("GET", f"{url}/api/crons", headers=hdrs))[0]

    assert [await call("198.51.100.7") for _ in range(11)] == [401] * 10 + [429]
    assert await call("198.51.100.8") == 401  # another client behind the same proxy is not throttled
    assert await call("198.51.100.7", ADMIN) == 200


async def test_a_session_cookie_expires_on_the_server(cluster: Cluster) -> None:
    from node.web.auth import SESSION_SECONDS, session_value

    url = cluster.any_node().url
    for issued, expected in ((int(time.time()) - SESSION_SECONDS - 5, 401), (int(time.time()) - 60, 200)):
        jar = aiohttp.CookieJar(unsafe=True)
        jar.update_cookies({"cronring_session": session_value(ADMIN, issued)}, response_url=aiohttp.client.URL(url))
        async with aiohttp.ClientSession(cookie_jar=jar) as s, s.get(f"{url}/api/crons") as r:
            assert r.status == expected


async def test_the_receiver_serves_its_own_log_only_and_guards_reset(cluster: Cluster, tmp_path) -> None:
    rx = cluster.receiver
    (cluster.dir / "other-program.log").write_text("secret stuff\n")
    status, body, _ = await cluster.request("GET", f"{rx.url}/logs")
    assert body["files"] == ["deliveries.log"]
    assert (await cluster.request("GET", f"{rx.url}/logs/other-program.log"))[0] == 404
    assert (await cluster.request("GET", f"{rx.url}/logs/deliveries.log"))[0] == 200
    # with a token configured, /reset needs it
    from receiver.app import create_app

    runner = web.AppRunner(create_app(log_file=str(tmp_path / "r.log"), token="reset-tok"), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        assert (await cluster.request("POST", f"{base}/reset"))[0] == 401
        assert (await cluster.request("POST", f"{base}/reset", headers={"Authorization": "Bearer nope"}))[0] == 401
        assert (await cluster.request("POST", f"{base}/reset", headers={"Authorization": "Bearer reset-tok"}))[0] == 200
    finally:
        await runner.cleanup()


async def test_run_now_and_live_streams_are_limited_per_token(make_cluster) -> None:
    """Security round 2, Lows 7 and 8: one token cannot make every job's target a flood through run now
    (the per-job limit, times many jobs), nor hold a node's stream slots (each snapshot costs the loop)."""
    other = "admin-token-low-other-99"
    c: Cluster = await make_cluster("percaller", receiver=False)
    await c.start_node("percaller-1", CRONRING_API_TOKENS=f"{ADMIN}:admin,{other}:admin,{READER}:read",
                       CRONRING_RUN_NOW_PER_MINUTE="3", CRONRING_RUN_NOW_PER_TOKEN_PER_MINUTE="4",
                       CRONRING_STREAM_MAX_PER_TOKEN="2", CRONRING_STREAM_MAX_CLIENTS="3")
    url = c.any_node().url
    jobs = [(await _create(c))[1]["id"] for _ in range(3)]
    codes = [(await c.request("POST", f"{url}/api/crons/{jobs[i % 3]}/run", headers=H))[0] for i in range(6)]
    assert codes == [202] * 4 + [429] * 2, codes  # 4 per token, though no job reached its 3
    status, body, _ = await c.request("POST", f"{url}/api/crons/{jobs[0]}/run", headers=H)
    assert status == 429 and "per token" in body["error"]
    status, _, _ = await c.request("POST", f"{url}/api/crons/{jobs[0]}/run",
                                   headers={"Authorization": f"Bearer {other}"})
    assert status == 202  # another token has its own budget

    streams = []
    try:
        for _ in range(2):
            streams.append(await c.session().get(f"{url}/api/crons/status/stream", headers=H).__aenter__())
            assert streams[-1].status == 200
        async with c.session().get(f"{url}/api/crons/status/stream", headers=H) as r:
            assert r.status == 429 and "per token" in (await r.json())["error"]
        reader = {"Authorization": f"Bearer {READER}"}
        streams.append(await c.session().get(f"{url}/api/crons/status/stream", headers=reader).__aenter__())
        assert streams[-1].status == 200
        async with c.session().get(f"{url}/api/crons/status/stream",
                                   headers={"Authorization": f"Bearer {other}"}) as r:
            assert r.status == 429 and "CRONRING_STREAM_MAX_CLIENTS" in (await r.json())["error"]
    finally:
        for s in streams:
            s.release()
    # a closed stream frees its slot
    await wait_for(lambda: _stream_opens(c, url, H), 10, "a stream slot freed by closing one")


async def _stream_opens(c: Cluster, url: str, headers: dict) -> bool:
    async with c.session().get(f"{url}/api/crons/status/stream", headers=headers) as r:
        return r.status == 200
