"""FastAPI (and Starlette) dependencies: ``Depends(require("chat:read"))`` -> Principal.

``install(app, authorizer=...)`` keeps the authorizer on ``app.state`` and renders
:class:`AuthzDenied` with ``render_denial``. ``require`` works behind ``AuthzMiddleware``
(it reads the Decision in ``scope["auth"]``) and without it (it decides the request
itself). The OpenAPI document shows both credentials: the ``authjs.session-token``
cookie and ``Authorization: Bearer``.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency signatures at
# runtime, and they name closure variables.

from collections.abc import Awaitable, Callable
from typing import Annotated

from ..request import is_decimal
from ._common import raise_import_failure

try:
    from fastapi import Depends, FastAPI, Request, Security
    from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
    from starlette.exceptions import HTTPException
    from starlette.responses import Response
except ImportError as exc:
    raise_import_failure(exc, module="fastapi", framework="FastAPI", extra="fastapi")

from ..authorizer import Authorizer
from ..decision import Decision
from ..denials import sign_in
from ..errors import BadRequestError
from ..principal import Principal
from ..request import RequestFacts
from ._common import (
    access_arguments,
    action_mismatch,
    answers_itself,
    check_host,
    internal_error,
    log,
    render,
    request_id,
)
from .asgi import facts_from_scope
from .route_check import STATE_KEY, Requirement, install_fastapi_check, mark

__all__ = ["AuthzDenied", "authorized", "bearer", "install", "require", "session_cookie"]


# Documentation only (auto_error=False): the decision is the authorizer's, not these.
session_cookie = APIKeyCookie(
    name="authjs.session-token",
    scheme_name="authjsSession",
    description="Auth.js session cookie set by the IllumiChat login flow.",
    auto_error=False,
)
bearer = HTTPBearer(
    scheme_name="bearer",
    description="An Auth0 access token or an IllumiChat API key.",
    auto_error=False,
)


class AuthzDenied(HTTPException):
    """A denial (or an allowed CORS preflight, answered with an empty 204); ``install``
    renders it as problem+json. Without the handler Starlette still answers with the right
    status and headers (WWW-Authenticate, Retry-After)."""

    def __init__(self, decision: Decision, rid: str) -> None:
        self.decision = decision
        self.request_id = rid
        self.rendered = render(decision, rid)
        keep = {"www-authenticate", "retry-after", "x-request-id"}
        headers = {k: v for k, v in self.rendered.headers if k.lower() in keep}
        super().__init__(status_code=self.rendered.status, detail=decision.message, headers=headers)


async def _render_denied(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, AuthzDenied):  # pragma: no cover - registered for AuthzDenied only
        raise exc
    rendered = exc.rendered
    return Response(rendered.body, status_code=rendered.status, headers=dict(rendered.headers))


def install(app: FastAPI, *, authorizer: Authorizer) -> None:
    """Register the authorizer and the problem+json handler for :class:`AuthzDenied`."""
    setattr(app.state, STATE_KEY, authorizer)
    app.add_exception_handler(AuthzDenied, _render_denied)
    install_fastapi_check(app, authorizer)  # [routes] check_app, when the app starts


def _rid(request: Request) -> str:
    raw = request.headers.raw
    return request_id([(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw])


def _facts(request: Request) -> RequestFacts | Decision:
    """The request's facts, or the 400 when its target and ``root_path`` disagree."""
    try:
        return facts_from_scope(request.scope)
    except BadRequestError as exc:
        return Decision.of(exc.reason, exc.message)


async def _decide(request: Request, authorizer: Authorizer) -> Decision:
    facts = _facts(request)
    if isinstance(facts, Decision):
        return facts
    # What AuthzMiddleware checks first, when there is no middleware to have done it.
    bad_host = check_host(facts, http_version=request.scope.get("http_version"))
    if bad_host is not None:
        return bad_host

    async def read_body(max_bytes: int) -> bytes | None:
        declared = facts.header("content-length")
        if declared is not None and (not is_decimal(declared) or int(declared) > max_bytes):
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                return None
            chunks.append(chunk)
        body = b"".join(chunks)
        # Starlette's own cache of the body, so the endpoint can still read it.
        request._body = body
        return body

    return await authorizer.adecide(facts, read_body=read_body)


