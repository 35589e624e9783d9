"""Fuzzing the ASGI and WSGI middlewares with hostile requests: the test kit's strategies
plus raw header bytes no client library would send, delivered byte for byte by the kit's
``call_asgi``/``call_wsgi``.

Whatever is drawn: exactly one response; a status the docs list, never a 500 of ours; the
app runs only for requests the core allowed, and with no valid credential only on public
routes or CORS preflights.
"""

from __future__ import annotations

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
from illumichat_authz.testing import Response, call_asgi_sync, call_wsgi
from illumichat_authz.testing.strategies import requests

AUTHORIZER: Authorizer = make_authorizer()
# Every status a denial of these requests may carry; 500 and 503 are not among them.
DENY_STATUSES = {400, 401, 403, 404, 413, 429}
ANONYMOUS_ALLOWS = {Reason.PUBLIC, Reason.PREFLIGHT}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_NAMES = st.one_of(
    st.sampled_from(["host", "cookie", "authorization", "x-workspace-id", "content-length"]),
    st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
)
_VALUES = st.one_of(
    st.sampled_from(["", " ", "\t", "a\r\nb", "\x00", "\xff\xfe", "Bearer", "1" * 30]),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)
_HOSTILE = st.lists(st.tuples(_NAMES, _VALUES), max_size=3)


def hostile(request: RequestFacts, extra: list[tuple[str, str]]) -> RequestFacts:
    # Added as they are: no lower-casing, no checks (that is the middleware's job).
    return request._replace(headers=(*request.headers, *extra))


def check(response: Response, reached: list[Decision]) -> None:
    if not reached:
        assert response.status_code in DENY_STATUSES, response
        assert response.headers["content-type"] == "application/problem+json"
        return
    (decision,) = reached
    assert (response.status_code, response.content) == (200, b"app")
    assert decision.allowed
    # The strategies' credentials are all malformed: nothing authenticates.
    assert decision.principal is None
    assert decision.reason in ANONYMOUS_ALLOWS, decision


@FUZZ
@given(request=requests(), extra=_HOSTILE, version=st.sampled_from(["1.1", "1.0", "2"]))
def test_asgi_middleware_never_fails_and_never_lets_a_stranger_in(
    request: RequestFacts, extra: list[tuple[str, str]], version: str
) -> None:
    reached: list[Decision] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["auth"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    middleware = AuthzMiddleware(app, authorizer=AUTHORIZER)
    check(call_asgi_sync(middleware, hostile(request, extra), http_version=version), reached)


@FUZZ
@given(request=requests(), extra=_HOSTILE)
def test_wsgi_middleware_never_fails_and_never_lets_a_stranger_in(
    request: RequestFacts, extra: list[tuple[str, str]]
) -> None:
    reached: list[Decision] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        reached.append(environ[DECISION_KEY])
        start_response("200 OK", [])
        return [b"app"]

    middleware = AuthzWSGIMiddleware(app, authorizer=AUTHORIZER)
    check(call_wsgi(middleware, hostile(request, extra)), reached)
