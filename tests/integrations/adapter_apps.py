"""One small app per adapter, each wired as docs/integrations.md says, with handlers that
record whether they ran: the tests that must hold for every adapter alike (Host, CORS
preflights, request ids) loop over :data:`ADAPTERS`.

The handlers accept any method (a Django function view, Flask and FastAPI routes that
list OPTIONS, a DRF view with its own ``options``), so a request the adapter should have
answered itself shows up in ``ran``. Django settings come from ``test_django_mw``'s
``django_configured`` fixture; each Django app swaps in its own URLconf and middleware.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import flask
from conftest import WEBHOOK
from fastapi import Depends, FastAPI, Request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.decision import Decision
from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.integrations.fastapi import authorized, install, require
from illumichat_authz.integrations.flask import IllumiChatAuthz
from illumichat_authz.integrations.wsgi import AuthzWSGIMiddleware
from illumichat_authz.principal import Principal
from illumichat_authz.request import RequestFacts
from illumichat_authz.testing.http import Response, call_asgi_sync, call_wsgi

ADAPTERS = ("asgi", "wsgi", "fastapi", "flask", "django", "drf")
CHATS = "/api/chats"
CONFIG = "/api/widget/a1/config"
METHODS = ["GET", "POST", "OPTIONS"]


@dataclass
class Target:
    """An adapter's app, how to call it, and what its handlers saw."""

    app: Any
    asgi: bool
    ran: list[tuple[str, bytes]] = field(default_factory=list)

    def call(self, request: RequestFacts, *, http_version: str = "1.1") -> Response:
        if self.asgi:
            return call_asgi_sync(self.app, request, http_version=http_version)
        if http_version != "1.1":
            raise ValueError("call_wsgi speaks HTTP/1.1")
        return call_wsgi(self.app, request)


@contextmanager
def adapter_app(adapter: str, authorizer: Authorizer) -> Iterator[Target]:
    """``adapter``'s app guarding ``/api/chats``, ``/api/widget/a1/config`` and the webhook."""
    if adapter in ("django", "drf"):
        with _django(adapter == "drf", authorizer) as target:
            yield target
        return
    ran: list[tuple[str, bytes]] = []
    builders = {"asgi": _asgi, "wsgi": _wsgi, "fastapi": _fastapi, "flask": _flask}
    app, asgi = builders[adapter](authorizer, ran)
    yield Target(app, asgi, ran)


def _asgi(authorizer: Authorizer, ran: list[tuple[str, bytes]]) -> tuple[Any, bool]:
    async def endpoint(request: StarletteRequest) -> JSONResponse:
        ran.append((request.url.path, await request.body()))
        return JSONResponse({"ran": True})

    app = Starlette(routes=[Route("/{rest:path}", endpoint, methods=METHODS)])
    return AuthzMiddleware(app, authorizer=authorizer), True


def _wsgi(authorizer: Authorizer, ran: list[tuple[str, bytes]]) -> tuple[Any, bool]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        ran.append((environ["PATH_INFO"], environ["wsgi.input"].read(length)))
        start_response("200 OK", [("content-type", "application/json")])
        return [b'{"ran": true}']

    return AuthzWSGIMiddleware(app, authorizer=authorizer), False


def _fastapi(authorizer: Authorizer, ran: list[tuple[str, bytes]]) -> tuple[Any, bool]:
    # No AuthzMiddleware: the dependencies decide the request themselves.
    app = FastAPI()
    install(app, authorizer=authorizer)

    @app.api_route(CHATS, methods=METHODS)
    async def chats(
        request: Request, user: Annotated[Principal, Depends(require("chat:list"))]
    ) -> dict[str, bool]:
        ran.append((CHATS, await request.body()))
        return {"ran": True}

    @app.api_route("/api/widget/{assistant}/config", methods=METHODS)
    async def config(
        request: Request, decision: Annotated[Decision, Depends(authorized())]
    ) -> dict[str, bool]:
        ran.append((request.url.path, await request.body()))
        return {"ran": True}

    @app.api_route(WEBHOOK, methods=METHODS)
    async def hook(
        request: Request, decision: Annotated[Decision, Depends(authorized("sms:inbound"))]
    ) -> dict[str, bool]:
        ran.append((WEBHOOK, await request.body()))
        return {"ran": True}

    return app, True


def _flask(authorizer: Authorizer, ran: list[tuple[str, bytes]]) -> tuple[Any, bool]:
    app = flask.Flask("adapter_apps")
    authz = IllumiChatAuthz(app, authorizer=authorizer)

    @app.route(CHATS, methods=METHODS)
    @authz.require("chat:list")
    def chats() -> dict[str, bool]:
        ran.append((CHATS, flask.request.get_data()))
        return {"ran": True}

    @app.route("/api/widget/<assistant>/config", methods=METHODS)
    def config(assistant: str) -> dict[str, bool]:
        ran.append((flask.request.path, flask.request.get_data()))
        return {"ran": True}

    @app.route(WEBHOOK, methods=METHODS)
    def hook() -> dict[str, bool]:
        ran.append((WEBHOOK, flask.request.get_data()))
        return {"ran": True}

    return app, False


class _URLConf:
    """A URLconf object (Django accepts one for ROOT_URLCONF): one per app."""

    def __init__(self, urlpatterns: list[Any]) -> None:
        self.urlpatterns = urlpatterns


@contextmanager
def _django(drf: bool, authorizer: Authorizer) -> Iterator[Target]:
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpRequest, JsonResponse
    from django.test.utils import override_settings
    from django.urls import path

    ran: list[tuple[str, bytes]] = []

    def view(request: HttpRequest, **_: str) -> JsonResponse:
        # Any method: what a Django function view does with an OPTIONS is its GET logic.
        ran.append((request.path, request.body))
        return JsonResponse({"ran": True})

    views: list[Any] = [view, view, view]
    middleware = ["illumichat_authz.integrations.django.IllumiChatAuthzMiddleware"]
    if drf:
        views, middleware = _drf_views(ran), []
    urls = _URLConf(
        [
            path(CHATS.lstrip("/"), views[0]),
            path("api/widget/<str:assistant>/config", views[1]),
            path(WEBHOOK.lstrip("/"), views[2]),
        ]
    )
    with override_settings(ROOT_URLCONF=urls, MIDDLEWARE=middleware, ILLUMICHAT_AUTHZ=authorizer):
        yield Target(WSGIHandler(), False, ran)


def _drf_views(ran: list[tuple[str, bytes]]) -> list[Any]:
    # DRF's classes alone, no middleware: they decide the request themselves.
    from rest_framework.response import Response as DrfResponse
    from rest_framework.views import APIView

    from illumichat_authz.integrations.django import (
        IllumiChatAuthentication,
        IllumiChatPermission,
    )

    class Recording(APIView):  # type: ignore[misc]
        authentication_classes = (IllumiChatAuthentication,)
        permission_classes = (IllumiChatPermission,)

        def get(self, request: Any, **_: str) -> DrfResponse:
            ran.append((request.path, request.body))
            return DrfResponse({"ran": True})

        post = get
        options = get

    class Chats(Recording):
        authz_action = "chat:list"

    class Config(Recording):
        pass

    class Hook(Recording):
        authz_action = "sms:inbound"

    return [Chats.as_view(), Config.as_view(), Hook.as_view()]
