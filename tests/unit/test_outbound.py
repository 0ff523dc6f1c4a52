"""The outbound policy against every spelling of a denied address, checked with real aiohttp requests.

A stand-in for a denied target listens on 127.0.0.2 (Linux routes all of 127/8 to lo) and the
policy denies 127.0.0.2/32; it counts requests, and every spelling must leave it at 0. The
connector's socket factory records every address aiohttp actually connects to and refuses the
default denied ranges outright, so a regression never sends a test request to a real metadata
service; that record must hold no denied address either.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from yarl import URL

from node.model.jobs import Job
from node.scheduling.firing import Firer
from node.scheduling.outbound import DEFAULT_DENY, OutboundDenied, OutboundPolicy, PolicyResolver, embedded_ipv4
from tests.local_server import CountingServer

STANDIN = "127.0.0.2"
ALLOWED = "127.0.0.1"
DOTS = (".", "\u3002", "\uff0e", "\uff61")  # full stop, ideographic, fullwidth, halfwidth ideographic


def _samples() -> list[str]:
    """A few addresses in every default denied network, the well-known metadata ones, and the stand-in."""
    out = {"169.254.169.254", "100.100.100.200", "fd00:ec2::254", STANDIN}
    for net in map(ipaddress.ip_network, DEFAULT_DENY):
        out |= {str(net.network_address), str(net.broadcast_address), str(net[net.num_addresses // 2])}
        if net.num_addresses > 2:
            out.add(str(net[1]))
    return sorted(out)


SAMPLES = _samples()


# ---- servers and the firer -------------------------------------------------------------------------


class Harness:
    """A Firer whose session records (and, for the default ranges, refuses) every connect."""

    def __init__(self, standin: CountingServer, allowed: CountingServer) -> None:
        self.standin = standin
        self.allowed = allowed
        self.policy = OutboundPolicy(deny=[f"{STANDIN}/32"])
        self.firer = Firer(node_id="t", signing_secret="", policy=self.policy, pool_size=10)
        self.defaults = OutboundPolicy()
        self.connects: list[str] = []

    def _socket(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        self.connects.append(sockaddr[0])
        try:
            self.defaults.check_ip(sockaddr[0])
        except OutboundDenied as e:  # recorded above; never actually connect there
            raise OSError(f"test connector refuses {sockaddr[0]}") from e
        return socket.socket(family, type_, proto)

    async def start(self) -> Harness:
        connector = aiohttp.TCPConnector(limit=10, limit_per_host=0, resolver=PolicyResolver(self.policy),
                                         ttl_dns_cache=10, socket_factory=self._socket)
        self.firer.session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                   timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def fire(self, uri: str, *, follow_redirects: bool = False) -> Any:
        job = Job(id="j", schedule="* * * * * *", uri=uri, timeout_ms=3000, follow_redirects=follow_redirects)
        return await self.firer.fire(job, execution_id="e", scheduled_at=datetime.now(UTC), fence=1)

    def denied_connects(self, since: int = 0) -> list[str]:
        bad = []
        for addr in self.connects[since:]:
            try:
                self.policy.check_ip(addr)
            except OutboundDenied:
                bad.append(addr)
        return bad


@pytest.fixture(scope="module")
async def harness() -> AsyncIterator[Harness]:
    standin = await CountingServer(STANDIN).start()
    allowed = await CountingServer(ALLOWED).start()
    h = await Harness(standin, allowed).start()
    yield h
    await h.firer.close()
    await standin.close()
    await allowed.close()


# ---- spellings -------------------------------------------------------------------------------------


def _fullwidth(c: str) -> str:
    return chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c


@st.composite
def _chars(draw: st.DrawFn, text: str) -> str:
    """Each character as is, fullwidth, or upper case; yarl's UTS-46 folds them all back.

    A fullwidth colon is rarer: yarl refuses it, so it would hide the other forms.
    """
    out = []
    for c in text:
        choice = draw(st.sampled_from(("same", "same", "wide", "upper") if c != ":" else ("same",) * 19 + ("wide",)))
        out.append(_fullwidth(c) if choice == "wide" else c.upper() if choice == "upper" else c)
    return "".join(out)


@st.composite
def _ipv4_text(draw: st.DrawFn, ip: ipaddress.IPv4Address) -> str:
    """inet_aton's forms: 4, 3, 2 or 1 parts, each decimal, octal or hex, any dots, trailing dots."""
    o = ip.packed
    n = int(ip)
    parts = draw(st.sampled_from((4, 4, 3, 2, 1)))
    values = {4: list(o), 3: [o[0], o[1], o[2] << 8 | o[3]], 2: [o[0], n & 0xFFFFFF], 1: [n]}[parts]
    spelled = []
    for v in values:
        base = draw(st.sampled_from(("dec", "dec", "oct", "hex")))
        if base == "oct":
            spelled.append("0" + format(v, "o"))
        elif base == "hex":
            spelled.append(draw(st.sampled_from(("0x", "0X"))) + format(v, draw(st.sampled_from(("x", "X")))))
        else:
            spelled.append(str(v))
    text = spelled[0]
    for s in spelled[1:]:
        text += draw(st.sampled_from(DOTS)) + s
    text += draw(st.sampled_from(("", "", ".", "\u3002", "..")))
    return draw(_chars(text))


