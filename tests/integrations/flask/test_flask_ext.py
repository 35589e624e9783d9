"""The Flask extension through Flask's test client and a real wsgiref server."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import flask
import httpx
import pytest
from conftest import (
    COOKIE,
    WEBHOOK,
    Exploding,
    cookie_header,
    make_authorizer,
    session_cookie,
    twilio_request,
)
from wsgi_servers import serve_wsgi

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.integrations.flask import IllumiChatAuthz

PROBLEM = "application/problem+json"


def build(authorizer: Authorizer, seen: list[Any]) -> flask.Flask:
    app = flask.Flask("t")
    authz = IllumiChatAuthz(authorizer=authorizer)
    authz.init_app(app)

    @app.get("/api/chats")
    @authz.require("chat:list")
    def chats() -> dict[str, Any]:
        seen.append(flask.g.principal)
        return {"user": flask.g.principal.user_id}

    @app.post("/api/assistants")
    @authz.require()
    def create() -> dict[str, Any]:
        seen.append("create")
        return {}

    @app.get("/api/assistants")
    @authz.require("billing:manage")
    def mismatch() -> dict[str, Any]:
        seen.append("mismatch")
        return {}

    @app.post("/api/widget/tickets/create")
    def ticket() -> dict[str, Any]:
        return {"principal": flask.g.principal}

    @app.post(WEBHOOK)
    def hook() -> dict[str, Any]:
        body = flask.request.get_data()
        seen.append(body)
        return {"form": flask.request.form.to_dict(), "reason": flask.g.authz_decision.reason}

    return app


@pytest.fixture
def seen() -> list[Any]:
    return []


@pytest.fixture
def app(authorizer: Authorizer, seen: list[Any]) -> flask.Flask:
    return build(authorizer, seen)


def signed_in(app: flask.Flask, user: str = "u1") -> Any:
    # Werkzeug's client sends its own cookie jar, not a Cookie header we pass.
    c = app.test_client()
    c.set_cookie(COOKIE, session_cookie(user))
    return c


def test_allow_and_principal_on_g(app: flask.Flask, seen: list[Any]) -> None:
    resp = signed_in(app).get("/api/chats")
    assert resp.status_code == 200
    assert resp.json == {"user": "u1"}
    assert seen[0].workspace == "w1"


def test_denials_are_problems(app: flask.Flask, seen: list[Any]) -> None:
    c = app.test_client()
    anon = c.get("/api/chats")
    assert anon.status_code == 401
    assert anon.content_type == PROBLEM
    assert anon.headers["WWW-Authenticate"] == 'Bearer realm="illumichat"'
    assert anon.json is None or anon.get_json(force=True)["reason"] == "authentication_required"
    forbidden = signed_in(app).post("/api/assistants")
    assert forbidden.status_code == 403
    assert forbidden.get_json(force=True)["reason"] == "insufficient_role"
    wrong = signed_in(app).get("/api/assistants")  # require() disagrees with the table
    assert wrong.status_code == 500
    assert wrong.get_json(force=True)["reason"] == "internal_error"
    assert c.get("/api//chats").status_code == 400
    assert seen == []


def test_rate_limit_429(app: flask.Flask) -> None:
    c = app.test_client()
    codes = [c.post("/api/widget/tickets/create").status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    last = c.post("/api/widget/tickets/create")
    assert int(last.headers["Retry-After"]) > 0


def test_webhook_body_and_form_still_readable(app: flask.Flask, seen: list[Any]) -> None:
    body, headers = twilio_request("http://localhost")
    resp = app.test_client().post(WEBHOOK, data=body, headers=headers)
    assert resp.status_code == 200, resp.data
    assert seen == [body]
    assert resp.json is not None
    assert resp.json["form"]["Body"] == "héllo & <world>"
    too_big = app.test_client().post(WEBHOOK, data=b"a" * 70_000)
    assert too_big.status_code == 413


def test_exception_is_500(seen: list[Any]) -> None:
    app = build(Exploding(), seen)
    resp = app.test_client().get("/api/chats", headers={"X-Request-Id": "f-1"})
    assert resp.status_code == 500
    doc = resp.get_json(force=True)
    assert doc["reason"] == "internal_error"
    assert doc["request_id"] == "f-1"
    assert seen == []


@pytest.fixture
def live(app: flask.Flask) -> Iterator[str]:
    with serve_wsgi(app, "wsgiref") as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.interop
def test_real_server(live: str, seen: list[Any]) -> None:
    with httpx.Client(base_url=live) as http:
        assert http.get("/api/chats", headers=cookie_header()).json() == {"user": "u1"}
        assert http.get("/api/chats").status_code == 401
        body, headers = twilio_request(live)
        assert http.post(WEBHOOK, content=body, headers=headers).status_code == 200
        assert seen[-1] == body


def test_require_decides_on_the_named_url_variables() -> None:
    # A URL the route table does not know, let through to the view by the host's choice.
    base = make_authorizer()
    authorizer = Authorizer(
        core=dataclasses.replace(base.core, undeclared="authenticated"), facts=base.facts
    )
    app = flask.Flask("t")
    authz = IllumiChatAuthz(app, authorizer=authorizer)

    @app.patch("/v2/bots/<assistant_id>")
    @authz.require("assistant:update", resource="assistant_id")
    def update(assistant_id: str) -> dict[str, Any]:
        return {"user": flask.g.principal.user_id, "assistant": assistant_id}

    @app.get("/v2/spaces/<ws>/billing")
    @authz.require("billing:read", workspace="ws")
    def billing(ws: str) -> dict[str, Any]:
        return {"workspace": ws}

    owner, member = signed_in(app, "boss"), signed_in(app, "u1")
    assert owner.patch("/v2/bots/a1").get_json() == {"user": "boss", "assistant": "a1"}
    denied = member.patch("/v2/bots/a1")
    assert (denied.status_code, denied.get_json()["reason"]) == (403, "insufficient_role")
    missing = owner.patch("/v2/bots/nope")
    assert (missing.status_code, missing.get_json()["reason"]) == (404, "not_found")
    assert app.test_client().patch("/v2/bots/a1").status_code == 401
    assert owner.get("/v2/spaces/w1/billing").get_json() == {"workspace": "w1"}
    assert member.get("/v2/spaces/w1/billing").status_code == 403
    with pytest.raises(ValueError, match="needs an action"):
        authz.require(resource="assistant_id")


def test_require_identifies_a_caller_the_route_table_let_through_anonymously() -> None:
    """On a public route ``before_request`` verifies no credential; a view naming its
    resource identifies the caller itself, as FastAPI's ``require`` does."""
    app = flask.Flask("t")
    authz = IllumiChatAuthz(app, authorizer=make_authorizer())

    @app.get("/api/widget/<assistantId>/config")
    @authz.require("assistant:update", resource="assistantId")
    def config(assistantId: str) -> dict[str, Any]:
        return {"user": flask.g.principal.user_id, "assistant": assistantId}

    owner = signed_in(app, "boss").get("/api/widget/a1/config")
    assert owner.get_json() == {"user": "boss", "assistant": "a1"}
    member = signed_in(app, "u1").get("/api/widget/a1/config")
    assert (member.status_code, member.get_json()["reason"]) == (403, "insufficient_role")
    anonymous = app.test_client().get("/api/widget/a1/config")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="illumichat"'
