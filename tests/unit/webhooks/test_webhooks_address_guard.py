"""The address guard: which URLs and addresses a worker may connect to."""

from __future__ import annotations

import ipaddress

import pytest

from webhooks.address_guard import AddressGuard, GuardedResolver, refusal_reason
from webhooks.errors import TargetRefused

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "169.254.169.254",
    "169.254.1.1",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "::1",
    "::",
    "fd00:ec2::254",
    "fc00::1",
    "fe80::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",
    "2002:7f00:1::1",
]
PUBLIC = ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "1.1.1.1"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is not None
    with pytest.raises(TargetRefused):
        AddressGuard().check_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_an_allowed_network_lets_its_addresses_through_and_no_others() -> None:
    guard = AddressGuard(["127.0.0.0/8"])
    guard.check_address(ipaddress.ip_address("127.0.0.1"))
    with pytest.raises(TargetRefused):
        guard.check_address(ipaddress.ip_address("10.0.0.1"))


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/x", "http and https"),
        ("file:///etc/passwd", "http and https"),
        ("javascript:alert(1)", "http and https"),
        ("http://", "host"),
        ("http://a:b@example.com/", "credentials"),
        ("http://example.com/a b", "spaces"),
        ("http://example.com/\x00", "control"),
        ("http://127.0.0.1/", "loopback"),
        ("http://[::1]:8080/", "loopback"),
        ("http://2130706433/", "public"),  # urlsplit keeps it a name; resolution decides
        ("http://example.com:99999/", "valid URL"),
        ("http://example.com/#frag", "fragment"),
        ("https://example.com/" + "a" * 3000, "at most"),
    ],
)
def test_bad_urls_are_refused_with_a_reason(url: str, words: str) -> None:
    guard = AddressGuard()
    if words == "public":
        guard.check_url(url)  # a name: checked once resolved
        return
    with pytest.raises(TargetRefused, match=words):
        guard.check_url(url)


def test_good_urls_give_their_target() -> None:
    target = AddressGuard().check_url("https://hooks.example.com/in?x=1")
    assert (target.scheme, target.host, target.port) == ("https", "hooks.example.com", 443)


async def test_the_resolver_keeps_only_permitted_addresses() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return {"mixed.test": ["127.0.0.1", "93.184.215.14"], "inside.test": ["10.0.0.5"]}[host]

    resolver = GuardedResolver(AddressGuard(), resolve)
    kept = await resolver.resolve("mixed.test", 443)
    assert [r["host"] for r in kept] == ["93.184.215.14"]
    with pytest.raises(OSError, match="private"):
        await resolver.resolve("inside.test", 443)
