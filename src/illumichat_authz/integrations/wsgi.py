"""WSGI middleware: decide every request before the app runs (PEP 3333, no framework).

On allow, ``environ["illumichat_authz.principal"]`` (``None`` on public and webhook
routes) and ``environ["illumichat_authz.decision"]`` are set and the request goes on;
if the core read the body (webhooks), ``wsgi.input`` is replaced by a ``BytesIO`` of
exactly those bytes. On deny the response comes from ``render_denial``.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..authorizer import Authorizer
from ..decision import Decision
from ..request import RequestFacts
from ._common import (
    allowed_headers,
    answers_itself,
    read_wsgi_input,
    render,
    request_id,
    request_target,
)
from ._require import DECIDE, Incoming, require
from .route_check import check_wsgi

__all__ = [
    "AuthzWSGIMiddleware",
    "decide_environ",
    "environ_incoming",
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
    # gunicorn sets RAW_URI, uwsgi, waitress and many others REQUEST_URI: the target as
    # received, mount included. Without one, the decoded bytes are percent-encoded.
    return request_target(
        (environ.get("RAW_URI"), environ.get("REQUEST_URI")),
        _wsgi_bytes(environ.get("SCRIPT_NAME", "")),
        _wsgi_bytes(environ.get("PATH_INFO", "")),
        query=str(environ.get("QUERY_STRING", "")),
    )


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


def read_environ_body(environ: Environ, max_bytes: int) -> bytes | None:
    """:func:`read_wsgi_input`, then hand the app exactly those bytes: a ``BytesIO`` with
    their length declared, as waitress presents a body it dechunked."""
    body = read_wsgi_input(environ, max_bytes)
    if body is not None:
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
    return body


def environ_incoming(
    environ: Environ, params: Mapping[str, Any] | None = None, rid: str | None = None
) -> Incoming:
    """What the shared ``require`` needs of ``environ`` (``params``: path parameters;
    ``rid``: the request id already given, else the caller's or a new one)."""
    rid = rid or request_id([("x-request-id", str(environ.get("HTTP_X_REQUEST_ID", "")))])
    facts = functools.partial(facts_from_environ, environ)
    version = str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).removeprefix("HTTP/")
    return (
        Incoming(facts, rid, version) if params is None else Incoming(facts, rid, version, params)
    )


def decide_environ(authorizer: Authorizer, environ: Environ) -> tuple[Decision, str]:
    """Decide the request in ``environ``; our own failure is a 500 decision, never a raise."""
    incoming = environ_incoming(environ)
    read_body = functools.partial(read_environ_body, environ)
    return require(authorizer, DECIDE, None, incoming, read_body=read_body), incoming.rid


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
        return self.app(environ, _with_allowed_headers(start_response, decision, rid))


def _with_allowed_headers(
    start_response: StartResponse, decision: Decision, rid: str
) -> StartResponse:
    """``start_response``, adding what an allowed answer carries (``allowed_headers``)
    that the app did not set itself."""
    ours = allowed_headers(decision, rid)

    def starting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        have = {name.lower() for name, _ in headers}
        extra = [(name, value) for name, value in ours if name not in have]
        if extra:
            headers = [*headers, *extra]
        return start_response(status, headers, exc_info)

    return starting


def _phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