def _nat64_local(ip: ipaddress.IPv4Address, prefix_bytes: int) -> ipaddress.IPv6Address:
    """RFC 6052 embedding under a /48, /56, /64 or /96 inside 64:ff9b:1::/48 (bits 64-71 stay zero)."""
    b = bytearray(ipaddress.IPv6Address("64:ff9b:1::").packed)
    if prefix_bytes == 12:
        b[12:16] = ip.packed
    else:
        for k, pos in enumerate([i for i in range(16) if i != 8][prefix_bytes : prefix_bytes + 4]):
            b[pos] = ip.packed[k]
    return ipaddress.IPv6Address(bytes(b))


def _carriers(ip: ipaddress.IPv4Address) -> dict[str, tuple[ipaddress.IPv6Address, str | None]]:
    """IPv6 addresses that carry ip, with a dotted-tail spelling where one exists."""
    v = int(ip)
    return {
        "mapped": (ipaddress.IPv6Address(0xFFFF << 32 | v), f"::ffff:{ip}"),
        "translated": (ipaddress.IPv6Address(0xFFFF << 48 | v), f"::ffff:0:{ip}"),  # RFC 2765, ::ffff:0:0/96
        "compatible": (ipaddress.IPv6Address(v), f"::{ip}"),
        "nat64": (ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | v), f"64:ff9b::{ip}"),
        "nat64-48": (_nat64_local(ip, 6), None),
        "nat64-56": (_nat64_local(ip, 7), None),
        "nat64-64": (_nat64_local(ip, 8), None),
        "nat64-96": (_nat64_local(ip, 12), f"64:ff9b:1::{ip}"),
        "6to4": (ipaddress.IPv6Address(0x2002 << 112 | v << 80 | 1), None),
        "teredo": (ipaddress.IPv6Address(0x2001 << 112 | 0x4136E378 << 64 | 0x8000FFFF << 32 | (v ^ 0xFFFFFFFF)), None),
    }


@st.composite
def _ipv6_text(draw: st.DrawFn, ip: ipaddress.IPv6Address, dotted: str | None = None) -> str:
    forms = [ip.compressed, ip.exploded] + ([dotted] if dotted and ip != ipaddress.IPv6Address(0) else [])
    text = draw(st.sampled_from(forms))
    if ip.is_link_local:
        text += draw(st.sampled_from(("", "", "%25eth0", "%25lo", "%251")))
    return "[" + draw(_chars(text)) + "]"


@st.composite
def _host(draw: st.DrawFn, addr: str) -> tuple[str, str]:
    """(how it is spelled, a spelling of addr)."""
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address):
        return "ipv6", draw(_ipv6_text(ip))
    kind = draw(st.sampled_from(("ipv4",) * 8 + tuple(_carriers(ip))))
    if kind == "ipv4":
        return kind, draw(_ipv4_text(ip))
    six, dotted = _carriers(ip)[kind]
    return kind, draw(_ipv6_text(six, dotted))


