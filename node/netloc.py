"""``[user[:password]@]host[:port][,host[:port]…]``: the several-hosts form both backends' URLs use
(MariaDB's primary switch, Redis Sentinel's list of Sentinels)."""

from __future__ import annotations

from urllib.parse import unquote, urlparse


def split(netloc: str) -> tuple[str, str, list[str]]:
    """(user, password, host texts), the credentials percent-decoded."""
    userinfo, _, hostlist = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return unquote(user), unquote(password), hostlist.split(",")


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; ValueError names what is wrong."""
    try:
        parts = urlparse(f"//{text}")
        port = parts.port or default_port
    except ValueError as e:
        raise ValueError(f"bad host {text!r}: {e}") from None
    if not parts.hostname:
        raise ValueError(f"empty host in {text!r}")
    return parts.hostname, port
