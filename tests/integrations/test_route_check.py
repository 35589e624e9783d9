"""The framework's routes and the route table cannot drift silently ([routes] check_app).

For a FastAPI, a Flask and a Django app, each with a route the table does not classify
and a ``require(action)`` (DRF: ``authz_action``) that disagrees with the table: the
check function lists both, the adapter logs them at start-up (``warn``) or refuses to
start (``error``), and ``illumichat-authz policy check --app`` prints them. Forgetting
``install()`` is a start-up error, not a 500 per request.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path
from typing import Annotated, Any

import flask
import pytest
from conftest import SECRET, serve_asgi
from django_project import get, make_project, policy_check
from fastapi import Depends, FastAPI
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.cli import main
from illumichat_authz.config import load_settings
from illumichat_authz.errors import ConfigurationError
from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.integrations.fastapi import install, require
from illumichat_authz.integrations.flask import IllumiChatAuthz
from illumichat_authz.integrations.route_check import check_app
from illumichat_authz.principal import Principal

MISMATCH = "requires 'assistant:update', but"
DECLARED_AS_READ = "declares GET /api/assistants/{assistantId} as 'assistant:read'"


def _authorizer(check: str = "warn") -> Authorizer:
    settings = load_settings(
        overrides={"session": {"secrets": [SECRET]}, "routes": {"check_app": check}}
    )
    return Authorizer.from_settings(settings)


def _fastapi(
    authorizer: Authorizer, tmp_path: Path, *, installed: bool = True, middleware: bool = True
) -> FastAPI:
    app = FastAPI()
    if installed:
        install(app, authorizer=authorizer)
    if middleware:
        app.add_middleware(AuthzMiddleware, authorizer=authorizer)

    @app.get("/api/chats")
    async def chats(user: Annotated[Principal, Depends(require("chat:list"))]) -> str:
        return user.user_id

    @app.get("/api/assistants/{assistant_id}")
    async def read(user: Annotated[Principal, Depends(require("assistant:update"))]) -> str:
        return user.user_id

    @app.get("/healthz")
    async def healthz() -> str:
        return "ok"

    (tmp_path / "static").mkdir(exist_ok=True)
    app.router.routes.append(Mount("/static", StaticFiles(directory=tmp_path / "static")))
    return app


def _messages(findings: list[Any]) -> list[str]:
    return [f.message for f in findings]


def test_the_check_lists_fastapi_drift(tmp_path: Path) -> None:
    authorizer = _authorizer()
    messages = _messages(check_app(_fastapi(authorizer, tmp_path), authorizer.core))
    assert len(messages) == 7, messages
    assert any("GET /healthz is not in the route table" in m for m in messages)
    assert any("GET /openapi.json is not in the route table" in m for m in messages)
    assert any("* /static/{path:path} is not in the route table" in m for m in messages)
    [mismatch] = [m for m in messages if MISMATCH in m]
    assert "route 'read': GET /api/assistants/{assistant_id}" in mismatch
    assert DECLARED_AS_READ in mismatch
    # FastAPI's /docs, /docs/oauth2-redirect and /redoc too: routes like any other.
    assert sum("/docs" in m or "/redoc" in m for m in messages) == 3
    assert not any("/api/chats" in m for m in messages)


async def _lifespan(app: Any) -> list[dict[str, Any]]:
    """Drive the ASGI lifespan: startup, then shutdown; what the app sent back."""
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    try:
        await app(scope, receive, send)
    except ConfigurationError as exc:
        sent.append({"type": "raised", "message": str(exc)})
    return sent


@pytest.mark.parametrize("middleware", [True, False])
def test_fastapi_warns_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, middleware: bool
) -> None:
    app = _fastapi(_authorizer(), tmp_path, middleware=middleware)
    with caplog.at_level(logging.WARNING, logger="illumichat_authz"):
        sent = asyncio.run(_lifespan(app))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    logged = [r.getMessage() for r in caplog.records if "route check" in r.getMessage()]
    assert any(MISMATCH in m for m in logged)
    # Without the middleware only routes that use our dependencies are ours to check.
    assert any("GET /healthz" in m for m in logged) is middleware
    assert len(logged) == (7 if middleware else 1)  # once, not once per checker


def test_fastapi_check_app_error_refuses_to_start_on_uvicorn(tmp_path: Path) -> None:
    app = _fastapi(_authorizer("error"), tmp_path, middleware=False)
    with pytest.raises(RuntimeError), serve_asgi(app):
        pass  # never reached: the lifespan failed, uvicorn does not listen
    sent = asyncio.run(_lifespan(app))
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert MISMATCH in sent[0]["message"]


def test_forgetting_install_behind_the_middleware_fails_at_start_up(tmp_path: Path) -> None:
    authorizer = _authorizer()
    app = _fastapi(authorizer, tmp_path, installed=False)

    @app.patch("/v2/bots/{assistant_id}")
    async def update(
        user: Annotated[Principal, Depends(require("assistant:update", resource="assistant_id"))],
    ) -> str:
        return user.user_id

    sent = asyncio.run(_lifespan(app))
    assert sent[-1]["type"] == "raised"
    assert (
        "route 'update': its dependency needs install(app, authorizer=...)" in sent[-1]["message"]
    )


def test_forgetting_install_without_the_middleware_is_found_by_policy_check(
    tmp_path: Path,
) -> None:
    authorizer = _authorizer()
    app = _fastapi(authorizer, tmp_path, installed=False, middleware=False)
    findings = check_app(app, authorizer.core)
    missing = [f for f in findings if "install(app" in f.message]
    assert [f.severity for f in missing] == ["error", "error"]  # both routes' require()


FASTAPI_MODULE = """
from typing import Annotated
from fastapi import Depends, FastAPI
from illumichat_authz.integrations.fastapi import install, require
from illumichat_authz import Authorizer, load_settings

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
install(app, authorizer=Authorizer.from_settings(load_settings()))

