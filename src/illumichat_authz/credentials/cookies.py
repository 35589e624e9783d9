"""Finding the Auth.js session cookie in ``Cookie`` headers, with bounded work.

Auth.js writes the session under one name (``authjs.session-token``, or
``__Secure-authjs.session-token`` on https) and, when the value is longer than one cookie
may hold, splits it into ``<name>.0``, ``<name>.1``, ... (``SessionStore#chunk`` in
``packages/core/src/lib/utils/cookie.ts``: "Given a cookie value, return new cookies,
chunked, to fit the allowed cookie size"). The chunks are joined in index order.

Unlike Auth.js (which keeps the first cookie of a name and sorts whatever chunks it
finds), we refuse anything that could mean two different sessions: the same name twice,
a session under two accepted names, a whole cookie beside chunks, or a gap in the chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from illumichat_authz.errors import CredentialError
from illumichat_authz.reasons import Reason

__all__ = [
    "MAX_CHUNKS",
    "MAX_COOKIES",
    "MAX_COOKIE_HEADER_CHARS",
    "SessionCookie",
    "find_session_cookie",
    "parse_cookie_header",
]

_log = logging.getLogger("illumichat_authz.credentials.cookies")

#: Total characters over all ``Cookie`` header values (browsers send at most ~180 cookies of
#: 4096 bytes each; servers usually cap a header at 8-16 KiB, a chunked session needs more).
MAX_COOKIE_HEADER_CHARS: Final = 64 * 1024
#: Cookies (name=value pairs) looked at, over all header values.
MAX_COOKIES: Final = 256
#: Chunks of one session cookie (16 x 3936 characters covers any real session).
MAX_CHUNKS: Final = 16
_MAX_INDEX_DIGITS: Final = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCookie:
    """The session cookie as found: the exact ``name`` it came under and its ``value``.

    For a chunked cookie ``name`` is the base name (without ``.0``) and ``value`` the joined
    chunks. ``repr`` hides the value: it is a bearer credential.
    """

    name: str
    value: str
    chunks: int = 0

    def __repr__(self) -> str:
        size = len(self.value)
        return f"SessionCookie(name={self.name!r}, value=<{size} chars>, chunks={self.chunks})"


def _invalid(message: str, reason: Reason = Reason.INVALID_CREDENTIAL) -> CredentialError:
    return CredentialError(message, reason=reason)


def parse_cookie_header(values: Iterable[str]) -> list[tuple[str, str]]:
    """``Cookie`` header values (RFC 6265 §5.4, several when HTTP/2 splits them) to pairs.

    Lenient like browsers and the ``cookie`` package Auth.js uses (whitespace trimmed, a
    pair without ``=`` skipped, a double-quoted value unquoted), but bounded: more than
    :data:`MAX_COOKIE_HEADER_CHARS` characters or :data:`MAX_COOKIES` pairs is refused.
    """
    total = 0
    pairs: list[tuple[str, str]] = []
    for header in values:
        if not isinstance(header, str):
            raise _invalid("cookie header is not text")
        total += len(header)
        if total > MAX_COOKIE_HEADER_CHARS:
            raise _invalid("cookie header too large")
        for item in header.split(";"):
            name, eq, value = item.partition("=")
            if not eq:
                continue
            name = name.strip()
            if not name:
                continue
            if len(pairs) >= MAX_COOKIES:
                raise _invalid("too many cookies")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            pairs.append((name, value))
    return pairs


def _decode_value(value: str) -> str:
    """Auth.js serializes values with ``encodeURIComponent``; tokens never need it."""
    if "%" not in value:
        return value
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise _invalid("session cookie is not valid percent-encoding") from None


def _chunk_index(suffix: str) -> int | None:
    """``"3"`` -> 3; anything but a canonical small decimal index -> None."""
    if (
        not suffix
        or len(suffix) > _MAX_INDEX_DIGITS
        or not suffix.isascii()
        or not suffix.isdigit()
        or (len(suffix) > 1 and suffix[0] == "0")
    ):
        return None
    return int(suffix)


def find_session_cookie(
    pairs: Sequence[tuple[str, str]], names: Sequence[str]
) -> SessionCookie | None:
    """The one session cookie under any of ``names`` (whole or chunked), or ``None``.

    Raises ``CredentialError``: ``ambiguous_credential`` when more than one candidate is
    present, ``invalid_credential`` for malformed chunks.
    """
    whole: dict[str, str] = {}
    chunks: dict[str, dict[int, str]] = {}
    for cookie_name, raw_value in pairs:
        for base in names:
            if not cookie_name.startswith(base):
                continue
            # Auth.js skips empty values (``if (!name.startsWith(prefix) || !value)
            # continue``): an empty cookie is a cleared one.
            if not raw_value:
                break
            rest = cookie_name[len(base) :]
            if not rest:
                if base in whole:
                    raise _invalid("duplicate session cookie", Reason.AMBIGUOUS_CREDENTIAL)
                whole[base] = raw_value
                break
            if rest[0] != ".":
                continue  # another cookie that merely shares the prefix
            index = _chunk_index(rest[1:])
            if index is None:
                raise _invalid("malformed session cookie chunk name")
            parts = chunks.setdefault(base, {})
            if index in parts:
                raise _invalid("duplicate session cookie chunk", Reason.AMBIGUOUS_CREDENTIAL)
            if len(parts) >= MAX_CHUNKS:
                raise _invalid("too many session cookie chunks")
            parts[index] = raw_value
            break
    found = set(whole) | set(chunks)
    if not found:
        return None
    if len(found) > 1 or (whole.keys() & chunks.keys()):
        raise _invalid("more than one session cookie", Reason.AMBIGUOUS_CREDENTIAL)
    (base,) = found
    if base in whole:
        return SessionCookie(name=base, value=_decode_value(whole[base]))
    parts = chunks[base]
    # A gap means a lost chunk: joining the rest would yield a different token.
    if sorted(parts) != list(range(len(parts))):
        _log.debug("session cookie chunks %s are not contiguous", sorted(parts))
        raise _invalid("session cookie chunks are incomplete")
    value = "".join(_decode_value(parts[i]) for i in range(len(parts)))
    return SessionCookie(name=base, value=value, chunks=len(parts))
