"""Which targets a worker may POST to: checked on the URL, and on the resolved address at
delivery time.

Only ``http`` and ``https`` URLs with a host are accepted, without user info (credentials in
a URL would end up in listings). By default the guard refuses every address that is not
public: loopback, private (RFC 1918, ULA), link-local (including the cloud metadata
addresses ``169.254.169.254`` and ``fd00:ec2::254``), CGNAT (``100.64.0.0/10``),
multicast, reserved and documentation ranges, and IPv4 addresses inside IPv6 forms
(``::ffff:127.0.0.1``, NAT64). Networks named in ``CHANGEFEED_WEBHOOK_ALLOW_NETWORKS`` are
allowed anyway (the tests and the demo allow ``127.0.0.0/8``).

The check runs on the addresses a name resolves to when the worker connects, and the
connection goes to an address that passed (:class:`GuardedResolver` is the HTTP client's
resolver), so a name that resolves to a public address at subscription time and to
``127.0.0.1`` later (DNS rebinding) is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from webhooks.errors import TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[list[str]]]
"""A name lookup: host and port in, the addresses it resolves to out (tests inject one)."""

MAX_URL = 2048
METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
_REFUSED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


def parse_networks(texts: Sequence[str]) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(t, strict=False) for t in texts)
    except ValueError as exc:
        raise TargetRefused(f"CHANGEFEED_WEBHOOK_ALLOW_NETWORKS: {exc}") from exc


class AddressGuard:
    def __init__(self, allow_networks: Sequence[str] = ()) -> None:
        self.allowed = parse_networks(allow_networks)

    def check_url(self, url: str) -> Target:
        """The target of ``url``, or :class:`TargetRefused` saying why it cannot be one.

        A literal IP host is checked here; a name is checked when it is resolved.
        """
        if len(url) > MAX_URL:
            raise TargetRefused(f"the URL must be at most {MAX_URL} characters")
        if any(ord(ch) <= 32 or ord(ch) == 127 or 0xD800 <= ord(ch) <= 0xDFFF for ch in url):
            raise TargetRefused("the URL must not contain spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise TargetRefused(f"not a valid URL: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise TargetRefused("only http and https URLs can receive webhooks")
        if parts.username is not None or parts.password is not None:
            raise TargetRefused("the URL must not carry credentials (user:password@)")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise TargetRefused("the URL needs a host")
        if parts.fragment:
            raise TargetRefused("the URL must not have a #fragment")
        literal = _literal_address(host)
        if literal is not None:
            self.check_address(literal)
        return Target(scheme, host, port or (443 if scheme == "https" else 80))

    def check_address(self, address: IPAddress) -> None:
        """Refuse an address that is not public, unless an allowed network holds it."""
        if any(address in net for net in self.allowed):
            return
        reason = refusal_reason(address)
        if reason is not None:
            raise TargetRefused(f"{address} is {reason}; webhooks go to public addresses only")

    def permitted(self, host: str, addresses: Sequence[str]) -> list[str]:
        """The addresses of ``host`` that may be connected to; refuses if none may."""
        kept: list[str] = []
        last: TargetRefused | None = None
        for text in addresses:
            try:
                self.check_address(ipaddress.ip_address(text.split("%", 1)[0]))
            except (TargetRefused, ValueError) as exc:
                last = exc if isinstance(exc, TargetRefused) else TargetRefused(str(exc))
                continue
            kept.append(text)
        if not kept:
            raise TargetRefused(f"{host} resolves to {last or 'no address'}")
        return kept


def refusal_reason(address: IPAddress) -> str | None:
    """Why the guard refuses ``address`` by default, None for a public address."""
    if address in METADATA:
        return "a cloud metadata address"
    embedded = _embedded_v4(address)
    if embedded is not None:
        inner = refusal_reason(embedded)
        return None if inner is None else f"{inner} (inside an IPv6 address)"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    for net in _REFUSED:
        if address.version == net.version and address in net:
            return (
                "a private or reserved address"
                if not str(net).startswith("100.64")
                else "a carrier-grade NAT address"
            )
    if not address.is_global:
        return "not a public address"
    return None


def _embedded_v4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host`` (getaddrinfo, in a thread)."""
    import asyncio

    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver: resolves, then keeps only the addresses the guard permits, so the
    connection is made to an address that was checked."""

    def __init__(self, guard: AddressGuard, resolve: Resolve = system_resolve) -> None:
        self.guard = guard
        self._resolve = resolve

    async def resolve(
        self, host: str, port: int = 0, family: Any = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self._resolve(host, port)
        except OSError as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from exc
        try:
            kept = self.guard.permitted(host, addresses)
        except TargetRefused as exc:
            # aiohttp reports resolver failures as connection errors; the message survives.
            raise OSError(f"address guard: {exc}") from exc
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in kept
        ]

    async def close(self) -> None:
        return None
