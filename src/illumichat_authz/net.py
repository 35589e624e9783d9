"""Who is on the other end: the client IP and the public URL, through trusted proxies only.

``X-Forwarded-For``, ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are plain request
headers: any client can send them. They mean something only when the connection's peer is
a proxy we trust, and then only the part that trusted proxies appended. So the client IP
is found by walking ``X-Forwarded-For`` from the right, skipping trusted hops; the first
untrusted address is the client (RFC 7239 §5.2: "the first [...] proxy [...] appends";
MDN: "the rightmost IP address is the IP address of the most recent proxy"). The
left-most value is whatever the client wrote, and is never used.

Pure functions; the caller passes the peer address and headers (ASGI ``scope["client"]``
and ``scope["headers"]`` decoded as latin-1).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from illumichat_authz.errors import BadRequestError, ConfigurationError
from illumichat_authz.reasons import Reason

from .request import is_decimal

__all__ = [
    "MAX_FORWARDED_HOPS",
    "IPNetwork",
    "client_ip",
    "is_loopback_host",
    "is_trusted",
    "is_trusted_peer",
    "parse_trusted",
    "public_url",
    "rate_limit_subject",
    "valid_host",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Entries of X-Forwarded-For examined from the right; a longer chain stops the walk there.
MAX_FORWARDED_HOPS = 32
_MAX_HOST_CHARS = 255
# RFC 9110 §7.2: Host = uri-host [ ":" port ]; RFC 3986 §3.2.2: uri-host is an IP-literal
# ("[" IPv6 / IPvFuture "]") or a reg-name of unreserved, pct-encoded and sub-delims, and
# RFC 9110 §4.2.1 forbids an empty one. Every sub-delim is kept but ",": RFC 9110 §5.3
# lets a recipient combine repeated field lines "in order, separated by a comma" (waitress,
# wsgiref, werkzeug and gunicorn do so to two Host lines), so a comma in this singleton
# field means it was repeated. Whitespace, "@" (userinfo), "/", "?", "#" are no part of it.
# Possessive quantifiers: no backtracking, whatever the client sent.
_REG_NAME_PORT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+;=%]++(?::[0-9]*+)?+").fullmatch
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})").search
_IP_LITERAL_PORT = re.compile(
    r"\[([0-9A-Fa-f:.]++|[vV][0-9A-Fa-f]++\.[A-Za-z0-9\-._~!$&'()*+;=:]++)\](?::[0-9]*+)?+"
).fullmatch


def parse_trusted(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse the trusted-proxy CIDRs once, at start-up (``settings.proxies.trusted``)."""
    if isinstance(cidrs, str):
        raise ConfigurationError("proxies.trusted must be a list of CIDRs, not a string")
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ConfigurationError(f"proxies.trusted: {cidr!r} is not a CIDR") from None
    return tuple(networks)


def _parse_ip(text: str) -> IPAddress | None:
    """An address from a peer or X-Forwarded-For entry; ``None`` if it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1`` and ``[2001:db8::1]:5678``;
    IPv4-mapped IPv6 addresses become IPv4 so one client has one key.
    """
    text = text.strip()
    if not text or len(text) > 64:
        return None
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and is_decimal(rest[1:]))):
            return None
        text = inner
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not is_decimal(port):
            return None
    if "%" in text:  # scoped IPv6 (fe80::1%eth0) never comes from the Internet
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback_host(host: str) -> bool:
    """``localhost`` (any case) or a loopback address (127.0.0.0/8, ``::1``).

    The one place plain ``http`` is allowed for a JWKS URL: the settings check the URL
    with this at start-up, and the fetcher checks it again before every request.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_trusted(ip: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in trusted)


def is_trusted_peer(peer: str | None, trusted: Sequence[IPNetwork]) -> bool:
    """Whether the connection's peer is a trusted proxy (its X-Forwarded-* are believed)."""
    peer_ip = _parse_ip(peer) if peer is not None else None
    return peer_ip is not None and bool(trusted) and is_trusted(peer_ip, trusted)