def _percent(host: str, picks: list[bool]) -> str:
    """Percent-encode some characters of a host (yarl keeps them raw: a name no resolver knows)."""
    return "".join(quote(c, safe="") if p and c not in "[]" else c for c, p in zip(host, picks, strict=False))


def _url(trick: str, host: str, port: int, allowed: str) -> str:
    """A URL around the spelled host, some with userinfo/fragment tricks that confuse parsers."""
    return {
        "plain": f"http://{host}:{port}/p",
        "scheme-case": f"HtTp://{host}:{port}/p",
        "no-port": f"http://{host}/p",
        "user": f"http://user:pw@{host}:{port}/p",
        "allowed-as-user": f"http://{allowed}@{host}:{port}/p",
        "fragment-at": f"http://{host}:{port}/#@{allowed}/",
        "query-at": f"http://{host}:{port}?@{allowed}/",
        "allowed-fragment-at": f"http://{allowed}#@{host}:{port}/",
        "backslash-at": f"http://{allowed}\\@{host}:{port}/",
        "encoded-slash-at": f"http://{host}%2f@{allowed}/",
    }[trick]


TRICKS = ("plain",) * 6 + ("scheme-case", "no-port", "user", "allowed-as-user", "fragment-at", "query-at",
                           "allowed-fragment-at", "backslash-at", "encoded-slash-at")


@st.composite
def targets(draw: st.DrawFn, standin_port: int, allowed_port: int) -> tuple[str, str, str]:
    """(denied address, how it is spelled, URL)."""
    addr = draw(st.sampled_from(SAMPLES + [STANDIN] * len(SAMPLES)))  # half the examples aim at the stand-in
    kind, host = draw(_host(addr))
    if draw(st.integers(0, 9)) == 0:
        host = _percent(host, draw(st.lists(st.booleans(), min_size=len(host), max_size=len(host))))
        kind += "+percent"
    trick = draw(st.sampled_from(TRICKS))
    return addr, f"{kind}/{trick}", _url(trick, host, standin_port, f"{ALLOWED}:{allowed_port}")


# ---- the property ----------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data(), via_redirect=st.booleans())
async def test_no_spelling_of_a_denied_address_is_reached(harness: Harness, data: st.DataObject,
                                                          via_redirect: bool) -> None:
    """Either the target is refused up front, or the real request (direct or via a followed redirect) never
    connects to a denied address and never reaches the stand-in."""
    h = harness
    addr, kind, uri = data.draw(targets(h.standin.port, h.allowed.port), label="target")
    before_hits, before_connects = len(h.standin.hits), len(h.connects)
    if via_redirect:
        uri = str(URL(f"http://{ALLOWED}:{h.allowed.port}/r").with_query(to=uri))
    else:
        try:
            h.firer.check_target(uri)
        except OutboundDenied:
            event("refused up front")
            return  # refused up front: a 400 at create time
    result = await h.fire(uri, follow_redirects=via_redirect)
    event(f"sent{' via redirect' if via_redirect else ''}: {result.state} "
          f"({'outbound policy' if 'outbound policy' in (result.error or '') else (result.error or '')[:30]})")
    assert len(h.standin.hits) == before_hits, (addr, kind, uri, result)
    assert h.denied_connects(before_connects) == [], (addr, kind, uri, h.connects[before_connects:], result)


# ---- named cases -----------------------------------------------------------------------------------

