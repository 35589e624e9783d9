"""Apps mounted under ``/svc`` for tests/integrations/test_mounted.py, with handlers that
record whether they ran.

Imported by the tests (in process) and by gunicorn (``mounted_apps:gunicorn_wsgi()``,
``mounted_apps:gunicorn_django()``), where the record is the file ``$MOUNTED_RECORD``.

The scenario: ``[routes] undeclared = "authenticated"``, so a route the library classifies
wrongly (``/svc/api/...`` instead of ``/api/...``) lets any signed-in caller through. Gus
is a guest of w1: the settings, billing and assistant-update handlers must never run for
him; the public widget route must answer anyone.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.testing import (
    FactsBuilder,
    build_test_authorizer,
    make_test_settings,
    session_cookie,
)
from illumichat_authz.testing.fixtures import DEV_SESSION_SECRET

Record = Callable[[str], None]

#: What each handler is called when it records, and the request that reaches it.
PROTECTED = {
    "settings": ("PATCH", "/api/workspaces/w1/settings"),
    "billing": ("GET", "/api/workspaces/w1/billing"),
    "assistant": ("PATCH", "/api/assistants/a-pub"),
}
WIDGET = ("GET", "/api/widget/a-pub/config")


def build_authorizer() -> Authorizer:
    settings = make_test_settings(
        jwks_url="http://127.0.0.1:9/.well-known/jwks.json",  # never fetched: sessions only
        routes={"undeclared": "authenticated"},
    )
    facts = FactsBuilder()
    (
        facts.workspace("w1")
        .member("gus", role="guest")
        .member("alice", role="owner")
        .assistant("a-pub", visibility="public", creator="alice")
    )
    return build_test_authorizer(settings, facts=facts.facts)


def cookie(user: str = "gus") -> str:
    return session_cookie(user, secret=DEV_SESSION_SECRET, workspace="w1")


def file_record() -> Record:
    path = os.environ["MOUNTED_RECORD"]

    def record(name: str) -> None:
        with open(path, "a", encoding="utf-8") as out:
            out.write(name + "\n")

    return record


# --- ASGI ------------------------------------------------------------------------------


def starlette_app(record: Record) -> Any:
    """The IllumiChat routes as a Starlette app routes them (below its mount)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    def handler(name: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> PlainTextResponse:
            record(name)
            return PlainTextResponse(f"ran {name}")

        return endpoint

    routes = [
        Route("/api/workspaces/{w}/settings", handler("settings"), methods=["PATCH"]),
        Route("/api/workspaces/{w}/billing", handler("billing"), methods=["GET"]),
        Route("/api/assistants/{a}", handler("assistant"), methods=["PATCH"]),
        Route("/api/widget/{a}/config", handler("widget"), methods=["GET"]),
        Route("/api/sms/webhook/{a}", handler("sms"), methods=["POST"]),
    ]
    return Starlette(routes=routes)


def fastapi_app(record: Record, authorizer: Authorizer, *, middleware: bool) -> Any:
    """FastAPI with ``root_path="/svc"``: the middleware, or only the dependencies."""
    from fastapi import Depends, FastAPI

    from illumichat_authz.integrations.asgi import AuthzMiddleware
    from illumichat_authz.integrations.fastapi import authorized, install, require

    with warnings.catch_warnings():  # recent FastAPI deprecates it; people still use it
        warnings.filterwarnings("ignore", message="The `root_path` parameter is deprecated")
        app = FastAPI(root_path="/svc")
    install(app, authorizer=authorizer)
    if middleware:
        app.add_middleware(AuthzMiddleware, authorizer=authorizer)

    @app.patch("/api/workspaces/{w}/settings", dependencies=[Depends(require())])
    def settings(w: str) -> str:
        record("settings")
        return "ran settings"

    @app.get("/api/workspaces/{w}/billing", dependencies=[Depends(require())])
    def billing(w: str) -> str:
        record("billing")
        return "ran billing"

    @app.patch("/api/assistants/{a}", dependencies=[Depends(require())])
    def assistant(a: str) -> str:
        record("assistant")
        return "ran assistant"

    @app.get("/api/widget/{a}/config", dependencies=[Depends(authorized())])
    def widget(a: str) -> str:
        record("widget")
        return "ran widget"

    return app


# --- WSGI ------------------------------------------------------------------------------


def flask_app(record: Record, authorizer: Authorizer | None) -> Any:
    """Flask; with ``authorizer``, guarded by the extension (else wrap it yourself)."""
    import flask

    from illumichat_authz.integrations.flask import IllumiChatAuthz

    app = flask.Flask("mounted")
    if authorizer is not None:
        IllumiChatAuthz(app, authorizer=authorizer)

    def handler(name: str) -> Callable[..., str]:
        def view(**params: str) -> str:
            record(name)
            return f"ran {name}"

        view.__name__ = name
        return view

    rules = [
        ("/api/workspaces/<w>/settings", "settings", "PATCH"),
        ("/api/workspaces/<w>/billing", "billing", "GET"),
        ("/api/assistants/<a>", "assistant", "PATCH"),
        ("/api/widget/<a>/config", "widget", "GET"),
    ]
    for rule, name, method in rules:
        app.add_url_rule(rule, view_func=handler(name), methods=[method])
    return app


def gunicorn_wsgi() -> Any:
    """gunicorn ``SCRIPT_NAME=/svc``: a Flask app under the plain WSGI middleware."""
    from illumichat_authz.integrations.wsgi import AuthzWSGIMiddleware

    return AuthzWSGIMiddleware(flask_app(file_record(), None), authorizer=build_authorizer())


def waitress_flask() -> Any:
    """waitress ``--url-prefix=/svc``: Flask with the extension."""
    return flask_app(file_record(), build_authorizer())


def dispatcher_flask() -> Any:
    """werkzeug's ``DispatcherMiddleware`` mounting Flask (with the extension) at ``/svc``."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.wrappers import Response

    mounted = flask_app(file_record(), build_authorizer())
    return DispatcherMiddleware(Response("not mounted", status=404), {"/svc": mounted})


def gunicorn_django() -> Any:
    """gunicorn ``SCRIPT_NAME=/svc``: Django with the middleware (settings, assistant,
    widget) and DRF's classes on the billing view."""
    _configure_django()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def uvicorn_django() -> Any:
    """The same Django project as an ASGI app (``uvicorn --factory --root-path /svc``)."""
    _configure_django()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def _configure_django() -> None:
    """``$MOUNTED_DRF_ONLY=1``: no Django middleware, every view a DRF view with our
    classes (DRF deciding the request itself); else the middleware and one DRF view."""
    import django
    from django.conf import settings

    drf_only = os.environ.get("MOUNTED_DRF_ONLY") == "1"
    middleware = "illumichat_authz.integrations.django.IllumiChatAuthzMiddleware"
    settings.configure(
        DEBUG=False,
        SECRET_KEY="mounted-tests",
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
        MIDDLEWARE=[] if drf_only else [middleware],
        ILLUMICHAT_AUTHZ=build_authorizer(),
        REST_FRAMEWORK={"UNAUTHENTICATED_USER": None},
        DATABASES={},
    )
    django.setup()
    global urlpatterns
    urlpatterns = _django_urls(file_record(), drf_only=drf_only)


urlpatterns: list[Any] = []


def _django_urls(record: Record, *, drf_only: bool) -> list[Any]:
    from django.http import HttpResponse
    from django.urls import path
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from illumichat_authz.integrations.drf import IllumiChatAuthentication, IllumiChatPermission

    def handler(name: str) -> Callable[..., HttpResponse]:
        def view(request: Any, **params: str) -> HttpResponse:
            record(name)
            return HttpResponse(f"ran {name}")

        return view

    def drf(name: str, method: str, action: str | None = None) -> Any:
        def answer(self: Any, request: Any, **params: str) -> Response:
            record(name)
            return Response(f"ran {name}")

        attributes = {
            "authentication_classes": (IllumiChatAuthentication,),
            "permission_classes": (IllumiChatPermission,),
            "authz_action": action,
            method: answer,
        }
        return type(name.title(), (APIView,), attributes).as_view()

    plain = drf if drf_only else (lambda name, method: handler(name))
    return [
        path("api/workspaces/<w>/settings", plain("settings", "patch")),
        path("api/workspaces/<w>/billing", drf("billing", "get", "billing:read")),
        path("api/assistants/<a>", plain("assistant", "patch")),
        path("api/widget/<a>/config", plain("widget", "get")),
    ]
