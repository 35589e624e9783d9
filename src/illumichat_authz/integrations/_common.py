"""What every adapter shares: request ids, the raw target, the mount, the Host check, the
bounded body reader and the answer to a denial.

Nothing here imports a framework. Adapters translate their request into
:class:`RequestFacts`, call the authorizer (through :mod:`._require`), and turn a denial
into a response with :func:`render`, over :func:`illumichat_authz.render.render_denial`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import AsyncGenerator, Iterable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote, unquote_to_bytes

from ..decision import Decision
from ..denials import internal_error
from ..errors import BadRequestError
from ..net import valid_host
from ..reasons import Reason
from ..render import Rendered, render_denial, revision_headers
from ..request import RequestFacts, is_decimal

if TYPE_CHECKING:
    from ..authorizer import Authorizer

__all__ = [
    "ANONYMOUS",
    "PREFLIGHT_STATUS",
    "Anonymous",
    "allowed_headers",
    "answers_itself",
    "authorizer_for_file",
    "below_mount",
    "check_host",
    "configured_authorizer",
    "internal_error",
    "over_limit",
    "quote_path",
    "raise_import_failure",
    "read_bounded",
    "read_wsgi_input",
    "render",
    "request_id",
    "request_target",
    "split_request_uri",
]

log = logging.getLogger("illumichat_authz.integrations")

# A caller-supplied request id is echoed only if it is short and plainly printable
# (it lands in logs and in the problem body); anything else gets a fresh one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")
# RFC 3986 pchar less ';' and '%' (which the decoded path may contain as data).
_PATH_SAFE = "/-._~!$&'()*+,=:@"


@dataclass(frozen=True, slots=True)
class Anonymous:
    """``scope["user"]`` on public and webhook routes: no credential was verified."""

    @property
    def is_authenticated(self) -> bool:
        return False

    @property
    def display_name(self) -> str:
        return ""

    @property
    def identity(self) -> str:
        return ""


ANONYMOUS = Anonymous()


def raise_import_failure(exc: ImportError, *, module: str, framework: str, extra: str) -> NoReturn:
    """Raise what an adapter's failed import of its framework (``exc``) means.

    Only when ``module`` itself is not installed is the answer "install the extra". Any
    other ImportError (an import cycle, a broken dependency inside the framework) is
    raised as it is: telling the user to install what is installed hides the real fault.
    """
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if missing is None or missing.partition(".")[0] != module:
        raise exc
    raise ImportError(
        f"illumichat_authz.integrations needs {framework}; "
        f'install it with: pip install "illumichat-authz[{extra}]"'
    ) from exc


def allowed_headers(decision: Decision, rid: str) -> list[tuple[str, str]]:
    """What an allowed answer carries, as every denial does: the request id, and with
    ``[database]`` the facts revision the decision saw (``x-authz-revision``), which a
    client sends back to read its own writes on any instance. An adapter adds each one the
    application did not set itself."""
    if decision.facts_revision is None:
        return [("x-request-id", rid)]
    return [("x-request-id", rid), *revision_headers(decision)]


def request_id(headers: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    """The caller's ``x-request-id`` when it is sane, else a fresh random one (128 random
    bits as 32 hex digits, like ``uuid4().hex`` at a fifth of its cost: allowed answers
    carry one too, so this is on every request's path)."""
    for name, value in headers:
        if name == "x-request-id":
            return value if _REQUEST_ID.match(value) else os.urandom(16).hex()
    return os.urandom(16).hex()


def quote_path(decoded: str | bytes) -> str:
    """Re-encode a decoded path for the core when the server kept no raw path.

    ``%`` is data here (it came from ``%25``), so it is quoted; the core then judges the
    result exactly as it would have judged the wire form.
    """
    return quote(decoded, safe=_PATH_SAFE)


def split_request_uri(uri: str) -> tuple[str, str] | None:
    """``(path, query)`` from an origin-form request target; ``None`` if not origin-form."""
    if not uri.startswith("/"):
        return None
    path, _, query = uri.partition("?")
    return path, query


