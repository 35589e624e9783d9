"""What the real-proxy tests share: a recording upstream, the forward-auth server on
uvicorn, and helpers to send requests through the proxy.

Each proxy test (nginx, Caddy, Traefik) starts the real proxy binary with the configuration
documented in docs/forward-auth.md, between a client and these two servers.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import Settings
from illumichat_authz.render import IDENTITY_HEADERS
from illumichat_authz.server import create_app
from illumichat_authz.server.factory import UVICORN_OPTIONS
from illumichat_authz.testing import (
    build_test_authorizer,
    make_test_settings,
    serve_asgi,
    session_cookie,
)
from illumichat_authz.testing.fixtures import FactsBuilder
from illumichat_authz.testing.minting import JwksServer, LocalIssuer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "forward-auth.md"


def seeded_authorizer() -> Iterator[tuple[Authorizer, Settings, LocalIssuer]]:
    """One authorizer per proxy module: alice (admin) and bob (member) of w1, a public and
    a private assistant, Auth0 tokens from a loopback JWKS, 127.0.0.1 trusted as proxy.

    A module fixture in each proxy test (``pytest.fixture(scope="module")(...)``): a
    ``conftest.py`` here would shadow the one ``tests/integrations`` imports from.
    """
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
    yield authz, settings, issuer
    authz.rate_limiter.close()
    jwks.stop()


@contextmanager
def database_authorizer(tmp: Path) -> Iterator[tuple[Authorizer, Settings, LocalIssuer, int]]:
    """``seeded_authorizer``'s facts in a SQLite ``[database]`` (so every decision carries
    ``X-Authz-Revision``), and the revision they were written at."""
    from illumichat_authz.facts import Assistant, Membership
    from illumichat_authz.stores.sql import migrate
    from illumichat_authz.stores.sql.database import Database

    issuer = LocalIssuer(
        issuer="https://illumichat-test.auth0.invalid/", audience="https://api.illumichat.test"
    )
    settings = make_test_settings(
        proxies={"trusted": ["127.0.0.1/32"]},
        database={"url": f"sqlite:///{tmp / 'facts.db'}", "poll_interval_s": 0.05},
    )
    db = Database(settings.database)
    migrate.upgrade(db.engine)
    rev = db.writer.apply(
        upsert=[
            Membership(user="alice", workspace="w1", role="admin"),
            Membership(user="bob", workspace="w1", role="member"),
            Assistant(id="a-pub", workspace="w1", visibility="public", creator="alice"),
        ]
    )
    db.close()
    authz = Authorizer.from_settings(settings)
    try:
        authz.database.feed.check()
        yield authz, settings, issuer, rev
    finally:
        authz.close()


def check_revision(stack: Stack, rev: int, *, to_client: bool) -> None:
    """Read-your-writes through the proxy: the client's ``X-Authz-Revision`` reaches the
    decision (a malformed one is our 400, the upstream never sees the request), and the
    revision the decision saw reaches the upstream (and the client, where the proxy can
    add it to the answer); a client's own copy never reaches the upstream."""
    cookie = {"cookie": stack.session("bob")}
    response, seen = stack.fetch(
        "GET", "/api/assistants/a-pub", headers={**cookie, "x-authz-revision": str(rev)}
    )
    assert response.status_code == 200
    assert [header(request, "x-authz-revision") for request in seen] == [[str(rev)]]
    if to_client:
        assert response.headers.get_list("x-authz-revision") == [str(rev)]
    bad, seen = stack.fetch(
        "GET", "/api/assistants/a-pub", headers={**cookie, "x-authz-revision": "soon"}
    )
    assert (bad.status_code, bad.json()["reason"], seen) == (400, "bad_header", [])
    public, seen = stack.fetch(
        "GET", "/api/widget/a-pub/config", headers={"x-authz-revision": str(rev + 1000)}
    )
    assert public.status_code == 200
    assert [header(request, "x-authz-revision") for request in seen] == [[str(rev)]]


