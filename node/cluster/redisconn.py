"""The Redis client from ``CRONRING_REDIS_URL``: a plain ``redis://``/``rediss://``/``unix://`` URL, or
Redis Sentinel through redis-py's own support:

    redis+sentinel://[[user]:password@]host1:26379,host2:26379/<service name>[/<db>][?options]

``rediss+sentinel://`` (or ``?ssl=true``) speaks TLS to the Sentinels and to Redis. The password in
the URL is Redis's; ``sentinel_password`` (and ``sentinel_username``) in the query authenticate to
the Sentinels when they have one of their own. Every connection is made to whichever server the
Sentinels name as primary when it is opened; a connection to a demoted primary is dropped on its
first refused write (redis-py's ``SentinelManagedConnection``), so commands, pub/sub and the events
reader all follow a failover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from .. import netloc

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


class RedisURLError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        u = urlparse(url)
        if u.scheme not in SENTINEL_SCHEMES:
            raise RedisURLError(f"not a Sentinel URL: {u.scheme}://")
        user, password, texts = netloc.split(u.netloc)
        try:
            sentinels = [netloc.host_port(t, 26379) for t in texts]
        except ValueError as e:
            raise RedisURLError(f"a Sentinel URL needs host:port for each Sentinel: {e}") from None
        path = [p for p in u.path.split("/") if p]
        if not path or len(path) > 2:
            raise RedisURLError("a Sentinel URL names the service: redis+sentinel://h1:26379,h2:26379/<service>/<db>")
        try:
            db = int(path[1]) if len(path) == 2 else 0
        except ValueError:
            raise RedisURLError(f"the database must be a number, got {path[1]!r}") from None
        # not parse_qs: it reads "+" as a space, and a password may hold one
        query = {unquote(k): unquote(v) for k, _, v in (p.partition("=") for p in u.query.split("&") if p)}
        unknown = set(query) - {"ssl", "sentinel_password", "sentinel_username"}
        if unknown:
            raise RedisURLError(f"unknown Sentinel URL options {sorted(unknown)} (ssl, sentinel_password, sentinel_username)")
        return cls(
            sentinels=tuple(sentinels), service=unquote(path[0]), db=db,
            username=user or None, password=password or None,
            sentinel_username=query.get("sentinel_username") or None,
            sentinel_password=query.get("sentinel_password") or None,
            ssl=u.scheme == "rediss+sentinel" or query.get("ssl", "").lower() in ("1", "true", "yes"),
        )


def is_sentinel(url: str) -> bool:
    return url.partition("://")[0] in SENTINEL_SCHEMES


def check_url(url: str) -> None:
    """Raise RedisURLError for a URL the node could not use."""
    if is_sentinel(url):
        SentinelURL.parse(url)
    elif url.partition("://")[0] not in ("redis", "rediss", "unix"):
        raise RedisURLError("must start with redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://")


def connect(url: str, **options: Any) -> aioredis.Redis:
    """A client for ``url``; ``options`` (timeouts, retry policy…) apply to every Redis connection, and
    the socket timeouts and the retry policy to the Sentinel connections too."""
    if not is_sentinel(url):
        return aioredis.from_url(url, **options)
    s = SentinelURL.parse(url)
    auth: dict[str, Any] = {"username": s.username, "password": s.password, "ssl": s.ssl}
    sentinel_options: dict[str, Any] = {k: v for k, v in options.items() if k.startswith("socket_") or k == "retry"}
    sentinel_options.update(username=s.sentinel_username, password=s.sentinel_password, ssl=s.ssl)
    sentinel = Sentinel(list(s.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client: aioredis.Redis = sentinel.master_for(s.service, db=s.db, **auth, **options)
    client._cronring_sentinel = sentinel  # type: ignore[attr-defined]  # closed with the client (close())
    return client


async def close(client: aioredis.Redis) -> None:
    """Close the client's connections, and its Sentinel connections if it has them."""
    sentinel: Sentinel | None = getattr(client, "_cronring_sentinel", None)
    try:
        await client.aclose()
    finally:
        for s in sentinel.sentinels if sentinel is not None else ():
            await s.aclose()
