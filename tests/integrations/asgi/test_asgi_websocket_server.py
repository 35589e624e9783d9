"""Websocket handshakes through a real uvicorn (both of its websocket implementations), with
the real ``websockets`` client.

The handshake is decided like a GET. A denial is our problem document as the handshake's
HTTP response (the server offers the ASGI "websocket.http.response" extension), never an
open socket.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import cookie_header
from test_asgi_middleware import build_app
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.testing import serve_asgi

pytestmark = [
    pytest.mark.interop,
    pytest.mark.parametrize("implementation", ["websockets-sansio", "wsproto"]),
]


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/api/chats"


def test_allowed_handshake_reaches_the_app_with_the_principal(
    authorizer: Authorizer, implementation: str
) -> None:
    seen: list[dict[str, Any]] = []
    with (
        serve_asgi(build_app(authorizer, seen), ws=implementation) as url,
        connect(ws_url(url), additional_headers=cookie_header("u1"), open_timeout=10) as ws,
    ):
        assert ws.recv(timeout=10) == "u1"


def test_denied_handshake_is_our_problem_document(
    authorizer: Authorizer, implementation: str
) -> None:
    with (
        serve_asgi(build_app(authorizer, []), ws=implementation) as url,
        pytest.raises(InvalidStatus) as refused,
    ):
        connect(ws_url(url), open_timeout=10)
    response = refused.value.response
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == 'Bearer realm="illumichat"'
    assert json.loads(response.body)["reason"] == "authentication_required"