def _header_values(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    """All comma-separated values of a header, in order, across repeated lines."""
    values: list[str] = []
    for key, value in headers:
        if key.lower() == name:
            values.extend(value.split(","))
    return values


def client_ip(
    *,
    peer: str | None,
    headers: Sequence[tuple[str, str]],
    trusted: Sequence[IPNetwork],
) -> str | None:
    """The client's IP: the peer, unless the peer is a trusted proxy.

    Behind trusted proxies, walk ``X-Forwarded-For`` from the right skipping trusted hops;
    the first untrusted address is the client. A malformed entry, or more than
    :data:`MAX_FORWARDED_HOPS` entries, stops the walk at the last address a trusted hop
    vouched for. ``None`` when there is no peer (and no proxy to vouch for anyone).
    """
    if peer is None:
        return None
    current = _parse_ip(peer)
    if current is None:
        return peer.strip() or None  # a unix socket or test transport: not an IP, not trusted
    if not trusted or not is_trusted(current, trusted):
        return current.compressed
    entries = _header_values(headers, "x-forwarded-for")
    for hop, entry in enumerate(reversed(entries)):
        if hop >= MAX_FORWARDED_HOPS:
            break
        ip = _parse_ip(entry)
        if ip is None:
            break
        current = ip
        if not is_trusted(ip, trusted):
            break
    return current.compressed


def valid_host(host: str) -> bool:
    """``host`` is a Host value (RFC 9110 §7.2, after its surrounding whitespace is gone):
    one authority, no comma, at most 255 characters. Cheap: one regex on the usual name."""
    if not 0 < len(host) <= _MAX_HOST_CHARS:
        return False
    if host[0] != "[":
        return _REG_NAME_PORT(host) is not None and ("%" not in host or _BAD_PCT(host) is None)
    literal = _IP_LITERAL_PORT(host)
    if literal is None:
        return False
    address = literal[1]
    if address[0] in "vV":
        return True  # IPvFuture: the pattern is its whole grammar
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def public_url(
    *,
    scheme: str,
    host_header: str | None,
    path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    peer: str | None,
    trusted: Sequence[IPNetwork],
    public_base_url: str | None,
) -> str:
    """The URL as Twilio saw it (the URL it signed).

    ``path`` is the raw (still percent-encoded) path and ``query`` the raw query string
    without ``?``. With ``public_base_url`` configured it wins. Otherwise the scheme and
    host come from ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` (the right-most value, the
    one our trusted peer set) only when the peer is a trusted proxy, else from the request
    itself. Raises :class:`BadRequestError` (400 ``bad_header``) when there is no usable
    Host.
    """
    suffix = path + (f"?{query}" if query else "")
    if public_base_url:
        return public_base_url.rstrip("/") + suffix
    from_proxy = is_trusted_peer(peer, trusted)
    host = (host_header or "").strip()
    scheme = scheme.lower()
    if from_proxy:
        protos = [p.strip().lower() for p in _header_values(headers, "x-forwarded-proto")]
        if protos and protos[-1] in ("http", "https"):
            scheme = protos[-1]
        hosts = [h.strip() for h in _header_values(headers, "x-forwarded-host")]
        if hosts and valid_host(hosts[-1]):
            host = hosts[-1]
    if not valid_host(host):
        raise BadRequestError("missing or invalid Host header", reason=Reason.BAD_HEADER)
    if scheme not in ("http", "https"):
        raise BadRequestError("request scheme is not http(s)", reason=Reason.BAD_HEADER)
    return f"{scheme}://{host}{suffix}"


def rate_limit_subject(ip: str | None) -> str:
    """Who a rate limit counts: the IPv4 address, or the IPv6 /64 it lies in.

    One IPv6 subscriber is usually given a whole /64 (RFC 6177 and common practice), so a
    per-address limit would let it use a new address per request.
    """
    if ip is None:
        return "unknown"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an IP (a unix socket, a test transport): counted as it is
    if address.version == 6:
        return ipaddress.ip_network(f"{address}/64", strict=False).compressed
    return address.compressed
