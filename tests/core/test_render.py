"""``render_denial``: one RFC 9457 problem document for every adapter.

The body carries ``type``/``title``/``status``/``detail``/``reason`` and never credential
bytes; denials are ``no-store``; a 503 always tells the client when to retry.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import pytest

from illumichat_authz import Authorizer, Decision, InMemoryFacts, Reason, RequestFacts
from illumichat_authz.config import load_settings
from illumichat_authz.credentials.apikeys import issue_api_key
from illumichat_authz.credentials.authjs import encode_session_token
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.reasons import STATUS_OF
from illumichat_authz.render import (
    IDENTITY_HEADERS,
    PROBLEM_CONTENT_TYPE,
    identity_headers,
    render_denial,
)
from illumichat_authz.stores.api_keys import MemoryApiKeyStore
from illumichat_authz.stores.ratelimit import RateLimiter

_LIMITER = RateLimiter()
SECRET = "render-test-secret"
NOW = 1_750_000_000.0


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Authorizer:
    tmp = tmp_path_factory.mktemp("render")
    settings = load_settings(
        overrides={
            "session": {"secrets": [SECRET], "workspace_claim": "ws"},
            "api_keys": {"database": str(tmp / "unused.sqlite")},
        }
    )
    return Authorizer.from_settings(
        settings,
        facts=InMemoryFacts(),
        api_keys=MemoryApiKeyStore(),
        rate_limiter=_LIMITER,
        clock=lambda: NOW,
    )


def problem(decision: Decision, **kw: Any) -> tuple[dict[str, Any], dict[str, str], bytes]:
    rendered = render_denial(decision, **kw)
    assert rendered.status == decision.status
    headers = {k.lower(): v for k, v in rendered.headers}
    assert len(headers) == len(rendered.headers), "a header was sent twice"
    return json.loads(rendered.body), headers, rendered.body


@pytest.mark.parametrize("reason", [r for r in Reason if STATUS_OF[r] != 200])
def test_every_deny_reason_renders_a_problem_document(reason: Reason) -> None:
    decision = Decision.of(reason, "a human message")
    body, headers, raw = problem(decision)
    status = STATUS_OF[reason]
    assert {"type", "title", "status", "detail", "reason"} <= set(body)
    assert body["status"] == status
    assert body["title"] == HTTPStatus(status).phrase
    assert body["detail"] == "a human message"
    assert body["reason"] == reason.value
    assert body["type"].startswith("https://")
    assert body["type"].endswith(reason.value.replace("_", "-"))
    assert headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert headers["content-length"] == str(len(raw))
    assert headers["cache-control"] == "no-store"


def test_a_503_always_has_retry_after() -> None:
    for reason in (Reason.FACTS_UNAVAILABLE, Reason.AUTH_UNAVAILABLE):
        _, headers, _ = problem(Decision.of(reason, "down"))
        assert headers["retry-after"].isdigit()
        assert int(headers["retry-after"]) >= 1


def test_a_429_keeps_its_own_retry_after() -> None:
    decision = Decision.of(
        Reason.RATE_LIMITED,
        "slow down",
        headers=(("Retry-After", "42"), ("RateLimit", '"default";r=0;t=42')),
    )
    body, headers, _ = problem(decision)
    assert headers["retry-after"] == "42"
    assert headers["ratelimit"] == '"default";r=0;t=42'
    assert "Retry-After" in body["action"]


def test_a_503_with_its_own_retry_after_is_not_doubled() -> None:
    decision = Decision.of(Reason.AUTH_UNAVAILABLE, "down", headers=(("Retry-After", "30"),))
    _, headers, _ = problem(decision)
    assert headers["retry-after"] == "30"


def test_the_request_id_is_echoed() -> None:
    body, _, _ = problem(Decision.of(Reason.NOT_FOUND, "gone"), request_id="req-123")
    assert body["request_id"] == "req-123"
    body, _, _ = problem(Decision.of(Reason.NOT_FOUND, "gone"))
    assert "request_id" not in body


def test_a_401_tells_the_client_to_sign_in_again(authz: Authorizer) -> None:
    decision = authz.decide(RequestFacts.build(method="GET", path="/api/chats"))
    body, headers, _ = problem(decision)
    assert body["status"] == 401
    assert "Sign in again" in body["action"]
    assert headers["www-authenticate"] == 'Bearer realm="illumichat"'


def _leaky_requests() -> list[tuple[str, RequestFacts]]:
    bogus_key, _ = issue_api_key(user_id="u-1", workspace="ws-1", now=NOW)  # never stored
    expired = encode_session_token({"sub": "u-1"}, secret=SECRET, now=NOW - 7200, max_age_s=60)
    foreign = encode_session_token({"sub": "u-1"}, secret="other-secret", now=NOW)
    jwtish = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJlLWJ5dGVz"
    out = []
    for token, header in [
        (bogus_key, ("authorization", f"Bearer {bogus_key}")),
        (bogus_key[:-3] + "AAA", ("authorization", f"Bearer {bogus_key[:-3]}AAA")),
        (jwtish, ("authorization", f"Bearer {jwtish}")),
        (expired, ("cookie", f"authjs.session-token={expired}")),
        (foreign, ("cookie", f"authjs.session-token={foreign}")),
        ("s3cr3t-basic", ("authorization", "Basic s3cr3t-basic")),
    ]:
        out.append((token, RequestFacts.build(method="GET", path="/api/chats", headers=[header])))
    return out


@pytest.mark.parametrize("case", range(6))
def test_credential_bytes_never_reach_the_response(authz: Authorizer, case: int) -> None:
    token, request = _leaky_requests()[case]
    decision = authz.decide(request)
    assert decision.status == 401
    rendered = render_denial(decision, request_id="r-1")
    everything = rendered.body.decode() + "".join(f"{k}: {v}\n" for k, v in rendered.headers)
    for fragment in (token, token[:16], token[-16:]):
        assert fragment not in everything
    assert token not in decision.message
    assert token not in json.dumps(decision.as_dict())


def test_the_secret_part_of_an_api_key_never_reaches_the_response(authz: Authorizer) -> None:
    token, _ = issue_api_key(user_id="u-1", workspace="ws-1", now=NOW)
    secret_part = token.split("_", 2)[2]
    decision = authz.decide(
        RequestFacts.build(
            method="GET", path="/api/chats", headers={"authorization": f"Bearer {token}"}
        )
    )
    rendered = render_denial(decision)
    assert secret_part not in rendered.body.decode()
    assert all(secret_part not in v for _, v in rendered.headers)


def test_exception_text_never_reaches_the_body(authz: Authorizer) -> None:
    class Exploding:
        def membership(self, user: str, workspace: str) -> Any:
            raise RuntimeError("password=hunter2 at db.internal:5432")

        def resource(self, kind: str, id: str) -> Any:
            raise RuntimeError("password=hunter2")

        def has_grant(self, user: str, kind: str, id: str) -> bool:
            raise RuntimeError("password=hunter2")

    broken = Authorizer(core=authz.core, facts=Exploding(), rate_limiter=_LIMITER)
    principal = Principal(user_id="u-1", kind=CredentialKind.SESSION, workspace="ws-1")
    decision = broken.decide(
        RequestFacts.build(method="GET", path="/api/chats"), principal=principal
    )
    body, headers, raw = problem(decision)
    assert body["status"] == 503
    assert "retry-after" in headers
    assert b"hunter2" not in raw
    assert b"db.internal" not in raw


def test_identity_headers_for_an_allowed_request() -> None:
    principal = Principal(user_id="u-1", kind=CredentialKind.API_KEY, workspace="ws-1")
    decision = Decision.of(
        Reason.ALLOWED, "ok", route="GET /api/chats", action="chat:list", principal=principal,
        role="member",
    )  # fmt: skip
    headers = dict(identity_headers(decision))
    assert headers == {
        "x-authz-reason": "allowed",
        "x-authz-route": "GET /api/chats",
        "x-authz-action": "chat:list",
        "x-authz-user-id": "u-1",
        "x-authz-credential": "api_key",
        "x-authz-workspace": "ws-1",
        "x-authz-role": "member",
    }


def test_identity_headers_for_a_public_request_name_nobody() -> None:
    decision = Decision.of(Reason.PUBLIC, "public endpoint", route="GET /api/widget/{a}/config")
    headers = identity_headers(decision)
    # Every identity header is present and empty: a proxy that copies only headers the
    # answer has would otherwise keep a client's forged copy (or a Caddy placeholder).
    assert [name for name, _ in headers] == list(IDENTITY_HEADERS)
    assert dict(headers) == {
        "x-authz-reason": "public",
        "x-authz-route": "GET /api/widget/{a}/config",
        "x-authz-action": "",
        "x-authz-user-id": "",
        "x-authz-credential": "",
        "x-authz-workspace": "",
        "x-authz-role": "",
    }


def test_identity_headers_for_a_principal_on_a_public_route_still_name_nobody() -> None:
    principal = Principal(user_id="u-1", kind=CredentialKind.SESSION, workspace="ws-1")
    decision = Decision.of(Reason.PUBLIC, "public endpoint", principal=principal)
    assert dict(identity_headers(decision))["x-authz-user-id"] == ""


def test_rendered_problem_is_compact_json_of_bounded_size() -> None:
    decision = Decision.of(Reason.NOT_VISIBLE, "this private assistant is not visible to you")
    rendered = render_denial(decision)
    assert rendered.body == json.dumps(json.loads(rendered.body), separators=(",", ":")).encode()
    assert len(rendered.body) < 1024
