"""The web dashboard and the live stream, mounted into every node's web app."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    from . import stream, views

    stream.setup(app)
    views.setup(app)
