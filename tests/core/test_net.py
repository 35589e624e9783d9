"""client_ip and public_url: proxy headers count only when a trusted proxy sent them."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illumichat_authz.errors import BadRequestError, ConfigurationError
from illumichat_authz.net import MAX_FORWARDED_HOPS, client_ip, parse_trusted, public_url
from illumichat_authz.reasons import Reason

TRUSTED = parse_trusted(["10.0.0.0/8", "fd00::/8", "192.168.1.1/32"])


def xff(value: str) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", value)]


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        # No proxy: the peer, whatever the headers say.
        ("203.0.113.9", [], "203.0.113.9"),
        ("203.0.113.9", xff("1.1.1.1"), "203.0.113.9"),
        # Trusted peer: the right-most untrusted entry.
        ("10.0.0.1", xff("198.51.100.7"), "198.51.100.7"),
        ("10.0.0.1", xff("1.1.1.1, 198.51.100.7"), "198.51.100.7"),  # left is spoofable
        ("10.0.0.1", xff("1.1.1.1, 198.51.100.7, 10.0.0.2"), "198.51.100.7"),
        ("10.0.0.1", xff("198.51.100.7,10.0.0.3 ,  10.0.0.2"), "198.51.100.7"),
        # Repeated header lines join in order.
        ("10.0.0.1", [*xff("1.1.1.1"), *xff("198.51.100.7")], "198.51.100.7"),
        ("10.0.0.1", [("x-forwarded-for", "198.51.100.7")], "198.51.100.7"),
        # Trusted peer without XFF: the peer.
        ("10.0.0.1", [], "10.0.0.1"),
        # All hops trusted: the furthest trusted hop.
        ("10.0.0.1", xff("10.0.0.9, 10.0.0.2"), "10.0.0.9"),
        # Malformed entries stop the walk at the last trusted-vouched value.
        ("10.0.0.1", xff("198.51.100.7, garbage"), "10.0.0.1"),
        ("10.0.0.1", xff("198.51.100.7, unknown, 10.0.0.2"), "10.0.0.2"),
        ("10.0.0.1", xff(""), "10.0.0.1"),
        ("10.0.0.1", xff("1.1.1.1, , 10.0.0.2"), "10.0.0.2"),
        ("10.0.0.1", xff("999.1.1.1"), "10.0.0.1"),
        ("10.0.0.1", xff("fe80::1%eth0"), "10.0.0.1"),
        # Ports and brackets.
        ("10.0.0.1", xff("198.51.100.7:4711"), "198.51.100.7"),
        ("10.0.0.1", xff("[2001:db8::7]:4711"), "2001:db8::7"),
        ("10.0.0.1", xff("2001:db8::7"), "2001:db8::7"),
        ("10.0.0.1", xff("198.51.100.7:http"), "10.0.0.1"),
        # IPv6 proxies, IPv4-mapped addresses.
        ("fd00::1", xff("2001:db8::7"), "2001:db8::7"),
        ("::ffff:10.0.0.1", xff("198.51.100.7"), "198.51.100.7"),
        ("::ffff:203.0.113.9", xff("198.51.100.7"), "203.0.113.9"),
        ("10.0.0.1", xff("::ffff:198.51.100.7"), "198.51.100.7"),
        ("2001:DB8:0:0::1", [], "2001:db8::1"),
        # A /32 trusts exactly one address.
        ("192.168.1.1", xff("198.51.100.7"), "198.51.100.7"),
        ("192.168.1.2", xff("198.51.100.7"), "192.168.1.2"),
        # No peer, or a non-IP peer (unix socket, test transport).
        (None, xff("198.51.100.7"), None),
        ("testclient", xff("198.51.100.7"), "testclient"),
    ],
)
def test_client_ip_table(
    peer: str | None, headers: list[tuple[str, str]], expected: str | None
) -> None:
    assert client_ip(peer=peer, headers=headers, trusted=TRUSTED) == expected


def test_no_trusted_proxies_means_peer_only() -> None:
    assert client_ip(peer="10.0.0.1", headers=xff("198.51.100.7"), trusted=()) == "10.0.0.1"


def test_long_chain_of_trusted_hops_is_bounded() -> None:
    chain = ", ".join(["198.51.100.7"] + [f"10.0.{i // 250}.{i % 250}" for i in range(100)])
    got = client_ip(peer="10.0.0.1", headers=xff(chain), trusted=TRUSTED)
    assert got is not None
    assert ipaddress.ip_address(got) in ipaddress.ip_network("10.0.0.0/8")
    short = ", ".join(["198.51.100.7"] + ["10.0.0.2"] * (MAX_FORWARDED_HOPS - 1))
    assert client_ip(peer="10.0.0.1", headers=xff(short), trusted=TRUSTED) == "198.51.100.7"


@pytest.mark.parametrize("bad", [["10.0.0.0/33"], ["nope"], "10.0.0.0/8", ["10.0.0.1/8", ""]])
def test_parse_trusted_rejects_bad_cidrs(bad: list[str]) -> None:
    with pytest.raises(ConfigurationError):
        parse_trusted(bad)


def test_parse_trusted_accepts_host_bits() -> None:
    assert parse_trusted(["10.0.0.1/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)


# -- property: an untrusted peer can never choose its IP -------------------------------

_ipv4 = st.ip_addresses(v=4).map(str)
_entry = st.one_of(_ipv4, st.ip_addresses(v=6).map(str), st.text(max_size=20))


@settings(max_examples=200, deadline=None)
@given(
    peer=_ipv4.filter(lambda ip: not ipaddress.ip_address(ip).is_private),
    entries=st.lists(_entry, max_size=6),
)
def test_untrusted_peer_cannot_choose_its_ip(peer: str, entries: list[str]) -> None:
    headers = [("X-Forwarded-For", ", ".join(entries)), ("X-Real-IP", "1.2.3.4")]
    assert client_ip(peer=peer, headers=headers, trusted=TRUSTED) == peer


@settings(max_examples=200, deadline=None)
@given(
    client=_ipv4.filter(lambda ip: not ipaddress.ip_address(ip).is_private),
    spoofed=st.lists(_entry, max_size=6),
    hops=st.lists(st.integers(1, 250).map(lambda n: f"10.1.2.{n}"), max_size=4),
)
def test_client_behind_trusted_proxies_cannot_spoof(
    client: str, spoofed: list[str], hops: list[str]
) -> None:
    """Whatever the client prepends, the proxies' appended entry decides."""
    chain = ", ".join([*spoofed, client, *hops])
    assert client_ip(peer="10.0.0.1", headers=xff(chain), trusted=TRUSTED) == client