def documented_snippet(language: str) -> str:
    """The fenced ``language`` block of docs/forward-auth.md: CI runs what the docs say."""
    match = re.search(rf"```{language}\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert match, f"docs/forward-auth.md has no {language} block"
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def forward_auth_server(
    authorizer: Authorizer, peers: list[tuple[str, int]] | None = None
) -> AbstractContextManager[str]:
    """``illumichat-authz serve``'s app on a real uvicorn with serve's options, on
    loopback; yields its URL. ``peers`` collects each request's (address, port)."""
    app = create_app(authorizer=authorizer)

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if peers is not None and scope["type"] == "http" and scope.get("client"):
            peers.append(tuple(scope["client"]))
        await app(scope, receive, send)

    return serve_asgi(recording, **UVICORN_OPTIONS)


@contextmanager
def running(
    argv: list[str], port: int, *, name: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a proxy until the test is done; wait until it accepts connections on ``port``.

    ``env``: variables to add to this process's environment for the proxy.
    """
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **env} if env else None,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"{name} exited: {err}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@dataclass
class Stack:
    """A proxy on ``url`` in front of ``upstream``, asking the forward-auth server."""

    url: str
    upstream: Upstream
    settings: Settings
    issuer: LocalIssuer
    #: (address, port) of each request the forward-auth server answered.
    auth_peers: list[tuple[str, int]] = field(default_factory=list)

    def session(self, user: str, *, claims: dict[str, Any] | None = None) -> str:
        return session_cookie(
            user, secret=self.settings.session.secrets[0], workspace="w1", claims=claims
        )

    def fetch(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[httpx.Response, list[dict[str, Any]]]:
        """The response, and the requests the upstream saw meanwhile."""
        before = len(self.upstream.seen)
        with httpx.Client(base_url=self.url, timeout=10) as client:
            response = client.request(method, path, **kwargs)
        return response, self.upstream.seen[before:]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def header(request: dict[str, Any], name: str) -> list[str]:
    """Every value of ``name`` in a request the upstream recorded."""
    return [v for k, v in request["headers"] if k == name]


#: Requests every proxy must stop (method, path, user, status, reason): each class of deny.
DENIALS = [
    ("GET", "/api/assistants/a-pub", None, 401, "authentication_required"),
    ("GET", "/api/assistants/a-priv", "bob", 403, "not_visible"),
    ("DELETE", "/api/workspaces/w1", "alice", 403, "insufficient_role"),
    ("GET", "/api/assistants/nope", "bob", 404, "not_found"),
    ("GET", "/api/assistants/a%2fb", "bob", 400, "non_canonical_path"),
    ("POST", "/api/sms/webhook/a-pub", None, 403, "invalid_signature"),
]


def check_denied(
    stack: Stack, method: str, path: str, who: str | None, status: int, reason: str
) -> None:
    """The proxy answers our problem document and the upstream never sees the request."""
    headers = {"cookie": stack.session(who)} if who else {}
    response, seen = stack.fetch(method, path, headers=headers)
    assert seen == []
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["status"], problem["reason"]) == (status, reason)
    if status == 401:
        assert response.headers.get_list("www-authenticate") == ['Bearer realm="illumichat"']


def check_rate_limited(stack: Stack) -> httpx.Response:
    """Six ticket requests from one client: five reach the upstream, the sixth is a 429
    with its headers (the limit is per client IP, which the proxy forwards)."""
    statuses = []
    last = None
    for _ in range(6):
        last, _seen = stack.fetch(
            "POST", "/api/widget/tickets/create", content=b"{}", headers={"x-request-id": "t-1"}
        )
        statuses.append(last.status_code)
    assert statuses == [200] * 5 + [429]
    assert last is not None
    assert int(last.headers["retry-after"]) >= 1
    assert last.headers["ratelimit-policy"] == '"default";q=5;w=60'
    assert last.json()["reason"] == "rate_limited"
    return last


#: Writes a proxy's configuration under a directory and returns its command line, given
#: (directory, forward-auth port, upstream port, the proxy's own port).
ProxyArgv = Callable[[Path, int, int, int], list[str]]


@contextmanager
def proxied(
    name: str,
    argv: ProxyArgv,
    tmp: Path,
    seeded: tuple[Authorizer, Settings, LocalIssuer],
    *,
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """The proxy ``name`` between a client and the upstream, asking our server."""
    authz, settings, issuer = seeded
    upstream = Upstream()
    up_port = upstream.start()
    port = free_port()
    peers: list[tuple[str, int]] = []
    try:
        with (
            forward_auth_server(authz, peers) as auth_url,
            running(argv(tmp, _port(auth_url), up_port, port), port, name=name, env=env),
        ):
            yield Stack(f"http://127.0.0.1:{port}", upstream, settings, issuer, peers)
    finally:
        upstream.stop()


@contextmanager
def proxied_to_nobody(
    name: str, argv: ProxyArgv, tmp: Path, *, env: dict[str, str] | None = None
) -> Iterator[tuple[str, Upstream]]:
    """The proxy with no forward-auth server listening: its URL and the upstream."""
    upstream = Upstream()
    up_port = upstream.start()
    port = free_port()
    try:
        with running(argv(tmp, free_port(), up_port, port), port, name=name, env=env):
            yield f"http://127.0.0.1:{port}", upstream
    finally:
        upstream.stop()


def check_allowed_with_identity(stack: Stack) -> None:
    """An allowed PATCH reaches the upstream as sent, with our identity headers and not
    the ones the client forged."""
    response, seen = stack.fetch(
        "PATCH",
        "/api/assistants/a-priv?x=1",
        headers={
            "cookie": stack.session("alice"),
            "x-authz-user-id": "mallory",
            "x-authz-role": "owner",
        },
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
    assert header(req, "x-authz-user-id") == ["alice"]
    assert header(req, "x-authz-role") == ["admin"]
    assert header(req, "x-authz-workspace") == ["w1"]
    assert header(req, "x-authz-credential") == ["session"]
    assert header(req, "x-authz-action") == ["assistant:update"]


def check_bearer(stack: Stack) -> None:
    """An Auth0 bearer token, verified against the loopback JWKS, through the proxy."""
    token = stack.issuer.mint("bob", workspace="w1", workspace_claim="workspace")
    response, seen = stack.fetch(
        "GET", "/api/assistants/a-pub", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert header(seen[0], "x-authz-credential") == ["auth0"]
    assert header(seen[0], "x-authz-user-id") == ["bob"]


def check_public_route_names_nobody(stack: Stack) -> dict[str, Any]:
    """A public route reaches the upstream with reason "public" and no identity: neither
    the client's forged headers nor a proxy's unresolved placeholder. Returns what the
    upstream saw, for a proxy's own further checks."""
    response, seen = stack.fetch(
        "GET",
        "/api/widget/a-pub/config",
        headers={"x-authz-user-id": "mallory", "x-authz-role": "owner", "x-authz-revision": "7"},
    )
    assert response.status_code == 200
    req = seen[0]
    assert "7" not in header(req, "x-authz-revision")  # ours (empty: no [database]) or none
    assert header(req, "x-authz-reason") == ["public"]
    for name in (*IDENTITY_HEADERS, "x-authz-revision"):
        values = header(req, name)
        assert "mallory" not in values
        assert "owner" not in values
        assert not any("{http." in value for value in values), (name, values)
    for name in IDENTITY_HEADERS[3:]:  # user, credential, workspace, role
        assert header(req, name) in ([], [""]), name
    return req


#: Claims that make an Auth.js session token take three cookies, as an Auth0 profile with
#: many groups and a long picture URL does.
LARGE_CLAIMS = {
    "picture": "https://cdn.example.com/avatars/" + "p" * 2000,
    "groups": [f"illumichat-team-{i:04d}" for i in range(240)],
}


def check_chunked_session(stack: Stack) -> None:
    """A real three-chunk Auth.js session (about 11 KB of Cookie header) passes the proxy
    and our server, and reaches the upstream whole, with the identity headers."""
    cookie = stack.session("alice", claims=LARGE_CLAIMS)
    names = [pair.split("=", 1)[0] for pair in cookie.split("; ")]
    assert names == [f"authjs.session-token.{i}" for i in range(3)]
    assert 9_000 < len(cookie) < 12_500
    response, seen = stack.fetch(
        "GET",
        "/api/assistants/a-priv",
        headers={"cookie": cookie, "x-authz-user-id": "mallory"},
    )
    assert response.status_code == 200, response.text[:300]
    assert len(seen) == 1
    assert header(seen[0], "cookie") == [cookie]
    assert header(seen[0], "x-authz-user-id") == ["alice"]
    assert header(seen[0], "x-authz-role") == ["admin"]
    assert header(seen[0], "x-authz-credential") == ["session"]
