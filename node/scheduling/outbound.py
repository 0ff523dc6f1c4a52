"""Outbound request policy: which addresses a job may target.

Link-local and cloud metadata addresses are denied by default. A target is checked
exactly as the HTTP client will use it: yarl (which aiohttp uses) applies IDNA/UTS-46,
so `１６９．２５４．１６９．２５４` or `169。254。169。254` is 169.254.169.254, and the checked
URL object is the one requested. IP literals are checked up front and at every redirect
hop (aiohttp connects to them without resolving); names are checked after DNS by an
aiohttp resolver that returns only allowed addresses, so the connector connects to
exactly what was checked (resolved once). IPv6 forms that carry an IPv4 address
(mapped, translated, compatible, NAT64, 6to4, Teredo) are checked by that IPv4 as well. Private
ranges stay allowed: internal services are the normal targets.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from yarl import URL

DEFAULT_DENY = (
    "169.254.0.0/16",  # link-local, AWS/GCP/Azure/OpenStack metadata
    "fe80::/10",  # IPv6 link-local
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "fd00:ec2::254/128",  # AWS IPv6 metadata
    "0.0.0.0/8",
    "::/128",
    "224.0.0.0/4",  # multicast
    "ff00::/8",
)
DEFAULT_DENY_HOSTS = ("metadata.google.internal", "metadata", "instance-data")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 (SIIT): ::ffff:0:a.b.c.d
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: any RFC 6052 prefix length inside it
_NUMERIC_V4 = re.compile(r"[0-9a-fx.]+")  # what inet_aton may read as an address (decimal, hex, octal, short)


class OutboundDenied(Exception):
    """A target the outbound policy refuses; the message says which rule."""


def _parsed(url: URL) -> URL:
    """yarl parses the authority lazily: make a bad one fail here, before the request, not inside it."""
    _ = url.raw_host, url.port, str(url)
    return url


def client_url(uri: str | URL) -> URL:
    """The URL exactly as aiohttp will request it (yarl: IDNA/UTS-46 host, percent-quoting).

    A URL the client cannot parse is refused here, so it is a 400 at create time rather
    than a surprise at send time.
    """
    try:
        url = _parsed(uri if isinstance(uri, URL) else URL(uri))
    except (ValueError, TypeError) as e:  # UnicodeError (IDNA) is a ValueError
        raise OutboundDenied(f"URL refused by the outbound policy: the HTTP client cannot parse it ({e})") from None
    if not url.raw_host:
        raise OutboundDenied("URL refused by the outbound policy: it names no host")
    return url


def join_redirect(base: URL, location: str) -> URL:
    """A redirect target joined the way aiohttp joins one (yarl), to be checked before it is followed."""
    try:
        return _parsed(base.join(URL(location)))
    except (ValueError, TypeError) as e:
        raise OutboundDenied(f"redirect refused by the outbound policy: the HTTP client cannot parse "
                             f"Location ({e})") from None


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address stands for: the network may deliver it to them."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    out: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are not IPv4-compatible addresses
        out.append(low32)
    if ip in _NAT64_WELL_KNOWN or ip in _IPV4_TRANSLATED:
        out.append(low32)
    if ip in _NAT64_LOCAL:
        # RFC 6052 section 2.2: the IPv4 follows a /48, /56 or /64 prefix, skipping bits 64-71; or ends a /96.
        rest = ip.packed[:8] + ip.packed[9:]
        out += [ipaddress.IPv4Address(rest[n : n + 4]) for n in (6, 7, 8)] + [low32]
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.append(ip.teredo[1])  # the client address (de-obfuscated)
    return out


class OutboundPolicy:
    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow_nets, self.allow_hosts = self._split(allow)
        deny_nets, deny_hosts = self._split(deny)
        self.default_deny_nets = [ipaddress.ip_network(n) for n in DEFAULT_DENY]
        self.deny_nets = self.default_deny_nets + deny_nets
        self.deny_hosts = {self._normal_name(h) for h in DEFAULT_DENY_HOSTS} | deny_hosts
        self._passed: set[str] = set()  # normalised hosts already checked (the policy never changes)

    @staticmethod
    def _normal_name(name: str) -> str:
        """A configured host name in the form the client sends it (IDNA), so the lists match raw hosts."""
        try:
            host = URL.build(scheme="http", host=name.strip().rstrip(".")).raw_host or name
        except (ValueError, TypeError):
            host = name
        return host.lower().rstrip(".")

    @classmethod
    def _split(cls, items: Iterable[str]) -> tuple[list[Any], set[str]]:
        nets: list[Any] = []
        hosts: set[str] = set()
        for item in items:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(cls._normal_name(item))
        return nets, hosts

    def check_url(self, uri: str | URL) -> URL:
        """Check a target as the client will see it; return the URL to request (the one checked)."""
        url = client_url(uri)
        self.check_host(url.raw_host or "")
        return url

    @staticmethod
    def join_redirect(base: URL, location: str) -> URL:
        """See `join_redirect`; here so callers holding a policy need nothing else."""
        return join_redirect(base, location)

    def check_host(self, host: str) -> None:
        """Refuse a host (give the client's form: `client_url(...).raw_host`).

        Denied names and IP literals in denied ranges are refused, and so are numeric
        IPv4 spellings the system resolver reads as a denied address (2852039166,
        0xa9.0xfe.0xa9.0xfe, 0251.0376.0251.0376, 169.254.43518). Other names pass and
        are checked again, address by address, after DNS (`PolicyResolver`).
        """
        h = host.lower().strip("[]").rstrip(".")
        if h in self._passed:
            return
        if h in self.allow_hosts:
            return
        if h in self.deny_hosts:
            raise OutboundDenied(f"host {host!r} is denied by the outbound policy")
        ip = self._literal(h, host)
        if ip is not None:
            self.check_ip(ip)
        if len(self._passed) < 10_000:
            self._passed.add(h)

    @staticmethod
    def _literal(h: str, host: str) -> IPAddress | None:
        """The address a host spells, or None for a name (which goes through the resolver)."""
        if ":" in h:  # aiohttp connects to anything with a colon as an IPv6 literal, without resolving
            try:
                return ipaddress.IPv6Address(h.split("%", 1)[0])
            except ValueError:
                raise OutboundDenied(f"host {host!r} is not a valid IP address; refused by the outbound policy") from None
        try:
            return ipaddress.IPv4Address(h)
        except ValueError:
            pass
        if _NUMERIC_V4.fullmatch(h):
            try:
                return ipaddress.IPv4Address(socket.inet_aton(h))
            except OSError:
                pass
        return None

    def check_ip(self, ip: str | IPAddress) -> None:
        """Refuse an address in a denied range, or carrying (mapped, NAT64, 6to4...) an IPv4 address in one."""
        if isinstance(ip, str):
            ip = ipaddress.ip_address(ip.split("%")[0])
        forms = [ip, *embedded_ipv4(ip)]
        if any(f in n for f in forms for n in self.allow_nets):
            return
        for f in forms:
            for net in self.deny_nets:
                if f in net:
                    via = "" if f is ip else f" (which carries {f})"
                    why = ("link-local/metadata addresses are refused" if net in self.default_deny_nets
                           else "configured deny list")
                    raise OutboundDenied(f"address {ip}{via} is in {net}, denied by the outbound policy ({why})")


class PolicyResolver(AbstractResolver):
    """Resolves with the default resolver, then drops denied addresses.

    aiohttp connects only to the addresses returned here, so a name is resolved once and
    the connection goes to an address that was checked.
    """

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        self.policy.check_host(host)
        results = await self._inner.resolve(host, port, family)
        allowed = []
        reason = None
        for r in results:
            try:
                self.policy.check_ip(r["host"])
                allowed.append(r)
            except (OutboundDenied, ValueError) as e:
                reason = e if isinstance(e, OutboundDenied) else OutboundDenied(f"{host} resolved to {r['host']!r}")
        if not allowed:
            raise reason or OutboundDenied(f"{host} resolved to nothing")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
