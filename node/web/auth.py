"""Bearer tokens (read and admin scopes), compared in constant time; a session cookie for the dashboard."""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

import structlog
from aiohttp import web

from .. import metrics
from ..model.audit import Actor
from ..settings import ApiToken
from .errors import Forbidden, Unauthorized, error_response
from .runtime import RUNTIME

log = structlog.get_logger("auth")

COOKIE = "cronring_session"
CSRF_HEADER = "X-CSRF-Token"
READ_METHODS = ("GET", "HEAD", "OPTIONS")
READ_POSTS = ("/api/schedules/preview",)  # POSTs that only read: readers may send them
OPEN_PATHS = ("/login", "/static/")
PROBES = ("/livez", "/readyz")  # no job data: open to kubelets and load balancers without a token


class Throttle:
    """Failed authentications per client address, in a sliding window: past ``limit`` the address's
    *failures* get 429 until the window has passed (per node; an attacker spreading over nodes meets
    each node's limit). A correct token always passes, whatever its address did: behind a proxy or a
    NAT every client shares one address, and ten wrong guesses by anyone must not lock everyone out."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_addresses: int = 10_000) -> None:
        self.limit, self.window, self.max_addresses = limit, window, max_addresses
        self.failures: dict[str, deque[float]] = {}

    def retry_after(self, addr: str) -> int:
        q = self.failures.get(addr)
        if not q:
            return 0
        now = time.monotonic()
        while q and q[0] < now - self.window:
            q.popleft()
        if len(q) < self.limit:
            return 0
        return max(1, int(q[0] + self.window - now) + 1)

    def failed(self, addr: str) -> None:
        if addr not in self.failures and len(self.failures) >= self.max_addresses:
            self.failures.pop(next(iter(self.failures)))
        self.failures.setdefault(addr, deque(maxlen=self.limit * 2)).append(time.monotonic())
        metrics.AUTH_FAILURES.inc()
        if len(self.failures[addr]) == self.limit:
            log.warning("authentication failures: throttling the address", address=addr, failures=self.limit,
                        window_s=self.window)


THROTTLE = Throttle()


def client_address(request: web.Request) -> str:
    """The client's address: the peer's, or — when the peer is a trusted proxy (CRONRING_TRUSTED_PROXIES)
    — the last address in X-Forwarded-For that is not one of those proxies (each proxy appends the
    address it got the request from; the ones before it are the client's to write, and may be forged)."""
    peer = request.remote or "unknown"
    trusted = _trusted(request.app[RUNTIME].settings.trusted_proxies)
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop[:64]
    return hops[0][:64] if hops else peer


@functools.lru_cache(maxsize=16)
def _trusted(networks: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def _within(addr: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(addr.strip("[]"))
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None  # a dual-stack listener's IPv4 peer
    return any(ip in n or (mapped is not None and mapped in n) for n in networks)


def caller(request: web.Request) -> str:
    """Who is calling, for limits across the cluster: the token (presented, or behind a login session)
    by a digest — never the secret — else, with no tokens configured, the client's address."""
    return request.get("caller") or f"address:{client_address(request)}"


def _caller_of(token: str, tokens: Mapping[str, object]) -> str:
    """A digest keyed by every configured token (the same on every node of a cluster): one who reads
    Redis's key names cannot test guesses of a short token against it offline."""
    return "token:" + hmac.new(_caller_key(tuple(sorted(tokens))), token.encode(), hashlib.sha256).hexdigest()[:24]


@functools.lru_cache(maxsize=4)
def _caller_key(tokens: tuple[str, ...]) -> bytes:
    return hashlib.sha256("\n".join(tokens).encode()).digest()  # once per configuration, not per request


def token_of(tokens: Mapping[str, ApiToken], presented: str) -> ApiToken | None:
    """The configured token presented (every one compared, in constant time), else None."""
    found = None
    for tok, info in tokens.items():
        if hmac.compare_digest(tok.encode(), presented.encode()):
            found = info
    return found


def scope_of(tokens: Mapping[str, ApiToken], presented: str) -> str | None:
    found = token_of(tokens, presented)
    return found.scope if found else None


SESSION_SECONDS = 12 * 3600


def _session_mac(token: str, issued: int) -> str:
    key = hashlib.sha256(b"cronring-session:" + token.encode()).digest()
    return hmac.new(key, str(issued).encode(), hashlib.sha256).hexdigest()


def session_value(token: str, issued: int | None = None) -> str:
    """``<issued>.<mac>``: never the token, and it expires on the server too (every node checks the
    issue time, so a stolen cookie is worth 12 hours, not for ever). Rotating a token ends its sessions."""
    issued = int(time.time()) if issued is None else issued
    return f"{issued}.{_session_mac(token, issued)}"


def csrf_for_session(session: str) -> str:
    """The CSRF token of a login session: derived from the session cookie, which is HttpOnly and never
    readable by another page, so a token planted by a sibling site (cookie tossing) cannot match it."""
    return hmac.new(b"cronring-csrf", session.encode(), hashlib.sha256).hexdigest()[:32]


def scope_of_cookie(tokens: Mapping[str, ApiToken], cookie: str) -> str | None:
    found = _session_of(tokens, cookie)
    return found[1].scope if found else None


def _session_of(tokens: Mapping[str, ApiToken], cookie: str) -> tuple[str, ApiToken] | None:
    """(token, its configuration) of a live session cookie, else None."""
    issued_s, _, mac = cookie.partition(".")
    if not issued_s.isdigit() or len(issued_s) > 12 or not 0 <= time.time() - int(issued_s) < SESSION_SECONDS:
        return None
    found = None
    for tok, info in tokens.items():
        if hmac.compare_digest(_session_mac(tok, int(issued_s)).encode(), mac.encode()):
            found = (tok, info)
    return found


CLIENT_HEADER = "X-Cronring-Client"  # "cli/<version>" from the CLI, "python/<version>" from the client library


def _via(request: web.Request, *, cookie: bool) -> str:
    """How a write came: the dashboard (its pages and their session), the CLI (its client header), else the API."""
    if cookie or not request.path.startswith(("/api/", "/metrics", "/livez", "/readyz")):
        return "dashboard"
    return "cli" if request.headers.get(CLIENT_HEADER, "").lower().startswith("cli") else "api"


def actor_of(request: web.Request) -> Actor:
    """Who made this request, how, and on which node: the audit log's and the versions' names for it."""
    return Actor(name=request.get("actor", "anonymous"), via=request.get("via", "api"),
                 node=request.app[RUNTIME].settings.node_id, selector=request.get("selector"))


@web.middleware
async def auth_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    settings = request.app[RUNTIME].settings
    tokens = settings.api_tokens
    path = request.path
    request["actor"] = "anonymous"
    request["via"] = _via(request, cookie=False)
    if not tokens or path.startswith(OPEN_PATHS) or path in PROBES:
        return await handler(request)
    if settings.public_health and path in ("/api/health", "/metrics"):
        return await handler(request)
    scope = None
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        info = token_of(tokens, header[7:].strip())
        scope = info.scope if info else None
        if info is None:
            addr = client_address(request)
            wait = THROTTLE.retry_after(addr)
            if wait:
                return error_response(429, "too many failed authentications from this address; retry later", None,
                                      {"Retry-After": str(wait)})
            THROTTLE.failed(addr)
            raise Unauthorized("invalid API token")
        request["caller"] = _caller_of(header[7:].strip(), tokens)
        request["actor"], request["selector"] = info.name, info.selector
    elif COOKIE in request.cookies:
        session = _session_of(tokens, request.cookies[COOKIE])
        scope = session[1].scope if session else None
        if session:
            request["caller"] = _caller_of(session[0], tokens)
            request["actor"], request["via"] = session[1].name, "dashboard"
            request["selector"] = session[1].selector
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