REFUSED_UP_FRONT = [
    "http://\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14/",  # fullwidth digits
    "http://169\u3002254\u3002169\u3002254/",  # ideographic full stops
    "http://169\uff0e254\uff0e169\uff0e254/",  # fullwidth full stops
    "http://169\uff61254\uff61169\uff61254/",  # halfwidth ideographic full stops
    "http://2852039166/",  # decimal
    "http://0xa9.0xfe.0xa9.0xfe/",  # hex
    "http://0XA9.0XFE.0xa9.0xFE/",  # mixed case hex
    "http://0251.0376.0251.0376/",  # octal
    "http://169.254.43518/",  # short form
    "http://169.16689662/",  # shorter form
    "http://169.254.169.254./",  # trailing dot
    "http://169.254.169.254../",
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::ffff:0:169.254.169.254]/",  # IPv4-translated (security round 2, Low 10)
    "http://[::ffff:0:a9fe:a9fe]/",
    "http://[::169.254.169.254]/",  # IPv4-compatible
    "http://[64:ff9b::169.254.169.254]/",  # NAT64 well-known prefix
    "http://[64:ff9b:1::a9fe:a9fe]/",  # NAT64 local-use prefix, /96
    "http://[64:ff9b:1:a9fe:a9:fea9:fe00:0]/",  # ... /48
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",  # Teredo, client 169.254.169.254 (obfuscated)
    "http://[\uff46\uff45\uff18\uff10::1]/",  # fullwidth IPv6
    "http://[fe80::1%25eth0]/",
    "http://user@169.254.169.254/",
    "http://169.254.169.254#@example.com/",
    "http://169.254.169.254?@example.com/",
    "http://\uff4d\uff45\uff54\uff41\uff44\uff41\uff54\uff41/",  # fullwidth "metadata"
    "http://METADATA.google.internal./",
    "http://example.com\\@169.254.169.254/",  # the client cannot parse it: refused rather than guessed
]


@pytest.mark.parametrize("uri", REFUSED_UP_FRONT)
def test_spellings_of_metadata_are_refused_up_front(uri: str) -> None:
    firer = Firer(node_id="t", signing_secret="", policy=OutboundPolicy(), pool_size=1)
    with pytest.raises(OutboundDenied, match="outbound policy"):
        firer.check_target(uri)


def test_allowed_targets_still_pass_and_the_checked_url_is_returned() -> None:
    firer = Firer(node_id="t", signing_secret="", policy=OutboundPolicy(), pool_size=1)
    for uri in ("http://127.0.0.1:8080/x", "https://example.com/a?b={{jobId}}", "http://[::1]/", "http://10.1.2.3/",
                "http://b\u00fccher.example/", "http://\uff11\uff10.0.0.1/"):
        url = firer.check_target(uri)
        assert isinstance(url, URL) and url == URL(uri)
    assert firer.check_target("http://\uff11\uff10.0.0.1/").raw_host == "10.0.0.1"