def request_target(
    targets: Iterable[object], mount: str | bytes, routed: bytes | None, *, query: str = ""
) -> tuple[str, str, str]:
    """``(mount, path, query)``: the first origin-form raw target in ``targets`` (WSGI
    ``RAW_URI``/``REQUEST_URI``, ASGI ``raw_path``, a proxy's original URI), split by
    :func:`below_mount`.

    With none, what the server decoded (``mount`` and ``routed`` as bytes) is re-encoded
    into its wire form with ``query`` as the query; where nothing was decoded either
    (``routed`` is ``None``: forward auth) the target is a 400.
    """
    for target in targets:
        if isinstance(target, str) and (split := split_request_uri(target)) is not None:
            raw, query = split
            break
    else:
        if routed is None or not isinstance(mount, bytes):
            raise BadRequestError(
                "the request target is not an absolute path", reason=Reason.NON_CANONICAL_PATH
            )
        raw = quote_path(mount + routed)
    prefix, path = below_mount(raw, mount, routed)
    return prefix, path, query


def below_mount(raw: str, mount: str | bytes, routed: bytes | None) -> tuple[str, str]:
    """``(prefix, path)``: the raw target path split into the mount's raw prefix and the raw
    path the app routes, which is what the core must classify.

    ``raw`` is the target's path, still percent-encoded. ``mount`` is where the server or
    framework says the app is mounted, decoded (ASGI ``root_path``, WSGI ``SCRIPT_NAME``, a
    trusted ``X-Forwarded-Prefix``; ``""`` for none). ``routed`` is the decoded path the
    framework dispatches, as bytes, when the server states it (WSGI ``PATH_INFO``, the ASGI
    path below ``root_path``), ``None`` when only the mount is known (forward auth).

    The target is split below the mount only where it starts with the mount's encoded form
    on a segment boundary (``/svc`` is above ``/svc/api``, not ``/svcx/api`` or
    ``/svc%2Fapi``). Where the server states what it routes, the rest must decode to exactly
    that; a target outside the mount passes only when it is itself what is routed (a proxy
    stripped the prefix and the framework routes the whole target: ``ProxyFix``, FastAPI's
    ``root_path``). Anything else is a :class:`BadRequestError` (400), never a guess: a
    path classified other than it is routed is how a guest reaches a forbidden handler.
    """
    end = 0
    if mount:
        prefix = _encoded_mount(mount)
        if raw.startswith(prefix) and (len(raw) == len(prefix) or raw[len(prefix)] == "/"):
            end = len(prefix)
        elif routed is None:
            raise BadRequestError(
                f"the request path is not under the mount {prefix}",
                reason=Reason.NON_CANONICAL_PATH,
            )
    # An empty rest is the mount itself: frameworks route it as "/" (and redirect there).
    rest = raw[end:] or "/"
    if routed is not None and _decoded(rest) != (routed or b"/"):
        raise BadRequestError(
            "the request path and the path the app routes disagree",
            reason=Reason.NON_CANONICAL_PATH,
        )
    return raw[:end], rest


# Mounts come from the server's configuration (and Starlette's Mount path parameters):
# few, so their encoded form is kept, within a bound.
_encoded_mount = functools.lru_cache(maxsize=64)(quote_path)


def _decoded(raw: str) -> bytes:
    # unquote_to_bytes costs microseconds; most paths have nothing to decode.
    return raw.encode("ascii") if "%" not in raw and raw.isascii() else unquote_to_bytes(raw)


def over_limit(declared: str | None, max_bytes: int) -> bool:
    """Whether a declared ``Content-Length`` is over ``max_bytes`` or unreadable: the body
    is then refused (413) without reading a byte of it."""
    if declared is None:
        return False
    declared = declared.strip()
    return not is_decimal(declared) or int(declared) > max_bytes


async def read_bounded(
    declared: str | None, chunks: AsyncGenerator[bytes, None], max_bytes: int
) -> bytes | None:
    """The body from ``chunks``, or ``None`` when it is (or is declared) over ``max_bytes``:
    the one reader of an ASGI body (the middleware, FastAPI, the AuthZEN endpoint)."""
    async with contextlib.aclosing(chunks):  # stop reading at the limit, at once
        if over_limit(declared, max_bytes):
            return None
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                return None
            parts.append(chunk)
        return b"".join(parts)


