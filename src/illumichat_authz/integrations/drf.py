"""Django REST framework: authentication, permission and exception handler classes, named
in ``REST_FRAMEWORK`` (docs/integrations.md). Views may declare ``authz_action`` and, for
object permissions, ``authz_resource_kind`` with an optional ``authz_object_action``.

This module must not import ``rest_framework.views`` at its top: that module reads
``api_settings.DEFAULT_AUTHENTICATION_CLASSES`` while it is imported (through
``rest_framework.schemas``), which imports this module, which would then find
``rest_framework.views`` half-initialized.
"""

from __future__ import annotations

from typing import Any

from ._common import raise_import_failure

try:
    from rest_framework import exceptions as drf_exceptions  # type: ignore[import-untyped]
    from rest_framework.authentication import BaseAuthentication  # type: ignore[import-untyped]
    from rest_framework.permissions import BasePermission  # type: ignore[import-untyped]
except ImportError as exc:
    raise_import_failure(
        exc, module="rest_framework", framework="Django REST framework", extra="drf"
    )

from ..decision import Decision
from ..denials import REALM
from ..reasons import Reason
from ._common import answers_itself
from ._require import Endpoint
from ._users import PrincipalUser, attach
from .django import decide_request, get_authorizer, respond

__all__ = ["AuthzDenied", "IllumiChatAuthentication", "IllumiChatPermission", "exception_handler"]


class AuthzDenied(drf_exceptions.APIException):  # type: ignore[misc]
    """A denial DRF understands (status, WWW-Authenticate, Retry-After); render it as
    problem+json with :func:`exception_handler`. An allowed CORS preflight is raised as
    one too: DRF has no other way to answer before the view's handler."""

    def __init__(self, decision: Decision, rid: str) -> None:
        super().__init__(detail=decision.message, code=decision.reason.value)
        # A preflight: 200 here, since DRF's own exception handler would send its
        # {"detail": ...} body, and a 204 must have none; ours answers the empty 204.
        self.status_code = 200 if decision.reason is Reason.PREFLIGHT else decision.status
        self.decision = decision
        self.request_id = rid
        headers = {k.lower(): v for k, v in decision.headers}
        self.auth_header = headers.get("www-authenticate")
        self.wait = headers.get("retry-after")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Any:
    """``REST_FRAMEWORK = {"EXCEPTION_HANDLER": "illumichat_authz.integrations.drf.
    exception_handler"}``: our denials as problem+json, everything else as DRF does."""
    if isinstance(exc, AuthzDenied):
        return respond(exc.decision, exc.request_id)
    # Imported here, not at the top: see the module docstring (the import cycle).
    from rest_framework.views import exception_handler as drf_exception_handler  # type: ignore[import-untyped]

    return drf_exception_handler(exc, context)


def _enforce(request: Any, action: str | None = None) -> tuple[Decision, str]:
    """The decision the view enforces (the middleware's, else made here), or raise."""
    django_request = getattr(request, "_request", request)
    seen = getattr(django_request, "authz_decision", None)
    seen = seen if isinstance(seen, Decision) else None
    endpoint = Endpoint(action, signed_in=False)
    decision, rid = decide_request(get_authorizer(), django_request, endpoint, seen)
    if answers_itself(decision):
        raise AuthzDenied(decision, rid)
    if seen is None:
        attach(django_request, decision)
    return decision, rid


class IllumiChatAuthentication(BaseAuthentication):  # type: ignore[misc]
    """``request.user`` in DRF views: the verified principal (``None`` when anonymous)."""

    def authenticate(self, request: Any) -> tuple[PrincipalUser, Decision] | None:
        decision, _ = _enforce(request)
        if decision.principal is None:
            return None
        return PrincipalUser(decision.principal), decision

    def authenticate_header(self, request: Any) -> str:
        return f'Bearer realm="{REALM}"'


class IllumiChatPermission(BasePermission):  # type: ignore[misc]
    """Allow what the authorizer allowed; objects are checked with ``decide_access``."""

    def has_permission(self, request: Any, view: Any) -> bool:
        _enforce(request, getattr(view, "authz_action", None))
        return True

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        decision, rid = _enforce(request)
        kind = getattr(view, "authz_resource_kind", None)
        action = getattr(view, "authz_object_action", None) or decision.action
        if decision.principal is None or kind is None or action is None:
            # Fail closed: an object check nobody configured is a deny, not a pass.
            raise AuthzDenied(
                Decision.of(Reason.POLICY_DENIED, "no object permission is configured"), rid
            )
        verdict = get_authorizer().decide_access(
            principal=decision.principal,
            action=action,
            resource_kind=kind,
            resource_id=str(getattr(obj, "pk", obj)),
            workspace=decision.principal.workspace,
        )
        if not verdict.allowed:
            raise AuthzDenied(verdict, rid)
        return True
