"""AuthzMiddleware through httpx's ASGITransport, raw ASGI calls, and a real uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from conftest import (
    WEBHOOK,
    Exploding,
    cookie_header,
    make_authorizer,
    serve_asgi,
    twilio_request,
)
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.decision import Decision
from illumichat_authz.integrations._common import ANONYMOUS
from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.principal import Principal
from illumichat_authz.reasons import Reason

PROBLEM = "application/problem+json"


def build_app(authorizer: Authorizer, seen: list[dict[str, Any]]) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        user = request.scope["user"]
        seen.append({"body": body, "user": user, "state": request.state.principal})
        return JSONResponse(
            {
                "user": user.user_id if isinstance(user, Principal) else None,
                "authenticated": user.is_authenticated,
                "reason": request.scope["auth"].reason.value,
                "body": body.decode("latin-1"),
            }
        )

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.scope["user"].user_id)
        await websocket.close()

    app = Starlette(
        routes=[
            WebSocketRoute("/api/chats", ws),
            Route("/{rest:path}", echo, methods=["GET", "POST", "PATCH", "DELETE"]),
        ]
    )
    app.add_middleware(AuthzMiddleware, authorizer=authorizer)
    return app


@pytest.fixture
def seen() -> list[dict[str, Any]]:
    return []


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def asgi_client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(
    authorizer: Authorizer, seen: list[dict[str, Any]]
) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(build_app(authorizer, seen)) as c:
        yield c


def assert_problem(resp: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    doc: dict[str, Any] = resp.json()
    assert doc["status"] == status
    assert doc["reason"] == reason
    assert doc["request_id"] == resp.headers["x-request-id"]
    return doc


async def test_allow_passes_principal(
    client: httpx.AsyncClient, seen: list[dict[str, Any]]
) -> None:
    resp = await client.get("/api/chats", headers=cookie_header("u1"))
    assert resp.status_code == 200
    assert resp.json() == {"user": "u1", "authenticated": True, "reason": "allowed", "body": ""}
    assert seen[0]["state"] is seen[0]["user"]


async def test_starlette_requires_and_base_user_conventions_work() -> None:
    # Starlette's own decorator reads request.auth.scopes; its templates and logs read
    # request.user.display_name / .identity.
    @requires("authenticated", status_code=418)
    async def private(request: Request) -> JSONResponse:
        user = request.user
        return JSONResponse({"name": user.display_name, "id": user.identity})

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"one,", b"two,", b"three"):
                yield part

        return StreamingResponse(chunks(), media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/api/chats", private),
            Route("/api/widget/{assistant}/config", private),
            Route("/api/widget/{assistant}/history", stream),
        ]
    )
    app.add_middleware(AuthzMiddleware, authorizer=make_authorizer())
    async with asgi_client(app) as c:
        signed_in = await c.get("/api/chats", headers=cookie_header("u1"))
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json() == {"name": "u1@example.com", "id": "u1"}  # no name claim
        # A public route lets anonymous callers through; @requires still says no.
        anonymous = await c.get("/api/widget/a1/config")
        assert anonymous.status_code == 418
        streamed = await c.get("/api/widget/a1/history")
        assert streamed.status_code == 200
        assert streamed.text == "one,two,three"


async def test_public_route_user_is_anonymous(
    client: httpx.AsyncClient, seen: list[dict[str, Any]]
) -> None:
    resp = await client.get("/api/widget/a1/config")
    assert resp.json()["reason"] == "public"
    assert seen[0]["user"] is ANONYMOUS
    assert not seen[0]["user"].is_authenticated


async def test_401_problem_with_challenge(
    client: httpx.AsyncClient, seen: list[dict[str, Any]]
) -> None:
    resp = await client.get("/api/chats")
    assert_problem(resp, 401, "authentication_required")
    assert resp.headers["www-authenticate"] == 'Bearer realm="illumichat"'
    assert seen == []


async def test_401_bad_cookie_says_invalid_token(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/chats", headers={"cookie": "authjs.session-token=garbage"})
    assert resp.status_code == 401
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]
    assert "garbage" not in resp.text


async def test_403_member_cannot_create_assistant(
    client: httpx.AsyncClient, seen: list[object]
) -> None:
    resp = await client.post("/api/assistants", headers=cookie_header("u1"))
    assert_problem(resp, 403, "insufficient_role")
    assert seen == []


async def test_429_with_retry_after_on_tickets(client: httpx.AsyncClient) -> None:
    statuses = [(await client.post("/api/widget/tickets/create")).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    resp = await client.post("/api/widget/tickets/create")
    assert_problem(resp, 429, "rate_limited")
    assert int(resp.headers["retry-after"]) > 0


async def test_webhook_body_replayed_byte_for_byte(
    client: httpx.AsyncClient, seen: list[dict[str, Any]]
) -> None:
    body, headers = twilio_request("http://testserver")
    resp = await client.post(WEBHOOK, content=body, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["reason"] == "webhook_verified"
    assert seen[0]["body"] == body


async def test_webhook_bad_signature_never_reaches_app(
    client: httpx.AsyncClient, seen: list[dict[str, Any]]
) -> None:
    body, headers = twilio_request("http://testserver")
    resp = await client.post(WEBHOOK, content=body + b"&x=1", headers=headers)
    assert_problem(resp, 403, "invalid_signature")
    assert seen == []


async def test_webhook_body_over_limit_is_413(
    client: httpx.AsyncClient, seen: list[object]
) -> None:
    resp = await client.post(WEBHOOK, content=b"a=" + b"b" * 70_000)
    assert_problem(resp, 413, "body_too_large")
    assert seen == []


async def test_non_canonical_path_is_400(client: httpx.AsyncClient, seen: list[object]) -> None:
    for path in ("/api/widget/x/..%2F..%2Fassistants", "/api//chats", "/api/chats/%2e%2e"):
        assert_problem(await client.get(path), 400, "non_canonical_path")
    assert seen == []


async def test_exception_in_authorizer_is_500_and_app_not_called(
    seen: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    async with asgi_client(build_app(Exploding(), seen)) as c:
        resp = await c.get("/api/chats", headers={"x-request-id": "req-42", **cookie_header()})
    doc = assert_problem(resp, 500, "internal_error")
    assert doc["request_id"] == "req-42"
    assert "boom" not in resp.text
    assert seen == []
    assert any("req-42" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


async def test_an_adecide_patched_after_the_middleware_was_built_is_still_asked(
    authorizer: Authorizer, seen: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The middleware skips adecide's coroutine only while adecide is the library's own:
    # an extra check wrapped around it (here: deny everyone) must never be bypassed.
    app = build_app(authorizer, seen)

    async def deny_all(request: object, **kwargs: object) -> Decision:
        return Decision.of(Reason.POLICY_DENIED, "maintenance")

    async with asgi_client(app) as c:
        assert (await c.get("/api/chats", headers=cookie_header())).status_code == 200
        monkeypatch.setattr(authorizer, "adecide", deny_all)
        resp = await c.get("/api/chats", headers=cookie_header())
    assert_problem(resp, 403, "policy_denied")
    assert len(seen) == 1


async def test_hostile_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/chats", headers={"x-request-id": "a b<script>"})
    assert resp.headers["x-request-id"] != "a b<script>"
    assert len(resp.headers["x-request-id"]) == 32


# --- raw ASGI: what test clients cannot send -------------------------------------------


def scope(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/widget/a1/config",
        "query_string": b"",
        "headers": [(b"host", b"example.com")],
        "client": ("10.0.0.1", 5555),
    }
    base.update(over)
    return base


async def call(app: Any, sc: dict[str, Any], incoming: list[dict[str, Any]]) -> list[Any]:
    sent: list[Any] = []
    queue = list(incoming)

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(sc, receive, send)
    return sent


class Recorder:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []

    async def __call__(self, sc: Any, receive: Any, send: Any) -> None:
        self.scopes.append(sc)
        if sc["type"] == "lifespan":
            return
        if sc["type"] == "http":
            while True:
                message = await receive()
                self.received.append(message)
                if message["type"] == "http.disconnect" or not message.get("more_body"):
                    break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_missing_host_is_400() -> None:
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    sent = asyncio.run(call(mw, scope(headers=[]), []))
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["reason"] == "bad_header"
    two = [(b"host", b"a"), (b"host", b"b")]
    assert asyncio.run(call(mw, scope(headers=two), []))[0]["status"] == 400
    assert app.scopes == []


def test_http10_without_host_is_fine() -> None:
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    sent = asyncio.run(call(mw, scope(headers=[], http_version="1.0"), []))
    assert sent[0]["status"] == 204


def test_raw_path_absent_falls_back_to_quoted_path() -> None:
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    # A decoded '/' inside a segment cannot be told from a separator: without raw_path
    # we quote what we have, and '%' becomes '%25', which stays data.
    sent = asyncio.run(call(mw, scope(path="/api/widget/a%2Fb/config"), []))
    assert sent[0]["status"] == 204
    assert app.scopes[0]["auth"].params == (("assistantId", "a%2Fb"),)
    sent = asyncio.run(call(mw, scope(path="/api/widget/../config"), []))
    assert sent[0]["status"] == 400


def test_raw_path_wins_over_path() -> None:
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    sc = scope(path="/api/widget/a/b/config", raw_path=b"/api/widget/a%2Fb/config")
    assert asyncio.run(call(mw, sc, []))[0]["status"] == 400


def webhook_scope(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    hdrs = [(b"host", b"example.com")] + [(k.encode(), v.encode()) for k, v in headers.items()]
    return scope(method="POST", path=WEBHOOK, raw_path=WEBHOOK.encode(), headers=hdrs)


def test_chunked_webhook_body_replayed_then_real_receive() -> None:
    body, headers = twilio_request("http://example.com")
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    chunks = [body[:5], body[5:9], body[9:]]
    incoming = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    incoming[-1]["more_body"] = False
    sent = asyncio.run(call(mw, webhook_scope(body, headers), incoming))
    assert sent[0]["status"] == 204
    assert app.received == [{"type": "http.request", "body": body, "more_body": False}]


def test_disconnect_mid_body_closes_cleanly_without_app() -> None:
    body, headers = twilio_request("http://example.com")
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    incoming = [{"type": "http.request", "body": body[:5], "more_body": True}]
    sent = asyncio.run(call(mw, webhook_scope(body, headers), incoming))
    assert sent == []
    assert app.scopes == []


def test_declared_length_over_limit_is_413_without_reading() -> None:
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    sc = webhook_scope(b"", {"content-length": "999999999"})
    sent = asyncio.run(call(mw, sc, []))
    assert sent[0]["status"] == 413


@pytest.mark.parametrize("declared", ["\u00b2", "\u0663", "1_0", " ", "-1"])
def test_unreadable_declared_length_is_413_never_a_503(declared: str) -> None:
    # "²".isdigit() is True but int("²") raises: that must not look like an outage.
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    sc = webhook_scope(b"", {})
    sc["headers"] = [*sc["headers"], (b"content-length", declared.encode("latin-1", "replace"))]
    sent = asyncio.run(call(mw, sc, []))
    assert sent[0]["status"] == 413
    assert app.scopes == []


def test_lifespan_passes_through() -> None:
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    asyncio.run(call(mw, {"type": "lifespan", "asgi": {"version": "3.0"}}, []))
    assert app.scopes[0]["type"] == "lifespan"


def test_websocket_allowed_reaches_app_with_principal() -> None:
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    hdrs = [
        (b"host", b"example.com"),
        *((k.encode(), v.encode()) for k, v in cookie_header().items()),
    ]
    sc = scope(type="websocket", path="/api/chats", scheme="wss", headers=hdrs)
    asyncio.run(call(mw, sc, [{"type": "websocket.connect"}]))
    assert app.scopes[0]["user"].user_id == "u1"
    assert app.scopes[0]["auth"].reason.value == "allowed"


def test_websocket_denied_with_http_response_extension() -> None:
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    sc = scope(type="websocket", path="/api/chats", extensions={"websocket.http.response": {}})
    sent = asyncio.run(call(mw, sc, [{"type": "websocket.connect"}]))
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 401
    assert (b"content-type", b"application/problem+json") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["reason"] == "authentication_required"
    assert app.scopes == []


def test_websocket_without_http_response_extension_closes_1008() -> None:
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    sc = scope(type="websocket", path="/api/chats", scheme="ws")
    sent = asyncio.run(call(mw, sc, [{"type": "websocket.connect"}]))
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "authentication_required"}]
    assert app.scopes == []


def test_app_exceptions_are_not_ours() -> None:
    async def broken(sc: Any, receive: Any, send: Any) -> None:
        raise ValueError("the app's own bug")

    mw = AuthzMiddleware(broken, authorizer=make_authorizer())
    with pytest.raises(ValueError, match="app's own bug"):
        asyncio.run(call(mw, scope(), []))


# --- a real server ---------------------------------------------------------------------


@pytest.fixture
def live_server(authorizer: Authorizer, seen: list[dict[str, Any]]) -> Iterator[str]:
    with serve_asgi(build_app(authorizer, seen)) as url:
        yield url


@pytest.mark.interop
def test_real_uvicorn(live_server: str, seen: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=live_server) as http:
        ok = http.get("/api/chats", headers=cookie_header("u1"))
        assert ok.status_code == 200
        assert ok.json()["user"] == "u1"

        denied = http.get("/api/chats")
        assert_problem(denied, 401, "authentication_required")
        assert denied.headers["www-authenticate"].startswith("Bearer ")

        forbidden = http.post("/api/assistants", headers=cookie_header("u1"))
        assert_problem(forbidden, 403, "insufficient_role")

        body, headers = twilio_request(live_server)
        hook = http.post(WEBHOOK, content=body, headers=headers)
        assert hook.status_code == 200, hook.text
        assert seen[-1]["body"] == body

        assert_problem(http.post(WEBHOOK, content=b"x" * 70_000), 413, "body_too_large")
        # httpx would normalize '..'; an encoded slash survives to the server as sent.
        assert_problem(http.get("/api/widget/a%2F..%2Fx/config"), 400, "non_canonical_path")
        codes = [http.post("/api/widget/tickets/create").status_code for _ in range(6)]
        assert codes[-1] == 429


async def test_an_outage_is_503_and_logged_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Down:
        def membership(self, user: str, workspace: str) -> None:
            raise ConnectionError("db down")

        resource = has_grant = membership

    authorizer = make_authorizer()
    authorizer.facts = Down()  # type: ignore[assignment]
    app = Starlette(routes=[Route("/api/chats", lambda r: JSONResponse({}))])
    app.add_middleware(AuthzMiddleware, authorizer=authorizer)
    async with asgi_client(app) as c:
        resp = await c.get("/api/chats", headers={"x-request-id": "req-42", **cookie_header()})
    assert resp.status_code == 503
    assert resp.json()["reason"] == "facts_unavailable"
    assert "db down" not in resp.text
    logged = [r.getMessage() for r in caplog.records if "req-42" in r.getMessage()]
    assert logged == [
        "request req-42 denied: facts_unavailable (membership lookup is unavailable; retry later)"
    ]


def test_a_scope_state_that_is_not_a_mapping_is_our_500_not_a_pass() -> None:
    app = Recorder()
    mw = AuthzMiddleware(app, authorizer=make_authorizer())
    sc = webhook_scope(b"", {})
    sc.update(method="GET", path="/api/chats", raw_path=b"/api/chats", state=["not", "a", "dict"])
    sc["headers"] = [
        *sc["headers"],
        *((k.encode(), v.encode()) for k, v in cookie_header().items()),
    ]
    sent = asyncio.run(call(mw, sc, []))
    assert sent[0]["status"] == 500
    assert app.scopes == []
