"""Fuzzing the ASGI and WSGI middlewares with hostile requests, through the test kit's own
strategies plus raw header bytes no client library would send.

Whatever is drawn: exactly one response; a status the docs list, never a 500 of ours; the
app runs only for requests the core allowed, and with no valid credential only on public
routes or CORS preflights.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

from conftest import make_authorizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.decision import Decision
from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.integrations.wsgi import DECISION_KEY, AuthzWSGIMiddleware
from illumichat_authz.reasons import Reason
from illumichat_authz.request import RequestFacts
from illumichat_authz.testing.strategies import requests

AUTHORIZER: Authorizer = make_authorizer()
# Every status a denial may carry (docs/architecture.md); 500 and 503 are not expected here.
DENY_STATUSES = {400, 401, 403, 404, 413, 429}
ANONYMOUS_ALLOWS = {Reason.PUBLIC, Reason.PREFLIGHT}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_RAW_NAMES = st.one_of(
    st.sampled_from([b"host", b"cookie", b"authorization", b"x-workspace-id", b"content-length"]),
    st.binary(min_size=0, max_size=12),
)
_RAW_VALUES = st.one_of(
    st.sampled_from([b"", b" ", b"\t", b"a\r\nb", b"\x00", b"\xff\xfe", b"Bearer", b"1" * 30]),
    st.binary(max_size=40),
)
_RAW_HEADERS = st.lists(st.tuples(_RAW_NAMES, _RAW_VALUES), max_size=3)


def _latin1(text: str) -> bytes:
    return text.encode("latin-1", "replace")


def asgi_scope(
    request: RequestFacts, raw: list[tuple[bytes, bytes]], version: str
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": version,
        "method": request.method,
        "scheme": "https",
        "path": "/",
        "raw_path": _latin1(request.path),
        "query_string": _latin1(request.query),
        "root_path": "",
        "headers": [(_latin1(k), _latin1(v)) for k, v in request.headers] + raw,
        "client": ("203.0.113.20", 4000),
        "server": ("127.0.0.1", 443),
    }


async def run_asgi(scope: dict[str, Any]) -> tuple[list[dict[str, Any]], Decision | None]:
    sent: list[dict[str, Any]] = []
    reached: list[Decision] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["auth"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await AuthzMiddleware(app, authorizer=AUTHORIZER)(scope, receive, send)
    return sent, reached[0] if reached else None


def check(status: int, decision: Decision | None) -> None:
    if decision is None:
        assert status in DENY_STATUSES, status
        return
    assert status == 200
    assert decision.allowed
    # The strategies' credentials are all malformed: nothing authenticates.
    assert decision.principal is None
    assert decision.reason in ANONYMOUS_ALLOWS, decision


@FUZZ
@given(request=requests(), raw=_RAW_HEADERS, version=st.sampled_from(["1.1", "1.0", "2"]))
def test_asgi_middleware_never_fails_and_never_lets_a_stranger_in(
    request: RequestFacts, raw: list[tuple[bytes, bytes]], version: str
) -> None:
    sent, decision = asyncio.run(run_asgi(asgi_scope(request, raw, version)))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    check(starts[0]["status"], decision)


def wsgi_environ(request: RequestFacts, raw: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "REQUEST_URI": request.path + (f"?{request.query}" if request.query else ""),
        "QUERY_STRING": request.query,
        "SERVER_NAME": "api.illumichat.test",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.20",
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
    }
    # PEP 3333: header names as HTTP_<UPPER_WITH_UNDERSCORES>, values as latin-1 text.
    for name, value in [
        *request.headers,
        *((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw),
    ]:
        key = "HTTP_" + name.upper().replace("-", "_")
        env[key] = f"{env[key]},{value}" if key in env else value
    return env


@FUZZ
@given(request=requests(), raw=_RAW_HEADERS)
def test_wsgi_middleware_never_fails_and_never_lets_a_stranger_in(
    request: RequestFacts, raw: list[tuple[bytes, bytes]]
) -> None:
    reached: list[Decision] = []
    statuses: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        reached.append(environ[DECISION_KEY])
        start_response("200 OK", [])
        return [b"app"]

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        statuses.append(status)

    body = b"".join(
        AuthzWSGIMiddleware(app, authorizer=AUTHORIZER)(wsgi_environ(request, raw), start_response)
    )
    assert len(statuses) == 1
    assert body
    check(int(statuses[0].split()[0]), reached[0] if reached else None)
