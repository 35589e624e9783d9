"""FastAPI (and Starlette) dependencies: ``Depends(require("chat:read"))`` -> Principal,
behind ``AuthzMiddleware`` or alone after ``install(app, authorizer=...)``."""

# No `from __future__ import annotations`: FastAPI reads the dependency signatures at
# runtime, and they name closure variables.

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from ._common import raise_import_failure

try:
    from fastapi import FastAPI, Request, Security
    from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
    from starlette.exceptions import HTTPException
    from starlette.responses import Response
except ImportError as exc:
    raise_import_failure(exc, module="fastapi", framework="FastAPI", extra="fastapi")

from ..authorizer import Authorizer
from ..decision import Decision
from ..principal import Principal
from ._common import (
    allowed_headers,
    answers_itself,
    internal_error,
    log,
    read_bounded,
    render,
    request_id,
)
from ._require import Endpoint, Incoming, arequire
from .asgi import facts_from_scope
from .route_check import STATE_KEY, Requirement, install_fastapi_check, mark

__all__ = ["AuthzDenied", "authorized", "bearer", "install", "require", "session_cookie"]

T = TypeVar("T")

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
    """A denial (or an allowed CORS preflight: an empty 204), rendered by ``install``'s
    handler; without it Starlette still sends the status and the headers that matter."""

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


async def _read_body(request: Request, max_bytes: int) -> bytes | None:
    body = await read_bounded(request.headers.get("content-length"), request.stream(), max_bytes)
    if body is not None:
        # Starlette's own cache, replayed by stream() and body(): the endpoint gets this
        # same Request from FastAPI, and Starlette has no public way to refill one.
        request._body = body
    return body


def _dependency(
    endpoint: Endpoint, authorizer: Authorizer | None, answer: Callable[[Decision], T]
) -> Callable[..., Awaitable[T]]:
    async def dependency(
        request: Request,
        response: Response,
        _cookie: Annotated[str | None, Security(session_cookie)] = None,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
    ) -> T:
        scope = request.scope
        seen = scope.get("auth")
        seen = seen if isinstance(seen, Decision) else None
        rid = request_id([(k.lower(), v) for k, v in request.headers.items()])
        if seen is None:
            # No AuthzMiddleware: FastAPI merges these into the endpoint's answer.
            response.headers["x-request-id"] = rid
        incoming = Incoming(
            lambda: facts_from_scope(scope), rid, scope.get("http_version"), request.path_params
        )
        chosen = authorizer or getattr(request.app.state, STATE_KEY, None)
        if chosen is None:
            log.error("no authorizer: call install(app, authorizer=...); request %s denied", rid)
            raise AuthzDenied(internal_error(), rid)
        read_body = functools.partial(_read_body, request)
        decision = await arequire(chosen, endpoint, seen, incoming, read_body=read_body)
        if answers_itself(decision):  # a denial, or a CORS preflight (an empty 204)
            raise AuthzDenied(decision, rid)
        if seen is None or decision is not seen:  # else the middleware adds them
            for name, value in allowed_headers(decision, rid):
                response.headers[name] = value
        return answer(decision)

    requirement = Requirement(
        endpoint.action, names_resource=endpoint.names_resource, uses_app_state=authorizer is None
    )
    return mark(dependency, requirement)


def authorized(
    action: str | None = None, *, authorizer: Authorizer | None = None
) -> Callable[..., Awaitable[Decision]]:
    """A dependency returning the allowing Decision (public and webhook routes included)."""
    return _dependency(Endpoint(action, signed_in=False), authorizer, lambda d: d)


def require(
    action: str | None = None,
    *,
    resource: str | None = None,
    workspace: str | None = None,
    authorizer: Authorizer | None = None,
) -> Callable[..., Awaitable[Principal]]:
    """A dependency returning the verified Principal (a public route is a 401); with
    ``resource``/``workspace`` (path parameter names) ``decide_access`` decides."""
    return _dependency(Endpoint(action, resource, workspace), authorizer, _principal)


def _principal(decision: Decision) -> Principal:
    if decision.principal is None:  # pragma: no cover - require() answers 401 first
        raise LookupError("an allowed require() decision without a principal")
    return decision.principal
