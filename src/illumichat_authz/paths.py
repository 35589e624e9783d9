"""Canonical request paths: the gate in front of route matching.

A path that different components could read differently (a proxy, our router, the host
framework) is how "public" checks get bypassed: ``/api/widget/x/../../assistants``,
``/api/widget%2F..``, ``//api``, ``\\``. So any path that is not in one canonical form is
refused with 400 before it is classified, and can never be public.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import BadRequestError
from .reasons import Reason

__all__ = ["canonical_segments"]

# RFC 3986 pchar, less the characters we refuse outright: ';' (matrix parameters that
# some servers strip) and '\\'. Percent-escapes are checked separately.
_RAW_OK = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@%/]*\Z")
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Escapes that decode to a separator, a dot, or a control character.
_BAD_ESCAPE = re.compile(r"%(?:2[Ee]|2[Ff]|5[Cc]|[01][0-9A-Fa-f]|7[Ff])")


_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _fail(detail: str) -> BadRequestError:
    return BadRequestError(
        f"non-canonical request path: {detail}", reason=Reason.NON_CANONICAL_PATH
    )


def _decode_segment(raw: str) -> str:
    if "%" not in raw:
        return raw
    data = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "%":
            data.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            data += ch.encode("ascii")
            i += 1
    try:
        # Strict UTF-8 refuses overlong forms (e.g. %C0%AE for '.') and surrogates.
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("percent-encoding is not valid UTF-8") from None
    # C1 controls (U+0080-U+009F), bidi and other format characters, and line or paragraph
    # separators render invisibly or reorder text in logs and UIs: no identifier needs them.
    if any(unicodedata.category(ch) in _INVISIBLE for ch in text if ord(ch) > 0x7E):
        raise _fail("encoded control, format or separator character")
    return text


def canonical_segments(raw_path: str, *, max_length: int = 2048) -> tuple[str, ...]:
    """Return the decoded segments of ``raw_path`` or raise 400 ``non_canonical_path``.

    ``raw_path`` is the path as sent on the wire, still percent-encoded, without query.
    ``/`` is the empty tuple; a trailing ``/`` is a final empty segment.
    """
    if len(raw_path) > max_length:
        raise _fail(f"longer than {max_length} characters")
    if not raw_path.startswith("/"):
        raise _fail("must start with '/'")
    if not _RAW_OK.match(raw_path):
        raise _fail("contains a character that must not appear in a path")
    if "%" in raw_path:
        if _PCT.search(raw_path):
            raise _fail("invalid percent-encoding")
        if _BAD_ESCAPE.search(raw_path):
            raise _fail("encoded '.', '/', '\\' or control character")
    if raw_path == "/":
        return ()
    parts = raw_path[1:].split("/")
    segments: list[str] = []
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if part == "" and i == last:
            # A trailing '/' is its own path (Django's `/admin/`): kept as a final empty
            # segment, which only a route declared with the '/' matches.
            segments.append("")
            continue
        if part == "":
            raise _fail("empty segment ('//')")
        if part in (".", ".."):
            raise _fail("dot segment")
        segments.append(_decode_segment(part))
    return tuple(segments)
