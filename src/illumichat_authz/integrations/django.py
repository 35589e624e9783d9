"""Django middleware and Django REST framework classes.

``settings.ILLUMICHAT_AUTHZ`` is an ``Authorizer`` or the path of a configuration file.
``IllumiChatAuthzMiddleware`` decides every request; on allow ``request.principal`` and
``request.authz_decision`` are set, and ``request.user`` becomes a :class:`PrincipalUser`
(the few attributes Django and DRF ask a user). DRF: :class:`IllumiChatAuthentication`,
:class:`IllumiChatPermission`, and :func:`exception_handler` for problem+json denials.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import missing_extra

try:
    from django.conf import settings  # type: ignore[import-untyped]
    from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
    from django.core.handlers.wsgi import LimitedStream  # type: ignore[import-untyped]
    from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("Django", "django") from exc

from ..authorizer import Authorizer
from ..decision import Decision
from ..principal import Principal
from ..request import RequestFacts
from ._common import (
    answers_itself,
    check_host,
    internal_error,
    log,
    quote_path,
    render,
    request_id,
)
from ._common import split_request_uri as _split
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
        return _authorizer_for(str(value))
    raise ImproperlyConfigured("ILLUMICHAT_AUTHZ must be an Authorizer or a config file path")


@functools.lru_cache(maxsize=4)
def _authorizer_for(config_file: str) -> Authorizer:
    # One per configuration file and process: building one compiles the policy, and its
    # rate-limit counters and credential cache must outlive a request.
    return Authorizer.from_settings(config_file=config_file)


def facts_from_request(request: HttpRequest) -> RequestFacts:
    meta = request.META
    raw = None
    for key in ("RAW_URI", "REQUEST_URI"):
        if isinstance(meta.get(key), str):
            raw = _split(meta[key])
            if raw is not None:
                break
    path, query = raw or (quote_path(request.path.encode("utf-8")), meta.get("QUERY_STRING", ""))
    # The Host the client sent, never Django's SERVER_NAME fallback: check_host judges it
    # as every other adapter does (Django's test Client sends none: give it one).
    headers = [(k.lower(), v) for k, v in request.headers.items()]
    return RequestFacts.build(
        method=request.method or "",
        path=path,
        query=str(query),
        headers=headers,
        peer=meta.get("REMOTE_ADDR") or None,
        scheme=request.scheme or "http",
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
    # The DRF classes live in their own module so that plain Django needs no DRF.
    if name in ("IllumiChatAuthentication", "IllumiChatPermission", "exception_handler"):
        from . import _drf

        return getattr(_drf, name)
    raise AttributeError(name)
