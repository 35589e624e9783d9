"""Stands in for "your service" in the docs' snippets: ``from myservice import build_app``.

tests/docs/test_docs_snippets.py puts it beside each ``<!-- ci: pytest -->`` block it runs.
"""

from __future__ import annotations

from typing import Any

import flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from illumichat_authz.integrations.flask import IllumiChatAuthz

authz = IllumiChatAuthz()


async def list_assistants(request: Request) -> JSONResponse:
    return JSONResponse({"assistants": []})


def build_app() -> Starlette:
    return Starlette(routes=[Route("/api/assistants", list_assistants)])


def create_app(config: dict[str, Any]) -> flask.Flask:
    """The Flask app factory of the docs: ``authz.init_app(app)`` reads ``app.config``."""
    app = flask.Flask("myservice")
    app.config.update(config)
    authz.init_app(app)

    @app.get("/api/chats")
    @authz.require("chat:list")
    def chats() -> dict[str, Any]:
        return {"user": flask.g.principal.user_id}

    return app
