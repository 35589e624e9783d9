"""The Flask extension as Flask users write it: an app factory, module-level blueprints.

``authz = IllumiChatAuthz()`` and the blueprint's ``@authz.require`` run at import, before
any app exists; ``create_app`` reads the authorizer from ``app.config``. The views record
when they run, so a denied request is seen never to reach one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
from conftest import COOKIE, SECRET, cookie_header, make_authorizer, session_cookie
from wsgi_servers import serve_wsgi

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.errors import ConfigurationError
from illumichat_authz.facts import InMemoryFacts
from illumichat_authz.integrations.flask import IllumiChatAuthz

authz = IllumiChatAuthz()
api = flask.Blueprint("api", __name__)
RAN: list[str] = []


@api.get("/api/chats")
@authz.require("chat:list")
def chats() -> dict[str, Any]:
    RAN.append(flask.g.principal.user_id)
    return {"user": flask.g.principal.user_id}


def create_app(**config: Any) -> flask.Flask:
    app = flask.Flask("factory")
    app.config.update(config)
    authz.init_app(app)
    app.register_blueprint(api)
    return app


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


def signed_in(app: flask.Flask, user: str = "u1") -> Any:
    client = app.test_client()
    client.set_cookie(COOKIE, session_cookie(user))
    return client


def test_the_factory_reads_the_authorizer_from_app_config() -> None:
    app = create_app(ILLUMICHAT_AUTHZ=make_authorizer())
    assert signed_in(app).get("/api/chats").get_json() == {"user": "u1"}
    anonymous = app.test_client().get("/api/chats")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert RAN == ["u1"]


def test_one_extension_serves_two_apps_with_their_own_authorizers() -> None:
    members = make_authorizer()
    strangers = Authorizer(core=members.core, facts=InMemoryFacts())  # u1 is in no workspace
    first = create_app(ILLUMICHAT_AUTHZ=members)
    second = create_app(ILLUMICHAT_AUTHZ=strangers)
    assert signed_in(first).get("/api/chats").status_code == 200
    denied = signed_in(second).get("/api/chats")
    assert (denied.status_code, denied.get_json()["reason"]) == (403, "not_a_member")
    assert signed_in(first).get("/api/chats").status_code == 200
    assert RAN == ["u1", "u1"]


def test_init_app_or_the_constructor_may_name_the_authorizer() -> None:
    app = flask.Flask("explicit")
    IllumiChatAuthz().init_app(app, authorizer=make_authorizer())
    assert "illumichat_authz" in app.extensions
    app = flask.Flask("one-app")
    one = IllumiChatAuthz(app, authorizer=make_authorizer())

    @app.get("/api/chats")
    @one.require("chat:list")
    def mine() -> dict[str, Any]:
        return {"user": flask.g.principal.user_id}

    assert signed_in(app).get("/api/chats").get_json() == {"user": "u1"}


def test_a_configuration_file_path_builds_the_authorizer(tmp_path: Path) -> None:
    (tmp_path / "facts.json").write_text(
        json.dumps({"memberships": [{"user": "u1", "workspace": "w1", "role": "member"}]})
    )
    config = tmp_path / "authz.toml"
    config.write_text(
        f'[session]\nsecrets = ["{SECRET}"]\nworkspace_claim = "workspace"\n'
        '[facts]\nfile = "facts.json"\n'
    )
    for value in (str(config), config):
        app = create_app(ILLUMICHAT_AUTHZ=value)
        assert signed_in(app).get("/api/chats").get_json() == {"user": "u1"}


def test_a_missing_or_wrong_configuration_fails_at_init_app(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r'app\.config\["ILLUMICHAT_AUTHZ"\]'):
        create_app()
    with pytest.raises(ConfigurationError, match="must be an Authorizer"):
        create_app(ILLUMICHAT_AUTHZ=42)
    with pytest.raises(ConfigurationError, match="configuration file not found"):
        create_app(ILLUMICHAT_AUTHZ=str(tmp_path / "nope.toml"))
    app = create_app(ILLUMICHAT_AUTHZ=make_authorizer())
    with pytest.raises(ConfigurationError, match="already initialised"):
        authz.init_app(app)


def test_a_blueprint_on_an_app_never_initialised_is_denied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = flask.Flask("forgotten")
    app.register_blueprint(api)
    with caplog.at_level(logging.ERROR, "illumichat_authz"):
        response = signed_in(app).get("/api/chats")
    assert response.status_code == 500
    assert response.get_json()["reason"] == "internal_error"
    assert "init_app never initialised" in caplog.text
    assert RAN == []


@contextmanager
def serving(app: flask.Flask) -> Iterator[str]:
    with serve_wsgi(app, "wsgiref") as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.interop
def test_factory_app_behind_a_real_server() -> None:
    members = make_authorizer()
    strangers = Authorizer(core=members.core, facts=InMemoryFacts())
    with (
        serving(create_app(ILLUMICHAT_AUTHZ=members)) as first,
        serving(create_app(ILLUMICHAT_AUTHZ=strangers)) as second,
    ):
        assert httpx.get(first + "/api/chats", headers=cookie_header()).json() == {"user": "u1"}
        assert httpx.get(first + "/api/chats").status_code == 401
        assert httpx.get(second + "/api/chats", headers=cookie_header()).status_code == 403
    assert RAN == ["u1"]
