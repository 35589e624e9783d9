"""FastAPI dependencies through httpx's ASGITransport: standalone and behind the middleware."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from conftest import WEBHOOK, Exploding, cookie_header, serve_asgi, twilio_request
from fastapi import Depends, FastAPI, Request

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.decision import Decision
from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.integrations.fastapi import authorized, install, require
from illumichat_authz.principal import Principal

pytestmark = pytest.mark.anyio
PROBLEM = "application/problem+json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def build(authorizer: Authorizer, *, middleware: Authorizer | None = None) -> FastAPI:
    app = FastAPI()
    install(app, authorizer=authorizer)
    if middleware is not None:
        app.add_middleware(AuthzMiddleware, authorizer=middleware)

    @app.get("/api/chats")
    async def chats(user: Annotated[Principal, Depends(require("chat:list"))]) -> dict[str, Any]:
        return {"user": user.user_id, "workspace": user.workspace}

    @app.post("/api/assistants")
    async def create(user: Annotated[Principal, Depends(require())]) -> dict[str, Any]:
        return {"user": user.user_id}

    @app.get("/api/assistants")
    async def wrong(user: Annotated[Principal, Depends(require("billing:manage"))]) -> None:
        raise AssertionError("never reached")

    @app.get("/api/widget/{assistant}/config")
    async def public(user: Annotated[Principal, Depends(require())]) -> None:
        raise AssertionError("never reached")

    @app.post(WEBHOOK)
    async def hook(
        request: Request, decision: Annotated[Decision, Depends(authorized("sms:inbound"))]
    ) -> dict[str, Any]:
        body = await request.body()
        return {"reason": decision.reason.value, "body": body.decode()}

    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_standalone_allow_and_deny(authorizer: Authorizer) -> None:
    async with client(build(authorizer)) as http:
        ok = await http.get("/api/chats", headers=cookie_header("u1"))
        assert ok.json() == {"user": "u1", "workspace": "w1"}

        anon = await http.get("/api/chats")
        assert anon.status_code == 401
        assert anon.headers["content-type"] == PROBLEM
        assert anon.headers["www-authenticate"] == 'Bearer realm="illumichat"'
        assert anon.json()["reason"] == "authentication_required"

        denied = await http.post("/api/assistants", headers=cookie_header("u1"))
        assert denied.status_code == 403
        assert denied.json()["reason"] == "insufficient_role"

        # require() disagrees with the table: our configuration mistake, a 500, never a
        # 403 that sends the caller to check a workspace role.
        mismatch = await http.get("/api/assistants", headers=cookie_header("u1"))
        assert mismatch.status_code == 500
        assert mismatch.json()["reason"] == "internal_error"

        public = await http.get("/api/widget/a1/config")
        assert public.status_code == 401
        assert public.headers["content-type"] == PROBLEM


async def test_standalone_webhook_body_still_readable(authorizer: Authorizer) -> None:
    body, headers = twilio_request("http://testserver")
    async with client(build(authorizer)) as http:
        resp = await http.post(WEBHOOK, content=body, headers=headers)
        assert resp.status_code == 200, resp.text
        assert resp.json()["body"].encode() == body
        too_big = await http.post(WEBHOOK, content=b"a" * 70_000)
        assert too_big.status_code == 413


async def test_behind_middleware_reuses_the_decision(authorizer: Authorizer) -> None:
    # The dependency's own authorizer would explode: it must not be asked again.
    app = build(Exploding(), middleware=authorizer)
    async with client(app) as http:
        ok = await http.get("/api/chats", headers=cookie_header("u1"))
        assert ok.json()["user"] == "u1"
        anon = await http.get("/api/chats")
        assert anon.status_code == 401
        assert anon.headers["content-type"] == PROBLEM


async def test_authorizer_failure_is_500() -> None:
    async with client(build(Exploding())) as http:
        resp = await http.get("/api/chats", headers={"x-request-id": "abc", **cookie_header()})
    assert resp.status_code == 500
    assert resp.json() == {**resp.json(), "reason": "internal_error", "request_id": "abc"}
    assert "boom" not in resp.text


def test_openapi_shows_cookie_and_bearer(authorizer: Authorizer) -> None:
    doc = build(authorizer).openapi()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["authjsSession"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": "authjs.session-token",
        "description": "Auth.js session cookie set by the IllumiChat login flow.",
    }
    assert schemes["bearer"]["type"] == "http"
    assert schemes["bearer"]["scheme"] == "bearer"
    security = doc["paths"]["/api/chats"]["get"]["security"]
    assert {"authjsSession": []} in security
    assert {"bearer": []} in security


async def test_require_resolves_the_resource_from_path_parameters(
    authorizer: Authorizer,
) -> None:
    # Paths the route table does not know: the endpoint names its resource itself.
    app = FastAPI()
    install(app, authorizer=authorizer)

    @app.patch("/v2/bots/{assistant_id}")
    async def update(
        assistant_id: str,
        user: Annotated[Principal, Depends(require("assistant:update", resource="assistant_id"))],
    ) -> dict[str, Any]:
        return {"user": user.user_id, "assistant": assistant_id}

    @app.get("/v2/spaces/{ws}/billing")
    async def billing(
        ws: str, user: Annotated[Principal, Depends(require("billing:read", workspace="ws"))]
    ) -> dict[str, Any]:
        return {"user": user.user_id, "workspace": ws}

    async with client(app) as http:
        owner = await http.patch("/v2/bots/a1", headers=cookie_header("boss"))
        assert owner.json() == {"user": "boss", "assistant": "a1"}
        member = await http.patch("/v2/bots/a1", headers=cookie_header("u1"))
        assert (member.status_code, member.json()["reason"]) == (403, "insufficient_role")
        missing = await http.patch("/v2/bots/nope", headers=cookie_header("boss"))
        assert (missing.status_code, missing.json()["reason"]) == (404, "not_found")
        anonymous = await http.patch("/v2/bots/a1")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == 'Bearer realm="illumichat"'
        bad = await http.patch("/v2/bots/a1", headers={"cookie": "authjs.session-token=junk"})
        assert (bad.status_code, bad.json()["reason"]) == (401, "invalid_credential")

        paid = await http.get("/v2/spaces/w1/billing", headers=cookie_header("boss"))
        assert paid.json() == {"user": "boss", "workspace": "w1"}
        not_owner = await http.get("/v2/spaces/w1/billing", headers=cookie_header("u1"))
        assert (not_owner.status_code, not_owner.json()["reason"]) == (403, "insufficient_role")
        elsewhere = await http.get("/v2/spaces/w9/billing", headers=cookie_header("boss"))
        assert (elsewhere.status_code, elsewhere.json()["reason"]) == (403, "not_a_member")


def test_require_with_a_resource_needs_an_action() -> None:
    with pytest.raises(ValueError, match="needs an action"):
        require(resource="assistant_id")


@pytest.mark.interop
def test_real_uvicorn(authorizer: Authorizer) -> None:
    """The dependencies and OpenAPI through a real server, with a real Twilio signature."""
    with serve_asgi(build(authorizer)) as url, httpx.Client(base_url=url) as http:
        ok = http.get("/api/chats", headers=cookie_header("u1"))
        assert ok.json() == {"user": "u1", "workspace": "w1"}

        anon = http.get("/api/chats")
        assert anon.status_code == 401
        assert anon.headers["content-type"] == PROBLEM
        assert anon.headers["www-authenticate"] == 'Bearer realm="illumichat"'

        denied = http.post("/api/assistants", headers=cookie_header("u1"))
        assert (denied.status_code, denied.json()["reason"]) == (403, "insufficient_role")

        body, headers = twilio_request(url)
        hook = http.post(WEBHOOK, content=body, headers=headers)
        assert hook.json() == {"reason": "webhook_verified", "body": body.decode()}
        forged = http.post(WEBHOOK, content=body + b"&x=1", headers=headers)
        assert (forged.status_code, forged.json()["reason"]) == (403, "invalid_signature")

        schemes = http.get("/openapi.json").json()["components"]["securitySchemes"]
        assert (schemes["authjsSession"]["in"], schemes["bearer"]["scheme"]) == ("cookie", "bearer")
