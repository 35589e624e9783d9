"""WSGI middleware: decide every request before the app runs (PEP 3333, no framework).

On allow, ``environ["illumichat_authz.principal"]`` (``None`` on public and webhook
routes) and ``environ["illumichat_authz.decision"]`` are set and the request goes on;
if the core read the body (webhooks), ``wsgi.input`` is replaced by a ``BytesIO`` of
exactly those bytes. On deny the response comes from ``render_denial``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from ..authorizer import Authorizer
from ..decision import Decision
from ..errors import BadRequestError
from ..reasons import Reason
from ..request import RequestFacts, is_decimal
from ._common import (
    answers_itself,
    below_mount,
    check_host,
    internal_error,
    log,
    quote_path,
    render,
    request_id,
)
from ._common import split_request_uri as _split
from .route_check import check_wsgi

__all__ = [
    "AuthzWSGIMiddleware",
    "decide_environ",
    "facts_from_environ",
    "read_environ_body",
    "read_wsgi_input",
]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

PRINCIPAL_KEY = "illumichat_authz.principal"
DECISION_KEY = "illumichat_authz.decision"
_SPECIAL = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def _raw_path(environ: Environ) -> tuple[str, str, str]:
    """``(mount, path, query)``: the raw target below ``SCRIPT_NAME``, which must decode to
    ``PATH_INFO`` (what every WSGI framework routes), else a 400 (``below_mount``)."""
    script = _wsgi_bytes(environ.get("SCRIPT_NAME", ""))
    routed = _wsgi_bytes(environ.get("PATH_INFO", ""))
    # gunicorn sets RAW_URI, uwsgi, waitress and many others REQUEST_URI: the target as
    # received, mount included.
    for key in ("RAW_URI", "REQUEST_URI"):
        value = environ.get(key)
        if isinstance(value, str) and (split := _split(value)) is not None:
            raw, query = split
            break
    else:
        # No raw target: percent-encoding the decoded bytes gives the core a wire form.
        raw, query = quote_path(script + routed), str(environ.get("QUERY_STRING", ""))
    mount, path = below_mount(raw, script, routed)
    return mount, path, query


def _wsgi_bytes(value: object) -> bytes:
    # PEP 3333: SCRIPT_NAME and PATH_INFO are the (percent-decoded) bytes as latin-1
    # characters.
    text = str(value)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # a server that decoded as UTF-8 after all
        return text.encode("utf-8", "surrogateescape")


def facts_from_environ(environ: Environ) -> RequestFacts:
    """The core's view of a WSGI environ."""
    mount, path, query = _raw_path(environ)
    headers: list[tuple[str, str]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").lower(), str(value)))
        elif key in _SPECIAL and value != "":
            headers.append((_SPECIAL[key], str(value)))
    return RequestFacts.build(
        method=str(environ.get("REQUEST_METHOD", "")),
        path=path,
        query=query,
        headers=headers,
        peer=environ.get("REMOTE_ADDR") or None,
        scheme=str(environ.get("wsgi.url_scheme", "http")),
        mount=mount,
    )


def read_wsgi_input(environ: Environ, max_bytes: int) -> bytes | None:
    """The body in ``environ["wsgi.input"]``, or ``None`` when it is over ``max_bytes``.

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
        if not is_decimal(declared) or int(declared) > max_bytes:
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


def read_environ_body(environ: Environ, max_bytes: int) -> bytes | None:
    """:func:`read_wsgi_input`, then hand the app exactly those bytes: a ``BytesIO`` with
    their length declared, as waitress presents a body it dechunked."""
    body = read_wsgi_input(environ, max_bytes)
    if body is not None:
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
    return body


def decide_environ(authorizer: Authorizer, environ: Environ) -> tuple[Decision, str]:
    """Decide the request in ``environ``; our own failure is a 500 decision, never a raise."""
    rid: str | None = None
    try:
        facts = facts_from_environ(environ)
        rid = request_id(facts.headers)
        decision = check_host(facts, http_version=_version(environ))
        if decision is None:
            decision = authorizer.decide(facts, read_body=lambda n: read_environ_body(environ, n))
    except BadRequestError as exc:  # the target and SCRIPT_NAME/PATH_INFO disagree
        decision = Decision.of(exc.reason, exc.message)
        rid = request_id([("x-request-id", str(environ.get("HTTP_X_REQUEST_ID", "")))])
    except Exception:
        log.exception("authorization middleware failed; request %s denied", rid)
        decision = internal_error()
    return decision, rid or request_id([])


def _version(environ: Environ) -> str:
    return str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).removeprefix("HTTP/")


class AuthzWSGIMiddleware:
    """``AuthzWSGIMiddleware(app, authorizer=...)``: wrap any WSGI app (Flask, Django...)."""

    def __init__(self, app: WSGIApp, *, authorizer: Authorizer) -> None:
        self.app = app
        self.authorizer = authorizer
        check_wsgi(app, authorizer)  # [routes] check_app, for a Flask app or Django

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        decision, rid = decide_environ(self.authorizer, environ)
        if answers_itself(decision):
            rendered = render(decision, rid)
            status = f"{rendered.status} {_phrase(rendered.status)}"
            start_response(status, list(rendered.headers))
            return [rendered.body]
        environ[PRINCIPAL_KEY] = decision.principal
        environ[DECISION_KEY] = decision
        return self.app(environ, _with_request_id(start_response, rid))


def _with_request_id(start_response: StartResponse, rid: str) -> StartResponse:
    """``start_response``, adding ``x-request-id`` unless the app set one: an allowed
    response carries the id too, as every denial does."""

    def starting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if not any(name.lower() == "x-request-id" for name, _ in headers):
            headers = [*headers, ("x-request-id", rid)]
        return start_response(status, headers, exc_info)

    return starting


def _phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
