"""The kit's credentials through Flask's own test client, as docs/testing-kit.md shows.

Werkzeug's client owns cookies: a ``Cookie`` header passed by hand is dropped for its jar.
A minted session is therefore set with ``client.set_cookie(cookie.name, cookie.value)``;
bearer tokens, API keys and Twilio signatures are plain headers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import flask
import pytest

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.integrations.flask import IllumiChatAuthz
from illumichat_authz.testing.fixtures import FactsBuilder

Mint = Callable[..., str]
authz = IllumiChatAuthz()
api = flask.Blueprint("api", __name__)


@api.get("/api/assistants/<assistantId>")
@authz.require("assistant:read")
def assistant(assistantId: str) -> dict[str, Any]:
    return {"user": flask.g.principal.user_id, "assistant": assistantId}


@api.post("/api/sms/webhook/<assistantId>")
def sms(assistantId: str) -> dict[str, Any]:
    return {"body": flask.request.form["Body"]}


def create_app(authorizer: Authorizer) -> flask.Flask:
    app = flask.Flask("service")
    app.config["ILLUMICHAT_AUTHZ"] = authorizer
    authz.init_app(app)
    app.register_blueprint(api)
    return app


@pytest.fixture
def app(authz_facts: FactsBuilder, authorizer: Authorizer) -> flask.Flask:
    (
        authz_facts.workspace("w1")
        .member("alice", role="admin")
        .member("bob")
        .assistant("a-pub", visibility="public", creator="alice")
        .assistant("a-priv", visibility="private", creator="alice")
    )
    return create_app(authorizer)


def test_minted_session_through_the_flask_client(
    app: flask.Flask, mint_session: Mint, assert_decision: Callable[..., None]
) -> None:
    client = app.test_client()
    cookie: Any = mint_session("bob", workspace="w1")
    client.set_cookie(cookie.name, cookie.value)
    allowed = client.get("/api/assistants/a-pub")
    assert allowed.get_json() == {"user": "bob", "assistant": "a-pub"}
    assert_decision(allowed, 200)
    assert_decision(client.get("/api/assistants/a-priv"), 403, "not_visible")
    # The same value as a Cookie header works where the client has no jar of its own.
    no_jar = app.test_client(use_cookies=False)
    assert_decision(no_jar.get("/api/assistants/a-pub", headers={"cookie": cookie}), 200)


def test_bearer_and_api_key_through_the_flask_client(
    app: flask.Flask,
    mint_bearer: Mint,
    mint_api_key: Mint,
    assert_decision: Callable[..., None],
) -> None:
    client = app.test_client()
    for token in (mint_bearer("bob", workspace="w1"), mint_api_key("bob", "w1")):
        response = client.get("/api/assistants/a-pub", headers={"authorization": f"Bearer {token}"})
        assert_decision(response, 200)
    assert_decision(client.get("/api/assistants/a-pub"), 401, "authentication_required")


def test_twilio_signature_through_the_flask_client(
    app: flask.Flask, sign_twilio: Mint, assert_decision: Callable[..., None]
) -> None:
    form = {"Body": "hello", "From": "+15550100"}
    signature = sign_twilio("http://localhost/api/sms/webhook/a-pub", form)
    response = app.test_client().post(
        "/api/sms/webhook/a-pub",
        data=urlencode(form),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": signature,
        },
    )
    assert response.get_json() == {"body": "hello"}
    assert_decision(response, 200)


def test_a_chunked_session_goes_through_the_flask_client_by_its_pairs(
    app: flask.Flask, mint_session: Mint, assert_decision: Callable[..., None]
) -> None:
    cookie: Any = mint_session("bob", workspace="w1", claims={"big": "x" * 9000})
    names = [name for name, _ in cookie.pairs]
    assert names[:3] == [f"authjs.session-token.{i}" for i in range(3)]
    assert "; ".join(f"{n}={v}" for n, v in cookie.pairs) == cookie
    with pytest.raises(ValueError, match="chunked"):
        _ = cookie.name
    client = app.test_client()
    for name, value in cookie.pairs:
        client.set_cookie(name, value)
    assert_decision(client.get("/api/assistants/a-pub"), 200)
