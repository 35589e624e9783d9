"""A CORS preflight never runs a handler: every adapter answers an allowed one itself (an
empty 204), and the host's CORS layer, placed as docs/integrations.md says, answers it
first or decorates that 204. Composed for real with Starlette's CORSMiddleware,
flask-cors and django-cors-headers: the headers a browser needs are there, and the
recording handlers never ran. Forward auth refuses a preflight check (403): a 2xx would
pass it on to the service.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import flask
import pytest
from adapter_apps import ADAPTERS, CHATS, CONFIG, Target, adapter_app
from conftest import WEBHOOK, cookie_header, make_authorizer
from flask_cors import CORS
from starlette.middleware.cors import CORSMiddleware
from test_django_mw import django_configured  # noqa: F401 (a fixture)
from wsgi_servers import SERVERS, raw_request, serve_wsgi

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.request import RequestFacts
from illumichat_authz.testing.http import Response, serve_asgi

pytestmark = pytest.mark.usefixtures("django_configured")

ORIGIN = "https://app.example.test"
PREFLIGHT = [
    ("host", "api.example.test"),
    ("origin", ORIGIN),
    ("access-control-request-method", "GET"),
    ("access-control-request-headers", "authorization"),
]


def preflight(path: str = CHATS) -> RequestFacts:
    return RequestFacts.build(method="OPTIONS", path=path, headers=PREFLIGHT)


def cross_origin_get(path: str = CHATS, **extra: str) -> RequestFacts:
    headers = [("host", "api.example.test"), ("origin", ORIGIN), *extra.items()]
    return RequestFacts.build(method="GET", path=path, headers=headers)


@pytest.fixture(scope="module")
def authorizer() -> Authorizer:
    return make_authorizer()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_every_adapter_answers_a_preflight_itself(adapter: str, authorizer: Authorizer) -> None:
    # CHATS is protected (and pinned to chat:list on DRF and FastAPI); CONFIG is public;
    # the webhook would verify a signature. None of their handlers may see a preflight.
    with adapter_app(adapter, authorizer) as target:
        for path in (CHATS, CONFIG, WEBHOOK):
            response = target.call(preflight(path))
            assert response.status_code == 204, (path, response.content)
            assert response.content == b""
            assert response.headers["x-request-id"]
        assert target.ran == []
        # Not a preflight (no Access-Control-Request-Method): an anonymous OPTIONS is 401.
        plain = RequestFacts.build(method="OPTIONS", path=CHATS, headers=PREFLIGHT[:2])
        assert target.call(plain).status_code == 401
        assert target.ran == []


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_with_allow_preflight_off_a_preflight_is_an_ordinary_request(adapter: str) -> None:
    base = make_authorizer()
    strict = Authorizer(
        core=dataclasses.replace(base.core, allow_preflight=False), facts=base.facts
    )
    with adapter_app(adapter, strict) as target:
        assert target.call(preflight()).status_code == 401
        assert target.ran == []


RAW_PREFLIGHT = (
    b"OPTIONS /api/chats HTTP/1.1\r\nHost: api.example.test\r\n"
    b"Origin: https://app.example.test\r\nAccess-Control-Request-Method: GET"
)


@pytest.mark.interop
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("adapter", ["wsgi", "flask", "django", "drf"])
def test_a_preflight_through_a_real_wsgi_server(
    server: str, adapter: str, authorizer: Authorizer
) -> None:
    with adapter_app(adapter, authorizer) as target, serve_wsgi(target.app, server) as port:
        answer = raw_request(port, RAW_PREFLIGHT)
        assert (answer.status, answer.body) == (204, b"")
        assert target.ran == []


@pytest.mark.interop
@pytest.mark.parametrize("adapter", ["asgi", "fastapi"])
def test_a_preflight_through_uvicorn(adapter: str, authorizer: Authorizer) -> None:
    with adapter_app(adapter, authorizer) as target, serve_asgi(target.app, ws="none") as url:
        answer = raw_request(int(url.rsplit(":", 1)[1]), RAW_PREFLIGHT)
        assert (answer.status, answer.body) == (204, b"")
        assert target.ran == []


# --- composed with the host's CORS layer ------------------------------------------------


def assert_cors_preflight(response: Response) -> None:
    assert 200 <= response.status_code < 300  # Fetch: an "ok status"
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "GET" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


def assert_cors_visible(response: Response, status: int) -> None:
    # A browser lets the page read the answer (a 401 problem included) only with this.
    assert response.status_code == status, response.content
    assert response.headers["access-control-allow-origin"] == ORIGIN


def starlette_cors(app: Any) -> Any:
    # Outside AuthzMiddleware: Starlette's add_middleware puts the last one added
    # outermost, Starlette(middleware=[...]) the first listed.
    return CORSMiddleware(
        app,
        allow_origins=[ORIGIN],
        allow_methods=["GET", "POST"],
        allow_headers=["authorization"],
        allow_credentials=True,
    )


@pytest.mark.parametrize("adapter", ["asgi", "fastapi"])
def test_starlette_cors_middleware_outside_ours(adapter: str, authorizer: Authorizer) -> None:
    with adapter_app(adapter, authorizer) as target:
        outer = Target(starlette_cors(target.app), True, target.ran)
        assert_cors_preflight(outer.call(preflight()))
        assert target.ran == []
        assert_cors_visible(outer.call(cross_origin_get()), 401)
        assert_cors_visible(outer.call(cross_origin_get(**cookie_header())), 200)
        assert len(target.ran) == 1


@pytest.mark.parametrize("cors_first", [True, False])
def test_flask_cors_decorates_our_204(cors_first: bool, authorizer: Authorizer) -> None:
    # flask-cors adds its headers in after_request, which Flask runs on the response our
    # before_request returned, whichever extension was initialised first.
    ran: list[str] = []
    app = flask.Flask("cors")
    cors = CORS(
        resources={r"/api/*": {"origins": [ORIGIN]}},
        allow_headers=["authorization"],
        supports_credentials=True,
    )
    from illumichat_authz.integrations.flask import IllumiChatAuthz

    authz = IllumiChatAuthz(authorizer=authorizer)
    for extension in (cors, authz) if cors_first else (authz, cors):
        extension.init_app(app)

    @app.route(CHATS, methods=["GET", "OPTIONS"])
    @authz.require("chat:list")
    def chats() -> dict[str, bool]:
        ran.append(flask.request.method)
        return {"ran": True}

    target = Target(app, False)
    answer = target.call(preflight())
    assert answer.status_code == 204
    assert_cors_preflight(answer)
    assert ran == []
    assert_cors_visible(target.call(cross_origin_get()), 401)
    assert_cors_visible(target.call(cross_origin_get(**cookie_header())), 200)
    assert ran == ["GET"]


@contextmanager
def cors_headers_above(adapter: str, authorizer: Authorizer) -> Iterator[Target]:
    """django-cors-headers' CorsMiddleware first in MIDDLEWARE (above ours, as its own
    docs ask: "as high as possible"); with DRF the view's classes come after it."""
    from django.test.utils import override_settings

    with adapter_app(adapter, authorizer) as target:
        from django.conf import settings
        from django.core.handlers.wsgi import WSGIHandler

        middleware = ["corsheaders.middleware.CorsMiddleware", *settings.MIDDLEWARE]
        with override_settings(
            MIDDLEWARE=middleware,
            CORS_ALLOWED_ORIGINS=[ORIGIN],
            CORS_ALLOW_HEADERS=["authorization"],
            CORS_ALLOW_CREDENTIALS=True,
        ):
            yield Target(WSGIHandler(), False, target.ran)


