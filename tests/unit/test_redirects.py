"""Followed redirects (security issue, Medium 4): credentials never travel to another origin, and the
method follows RFC 9110. Two real in-process HTTP servers on different ports are the two origins."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiohttp import web

from node.model.jobs import Job
from node.scheduling.firing import Firer, redirected
from node.scheduling.outbound import OutboundPolicy
from tests.local_server import LocalServer

SECRET_HEADERS = {"Authorization": "Bearer s3cret", "X-Api-Key": "k3y", "Cookie": "sid=1", "X-Plain": "ok"}


class Origin(LocalServer):
    def __init__(self) -> None:
        super().__init__(self._handle)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.redirect_to = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path, dict(request.headers), await request.read()))
        if request.path.startswith("/r"):
            return web.Response(status=int(request.path[2:]), headers={"Location": self.redirect_to})
        return web.Response(text="ok")


async def _fire(uri: str) -> None:
    firer = Firer(node_id="n", signing_secret="", policy=OutboundPolicy(), pool_size=4)
    await firer.start()
    try:
        job = Job(id="j", schedule="* * * * * *", uri=uri, method="POST", headers=SECRET_HEADERS,
                  body={"payload": 1}, follow_redirects=True)
        r = await firer.fire(job, execution_id="e", scheduled_at=datetime.now(UTC), fence=1)
        assert r.state == "succeeded", r
    finally:
        await firer.close()


@pytest.mark.parametrize("status, method, with_body", [(301, "GET", False), (302, "GET", False), (303, "GET", False),
                                                       (307, "POST", True), (308, "POST", True)])
async def test_a_cross_origin_redirect_carries_no_credentials(status: int, method: str, with_body: bool) -> None:
    async with Origin() as a, Origin() as b:
        a.redirect_to = f"http://127.0.0.1:{b.port}/final"
        await _fire(f"http://127.0.0.1:{a.port}/r{status}")
        assert "Authorization" in a.seen[0][2]  # the target itself gets them
        (m, path, headers, body) = b.seen[0]
        assert (m, path) == (method, "/final")
        assert not {"Authorization", "X-Api-Key", "Cookie"} & set(headers), headers
        assert headers["X-Plain"] == "ok" and headers["X-Cron-Execution-Id"] == "e"
        assert (body == b'{"payload":1}') is with_body


async def test_a_same_origin_redirect_keeps_them() -> None:
    async with Origin() as a:
        a.redirect_to = "/final"
        await _fire(f"http://127.0.0.1:{a.port}/r307")
        (m, path, headers, body) = a.seen[1]
        assert (m, path, headers["Authorization"], headers["X-Api-Key"]) == ("POST", "/final", "Bearer s3cret", "k3y")


def test_method_rules() -> None:
    h = {"Content-Type": "application/json", "Authorization": "x"}
    assert redirected(303, "PUT", b"x", h, same_origin=True) == ("GET", None, {"Authorization": "x"})
    assert redirected(303, "HEAD", None, h, same_origin=True)[0] == "HEAD"
    assert redirected(302, "DELETE", b"x", h, same_origin=True) == ("DELETE", b"x", h)
    assert redirected(308, "PUT", b"x", h, same_origin=False) == ("PUT", b"x", {"Content-Type": "application/json"})
