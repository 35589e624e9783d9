"""The docs/integrations.md recipes: a host's own routes layered over the shipped table.

FastAPI's ``/docs``, ``/openapi.json``, ``/redoc`` and a health check; Flask's
``/static`` and a health check; Django's admin and a health check. Each works through
the real adapter when its host routes file is layered, and stays denied (401
``undeclared_route``) when it is not; the shipped surface is unchanged either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import flask
import httpx
import pytest
from conftest import SECRET, cookie_header, serve_asgi
from django_project import get, make_project
from fastapi import Depends, FastAPI

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import load_settings
from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.integrations.fastapi import install, require
from illumichat_authz.integrations.flask import IllumiChatAuthz
from illumichat_authz.principal import Principal

# The recipes docs/integrations.md shows (test_docs_show_the_recipes keeps them equal).
RECIPES = Path(__file__).resolve().parents[2] / "examples" / "host-routes"
FASTAPI_ROUTES = (RECIPES / "fastapi.toml").read_text("utf-8")
FLASK_ROUTES = (RECIPES / "flask.toml").read_text("utf-8")
DJANGO_ROUTES = (RECIPES / "django.toml").read_text("utf-8")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def test_docs_show_the_recipes() -> None:
    docs = DOCS.read_text("utf-8")
    for recipe in (FASTAPI_ROUTES, FLASK_ROUTES, DJANGO_ROUTES):
        assert recipe.strip() in docs


def _authorizer(tmp_path: Path, host_routes: str | None) -> Authorizer:
    policies: dict[str, Any] = {}
    if host_routes is not None:
        (tmp_path / "host-routes.toml").write_text(host_routes, encoding="utf-8")
        policies = {"host_routes": [str(tmp_path / "host-routes.toml")]}
    settings = load_settings(
        overrides={
            "policies": policies,
            "session": {"secrets": [SECRET], "workspace_claim": "workspace"},
            "routes": {},
        }
    )
    return Authorizer.from_settings(settings)


def _fastapi(authorizer: Authorizer, ran: list[str]) -> FastAPI:
    app = FastAPI()
    install(app, authorizer=authorizer)
    app.add_middleware(AuthzMiddleware, authorizer=authorizer)

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        ran.append("healthz")
        return {"ok": True}

    @app.get("/api/chats")
    async def chats(user: Annotated[Principal, Depends(require("chat:list"))]) -> dict[str, str]:
        ran.append("chats")
        return {"user": user.user_id}

    return app


@pytest.mark.parametrize("layered", [True, False])
def test_fastapi_docs_openapi_and_health(tmp_path: Path, layered: bool) -> None:
    ran: list[str] = []
    app = _fastapi(_authorizer(tmp_path, FASTAPI_ROUTES if layered else None), ran)
    with serve_asgi(app) as url, httpx.Client(base_url=url) as client:
        for path in ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/healthz"):
            response = client.get(path)
            if layered:
                assert response.status_code == 200, path
            else:
                assert (response.status_code, response.json()["reason"]) == (
                    401,
                    "undeclared_route",
                ), path
        if layered:
            assert "/api/chats" in client.get("/openapi.json").json()["paths"]
        # The shipped surface is the same either way.
        assert client.get("/api/chats").status_code == 401
    assert ran == (["healthz"] if layered else [])


def _flask(authorizer: Authorizer, static: Path, ran: list[str]) -> flask.Flask:
    app = flask.Flask(__name__, static_folder=str(static))
    IllumiChatAuthz(app, authorizer=authorizer)

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        ran.append("healthz")
        return {"ok": True}

    return app


@pytest.mark.parametrize("layered", [True, False])
def test_flask_static_and_health(tmp_path: Path, layered: bool) -> None:
    static = tmp_path / "static"
    (static / "css").mkdir(parents=True)
    (static / "x.css").write_text("body{}", encoding="utf-8")
    (static / "css" / "deep.css").write_text("p{}", encoding="utf-8")
    ran: list[str] = []
    app = _flask(_authorizer(tmp_path, FLASK_ROUTES if layered else None), static, ran)
    client = app.test_client()
    for path, body in (("/static/x.css", b"body{}"), ("/static/css/deep.css", b"p{}")):
        response = client.get(path)
        if layered:
            assert (response.status_code, response.data) == (200, body)
        else:
            assert response.status_code == 401
            assert response.get_json(force=True)["reason"] == "undeclared_route"
        response.close()
    assert client.get("/healthz").status_code == (200 if layered else 401)
    assert client.get("/static/../app.py").status_code == 400  # the canonical gate first
    assert client.get("/api/chats").status_code == 401
    assert ran == (["healthz"] if layered else [])


@pytest.mark.parametrize("layered", [True, False])
def test_django_admin_and_health(tmp_path: Path, layered: bool) -> None:
    config = '[policies]\nhost_routes = ["host-routes.toml"]\n' if layered else ""
    root = make_project(tmp_path, config, DJANGO_ROUTES if layered else None)
    result = get(root, "/admin/", "/admin/login/", "/healthz/", "/api/assistants/a1")
    if layered:
        status, location = result["/admin/"]
        assert status == 302  # the admin's own login
        assert location.startswith("/admin/login/")
        assert result["/admin/login/"][0] == 200
        assert result["/healthz/"][0] == 200
        assert result["ran"] == ["healthz"]
    else:
        assert [result[p][0] for p in ("/admin/", "/admin/login/", "/healthz/")] == [401] * 3
        assert result["ran"] == []
    assert result["/api/assistants/a1"][0] == 401  # shipped and authenticated


def test_the_kit_cookie_still_reaches_a_layered_fastapi_app(tmp_path: Path) -> None:
    ran: list[str] = []
    app = _fastapi(_authorizer(tmp_path, FASTAPI_ROUTES), ran)
    with serve_asgi(app) as url, httpx.Client(base_url=url) as client:
        # A signed-in caller with no membership: the shipped policy still decides.
        response = client.get("/api/chats", headers=cookie_header("u1"))
    assert response.status_code == 403
    assert ran == []
