"""Bearer tokens (read and admin scopes), compared in constant time; a session cookie for the dashboard."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from node.errors import Forbidden, Unauthorized, error_response
from node.runtime import RUNTIME

COOKIE = "cronring_session"
READ_METHODS = ("GET", "HEAD", "OPTIONS")
OPEN_PATHS = ("/login", "/static/")


def scope_of(tokens: dict[str, str], presented: str) -> str | None:
    found = None
    for tok, scope in tokens.items():
        if hmac.compare_digest(tok.encode(), presented.encode()):
            found = scope
    return found


def session_value(token: str) -> str:
    """The cookie holds a digest of the token, never the token itself."""
    return hashlib.sha256(b"cronring-session:" + token.encode()).hexdigest()


def scope_of_cookie(tokens: dict[str, str], cookie: str) -> str | None:
    found = None
    for tok, scope in tokens.items():
        if hmac.compare_digest(session_value(tok).encode(), cookie.encode()):
            found = scope
    return found


@web.middleware
async def auth_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    settings = request.app[RUNTIME].settings
    tokens = settings.api_tokens
    path = request.path
    if not tokens or path.startswith(OPEN_PATHS):
        return await handler(request)
    if settings.public_health and path in ("/api/health", "/metrics"):
        return await handler(request)
    scope = None
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        scope = scope_of(tokens, header[7:].strip())
        if scope is None:
            raise Unauthorized("invalid API token")
    elif COOKIE in request.cookies:
        scope = scope_of_cookie(tokens, request.cookies[COOKIE])
    if scope is None:
        if not path.startswith(("/api/", "/metrics")) and request.method in READ_METHODS:
            raise web.HTTPFound(f"/login?next={request.path_qs}")
        return error_response(401, "authentication required: send Authorization: Bearer <token>", None,
                              {"WWW-Authenticate": 'Bearer realm="cronring"'})
    if request.method not in READ_METHODS and scope != "admin":
        raise Forbidden("this token is read-only")
    request["scope"] = scope
    return await handler(request)
