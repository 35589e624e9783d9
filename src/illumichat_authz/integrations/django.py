"""Django middleware: ``settings.ILLUMICHAT_AUTHZ`` names the authorizer; on allow
``request.principal``, ``.authz_decision`` and ``.user`` are set (docs/integrations.md).
The DRF classes are in :mod:`illumichat_authz.integrations.drf`."""

from __future__ import annotations

import functools
import importlib
import io
from typing import Any

from ._common import raise_import_failure

try:
    from django.conf import settings  # type: ignore[import-untyped]
    from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
    from django.core.handlers.wsgi import LimitedStream  # type: ignore[import-untyped]
    from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]
except ImportError as exc:
    raise_import_failure(exc, module="django", framework="Django", extra="django")

from ..authorizer import Authorizer
from ..decision import Decision
from ..request import RequestFacts
from ._common import (
    allowed_headers,
    answers_itself,
    configured_authorizer,
    read_wsgi_input,
    render,
    request_id,
)
from ._common import request_target as _request_target
from ._require import DECIDE, Endpoint, Incoming, require
from ._users import AnonymousPrincipalUser, PrincipalUser, attach
from .route_check import check_django

__all__ = ["AnonymousPrincipalUser", "IllumiChatAuthzMiddleware", "PrincipalUser", "get_authorizer"]


def get_authorizer() -> Authorizer:
    """The authorizer ``settings.ILLUMICHAT_AUTHZ`` names (an instance or a config path)."""
    authorizer = configured_authorizer(getattr(settings, "ILLUMICHAT_AUTHZ", None))
    if authorizer is None:
        raise ImproperlyConfigured("ILLUMICHAT_AUTHZ must be an Authorizer or a config file path")
    return authorizer


def facts_from_request(request: HttpRequest) -> RequestFacts:
    """The core's view of a Django request: the raw target below the script prefix."""
    meta = request.META
    script = str(meta.get("SCRIPT_NAME", ""))
    scope = getattr(request, "scope", None)  # an ASGIRequest
    if scope is None:
        mount = script.encode("latin-1", "replace")  # PEP 3333: bytes as latin-1
        targets = [meta.get("RAW_URI"), meta.get("REQUEST_URI")]
    else:  # SCRIPT_NAME is what Django cut from path (FORCE_SCRIPT_NAME or root_path)
        mount = script.encode("utf-8", "surrogateescape")
        raw_path = scope.get("raw_path")
        targets = [bytes(raw_path).decode("latin-1")] if raw_path else []
    routed = request.path_info.encode("utf-8", "surrogateescape")
    prefix, path, query = _request_target(
        targets, mount, routed, query=str(meta.get("QUERY_STRING", ""))
    )
    return RequestFacts.build(
        method=request.method or "",
        path=path,
        query=query,
        headers=[(k.lower(), v) for k, v in request.headers.items()],
        peer=meta.get("REMOTE_ADDR") or None,
        scheme=request.scheme or "http",
        mount=prefix,
    )


def _read_body(request: Any, max_bytes: int) -> bytes | None:
    if hasattr(request, "_body"):  # a middleware above ours read it already
        return request._body if len(request._body) <= max_bytes else None
    body = read_wsgi_input(request.META, max_bytes)  # as the WSGI middleware reads it
    if body is not None:
        # The stream WSGIRequest builds for a body of this length: request.body and
        # request.POST (and DRF's request.data) read exactly these bytes.
        request.META["CONTENT_LENGTH"] = str(len(body))
        request._stream = LimitedStream(io.BytesIO(body), len(body))
    return body


def decide_request(
    authorizer: Authorizer,
    request: HttpRequest,
    endpoint: Endpoint = DECIDE,
    seen: Decision | None = None,
) -> tuple[Decision, str]:
    """The decision ``endpoint`` enforces over the middleware's ``seen`` (by default: the
    middleware's own); our failure is a 500 decision, never a raise."""
    rid = request_id([(k.lower(), v) for k, v in request.headers.items()])
    version = str(request.META.get("SERVER_PROTOCOL", "HTTP/1.1")).removeprefix("HTTP/")
    incoming = Incoming(functools.partial(facts_from_request, request), rid, version)
    read_body = functools.partial(_read_body, request)
    return require(authorizer, endpoint, seen, incoming, read_body=read_body), rid


def respond(decision: Decision, rid: str) -> HttpResponse:
    """A denial (or an allowed preflight) as Django's response."""
    rendered = render(decision, rid)
    response = HttpResponse(rendered.body, status=rendered.status)
    for name, value in rendered.headers:
        response[name] = value
    return response


class IllumiChatAuthzMiddleware:
    """Add ``"illumichat_authz.integrations.django.IllumiChatAuthzMiddleware"`` to
    ``MIDDLEWARE`` (after ``AuthenticationMiddleware`` if you keep it)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.authorizer = get_authorizer()
        check_django(self.authorizer)  # [routes] check_app: Django builds this at start-up

    def __call__(self, request: HttpRequest) -> Any:
        decision, rid = decide_request(self.authorizer, request)
        if answers_itself(decision):
            return respond(decision, rid)
        attach(request, decision)
        response = self.get_response(request)
        for name, value in allowed_headers(decision, rid):  # as every denial does
            if name not in response:
                response[name] = value
        return response


def __getattr__(name: str) -> Any:
    # The DRF classes live in integrations.drf so that plain Django needs no DRF; these
    # names are kept for settings written before that module was public.
    if name in ("IllumiChatAuthentication", "IllumiChatPermission", "exception_handler"):
        return getattr(importlib.import_module(f"{__package__}.drf"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
