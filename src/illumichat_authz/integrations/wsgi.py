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
from ..request import RequestFacts, is_decimal
from ._common import answers_itself, check_host, internal_error, log, quote_path, render, request_id
from ._common import split_request_uri as _split

__all__ = ["AuthzWSGIMiddleware", "decide_environ", "facts_from_environ", "read_environ_body"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

PRINCIPAL_KEY = "illumichat_authz.principal"
DECISION_KEY = "illumichat_authz.decision"
_SPECIAL = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def _raw_path(environ: Environ) -> tuple[str, str]:
    # gunicorn sets RAW_URI, uwsgi and many others REQUEST_URI: the target as received.
    for key in ("RAW_URI", "REQUEST_URI"):
        value = environ.get(key)
        if isinstance(value, str) and (split := _split(value)) is not None:
            return split
    # PEP 3333: PATH_INFO is the (percent-decoded) bytes as latin-1 characters; getting
    # the bytes back and percent-encoding them gives the core a wire-form path again.
    decoded = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    try:
        data = decoded.encode("latin-1")
    except UnicodeEncodeError:  # a server that decoded as UTF-8 after all
        data = decoded.encode("utf-8", "surrogateescape")
    return quote_path(data), str(environ.get("QUERY_STRING", ""))


def facts_from_environ(environ: Environ) -> RequestFacts:
    """The core's view of a WSGI environ."""
    path, query = _raw_path(environ)
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
    )


def read_environ_body(environ: Environ, max_bytes: int) -> bytes | None:
    """Read at most ``max_bytes`` of the body and put it back as a ``BytesIO``.

    PEP 3333: the app "should not attempt to read more data than is specified by the
    CONTENT_LENGTH variable", so without a usable length we read nothing; over the limit
    we return ``None`` (413) without reading.
    """
    declared = str(environ.get("CONTENT_LENGTH") or "0").strip()
    if not is_decimal(declared) or int(declared) > max_bytes:
        return None
    body = environ["wsgi.input"].read(int(declared)) if int(declared) else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return bytes(body)


def decide_environ(authorizer: Authorizer, environ: Environ) -> tuple[Decision, str]:
    """Decide the request in ``environ``; our own failure is a 500 decision, never a raise."""
    rid: str | None = None
    try:
        facts = facts_from_environ(environ)
        rid = request_id(facts.headers)
        decision = check_host(facts, http_version=_version(environ))
        if decision is None:
            decision = authorizer.decide(facts, read_body=lambda n: read_environ_body(environ, n))
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

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        decision, rid = decide_environ(self.authorizer, environ)
        if answers_itself(decision):
            rendered = render(decision, rid)
            status = f"{rendered.status} {_phrase(rendered.status)}"
            start_response(status, list(rendered.headers))
            return [rendered.body]
        environ[PRINCIPAL_KEY] = decision.principal
        environ[DECISION_KEY] = decision
        return self.app(environ, start_response)


def _phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
