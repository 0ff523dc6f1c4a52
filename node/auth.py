"""Bearer tokens (read and admin scopes), compared in constant time; a session cookie for the dashboard."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from node.errors import Forbidden, Unauthorized, error_response
from node.runtime import RUNTIME

COOKIE = "cronring_session"
CSRF_HEADER = "X-CSRF-Token"
READ_METHODS = ("GET", "HEAD", "OPTIONS")
READ_POSTS = ("/api/schedules/preview",)  # POSTs that only read: readers may send them
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


def csrf_for_session(session: str) -> str:
    """The CSRF token of a login session: derived from the session cookie, which is HttpOnly and never
    readable by another page, so a token planted by a sibling site (cookie tossing) cannot match it."""
    return hmac.new(b"cronring-csrf", session.encode(), hashlib.sha256).hexdigest()[:32]


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
        # A browser sends the cookie with any request, also one another page made: a write through
        # the API with a cookie must also carry the session's CSRF token (pages put it in a meta tag).
        if scope is not None and request.method not in READ_METHODS and path.startswith("/api/"):
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), csrf_for_session(request.cookies[COOKIE]).encode()):
                raise Forbidden(f"a write with a session cookie needs the {CSRF_HEADER} header of that session")
    if scope is None:
        if not path.startswith(("/api/", "/metrics")) and request.method in READ_METHODS:
            raise web.HTTPFound(f"/login?next={request.path_qs}")
        return error_response(401, "authentication required: send Authorization: Bearer <token>", None,
                              {"WWW-Authenticate": 'Bearer realm="cronring"'})
    if request.method not in READ_METHODS and scope != "admin" and path not in READ_POSTS:
        raise Forbidden("this token is read-only")
    request["scope"] = scope
    return await handler(request)