def read_wsgi_input(environ: MutableMapping[str, Any], max_bytes: int) -> bytes | None:
    """The body in ``environ["wsgi.input"]``, or ``None`` when it is over ``max_bytes``:
    the one reader of a WSGI body (the WSGI middleware, Flask, Django).

    PEP 3333: the app "should not attempt to read more data than is specified by the
    CONTENT_LENGTH variable"; a declared length over the limit is ``None`` unread. A body
    with no length (``Transfer-Encoding: chunked``) is read to its end only where the
    server sets ``wsgi.input_terminated`` (gunicorn; werkzeug's server for chunked bodies;
    waitress dechunks and declares a length itself), at most ``max_bytes + 1`` bytes to
    know it is too large. Without that flag (wsgiref) such a body cannot be delimited:
    400, never a guess and never a verdict on an empty body.
    """
    declared = str(environ.get("CONTENT_LENGTH") or "").strip()
    stream = environ["wsgi.input"]
    if declared:
        if over_limit(declared, max_bytes):
            return None
        return bytes(stream.read(int(declared))) if int(declared) else b""
    if not environ.get("wsgi.input_terminated"):
        if environ.get("HTTP_TRANSFER_ENCODING"):
            raise BadRequestError(
                "this server does not delimit a body without Content-Length "
                "(no wsgi.input_terminated); send Content-Length",
                reason=Reason.MALFORMED_REQUEST,
            )
        return b""
    chunks: list[bytes] = []
    size = 0
    while size <= max_bytes:
        chunk = bytes(stream.read(max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > max_bytes else b"".join(chunks)


def check_host(facts: RequestFacts, *, http_version: str | None) -> Decision | None:
    """RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    HTTP/1.1 request message that lacks a Host header field and to any request message
    that contains more than one Host header field line or a Host header field with an
    invalid field value." HTTP/1.0 may omit Host; it may never repeat it.

    Every adapter calls this one check before the core, so a request is refused or let
    through alike by each of them, whatever its server did with the header lines.
    """
    host: str | None = None
    for name, value in facts.headers:
        if name == "host":
            if host is not None:
                return Decision.of(Reason.BAD_HEADER, "more than one Host header")
            host = value
    if host is None:
        if http_version == "1.0":
            return None
        return Decision.of(Reason.BAD_HEADER, "missing Host header")
    # RFC 9110 §5.5: the field value excludes the whitespace around it.
    host = host.strip(" \t")
    if not host:
        return Decision.of(Reason.BAD_HEADER, "empty Host header")
    if not valid_host(host):
        if "," in host:
            return Decision.of(Reason.BAD_HEADER, "more than one Host header")
        return Decision.of(Reason.BAD_HEADER, "invalid Host header")
    return None


def configured_authorizer(value: object) -> Authorizer | None:
    """The authorizer a framework setting names (Django's ``ILLUMICHAT_AUTHZ``, Flask's
    ``app.config["ILLUMICHAT_AUTHZ"]``): an Authorizer, or a configuration file path
    (:func:`authorizer_for_file`); ``None`` for anything else."""
    from ..authorizer import Authorizer

    if isinstance(value, Authorizer):
        return value
    if isinstance(value, str | os.PathLike) and os.fspath(value):
        return authorizer_for_file(os.fspath(value))
    return None


@functools.lru_cache(maxsize=8)
def authorizer_for_file(config_file: str) -> Authorizer:
    """The authorizer for a configuration file a framework setting names (Django's
    ``ILLUMICHAT_AUTHZ``, Flask's ``app.config["ILLUMICHAT_AUTHZ"]``): one per file and
    process, since building one compiles the policy, and its rate-limit counters and
    credential cache must outlive a request."""
    from ..authorizer import Authorizer

    return Authorizer.from_settings(config_file=config_file)


#: What an adapter answers to an allowed CORS preflight, with no body.
PREFLIGHT_STATUS = 204


def answers_itself(decision: Decision) -> bool:
    """Whether the adapter answers instead of the app: a denial, or an allowed CORS
    preflight. No handler may see a preflight: it comes without credentials, and a view
    that ignores the method (a Django function view, a Flask view listing OPTIONS, DRF's
    ``options``) would run its GET logic for it. The host's CORS layer, in front of the
    adapter, answers it first or decorates our 204 (docs/integrations.md)."""
    return decision.reason is Reason.PREFLIGHT or not decision.allowed


def render(decision: Decision, rid: str) -> Rendered:
    """:func:`render_denial` plus the request id header, so logs and clients can meet;
    for an allowed preflight an empty 204 (Fetch: a preflight needs an "ok status").

    Every adapter answers its denials through here, so this is where a 5xx (our failure
    or a dependency outage) is logged with the request id the client was given.
    """
    if decision.reason is Reason.PREFLIGHT:
        return Rendered(PREFLIGHT_STATUS, (("x-request-id", rid),), b"")
    if decision.status >= 500:
        log.warning("request %s denied: %s (%s)", rid, decision.reason.value, decision.message)
    rendered = render_denial(decision, request_id=rid)
    return Rendered(rendered.status, (*rendered.headers, ("x-request-id", rid)), rendered.body)