# -- public_url ----------------------------------------------------------------------


def url(**kw: object) -> str:
    args: dict[str, object] = {
        "scheme": "http",
        "host_header": "app.internal:8000",
        "path": "/api/sms/webhook/a%2Fb",
        "query": "",
        "headers": [],
        "peer": "203.0.113.9",
        "trusted": TRUSTED,
        "public_base_url": None,
    }
    args.update(kw)
    return public_url(**args)  # type: ignore[arg-type]


FWD = [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "api.illumichat.com")]


def test_public_url_from_request() -> None:
    assert url() == "http://app.internal:8000/api/sms/webhook/a%2Fb"
    assert url(query="x=1&y=%20") == "http://app.internal:8000/api/sms/webhook/a%2Fb?x=1&y=%20"


def test_public_base_url_wins() -> None:
    got = url(public_base_url="https://api.illumichat.com/", headers=FWD, query="a=1")
    assert got == "https://api.illumichat.com/api/sms/webhook/a%2Fb?a=1"


def test_forwarded_headers_from_untrusted_peer_are_ignored() -> None:
    assert url(headers=FWD) == "http://app.internal:8000/api/sms/webhook/a%2Fb"


def test_forwarded_headers_from_trusted_peer() -> None:
    assert url(headers=FWD, peer="10.0.0.1") == "https://api.illumichat.com/api/sms/webhook/a%2Fb"


def test_forwarded_headers_right_most_value() -> None:
    headers = [("X-Forwarded-Proto", "http, https"), ("X-Forwarded-Host", "evil.test, api.x.com")]
    assert url(headers=headers, peer="10.0.0.1") == "https://api.x.com/api/sms/webhook/a%2Fb"


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Forwarded-Proto", "gopher"), ("X-Forwarded-Host", "bad host/evil")],
        [("X-Forwarded-Proto", ""), ("X-Forwarded-Host", "")],
        [("X-Forwarded-Host", "a" * 300)],
    ],
)
def test_invalid_forwarded_values_fall_back_to_the_request(headers: list[tuple[str, str]]) -> None:
    assert url(headers=headers, peer="10.0.0.1") == "http://app.internal:8000/api/sms/webhook/a%2Fb"


@pytest.mark.parametrize("host", [None, "", "bad host", "x/y", "a@b"])
def test_missing_or_bad_host_is_400(host: str | None) -> None:
    with pytest.raises(BadRequestError) as info:
        url(host_header=host)
    assert info.value.reason is Reason.BAD_HEADER
    assert info.value.status == 400


def test_scheme_must_be_http() -> None:
    with pytest.raises(BadRequestError):
        url(scheme="ws")
