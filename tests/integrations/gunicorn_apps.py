"""Apps that ``test_chunked_bodies`` runs under a real gunicorn (imported in its worker
only: it configures Django for its own process).

Each handler answers with what it read, so the test sees the bytes the app was handed;
a denial is our problem+json and no handler output. ``wsgi_app`` is a bare WSGI app
behind ``AuthzWSGIMiddleware``; ``django_app`` is Django with the adapter's middleware.
"""

from __future__ import annotations

from typing import Any

import django
from conftest import WEBHOOK, make_authorizer
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, JsonResponse
from django.urls import path
from wsgi_servers import echo

from illumichat_authz.integrations.wsgi import AuthzWSGIMiddleware

wsgi_app = AuthzWSGIMiddleware(echo, authorizer=make_authorizer())


def _hook(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"ran": True, "body": request.body.decode("latin-1"), "form": request.POST.dict()}
    )


settings.configure(
    DEBUG=False,
    SECRET_KEY="tests-only",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["rest_framework"],
    MIDDLEWARE=["illumichat_authz.integrations.django.IllumiChatAuthzMiddleware"],
    ILLUMICHAT_AUTHZ=make_authorizer(),
    REST_FRAMEWORK={"UNAUTHENTICATED_USER": None},
)
django.setup()


def _drf_hook() -> Any:
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from illumichat_authz.integrations.django import (
        IllumiChatAuthentication,
        IllumiChatPermission,
    )

    class Hook(APIView):  # type: ignore[misc]
        authentication_classes = (IllumiChatAuthentication,)
        permission_classes = (IllumiChatPermission,)
        authz_action = "sms:inbound"

        def post(self, request: Any, assistant: str) -> Response:
            # DRF parses request.data from the same stream Django's request.body reads.
            return Response({"ran": True, "body": "", "form": request.data.dict()})

    return Hook.as_view()


urlpatterns = [
    path(WEBHOOK.lstrip("/"), _hook),
    path("api/sms/webhook/<str:assistant>", _drf_hook()),
]
django_app = WSGIHandler()
