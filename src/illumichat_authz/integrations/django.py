"""Django middleware and Django REST framework classes.

``settings.ILLUMICHAT_AUTHZ`` is an ``Authorizer`` or the path of a configuration file.
``IllumiChatAuthzMiddleware`` decides every request; on allow ``request.principal`` and
``request.authz_decision`` are set, and ``request.user`` becomes a :class:`PrincipalUser`
(the few attributes Django and DRF ask a user). The DRF classes are in
:mod:`illumichat_authz.integrations.drf`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
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
from ..errors import BadRequestError
from ..principal import Principal
from ..request import RequestFacts
from ._common import (
    answers_itself,
    authorizer_for_file,
    below_mount,
    check_host,
    internal_error,
    log,
    quote_path,
    render,
    request_id,
)
from ._common import split_request_uri as _split
from .route_check import check_django
from .wsgi import read_wsgi_input

__all__ = [
    "AnonymousPrincipalUser",
    "IllumiChatAuthzMiddleware",
    "PrincipalUser",
    "get_authorizer",
]


class _EmptyManager:
    """Stands in for ``user.groups`` / ``user.user_permissions``: always empty."""

    def all(self) -> list[object]:
        return []

    def exists(self) -> bool:
        return False


_EMPTY_MANAGER = _EmptyManager()


class _NoModelPermissions:
    """Django's permission API, answered "no": what a user may do is the policy's call
    (``decide_access``), not ``auth.Permission`` rows that do not exist for these users.
    ``permission_required``, the admin and ``DjangoModelPermissions`` then deny cleanly
    instead of failing with ``AttributeError``."""

    __slots__ = ()
    groups = _EMPTY_MANAGER
    user_permissions = _EMPTY_MANAGER

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False

    def has_perms(self, perm_list: Iterable[str], obj: object = None) -> bool:
        return False

    def has_module_perms(self, app_label: str) -> bool:
        return False

    def get_all_permissions(self, obj: object = None) -> set[str]:
        return set()


@dataclass(frozen=True, slots=True)
class PrincipalUser(_NoModelPermissions):
    """A ``request.user`` for a verified principal; there is no database row behind it."""

    principal: Principal
    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    @property
    def pk(self) -> str:
        return self.principal.user_id

    id = pk
    username = pk

    def get_username(self) -> str:
        return self.principal.user_id

    def __str__(self) -> str:
        return self.principal.user_id


@dataclass(frozen=True, slots=True)
class AnonymousPrincipalUser(_NoModelPermissions):
    """``request.user`` on public and webhook routes (unless Django's auth set one)."""

    is_authenticated = False
    is_anonymous = True
    is_active = False
    is_staff = False
    is_superuser = False
    pk = None
    id = None
    username = ""

    def get_username(self) -> str:
        return ""


def get_authorizer() -> Authorizer:
    """The authorizer ``settings.ILLUMICHAT_AUTHZ`` names (an instance or a config path)."""
    value = getattr(settings, "ILLUMICHAT_AUTHZ", None)
    if isinstance(value, Authorizer):
        return value
    if isinstance(value, str | Path):
        return authorizer_for_file(str(value))
    raise ImproperlyConfigured("ILLUMICHAT_AUTHZ must be an Authorizer or a config file path")


def _target(request: HttpRequest) -> tuple[str, str, str]:
    """``(mount, path, query)``: the raw target below the script prefix, which must decode
    to ``request.path_info`` (what Django's URLconf resolves), else a 400 (``below_mount``).

    WSGI: the raw target is ``RAW_URI``/``REQUEST_URI`` and the prefix ``SCRIPT_NAME`` (not
    ``FORCE_SCRIPT_NAME``, which changes ``request.path`` but not what is resolved). ASGI:
    ``raw_path``, and ``META["SCRIPT_NAME"]`` is what Django cut from ``path``
    (``FORCE_SCRIPT_NAME`` or ``root_path``).
    """
    meta = request.META
    script = str(meta.get("SCRIPT_NAME", ""))
    scope = getattr(request, "scope", None)  # an ASGIRequest
    if scope is None:
        mount = script.encode("latin-1", "replace")  # PEP 3333: bytes as latin-1
        targets = [meta.get("RAW_URI"), meta.get("REQUEST_URI")]
    else:
        mount = script.encode("utf-8", "surrogateescape")
        raw_path = scope.get("raw_path")
        targets = [bytes(raw_path).decode("latin-1")] if raw_path else []
    routed = request.path_info.encode("utf-8", "surrogateescape")
    found = (_split(t) for t in targets if isinstance(t, str))
    split = next((t for t in found if t is not None), None)
    # No raw target (the test client, runserver): encoding what Django has is the wire form.
    raw, query = split or (quote_path(mount + routed), str(meta.get("QUERY_STRING", "")))
    prefix, path = below_mount(raw, mount, routed)
    return prefix, path, query


def facts_from_request(request: HttpRequest) -> RequestFacts:
    mount, path, query = _target(request)
    headers = [(k.lower(), v) for k, v in request.headers.items()]
    return RequestFacts.build(
        method=request.method or "",
        path=path,
        query=str(query),
        headers=headers,
        peer=request.META.get("REMOTE_ADDR") or None,
        scheme=request.scheme or "http",
        mount=mount,
    )


def decide_request(authorizer: Authorizer, request: HttpRequest) -> tuple[Decision, str]:
    """Decide ``request``; our own failure is a 500 decision, never a raise."""
    rid: str | None = None

    def read_body(max_bytes: int) -> bytes | None:
        r: Any = request
        if hasattr(r, "_body"):  # a middleware above ours read it already
            return r._body if len(r._body) <= max_bytes else None
        # From the server's input, as the WSGI middleware reads it (a chunked body too:
        # WSGIRequest limited its own stream to the CONTENT_LENGTH it saw, none).
        body = read_wsgi_input(request.META, max_bytes)
        if body is not None:
            # The stream WSGIRequest builds for a body of this length: request.body and
            # request.POST (and DRF's request.data) read exactly these bytes.
            request.META["CONTENT_LENGTH"] = str(len(body))
            r._stream = LimitedStream(io.BytesIO(body), len(body))
        return body

    try:
        facts = facts_from_request(request)
        rid = request_id(facts.headers)
        version = str(request.META.get("SERVER_PROTOCOL", "HTTP/1.1")).removeprefix("HTTP/")
        decision = check_host(facts, http_version=version)
        if decision is None:
            decision = authorizer.decide(facts, read_body=read_body)
    except BadRequestError as exc:  # the target and the script prefix disagree (_target)
        decision = Decision.of(exc.reason, exc.message)
        rid = request_id([(k.lower(), v) for k, v in request.headers.items()])
    except Exception:
        log.exception("authorization middleware failed; request %s denied", rid)
        decision = internal_error()
    return decision, rid or request_id([])


def respond(decision: Decision, rid: str) -> HttpResponse:
    rendered = render(decision, rid)
    response = HttpResponse(rendered.body, status=rendered.status)
    for name, value in rendered.headers:
        response[name] = value
    return response


def attach(request: HttpRequest, decision: Decision) -> None:
    r: Any = request
    r.authz_decision = decision
    r.principal = decision.principal
    if decision.principal is not None:
        r.user = PrincipalUser(decision.principal)
    elif not hasattr(request, "user"):
        r.user = AnonymousPrincipalUser()


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
        if "x-request-id" not in response:  # allowed answers carry the id too
            response["x-request-id"] = rid
        return response


def __getattr__(name: str) -> Any:
    # The DRF classes live in integrations.drf so that plain Django needs no DRF; these
    # names are kept for settings written before that module was public.
    if name in ("IllumiChatAuthentication", "IllumiChatPermission", "exception_handler"):
        from . import drf

        return getattr(drf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
