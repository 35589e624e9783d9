"""AuthzWSGIMiddleware through direct PEP 3333 calls and a real wsgiref server."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import httpx
import pytest
from conftest import WEBHOOK, Exploding, cookie_header, twilio_request
from wsgi_servers import serve_wsgi

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.integrations.wsgi import (
    DECISION_KEY,
    PRINCIPAL_KEY,
    AuthzWSGIMiddleware,
    facts_from_environ,
)

PROBLEM = "application/problem+json"


class Recorder:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        principal = environ[PRINCIPAL_KEY]
        decision = environ[DECISION_KEY]
        self.seen.append({"body": body, "principal": principal})
        out = json.dumps(
            {"user": principal.user_id if principal else None, "reason": decision.reason.value}
        ).encode()
        start_response("200 OK", [("content-type", "application/json")])
        return [out]


def environ_for(
    method: str = "GET",
    path: str = "/api/chats",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    **extra: Any,
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
    }
    setup_testing_defaults(env)
    env["wsgi.input"] = io.BytesIO(body)
    if body:
        env["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        env[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    env.update(extra)
    return env


def call(app: Any, env: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        got["status"] = int(status.split()[0])
        got["headers"] = {k.lower(): v for k, v in headers}

    body = b"".join(app(env, start_response))
    return got["status"], got["headers"], body


@pytest.fixture
def app() -> Recorder:
    return Recorder()


@pytest.fixture
def mw(app: Recorder, authorizer: Authorizer) -> AuthzWSGIMiddleware:
    return AuthzWSGIMiddleware(app, authorizer=authorizer)


def problem(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"] == PROBLEM
    doc: dict[str, Any] = json.loads(body)
    assert doc["status"] == status
    assert doc["request_id"] == headers["x-request-id"]
    return doc


def test_allow_sets_principal_and_decision(mw: AuthzWSGIMiddleware, app: Recorder) -> None:
    status, _, body = call(mw, environ_for(headers=cookie_header("u1")))
    assert status == 200
    assert json.loads(body) == {"user": "u1", "reason": "allowed"}
    assert app.seen[0]["principal"].workspace == "w1"


def test_401_403(mw: AuthzWSGIMiddleware, app: Recorder) -> None:
    status, headers, body = call(mw, environ_for())
    assert status == 401
    assert problem(status, headers, body)["reason"] == "authentication_required"
    assert headers["www-authenticate"] == 'Bearer realm="illumichat"'
    status, headers, body = call(mw, environ_for("POST", "/api/assistants", cookie_header()))
    assert status == 403
    assert problem(status, headers, body)["reason"] == "insufficient_role"
    assert app.seen == []


def test_429_on_ticket_endpoint(mw: AuthzWSGIMiddleware) -> None:
    results = [call(mw, environ_for("POST", "/api/widget/tickets/create")) for _ in range(6)]
    assert [r[0] for r in results] == [200] * 5 + [429]
    assert int(results[-1][1]["retry-after"]) > 0


def test_webhook_body_replayed(mw: AuthzWSGIMiddleware, app: Recorder) -> None:
    body, headers = twilio_request("http://127.0.0.1")
    status, _, out = call(mw, environ_for("POST", WEBHOOK, headers, body))
    assert status == 200, out
    assert app.seen[0]["body"] == body


def test_413_without_reading(mw: AuthzWSGIMiddleware, app: Recorder) -> None:
    env = environ_for("POST", WEBHOOK, {"content-length": "10000000"})
    assert call(mw, env)[0] == 413
    assert env["wsgi.input"].tell() == 0
    assert app.seen == []


def test_exception_is_500(app: Recorder) -> None:
    mw = AuthzWSGIMiddleware(app, authorizer=Exploding())
    status, headers, body = call(mw, environ_for(headers={"x-request-id": "r-1"}))
    assert status == 500
    assert problem(status, headers, body)["request_id"] == "r-1"
    assert b"boom" not in body
    assert app.seen == []


def test_non_canonical_and_missing_host(mw: AuthzWSGIMiddleware, app: Recorder) -> None:
    env = environ_for(path="/api/widget/a/b/config", REQUEST_URI="/api/widget/a%2Fb/config?x=1")
    assert call(mw, env)[0] == 400
    # wsgiref sets no REQUEST_URI: PATH_INFO is quoted again, '..' stays a dot segment.
    assert call(mw, environ_for(path="/api/widget/../chats"))[0] == 400
    no_host = environ_for(path="/api/widget/a1/config")
    no_host.pop("HTTP_HOST")
    status, headers, body = call(mw, no_host)
    assert status == 400
    assert problem(status, headers, body)["reason"] == "bad_header"
    assert app.seen == []


def test_path_info_latin1_roundtrip() -> None:
    # PEP 3333: "é" arrives as the two UTF-8 bytes, each a latin-1 character.
    env = environ_for(path="/api/widget/caf\u00c3\u00a9/config", QUERY_STRING="a=1")
    facts = facts_from_environ(env)
    assert facts.path == "/api/widget/caf%C3%A9/config"
    assert facts.query == "a=1"
    assert facts.peer == "127.0.0.1"


# --- a real server ---------------------------------------------------------------------


@pytest.fixture
def live_server(mw: AuthzWSGIMiddleware) -> Iterator[str]:
    with serve_wsgi(mw, "wsgiref") as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.interop
def test_real_wsgiref_server(live_server: str, app: Recorder) -> None:
    with httpx.Client(base_url=live_server) as http:
        ok = http.get("/api/chats", headers=cookie_header("u1"))
        assert ok.json() == {"user": "u1", "reason": "allowed"}
        denied = http.get("/api/chats")
        assert denied.status_code == 401
        assert denied.headers["content-type"] == PROBLEM
        assert http.post("/api/assistants", headers=cookie_header()).status_code == 403
        body, headers = twilio_request(live_server)
        hook = http.post(WEBHOOK, content=body, headers=headers)
        assert hook.status_code == 200, hook.text
        assert app.seen[-1]["body"] == body
        assert http.post(WEBHOOK, content=b"x" * 70_000).status_code == 413
        assert http.get("/api/widget/a%2F..%2Fb/config").status_code == 400
        codes = [http.post("/api/widget/tickets/create").status_code for _ in range(6)]
        assert codes[-1] == 429


def test_a_body_that_cannot_be_read_is_400_not_an_outage(
    mw: AuthzWSGIMiddleware, app: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # A client that hangs up mid-body: its request is incomplete, nothing of ours is down.
    class HungUp:
        def read(self, *args: Any) -> bytes:
            raise ConnectionResetError("client went away")

    body, headers = twilio_request("http://127.0.0.1")
    env = environ_for("POST", WEBHOOK, headers, body)
    env["wsgi.input"] = HungUp()
    status, headers_out, out = call(mw, env)
    assert status == 400
    assert problem(status, headers_out, out)["reason"] == "malformed_request"
    assert app.seen == []
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
