"""AuthzMiddleware behind a real HTTP/2 server (hypercorn), spoken to over HTTP/2 (h2c).

HTTP/2 has no Host header on the wire (the authority is a pseudo-header), streams bodies
in DATA frames, and is what browsers use through most proxies: the middleware must decide
it exactly as HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import WEBHOOK, cookie_header, twilio_request
from hypercorn.asyncio import serve
from hypercorn.config import Config
from test_asgi_middleware import build_app

from illumichat_authz.authorizer import Authorizer

pytestmark = pytest.mark.interop


@pytest.fixture
def h2_server(authorizer: Authorizer) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(serve(build_app(authorizer, seen), config, shutdown_trigger=stop.wait),),
        daemon=True,
    )
    thread.start()
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                threading.Event().wait(0.05)
        yield f"http://127.0.0.1:{port}", seen
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


def test_decided_the_same_over_http2(h2_server: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = h2_server
    with httpx.Client(base_url=url, http1=False, http2=True, timeout=10) as http:
        ok = http.get("/api/chats", headers=cookie_header("u1"))
        assert ok.http_version == "HTTP/2"
        assert ok.status_code == 200, ok.text
        assert ok.json()["user"] == "u1"

        anon = http.get("/api/chats")
        assert (anon.status_code, anon.json()["reason"]) == (401, "authentication_required")
        assert anon.headers["www-authenticate"] == 'Bearer realm="illumichat"'

        # The webhook body arrives in DATA frames; we read it, verify it, replay it.
        body, headers = twilio_request(url)
        hook = http.post(WEBHOOK, content=body, headers=headers)
        assert hook.status_code == 200, hook.text
        assert seen[-1]["body"] == body
        forged = http.post(WEBHOOK, content=body + b"&x=1", headers=headers)
        assert (forged.status_code, forged.json()["reason"]) == (403, "invalid_signature")
    assert len(seen) == 2  # the allowed GET and the verified webhook, nothing else
    # (Bodies over the limit: 413 is tested over HTTP/1.1. Hypercorn 0.18 tears down an
    # HTTP/2 connection when DATA arrives for a stream the app has already answered.)