def authorized(
    action: str | None = None, *, authorizer: Authorizer | None = None
) -> Callable[..., Awaitable[Decision]]:
    """A dependency returning the allowing Decision (public and webhook routes included);
    denies unless the request is allowed and, when ``action`` is given, the route table
    classifies it as ``action``."""

    async def dependency(
        request: Request,
        response: Response,
        _cookie: Annotated[str | None, Security(session_cookie)] = None,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
    ) -> Decision:
        rid = _rid(request)
        decision = request.scope.get("auth")
        if not isinstance(decision, Decision):
            # No AuthzMiddleware to add it: FastAPI merges these headers into the
            # endpoint's answer, so an allowed one carries the request id too.
            response.headers["x-request-id"] = rid
            chosen = authorizer or getattr(request.app.state, STATE_KEY, None)
            try:
                if chosen is None:
                    raise LookupError("no authorizer: call install(app, authorizer=...)")
                decision = await _decide(request, chosen)
            except Exception:
                log.exception("authorization dependency failed; request %s denied", rid)
                decision = internal_error()
        if answers_itself(decision):
            # A denial, or a CORS preflight: an empty 204, and the endpoint never runs.
            raise AuthzDenied(decision, rid)
        mismatch = action_mismatch(decision, action, rid)
        if mismatch is not None:
            raise AuthzDenied(mismatch, rid)
        return decision

    return mark(dependency, Requirement(action, uses_app_state=authorizer is None))


def require(
    action: str | None = None,
    *,
    resource: str | None = None,
    workspace: str | None = None,
    authorizer: Authorizer | None = None,
) -> Callable[..., Awaitable[Principal]]:
    """A dependency returning the verified Principal.

    Without ``resource``/``workspace``: :func:`authorized` (the route table classifies
    the request), and a 401 when the route was public. With them, the endpoint names its
    resource itself, whatever its path: ``require("assistant:update",
    resource="assistant_id")`` takes the id from that path parameter (the kind from the
    route table's routes for the action) and ``workspace="workspace_id"`` the workspace;
    the caller is identified and ``decide_access`` applies the same rules.
    """
    if resource is not None or workspace is not None:
        if action is None:
            raise ValueError("require(resource=... or workspace=...) needs an action")
        return _require_access(action, resource, workspace, authorizer)
    decided = authorized(action, authorizer=authorizer)

    async def dependency(
        request: Request, decision: Annotated[Decision, Depends(decided)]
    ) -> Principal:
        if decision.principal is None:
            raise AuthzDenied(sign_in(), _rid(request))
        return decision.principal

    return dependency


def _require_access(
    action: str, resource: str | None, workspace: str | None, authorizer: Authorizer | None
) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        response: Response,
        _cookie: Annotated[str | None, Security(session_cookie)] = None,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
    ) -> Principal:
        rid = _rid(request)
        if not isinstance(request.scope.get("auth"), Decision):
            response.headers["x-request-id"] = rid  # as in authorized()
        try:
            chosen = authorizer or getattr(request.app.state, STATE_KEY, None)
            if chosen is None:
                raise LookupError("no authorizer: call install(app, authorizer=...)")
            decision = await _access(request, chosen, action, resource, workspace)
        except Exception:
            log.exception("authorization dependency failed; request %s denied", rid)
            decision = internal_error()
        if not decision.allowed or decision.principal is None:
            raise AuthzDenied(decision, rid)
        return decision.principal

    requirement = Requirement(action, names_resource=True, uses_app_state=authorizer is None)
    return mark(dependency, requirement)


async def _access(
    request: Request,
    authorizer: Authorizer,
    action: str,
    resource: str | None,
    workspace: str | None,
) -> Decision:
    # Who: the middleware's verified principal, else identify the request here.
    seen = request.scope.get("auth")
    principal = seen.principal if isinstance(seen, Decision) else None
    if principal is None:
        facts = _facts(request)
        if isinstance(facts, Decision):
            return facts
        if not isinstance(seen, Decision):  # no middleware checked the Host
            bad_host = check_host(facts, http_version=request.scope.get("http_version"))
            if bad_host is not None:
                return bad_host
        identified = await authorizer.aidentify(facts)
        principal = identified.principal
        if not identified.allowed or principal is None:
            return identified
    arguments = access_arguments(
        authorizer, principal, action, resource, workspace, request.path_params
    )
    if isinstance(arguments, Decision):
        return arguments
    return await authorizer.adecide_access(**arguments)
