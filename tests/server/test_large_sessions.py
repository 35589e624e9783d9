"""Large Auth.js sessions (chunked cookies, 12-40 KB of Cookie header) on uvicorn itself: the
ASGI middleware behind uvicorn's two HTTP parsers, and ``serve``'s uvicorn options when the
header arrives in pieces, as it does over a real network. The proxies' part is in
test_nginx.py, test_traefik.py and test_caddy.py (``check_chunked_session``)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import illumichat_authz
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


GUNICORN_APP = f"""
    import json
    from illumichat_authz.authorizer import Authorizer
    from illumichat_authz.config import load_settings
    from illumichat_authz.facts import Assistant, InMemoryFacts, Membership
    from illumichat_authz.integrations.wsgi import AuthzWSGIMiddleware
    from illumichat_authz.vocab import Role, Visibility

    facts = InMemoryFacts(
        memberships=[Membership(user="alice", workspace="w1", role=Role.ADMIN)],
        assistants=[
            Assistant(id="a-priv", workspace="w1", visibility=Visibility.PRIVATE, creator="alice")
        ],
    )
    settings = load_settings(overrides={{"session": {{"secrets": [{SECRET!r}]}}}})

    def assistant(environ, start_response):
        user = environ["illumichat_authz.principal"].user_id
        start_response("200 OK", [("content-type", "application/json")])
        return [json.dumps({{"ran_for": user}}).encode()]

    app = AuthzWSGIMiddleware(assistant, authorizer=Authorizer.from_settings(settings, facts=facts))
"""


@pytest.mark.parametrize(
    ("flags", "status"),
    [([], 431), (["--limit-request-field_size", "65536"], 200)],
    ids=["gunicorn-default", "documented-flag"],
)
def test_three_chunk_session_through_the_wsgi_middleware_on_gunicorn(
    tmp_path: Path, flags: list[str], status: int
) -> None:
    # gunicorn refuses a header line over 8190 bytes (limit_request_field_size) before any
    # app runs: docs/integrations.md gives the flag that takes a chunked session.
    (tmp_path / "wsgi_app.py").write_text(textwrap.dedent(GUNICORN_APP))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = str(Path(illumichat_authz.__file__).resolve().parents[1])
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    proc = subprocess.Popen(
        [*argv, *flags, "wsgi_app:app"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": source},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/api/assistants/a-priv",
                    headers={"cookie": chunked_session(3)},
                    timeout=10,
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        if proc.stderr:
            proc.stderr.close()
    assert response.status_code == status
    if status == 200:
        assert response.json() == {"ran_for": "alice"}
