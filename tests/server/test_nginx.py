"""A real nginx with auth_request in front of a recording upstream, using the documented config.

The nginx snippet is read from docs/forward-auth.md, so the documentation is what CI runs.
nginx starts as root with a generated config under tmp_path (``daemon off``, pid and logs in
tmp_path) and is stopped in the fixture's teardown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import Settings
from illumichat_authz.server import create_app
from illumichat_authz.testing import build_test_authorizer, make_test_settings
from illumichat_authz.testing.fixtures import FactsBuilder
from illumichat_authz.testing.minting import JwksServer, LocalIssuer

pytestmark = pytest.mark.interop

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "forward-auth.md"
Mint = Callable[..., str]


def documented_snippet() -> str:
    match = re.search(r"```nginx\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert match, "docs/forward-auth.md has no nginx block"
    return match.group(1)


@dataclass
class Upstream:
    """A stdlib HTTP server that records every request that reaches it."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None

    def start(self) -> int:
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": [(k.lower(), v) for k, v in self.headers.items()],
                        "body": body,
                    }
                )
                out = b'{"upstream": "ok"}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PATCH = do_DELETE = do_HEAD = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return int(self.httpd.server_address[1])

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def header(self, index: int, name: str) -> list[str]:
        return [v for k, v in self.seen[index]["headers"] if k == name]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def module_authorizer() -> Iterator[tuple[Authorizer, FactsBuilder, Settings, LocalIssuer]]:
    issuer = LocalIssuer(
        issuer="https://illumichat-test.auth0.invalid/", audience="https://api.illumichat.test"
    )
    jwks = JwksServer(issuer.jwks()).start()
    settings = make_test_settings(jwks_url=jwks.url, proxies={"trusted": ["127.0.0.1/32"]})
    facts = FactsBuilder()
    (
        facts.workspace("w1")
        .member("alice", role="admin")
        .member("bob", role="member")
        .assistant("a-pub", visibility="public", creator="alice")
        .assistant("a-priv", visibility="private", creator="alice")
    )
    authz = build_test_authorizer(settings, facts=facts.facts)
    yield authz, facts, settings, issuer
    authz.rate_limiter.close()
    jwks.stop()


