"""In-process HTTP servers for tests that need a real target beside the node: a stand-in on a loopback
address, a redirector, an echo. Real sockets and real HTTP, in the test's own event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web


class LocalServer:
    """Answers every path with ``handler``; ``async with`` starts and stops it."""

    def __init__(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.host = host
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> LocalServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, 0).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def __aenter__(self) -> LocalServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class CountingServer(LocalServer):
    """Counts the requests it gets (``hits``); ``/r?to=...`` answers 302 to ``to``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(self._handle, host)
        self.hits: list[str] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(str(request.rel_url))
        if request.path == "/r":
            return web.Response(status=302, headers={"Location": request.query["to"]})
        return web.Response(text="ok")
