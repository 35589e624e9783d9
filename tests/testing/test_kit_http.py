"""The kit's call_asgi/call_wsgi: a request reaches a real app behind our middleware as drawn."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.integrations.wsgi import PRINCIPAL_KEY, AuthzWSGIMiddleware
from illumichat_authz.server.background import BackgroundServer
from illumichat_authz.testing import (
    asgi_scope,
    assert_decision,
    call_asgi_sync,
    call_wsgi,
    make_request,
    serve_asgi,
)
from illumichat_authz.testing.fixtures import FactsBuilder

Mint = Callable[..., str]


@pytest.fixture
def seeded(authz_facts: FactsBuilder) -> FactsBuilder:
    authz_facts.workspace("w1").member("bob", role="member").assistant(
        "a-pub", visibility="public", creator="bob"
    )
    return authz_facts


def starlette_app(authorizer: Authorizer) -> Any:
    async def assistant(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"user": request.user.identity, "body": body.decode()})

    app = Starlette(
        routes=[
            Route("/api/assistants/{id}", assistant, methods=["GET"]),
            Route("/api/sms/webhook/{id}", assistant, methods=["POST"]),
        ]
    )
    app.add_middleware(AuthzMiddleware, authorizer=authorizer)
    return app


def test_call_asgi_through_starlette_and_the_middleware(
    seeded: FactsBuilder, authorizer: Authorizer, mint_session: Mint, sign_twilio: Mint
) -> None:
    app = starlette_app(authorizer)
    cookie = mint_session("bob", workspace="w1")
    ok = call_asgi_sync(app, make_request("GET", "/api/assistants/a-pub", cookie=cookie))
    assert (ok.status_code, ok.headers["content-type"]) == (200, "application/json")
    assert ok.content == b'{"user":"bob","body":""}'
    assert_decision(call_asgi_sync(app, make_request("GET", "/api/assistants/a-pub")), 401)
    # The raw path arrives as drawn: an encoded slash is still encoded, so a 400.
    odd = make_request("GET", "/api/assistants/a%2Fb", cookie=cookie)
    assert_decision(call_asgi_sync(app, odd), 400, "non_canonical_path")
    # The body goes through the middleware (which verifies the signature) to the app.
    params = {"From": "+15550001111", "Body": "hi"}
    url = "https://api.illumichat.test/api/sms/webhook/a-pub"
    hook = make_request(
        "POST",
        "/api/sms/webhook/a-pub",
        body=urlencode(params).encode(),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": sign_twilio(url, params),
        },
    )
    answered = call_asgi_sync(app, hook)
    assert answered.status_code == 200, answered
    assert answered.content == b'{"user":"","body":"From=%2B15550001111&Body=hi"}'


def test_asgi_scope_keeps_raw_bytes() -> None:
    request = make_request("GET", "/a%2e%2e/b", query="x=%00", headers={"x-odd": "é"})
    scope = asgi_scope(request, http_version="2")
    assert (scope["raw_path"], scope["query_string"]) == (b"/a%2e%2e/b", b"x=%00")
    assert (b"x-odd", b"\xe9") in scope["headers"]
    assert scope["client"] == ("203.0.113.10", 4000)
    assert scope["http_version"] == "2"


def test_call_wsgi_through_the_middleware(
    seeded: FactsBuilder, authorizer: Authorizer, mint_session: Mint
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2")])
        return [environ[PRINCIPAL_KEY].user_id.encode(), environ["REQUEST_URI"].encode()]

    wrapped = AuthzWSGIMiddleware(app, authorizer=authorizer)
    cookie = mint_session("bob", workspace="w1")
    ok = call_wsgi(
        wrapped, make_request("GET", "/api/assistants/a-pub", query="v=1", cookie=cookie)
    )
    assert ok.headers.pop("x-request-id")  # the middleware's, on allowed answers too
    assert ok == (
        200,
        {"content-type": "text/plain", "x-a": "1, 2"},
        b"bob/api/assistants/a-pub?v=1",
    )
    denied = call_wsgi(wrapped, make_request("GET", "/api/assistants/a-pub"))
    assert_decision(denied, 401, "authentication_required")


def test_an_app_that_never_answers_is_reported() -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    with pytest.raises(AssertionError, match="answered nothing"):
        call_asgi_sync(silent, make_request("GET", "/"))

    def twice(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        start_response("500 Internal Server Error", [])
        return [b""]

    with pytest.raises(AssertionError, match="2 times"):
        call_wsgi(twice, make_request("GET", "/"))


def test_serve_asgi_runs_a_real_server_until_the_block_ends(
    seeded: FactsBuilder, authorizer: Authorizer, mint_session: Mint
) -> None:
    cookie = mint_session("bob", workspace="w1")
    with serve_asgi(starlette_app(authorizer)) as url, httpx.Client(base_url=url) as client:
        ok = client.get("/api/assistants/a-pub", headers={"cookie": cookie})
        assert ok.json() == {"user": "bob", "body": ""}
        assert_decision(client.get("/api/assistants/a-pub"), 401, "authentication_required")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/api/assistants/a-pub", timeout=2)


def test_a_server_that_cannot_bind_is_an_error_not_a_hang(authorizer: Authorizer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = BackgroundServer(starlette_app(authorizer), port=port)
        with pytest.raises(RuntimeError, match=f"did not start on 127.0.0.1:{port}"):
            server.start(timeout_s=5)
        assert not server.alive


def test_frameworks_route_on_the_decoded_path(
    seen_ids: list[str], authz_facts: FactsBuilder, authorizer: Authorizer, mint_session: Mint
) -> None:
    # The core judges the raw path; the framework routes on the decoded one, as behind a
    # real server. "café" is sent as caf%C3%A9.
    authz_facts.workspace("w1").member("bob", role="member").assistant(
        "café", visibility="public", creator="bob"
    )
    cookie = mint_session("bob", workspace="w1")
    request = make_request("GET", "/api/assistants/caf%C3%A9", cookie=cookie)

    async def by_id(request: Request) -> JSONResponse:
        seen_ids.append(request.path_params["id"])
        return JSONResponse({})

    asgi = Starlette(routes=[Route("/api/assistants/{id}", by_id)])
    asgi.add_middleware(AuthzMiddleware, authorizer=authorizer)
    assert_decision(call_asgi_sync(asgi, request), 200)

    wsgi = flask.Flask(__name__)

    @wsgi.get("/api/assistants/<assistant_id>")
    def view(assistant_id: str) -> dict[str, str]:
        seen_ids.append(assistant_id)
        return {}

    assert_decision(call_wsgi(AuthzWSGIMiddleware(wsgi, authorizer=authorizer), request), 200)
    assert seen_ids == ["café", "café"]


@pytest.fixture
def seen_ids() -> list[str]:
    return []
