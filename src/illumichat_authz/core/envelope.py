"""The request envelope: the method and header gate every request passes first.

RFC 9110 §5.6.2 (tokens), §5.5 (field values) and §9 (methods); a route table may declare
methods beyond the standard ones (e.g. WebDAV). Pure: refuses with ``BadRequestError``.
"""

from __future__ import annotations

import re

from ..errors import BadRequestError
from ..reasons import Reason
from ..request import MAX_HEADER_BYTES, RequestFacts

__all__ = ["check_envelope"]

# RFC 9110 §5.6.2 token (what a method must look like at all).
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}\Z")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]{1,256}\Z")
# Controls (but tab), DEL, and lone surrogates (no UTF-8 form: they cannot be logged,
# compared or sent on, so nothing downstream could agree on what they were).
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


def check_envelope(request: RequestFacts, methods: frozenset[str]) -> None:
    """Refuse (400) a malformed or unknown method and malformed or oversized headers."""
    method = request.method
    if method not in _STANDARD_METHODS and method not in methods:
        if not _METHOD.match(method):
            raise BadRequestError("malformed request method", reason=Reason.BAD_METHOD)
        # Methods are case-sensitive (RFC 9110 §9.1): "get" or "BREW" is no method of ours.
        raise BadRequestError(f"unknown request method {method!r}", reason=Reason.BAD_METHOD)
    headers = request.headers
    total = 0
    for name, value in headers:
        total += len(name) + len(value)
        if name not in _COMMON_HEADER_NAMES and not _HEADER_NAME.match(name):
            raise BadRequestError("malformed request header", reason=Reason.BAD_HEADER)
    if total > MAX_HEADER_BYTES:
        raise BadRequestError("request headers too large", reason=Reason.BAD_HEADER)
    # All values at once, joined by a tab (which a value may hold): most are Latin-1 (ASGI
    # and WSGI decode them so), and deleting the refused bytes in C is several times
    # faster than a regex scan, or than one encode per header.
    values = "\t".join([value for _, value in headers])
    try:
        raw = values.encode("latin-1")
    except UnicodeEncodeError:
        if _HEADER_VALUE_BAD.search(values) is not None:
            raise BadRequestError("malformed request header", reason=Reason.BAD_HEADER) from None
    else:
        if len(raw.translate(None, _BAD_VALUE_BYTES)) != len(raw):
            raise BadRequestError("malformed request header", reason=Reason.BAD_HEADER)


# RFC 9110 §9.3 and RFC 5789 (PATCH); a route table may declare others (e.g. WebDAV).
_STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
# Names browsers, proxies and tracers send: a set lookup instead of a regex match for each
# (tests/test_paths_properties.py checks that every one is a valid lower-case token).
_COMMON_HEADER_NAMES = frozenset(
    {
        "access-control-request-headers",
        "access-control-request-method",
        "accept-charset",
        "content-encoding",
        "dnt",
        "forwarded",
        "if-modified-since",
        "if-none-match",
        "priority",
        "sec-ch-ua",
        "sec-ch-ua-mobile",
        "sec-ch-ua-platform",
        "sec-fetch-dest",
        "sec-fetch-mode",
        "sec-fetch-site",
        "sec-fetch-user",
        "sec-websocket-extensions",
        "sec-websocket-key",
        "sec-websocket-protocol",
        "sec-websocket-version",
        "te",
        "traceparent",
        "tracestate",
        "upgrade",
        "upgrade-insecure-requests",
        "via",
        "x-forwarded-method",
        "x-forwarded-uri",
        "x-original-method",
        "x-original-uri",
        "x-real-ip",
        "x-requested-with",
        "accept",
        "accept-encoding",
        "accept-language",
        "authorization",
        "cache-control",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "host",
        "origin",
        "pragma",
        "referer",
        "user-agent",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-request-id",
        "x-twilio-signature",
        "x-workspace-id",
    }
)
# The bytes _HEADER_VALUE_BAD refuses, for the Latin-1 fast path in _check_envelope.
_BAD_VALUE_BYTES = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
