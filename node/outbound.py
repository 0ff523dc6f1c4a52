"""Outbound request policy: which addresses a job may target.

Link-local and cloud metadata addresses are denied by default, checked after DNS
resolution (an aiohttp resolver) and for every redirect hop. Private ranges stay
allowed: internal services are the normal targets.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

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


class OutboundDenied(Exception):
    """A target the outbound policy refuses; the message says which rule."""


class OutboundPolicy:
    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow_nets, self.allow_hosts = self._split(allow)
        deny_nets, deny_hosts = self._split(deny)
        self.deny_nets = [ipaddress.ip_network(n) for n in DEFAULT_DENY] + deny_nets
        self.deny_hosts = set(DEFAULT_DENY_HOSTS) | deny_hosts
        self._passed: set[str] = set()  # hosts already checked (the policy never changes)

    @staticmethod
    def _split(items: Iterable[str]) -> tuple[list[Any], set[str]]:
        nets: list[Any] = []
        hosts: set[str] = set()
        for item in items:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return nets, hosts

    def check_host(self, host: str) -> None:
        if host in self._passed:
            return
        h = host.lower().rstrip(".").strip("[]")
        if h in self.allow_hosts:
            return
        if h in self.deny_hosts:
            raise OutboundDenied(f"host {host!r} is denied by the outbound policy")
        try:
            ip = ipaddress.ip_address(h)
        except ValueError:
            ip = None  # a name: checked again after resolution
        if ip is not None:
            self.check_ip(ip)
        if len(self._passed) < 10_000:
            self._passed.add(host)

    def check_ip(self, ip: Any) -> None:
        if isinstance(ip, str):
            ip = ipaddress.ip_address(ip.split("%")[0])
        if getattr(ip, "ipv4_mapped", None):
            ip = ip.ipv4_mapped
        if any(ip in n for n in self.allow_nets):
            return
        for net in self.deny_nets:
            if ip in net:
                raise OutboundDenied(
                    f"address {ip} is in {net}, denied by the outbound policy (link-local/metadata addresses are refused)"
                )


class PolicyResolver(AbstractResolver):
    """Resolves with the default resolver, then drops denied addresses."""

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
            except OutboundDenied as e:
                reason = e
        if not allowed:
            raise reason or OutboundDenied(f"{host} resolved to nothing")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
