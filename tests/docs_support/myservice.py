"""Stands in for "your service" in the docs' snippets: ``from myservice import build_app``.

tests/test_docs_snippets.py puts it beside each ``<!-- ci: pytest -->`` block it runs.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def list_assistants(request: Request) -> JSONResponse:
    return JSONResponse({"assistants": []})


def build_app() -> Starlette:
    return Starlette(routes=[Route("/api/assistants", list_assistants)])
