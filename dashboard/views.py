"""Server-rendered pages (placeholder until the dashboard issue lands)."""

from __future__ import annotations

from aiohttp import web


async def index(request: web.Request) -> web.Response:
    return web.Response(text="cronring: see /api/crons", content_type="text/plain")


def setup(app: web.Application) -> None:
    app.router.add_get("/", index)