@dataclass
class Stack:
    url: str
    upstream: Upstream
    settings: Settings
    issuer: LocalIssuer
    error_log: Path


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    module_authorizer: tuple[Authorizer, FactsBuilder, Settings, LocalIssuer],
) -> Iterator[Stack]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    authz, _facts, settings, issuer = module_authorizer
    tmp = tmp_path_factory.mktemp("nginx")
    upstream = Upstream()
    up_port = upstream.start()

    server = uvicorn.Server(
        uvicorn.Config(create_app(authorizer=authz), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    auth_port = server.servers[0].sockets[0].getsockname()[1]

    port = free_port()
    snippet = (
        documented_snippet()
        .replace("127.0.0.1:9180", f"127.0.0.1:{auth_port}")
        .replace("127.0.0.1:8000", f"127.0.0.1:{up_port}")
        .replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{port}")
    )
    temp = {name: tmp / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
{"user root;" if os.geteuid() == 0 else ""}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
{snippet}
}}
"""
    )
    proc = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"nginx exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield Stack(f"http://127.0.0.1:{port}", upstream, settings, issuer, tmp / "error.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        server.should_exit = True
        thread.join(timeout=10)
        upstream.stop()


def session(stack: Stack, user: str) -> str:
    from illumichat_authz.testing import session_cookie

    return session_cookie(user, secret=stack.settings.session.secrets[0], workspace="w1")


def fetch(
    stack: Stack, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    before = len(stack.upstream.seen)
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        response = client.request(method, path, **kwargs)
    return response, stack.upstream.seen[before:]


def test_allowed_request_reaches_upstream_with_identity(stack: Stack) -> None:
    response, seen = fetch(
        stack,
        "PATCH",
        "/api/assistants/a-priv?x=1",
        headers={"cookie": session(stack, "alice"), "x-authz-user-id": "mallory"},
        content=b'{"name": "new"}',
    )
    assert response.status_code == 200
    assert response.json() == {"upstream": "ok"}
    assert len(seen) == 1
    req = seen[0]
    assert (req["method"], req["path"], req["body"]) == (
        "PATCH",
        "/api/assistants/a-priv?x=1",
        b'{"name": "new"}',
    )
    headers = dict(req["headers"])
    assert [v for k, v in req["headers"] if k == "x-authz-user-id"] == ["alice"]
    assert headers["x-authz-workspace"] == "w1"
    assert headers["x-authz-role"] == "admin"
    assert headers["x-authz-credential"] == "session"
    assert headers["x-authz-action"] == "assistant:update"


def test_bearer_token_through_nginx(stack: Stack) -> None:
    token = stack.issuer.mint("bob", workspace="w1", workspace_claim="workspace")
    response, seen = fetch(
        stack, "GET", "/api/assistants/a-pub", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert dict(seen[0]["headers"])["x-authz-credential"] == "auth0"


def test_public_route_strips_spoofed_identity(stack: Stack) -> None:
    response, seen = fetch(
        stack,
        "GET",
        "/api/widget/a-pub/config",
        headers={"x-authz-user-id": "mallory", "x-authz-role": "owner"},
    )
    assert response.status_code == 200
    headers = dict(seen[0]["headers"])
    assert "x-authz-user-id" not in headers
    assert "x-authz-role" not in headers
    assert headers["x-authz-reason"] == "public"


@pytest.mark.parametrize(
    ("method", "path", "who", "status", "reason"),
    [
        ("GET", "/api/assistants/a-pub", None, 401, "authentication_required"),
        ("GET", "/api/assistants/a-priv", "bob", 403, "not_visible"),
        ("DELETE", "/api/workspaces/w1", "alice", 403, "insufficient_role"),
        ("GET", "/api/assistants/nope", "bob", 404, "not_found"),
        ("GET", "/api/assistants/a%2fb", "bob", 400, "non_canonical_path"),
        ("POST", "/api/sms/webhook/a-pub", None, 403, "invalid_signature"),
    ],
)
def test_denied_requests_never_reach_upstream(
    stack: Stack, method: str, path: str, who: str | None, status: int, reason: str
) -> None:
    headers = {"cookie": session(stack, who)} if who else {}
    response, seen = fetch(stack, method, path, headers=headers)
    assert seen == []
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["status"], problem["reason"]) == (status, reason)
    if status == 401:
        assert response.headers.get_list("www-authenticate") == ['Bearer realm="illumichat"']


def test_rate_limit_429_propagates_with_headers(stack: Stack) -> None:
    # The limit is per client IP: nginx sends $remote_addr and the auth server trusts it.
    statuses = []
    last = None
    for _ in range(6):
        last, _seen = fetch(stack, "POST", "/api/widget/tickets/create", content=b"{}")
        statuses.append(last.status_code)
    assert statuses == [200] * 5 + [429]
    assert last is not None
    assert int(last.headers["retry-after"]) >= 1
    assert last.headers["ratelimit-policy"] == '"default";q=5;w=60'
    assert last.json()["reason"] == "rate_limited"
    assert len(stack.upstream.seen) >= 5


def test_auth_server_down_fails_closed(tmp_path: Path) -> None:
    if NGINX is None:
        pytest.skip("nginx is not installed")
    upstream = Upstream()
    up_port = upstream.start()
    port = free_port()
    dead = free_port()  # nothing listens here
    snippet = (
        documented_snippet()
        .replace("127.0.0.1:9180", f"127.0.0.1:{dead}")
        .replace("127.0.0.1:8000", f"127.0.0.1:{up_port}")
        .replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{port}")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
{"user root;" if os.geteuid() == 0 else ""}
pid {tmp_path}/nginx.pid;
events {{ worker_connections 16; }}
http {{ access_log off; client_body_temp_path {tmp_path}/b; proxy_temp_path {tmp_path}/p;
fastcgi_temp_path {tmp_path}/f; uwsgi_temp_path {tmp_path}/u; scgi_temp_path {tmp_path}/s;
{snippet} }}"""
    )
    proc = subprocess.Popen(
        [
            NGINX,
            "-p",
            str(tmp_path),
            "-c",
            str(conf),
            "-e",
            str(tmp_path / "e.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline
                assert proc.poll() is None
                time.sleep(0.05)
        response = httpx.get(f"http://127.0.0.1:{port}/api/widget/a1/config", timeout=10)
        assert response.status_code == 503
        assert json.loads(response.text)["reason"] == "auth_unavailable"
        assert upstream.seen == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        upstream.stop()
