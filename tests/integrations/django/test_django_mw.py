"""Django middleware and DRF classes through Django's test Client and a real wsgiref server.

Django settings are process-wide: they are configured once (``settings.configure``) and
each test swaps in its own authorizer with ``override_settings``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import django
import httpx
import pytest
from conftest import WEBHOOK, Exploding, cookie_header, twilio_request
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from illumichat_authz.authorizer import Authorizer

SEEN: list[Any] = []


def chats(request: HttpRequest, **_: str) -> JsonResponse:
    user: Any = request.user
    SEEN.append(user)
    return JsonResponse(
        {"pk": user.pk, "username": user.get_username(), "auth": user.is_authenticated}
    )


def hook(request: HttpRequest) -> HttpResponse:
    SEEN.append(request.body)
    return JsonResponse({"body": request.POST.get("Body")})


def _drf_views() -> list[Any]:
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from illumichat_authz.integrations.django import (
        IllumiChatAuthentication,
        IllumiChatPermission,
    )

    class Base(APIView):  # type: ignore[misc]
        authentication_classes = (IllumiChatAuthentication,)
        permission_classes = (IllumiChatPermission,)

    class Assistant(Base):
        authz_action = "assistant:read"
        authz_resource_kind = "assistant"
        authz_object_action = "assistant:update"

        def get(self, request: Any, assistantId: str) -> Response:
            self.check_object_permissions(request, assistantId)
            return Response({"user": request.user.pk})

    class Wrong(Base):
        authz_action = "billing:manage"

        def get(self, request: Any) -> Response:
            return Response({})

    return [
        path("api/assistants/<str:assistantId>", Assistant.as_view()),
        path("api/assistants", Wrong.as_view()),
    ]


urlpatterns: list[Any] = []


@pytest.fixture(scope="session")
def django_configured() -> None:
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="tests-only",
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["*"],
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"],
            MIDDLEWARE=["illumichat_authz.integrations.django.IllumiChatAuthzMiddleware"],
            DATABASES={},
            USE_TZ=True,
            REST_FRAMEWORK={
                "UNAUTHENTICATED_USER": None,
                "EXCEPTION_HANDLER": "illumichat_authz.integrations.drf.exception_handler",
            },
        )
        django.setup()
    urlpatterns[:] = [
        path("api/chats", chats),
        path(WEBHOOK.lstrip("/"), hook),
        path("api/widget/<str:a>/config", chats),
        *_drf_views(),
    ]


@pytest.fixture
def use(django_configured: None) -> Iterator[Any]:
    from django.test.utils import override_settings

    SEEN.clear()

    def use_authorizer(authorizer: Authorizer) -> Any:
        ctx = override_settings(ILLUMICHAT_AUTHZ=authorizer)
        ctx.enable()
        stack.append(ctx)
        from django.test import Client

        # Django's test Client sends no Host header (get_host() falls back to
        # SERVER_NAME); HTTP/1.1 requires one, and the adapter asks for it.
        return Client(headers={"host": "testserver"})

    stack: list[Any] = []
    yield use_authorizer
    for ctx in stack:
        ctx.disable()


def test_allow_sets_request_user(use: Any, authorizer: Authorizer) -> None:
    c = use(authorizer)
    resp = c.get("/api/chats", headers=cookie_header("u1"))
    assert resp.status_code == 200
    assert resp.json() == {"pk": "u1", "username": "u1", "auth": True}
    assert SEEN[0].principal.workspace == "w1"
    assert not SEEN[0].is_anonymous
    # Django's permission API answers "no" (the policy decides), never AttributeError.
    user = SEEN[0]
    assert not user.has_perm("app.change_thing")
    assert not user.has_perms(["app.view_thing"])
    assert not user.has_module_perms("app")
    assert user.get_all_permissions() == set()
    assert list(user.groups.all()) == []


def test_public_route_anonymous_user(use: Any, authorizer: Authorizer) -> None:
    resp = use(authorizer).get("/api/widget/a1/config")
    assert resp.json() == {"pk": None, "username": "", "auth": False}


def test_denials_are_problems(use: Any, authorizer: Authorizer) -> None:
    c = use(authorizer)
    anon = c.get("/api/chats")
    assert anon.status_code == 401
    assert anon["Content-Type"] == "application/problem+json"
    assert anon["WWW-Authenticate"] == 'Bearer realm="illumichat"'
    assert json.loads(anon.content)["reason"] == "authentication_required"
    assert c.get("/api//chats").status_code == 400
    codes = [c.post("/api/widget/tickets/create").status_code for _ in range(6)]
    assert codes[-1] == 429
    assert int(c.post("/api/widget/tickets/create")["Retry-After"]) > 0
    assert SEEN == []


def test_webhook_body_readable_after_check(use: Any, authorizer: Authorizer) -> None:
    body, headers = twilio_request("http://testserver")
    c = use(authorizer)
    resp = c.post(WEBHOOK, data=body, content_type=headers["content-type"], headers=headers)
    assert resp.status_code == 200, resp.content
    assert [body] == SEEN
    assert resp.json() == {"body": "héllo & <world>"}
    big = c.post(WEBHOOK, data=b"a" * 70_000, content_type="application/x-www-form-urlencoded")
    assert big.status_code == 413


def test_exception_is_500(use: Any) -> None:
    resp = use(Exploding()).get("/api/chats", headers={"x-request-id": "d-1"})
    assert resp.status_code == 500
    doc = json.loads(resp.content)
    assert doc["reason"] == "internal_error"
    assert doc["request_id"] == "d-1"
    assert SEEN == []


def test_config_path_setting(use: Any, tmp_path: Any) -> None:
    from django.test.utils import override_settings

    from illumichat_authz.integrations.django import get_authorizer

    config = tmp_path / "authz.toml"
    config.write_text('[routes]\nundeclared = "authenticated"\n')
    with override_settings(ILLUMICHAT_AUTHZ=str(config)):
        assert get_authorizer().core.undeclared == "authenticated"
        # One per file and process: rate-limit counters and caches outlive a request.
        assert get_authorizer() is get_authorizer()
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(ILLUMICHAT_AUTHZ=None), pytest.raises(ImproperlyConfigured):
        get_authorizer()


def test_drf_permission_and_object_permission(use: Any, authorizer: Authorizer) -> None:
    c = use(authorizer)
    # u1 is a member: may read the public assistant a1, may not update it.
    resp = c.get("/api/assistants/a1", headers=cookie_header("u1"))
    assert resp.status_code == 403
    doc = json.loads(resp.content)
    assert doc["reason"] == "insufficient_role"
    assert resp["Content-Type"] == "application/problem+json"
    ok = c.get("/api/assistants/a1", headers=cookie_header("boss"))
    assert ok.status_code == 200
    assert ok.json() == {"user": "boss"}
    wrong = c.get("/api/assistants", headers=cookie_header("boss"))  # authz_action disagrees
    assert wrong.status_code == 500
    assert json.loads(wrong.content)["reason"] == "internal_error"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.interop
def test_real_server(use: Any, authorizer: Authorizer) -> None:
    from django.core.handlers.wsgi import WSGIHandler

    use(authorizer)
    server = make_server("127.0.0.1", 0, WSGIHandler(), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with httpx.Client(base_url=base) as http:
            assert http.get("/api/chats", headers=cookie_header()).json()["pk"] == "u1"
            denied = http.get("/api/chats")
            assert denied.status_code == 401
            assert denied.headers["content-type"] == "application/problem+json"
            body, headers = twilio_request(base)
            assert http.post(WEBHOOK, content=body, headers=headers).status_code == 200
            assert SEEN[-1] == body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
