"""The facts of one HTTP request, as the decision core sees them.

Adapters build a :class:`RequestFacts` from their framework's request. Header names are
lower-cased here once; the path stays raw (percent-encoded, as on the wire) because
canonicality can only be judged on the raw form.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

__all__ = ["MAX_HEADER_BYTES", "RequestFacts", "is_decimal"]

#: Total header bytes we look at; more is 400 ``bad_header`` (servers cap lower anyway).
MAX_HEADER_BYTES = 64 * 1024


class RequestFacts(NamedTuple):
    """Immutable; a tuple, because one is built per request on the hot path (a frozen
    dataclass costs a ``object.__setattr__`` per field). Build it with keywords."""

    method: str
    #: The raw path, percent-encoded, without the query string.
    path: str
    #: The raw query string, without the leading '?'.
    query: str = ""
    #: (lower-cased name, value) pairs in the order received; repeats kept.
    headers: tuple[tuple[str, str], ...] = ()
    #: The body where the adapter already has it; ``None``: ask for it only if needed.
    body: bytes | None = None
    #: The address of the connection's peer (a proxy, or the client itself).
    peer: str | None = None
    scheme: str = "http"
    #: The raw prefix the app is mounted under (ASGI ``root_path``, WSGI ``SCRIPT_NAME``),
    #: already cut from ``path``: the route is ``path``, the public URL ``mount + path``.
    mount: str = ""

    @classmethod
    def build(
        cls,
        *,
        method: str,
        path: str,
        query: str = "",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        peer: str | None = None,
        scheme: str = "http",
        mount: str = "",
    ) -> RequestFacts:
        """Normalize header names; accepts a mapping or (name, value) pairs."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        return cls(
            method=method,
            path=path,
            query=query,
            headers=tuple((_text(k).lower(), _text(v)) for k, v in pairs),
            body=body,
            peer=peer,
            scheme=scheme,
            mount=mount,
        )

    def header_values(self, name: str) -> list[str]:
        """All values of header ``name`` (lower-case), in order."""
        return [v for k, v in self.headers if k == name]

    def header(self, name: str) -> str | None:
        """The single value of ``name``; ``None`` when absent. Callers check repeats."""
        for k, v in self.headers:
            if k == name:
                return v
        return None


def _text(value: object) -> str:
    # Servers hand over bytes (ASGI): Latin-1 is HTTP's byte view of them. Anything else
    # (None, a number) is a caller's mistake, not a header: say so instead of "None".
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    raise TypeError(f"header names and values must be str or bytes, not {type(value).__name__}")


def is_decimal(text: str) -> bool:
    """ASCII digits only (Content-Length, ports): ``str.isdigit`` also accepts "²" and
    "٣", which ``int`` refuses or reads as a number nobody sent."""
    return text.isascii() and text.isdigit()
