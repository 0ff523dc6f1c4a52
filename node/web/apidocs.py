"""Swagger UI at ``/api/docs``, over ``/api/openapi.json``, with Swagger UI's own files served by the node
from the swagger-ui-py package (no CDN: the page works on a network without internet access)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from aiohttp import web


def _package_dir(name: str) -> Path:
    """A package's folder, found without importing it (swagger_ui's import pulls in jinja2 and yaml: ~5 MB of a
    node's RSS, for a page whose files are all static)."""
    spec = find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"{name} is not installed")
    return Path(spec.origin).resolve().parent


SWAGGER_STATIC = _package_dir("swagger_ui") / "static"

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>cronring API</title>
  <link rel="stylesheet" href="/api/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/static/swagger-ui-bundle.js"></script>
  <script src="/api/docs/init.js"></script>
</body>
</html>
"""

INIT = """window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  withCredentials: true});
"""

# Swagger UI styles elements from script: inline styles allowed on this page only; scripts stay 'self'.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'")


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", headers={"Content-Security-Policy": CSP})


async def init_js(request: web.Request) -> web.Response:
    return web.Response(text=INIT, content_type="application/javascript")


def setup(app: web.Application) -> None:
    app.router.add_get("/api/docs", docs)
    app.router.add_get("/api/docs/init.js", init_js)
    app.router.add_static("/api/docs/static", SWAGGER_STATIC)