def test_allow_list_entry_covers_the_address_or_the_ipv4_it_carries() -> None:
    p = OutboundPolicy(allow=["169.254.169.254/32"])
    for host in ("169.254.169.254", "::ffff:a9fe:a9fe", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1"):
        p.check_host(host)
    with pytest.raises(OutboundDenied):
        p.check_host("169.254.169.253")
    OutboundPolicy(allow=["2002::/16"]).check_host("2002:a9fe:a9fe::1")


def test_embedded_ipv4_of_each_carrier() -> None:
    ip = ipaddress.IPv4Address("169.254.169.254")
    for kind, (six, _) in _carriers(ip).items():
        assert ip in embedded_ipv4(six), kind
    assert embedded_ipv4(ipaddress.IPv6Address("::")) == []
    assert embedded_ipv4(ipaddress.IPv6Address("::1")) == []
    assert embedded_ipv4(ipaddress.IPv6Address("2001:db8::1")) == []


def test_cache_is_keyed_by_the_normalised_host() -> None:
    p = OutboundPolicy(deny=[f"{STANDIN}/32"])
    p.check_host("example.com")
    for host in (STANDIN, f"{STANDIN}.", f"[{STANDIN}]", "0x7f.0.0.2"):
        with pytest.raises(OutboundDenied):
            p.check_host(host)
    assert not any("127" in h for h in p._passed)


def test_configured_names_match_in_the_clients_form() -> None:
    p = OutboundPolicy(deny=["B\u00fccher.Example."])
    with pytest.raises(OutboundDenied):
        p.check_url("http://b\u00fccher.example/")
    with pytest.raises(OutboundDenied):
        p.check_url("http://BÜCHER.example./")


class _FakeResolver:
    """Stands in for DNS: a name answering a denied address first, then an allowed one."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}
                for a in self.answers]

    async def close(self) -> None:
        pass


async def test_resolver_refuses_numeric_names_even_without_the_up_front_check() -> None:
    """Names aiohttp does not treat as IP literals reach the resolver; it checks what they resolve to."""

    class Blind(OutboundPolicy):
        @staticmethod
        def _literal(h: str, host: str) -> None:  # as if the up-front check missed every numeric form
            return None

    resolver = PolicyResolver(Blind(deny=[f"{STANDIN}/32"]))
    for name in ("0x7f.0.0.2", "0x7F.0X0.0.02", "2130706434", "0177.0.0.2", "127.2"):
        with pytest.raises(OutboundDenied, match="outbound policy"):
            await resolver.resolve(name, 80, socket.AF_UNSPEC)
    resolver._inner = _FakeResolver(["169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe"])
    with pytest.raises(OutboundDenied):
        await resolver.resolve("rebound.example", 80)
    await resolver.close()


async def test_connects_only_to_the_addresses_the_resolver_allowed(harness: Harness) -> None:
    """A name answering a denied and an allowed address is connected to the allowed one only (resolved once)."""
    h = harness
    resolver = PolicyResolver(h.policy)
    resolver._inner = _FakeResolver([STANDIN, ALLOWED])
    connects: list[str] = []

    def sock(addr_info: Any) -> socket.socket:
        connects.append(addr_info[4][0])
        return socket.socket(addr_info[0], addr_info[1], addr_info[2])

    connector = aiohttp.TCPConnector(resolver=resolver, socket_factory=sock, force_close=True)
    before = len(h.standin.hits)
    async with aiohttp.ClientSession(connector=connector) as s:
        for _ in range(3):
            async with s.get(f"http://dual.test:{h.allowed.port}/x") as r:
                assert r.status == 200
    # the stand-in listens on another port; what matters is where the connection went
    assert connects == [ALLOWED] * 3 and len(h.standin.hits) == before


async def test_fullwidth_redirect_to_the_standin_is_not_followed(harness: Harness) -> None:
    """An allowed target answering 302 with a fullwidth Location to the denied stand-in."""
    h = harness
    before, before_connects = len(h.standin.hits), len(h.connects)
    for location in (f"http://\uff11\uff12\uff17.\uff10.\uff10.\uff12:{h.standin.port}/",
                     f"http://127\u30020\u30020\u30022:{h.standin.port}/",
                     f"//\uff11\uff12\uff17.0.0.2:{h.standin.port}/",
                     f"http://[::ffff:127.0.0.2]:{h.standin.port}/",
                     f"http://[::127.0.0.2]:{h.standin.port}/",
                     f"http://2130706434:{h.standin.port}/"):
        uri = str(URL(f"http://{ALLOWED}:{h.allowed.port}/r").with_query(to=location))
        result = await h.fire(uri, follow_redirects=True)
        assert result.state == "failed" and "outbound policy" in (result.error or ""), (location, result)
        assert result.attempts == 1  # a policy refusal is not retried
    assert len(h.standin.hits) == before and h.denied_connects(before_connects) == []


async def test_standin_is_reachable_when_not_denied(harness: Harness) -> None:
    """The stand-in really answers: a zero count above means refused, not unreachable."""
    h = harness
    p = OutboundPolicy()
    before = len(h.standin.hits)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=PolicyResolver(p))) as s:
        for uri in (f"http://{STANDIN}:{h.standin.port}/", f"http://\uff11\uff12\uff17.0.0.2:{h.standin.port}/",
                    f"http://[::ffff:127.0.0.2]:{h.standin.port}/"):
            async with s.get(p.check_url(uri)) as r:
                assert r.status == 200
    assert len(h.standin.hits) == before + 3