@pytest.mark.parametrize("adapter", ["django", "drf"])
def test_django_cors_headers_above_ours(adapter: str, authorizer: Authorizer) -> None:
    with cors_headers_above(adapter, authorizer) as target:
        assert_cors_preflight(target.call(preflight()))
        assert target.ran == []
        assert_cors_visible(target.call(cross_origin_get()), 401)
        assert_cors_visible(target.call(cross_origin_get(**cookie_header())), 200)
        assert len(target.ran) == 1


# --- forward auth ----------------------------------------------------------------------


def test_forward_auth_refuses_a_preflight_check(authorizer: Authorizer) -> None:
    from illumichat_authz.server import create_app
    from illumichat_authz.testing.http import call_asgi_sync

    check = RequestFacts.build(
        method="GET",
        path="/auth",
        headers=[("x-original-method", "OPTIONS"), ("x-original-uri", CHATS), *PREFLIGHT],
    )
    response = call_asgi_sync(create_app(authorizer=authorizer), check)
    # 2xx would be "pass": the proxy must answer preflights itself, before its auth check.
    assert response.status_code == 403
    assert json.loads(response.content)["reason"] == "policy_denied"


def test_drf_without_our_exception_handler_still_answers_with_no_handler(
    authorizer: Authorizer,
) -> None:
    # DRF's own handler renders {"detail": ...}: an ok status (200, since a 204 must have
    # no body), and still no handler ran.
    from django.test.utils import override_settings

    with (
        override_settings(REST_FRAMEWORK={"UNAUTHENTICATED_USER": None}),
        adapter_app("drf", authorizer) as target,
    ):
        assert target.call(preflight()).status_code == 200
        assert target.ran == []