@app.get("/api/assistants/{assistant_id}")
async def read(user: Annotated[object, Depends(require("assistant:update"))]) -> str:
    return ""

@app.get("/internal/stats")
async def stats(user: Annotated[object, Depends(require("chat:list"))]) -> str:
    return ""
"""
FLASK_MODULE = """
import flask
from illumichat_authz.integrations.flask import IllumiChatAuthz
from illumichat_authz import Authorizer, load_settings

app = flask.Flask(__name__)
authz = IllumiChatAuthz(app, authorizer=Authorizer.from_settings(load_settings()))

@app.get("/api/assistants/<assistant_id>")
@authz.require("assistant:update")
def read(assistant_id):
    return ""

@app.get("/healthz")
def healthz():
    return "ok"
"""


@pytest.mark.parametrize(
    ("module", "source", "unclassified"),
    [
        ("drift_fastapi_app", FASTAPI_MODULE, "GET /internal/stats"),
        ("drift_flask_app", FLASK_MODULE, "GET /healthz"),
    ],
)
def test_policy_check_app_lists_the_drift(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    module: str,
    source: str,
    unclassified: str,
) -> None:
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["policy", "check", "--app", f"{module}:app"]) == 0  # warnings only
    out = capsys.readouterr().out
    assert "warning: " in out
    assert MISMATCH in out
    assert DECLARED_AS_READ in out
    assert f"{unclassified} is not in the route table" in out
    (tmp_path / "strict.toml").write_text('[routes]\ncheck_app = "error"\n', encoding="utf-8")
    assert main(["policy", "check", "--config", "strict.toml", "--app", f"{module}:app"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["policy", "check", "--app", f"{module}:nope"]) == 2
    assert "has no attribute 'nope'" in capsys.readouterr().err


def _flask(authorizer: Authorizer, ran: list[str]) -> flask.Flask:
    app = flask.Flask(__name__)
    authz = IllumiChatAuthz(app, authorizer=authorizer)

    @app.get("/api/chats")
    @authz.require("chat:list")
    def chats() -> str:
        ran.append("chats")
        return "ok"

    @app.get("/api/assistants/<assistant_id>")
    @authz.require("assistant:update")
    def read(assistant_id: str) -> str:
        ran.append("read")
        return assistant_id

    @app.get("/healthz")
    def healthz() -> str:
        ran.append("healthz")
        return "ok"

    return app


def test_flask_error_mode_refuses_every_request_from_the_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    client = _flask(_authorizer("error"), ran).test_client()
    with caplog.at_level(logging.ERROR, logger="illumichat_authz"):
        for path in ("/api/widget/a1/config", "/api/chats", "/healthz"):
            response = client.get(path)
            assert response.status_code == 500
            assert response.get_json(force=True)["reason"] == "internal_error"
    assert ran == []
    logged = caplog.records[0].getMessage()
    assert MISMATCH in logged
    assert "GET /static/{filename:path} is not in the route table" in logged


def test_flask_warn_mode_logs_once_and_serves(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []
    client = _flask(_authorizer(), ran).test_client()
    with caplog.at_level(logging.WARNING, logger="illumichat_authz"):
        assert client.get("/api/widget/a1/config").status_code == 404  # public, no view
        assert client.get("/api/widget/a1/config").status_code == 404
    logged = [r.getMessage() for r in caplog.records if "route check" in r.getMessage()]
    assert len(logged) == 3  # the mismatch, /healthz and /static: once
    assert ran == []


DRF_MISMATCH = "requires 'assistant:update', but"


def test_django_warns_at_start_up_and_policy_check_lists_the_drift(tmp_path: Path) -> None:
    root = make_project(tmp_path, "")
    result = get(root, "/api/assistants/a1")
    assert result["/api/assistants/a1"][0] == 401
    logs = [m for m in result["logs"] if "route check" in m]
    assert any(DRF_MISMATCH in m and "view mysite.urls.Assistant" in m for m in logs)
    assert any("* /api/unlisted is not in the route table" in m for m in logs)
    assert any("* /admin/ is not in the route table" in m for m in logs)
    done = policy_check(root, "mysite.urls")
    assert done.returncode == 0, done.stderr
    assert DRF_MISMATCH in done.stdout
    assert DECLARED_AS_READ in done.stdout
    assert "* /healthz/ is not in the route table" in done.stdout


def test_django_check_app_error_refuses_to_start(tmp_path: Path) -> None:
    root = make_project(tmp_path, '[routes]\ncheck_app = "error"\n')
    result = get(root, "/healthz/")
    assert result["error"].startswith("ConfigurationError: route check of the Django URLconf")
    assert DRF_MISMATCH in result["error"]
    assert result["ran"] == []
    done = policy_check(root, "mysite.urls")
    assert done.returncode == 1
    assert "FAILED" in done.stdout


def test_the_wsgi_middleware_checks_the_flask_app_it_wraps() -> None:
    from illumichat_authz.integrations.wsgi import AuthzWSGIMiddleware

    app = flask.Flask(__name__)
    app.add_url_rule("/healthz", "healthz", lambda: "ok")
    with pytest.raises(ConfigurationError, match=r"GET /healthz is not in the route table"):
        AuthzWSGIMiddleware(app.wsgi_app, authorizer=_authorizer("error"))
    with pytest.raises(ConfigurationError, match=r"GET /healthz is not in the route table"):
        AuthzWSGIMiddleware(app, authorizer=_authorizer("error"))
    AuthzWSGIMiddleware(app, authorizer=_authorizer("off"))  # not looked at


def test_framework_path_syntax_is_read_in_the_tables_terms(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import Response
    from starlette.routing import Route

    from illumichat_authz.integrations.route_check import check_routes, flask_routes

    authorizer = _authorizer()
    (tmp_path / "host.toml").write_text(
        (Path(__file__).resolve().parents[2] / "examples/host-routes/flask.toml").read_text(),
        encoding="utf-8",
    )
    settings = load_settings(overrides={"policies": {"host_routes": [str(tmp_path / "host.toml")]}})
    table = Authorizer.from_settings(settings).core.routes

    app = flask.Flask(__name__)  # its /static/<path:filename> is the recipe's wildcard
    for rule in ("/api/chats/<int:chat>", "/api/widget/<a>/config", "/api/chats/<c>/x"):
        app.add_url_rule(rule, rule, lambda **_: "")
    found = _messages(check_routes(table, flask_routes(app)))
    assert found == [
        "endpoint '/api/chats/<c>/x': GET /api/chats/{c}/x is not in the route table: it is "
        "denied as undeclared_route; declare it in a host routes file ([policies] host_routes)"
    ]

    async def endpoint(request: object) -> Response:
        return Response()

    starlette = Starlette(
        routes=[
            Route("/api/chats/{chat:int}", endpoint),
            Route("/api/widget/tickets/create", endpoint, methods=["POST"]),
            Route("/api/widget/{a}.json", endpoint),  # text beside a parameter
        ],
        middleware=[Middleware(AuthzMiddleware, authorizer=authorizer)],
    )
    found = _messages(check_app(starlette, authorizer.core))
    assert len(found) == 1
    assert "GET /api/widget/{_} is not in the route table" in found[0]
