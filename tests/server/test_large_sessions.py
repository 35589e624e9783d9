"""Large Auth.js sessions (chunked cookies, 12-40 KB of Cookie header) on uvicorn itself: the
ASGI middleware behind uvicorn's two HTTP parsers, and ``serve``'s uvicorn options when the
header arrives in pieces, as it does over a real network. The proxies' part is in
test_nginx.py, test_traefik.py and test_caddy.py (``check_chunked_session``)."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.server import create_app
from illumichat_authz.server.background import BackgroundServer
from illumichat_authz.server.factory import UVICORN_OPTIONS
from illumichat_authz.testing import build_test_authorizer, make_test_settings, session_cookie
from illumichat_authz.testing.fixtures import FactsBuilder
from illumichat_authz.testing.minting import AUTHJS_CHUNK_SIZE

pytestmark = pytest.mark.interop

SECRET = "large-sessions-test-secret-0123456789"


@pytest.fixture(scope="module")
def authz() -> Iterator[Authorizer]:
    settings = make_test_settings(
        jwks_url="http://127.0.0.1:9/.well-known/jwks.json", session={"secrets": [SECRET]}
    )
    facts = FactsBuilder()
    facts.workspace("w1").member("alice", role="admin").assistant(
        "a-priv", visibility="private", creator="alice"
    )
    authorizer = build_test_authorizer(settings, facts=facts.facts)
    yield authorizer
    authorizer.rate_limiter.close()


def chunked_session(chunks: int) -> str:
    """alice's session, padded until Auth.js would set it as ``chunks`` cookies."""
    pad = int(((chunks - 0.5) * AUTHJS_CHUNK_SIZE - 400) * 3 / 4)  # base64url: 4 per 3
    cookie = session_cookie("alice", secret=SECRET, workspace="w1", claims={"pad": "p" * pad})
    assert cookie.count("authjs.session-token.") == chunks, cookie.count("; ")
    return cookie


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_three_chunk_session_through_the_middleware_on_uvicorn(
    authz: Authorizer, http: str
) -> None:
    ran: list[str] = []

    async def assistant(request: Request) -> JSONResponse:
        ran.append(request.scope["user"].user_id)
        return JSONResponse({"ok": True})

    app = AuthzMiddleware(
        Starlette(routes=[Route("/api/assistants/{id}", assistant)]), authorizer=authz
    )
    cookie = chunked_session(3)
    with BackgroundServer(app, http=http, **UVICORN_OPTIONS) as server:
        response = httpx.get(
            f"{server.url}/api/assistants/a-priv", headers={"cookie": cookie}, timeout=10
        )
        denied = httpx.get(f"{server.url}/api/assistants/a-priv", timeout=10)
    assert response.status_code == 200
    assert denied.status_code == 401
    assert ran == ["alice"]


def quiet(sock: socket.socket, seconds: float) -> bool:
    """Nothing to read (no early answer, no close) for ``seconds``."""
    readable, _, _ = select.select([sock], [], [], seconds)
    return not readable


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


def test_serve_takes_a_ten_chunk_session_arriving_in_pieces(authz: Authorizer) -> None:
    # h11 buffers at most 16 KiB of an unfinished header by default and answers 400 past
    # it; on loopback a request arrives whole, so send the first 20 KB alone and see that
    # serve's options wait for the rest.
    cookie = chunked_session(10)
    assert len(cookie) > 36_000
    head = (
        "GET /auth HTTP/1.1\r\nHost: authz\r\nX-Original-Method: GET\r\n"
        f"X-Original-URI: /api/assistants/a-priv\r\nCookie: {cookie}\r\n\r\n"
    ).encode()
    options: dict[str, Any] = {**UVICORN_OPTIONS, "http": "h11"}
    with (
        BackgroundServer(create_app(authorizer=authz), **options) as server,
        socket.create_connection((server.host, server.port), timeout=10) as sock,
    ):
        sock.sendall(head[:20_000])
        assert quiet(sock, 0.3), read_response(sock)[:200]
        sock.sendall(head[20_000:])
        answer = read_response(sock)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 200 OK", answer[:300]
    assert b"x-authz-user-id: alice\r\n" in rest
