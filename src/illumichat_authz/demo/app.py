"""A small IllumiChat-shaped API guarded by ``AuthzMiddleware``.

The handlers do no authorization of their own: by the time one runs, the middleware has
decided, and ``scope["user"]``/``scope["auth"]`` say who is calling and why they may.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..authorizer import Authorizer
from ..decision import Decision
from ..integrations.asgi import AuthzMiddleware

__all__ = ["create_demo_app"]


def _who(request: Request) -> dict[str, Any]:
    decision: Decision | None = request.scope.get("auth")
    principal = decision.principal if decision is not None else None
    return {
        "user": principal.user_id if principal else None,
        "role": decision.role if decision is not None else None,
        "action": decision.action if decision is not None else None,
        "reason": decision.reason.value if decision is not None else None,
    }


async def _ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, **_who(request), **request.path_params})


async def _created(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "ticket": "T-1", **_who(request)}, status_code=200)


def create_demo_app(authorizer: Authorizer) -> Starlette:
    """The demo API: a few of IllumiChat's endpoints, answered with who was let in."""
    routes = [
        Route("/api/assistants", _ok, methods=["GET", "POST"]),
        Route("/api/assistants/{assistantId}", _ok, methods=["GET", "PATCH", "DELETE"]),
        Route("/api/chats/{chatId}", _ok, methods=["GET"]),
        Route("/api/workspaces/{workspaceId}", _ok, methods=["GET", "DELETE"]),
        Route("/api/workspaces/{workspaceId}/billing", _ok, methods=["GET", "PATCH"]),
        Route("/api/workspaces/{workspaceId}/members", _ok, methods=["GET", "POST"]),
        Route("/api/widget/{assistantId}/config", _ok, methods=["GET"]),
        Route("/api/widget/tickets/create", _created, methods=["POST"]),
        Route("/api/sms/webhook/{assistantId}", _ok, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(AuthzMiddleware, authorizer=authorizer)])
