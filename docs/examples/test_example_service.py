"""An example test file for a service that uses illumichat_authz.

Copy it into your service's tests. It needs nothing but the test kit: the pytest plugin
(installed with illumichat-authz) provides the fixtures, and ``illumichat_authz.testing``
the helpers. Our CI runs this very file (tests/testing/test_docs_example.py).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings

from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.testing import assert_decision, call_asgi_sync, make_request
from illumichat_authz.testing.strategies import malformed_credentials, paths, requests

Mint = Callable[..., str]


@pytest.fixture(autouse=True)
def workspace(authz_facts):
    """The facts every test here starts from: one workspace, each role, each visibility."""
    (
        authz_facts.workspace("w1")
        .member("olive", role="owner")
        .member("alice", role="admin")
        .member("bob", role="member")
        .member("gwen", role="guest")
        .member("ivan", role="member", status="invited")
        .assistant("a-public", visibility="public", creator="alice")
        .assistant("a-team", visibility="workspace", creator="alice")
        .assistant("a-private", visibility="private", creator="alice")
        .grant("bob", "a-private")
        .chat("c-bob", assistant="a-team", creator="bob")
    )
    return authz_facts


# --- roles and visibility, with session cookies ---------------------------------------------


@pytest.mark.parametrize(
    ("user", "assistant", "status", "reason"),
    [
        ("bob", "a-public", 200, "allowed"),
        ("bob", "a-private", 200, "allowed"),  # granted
        ("gwen", "a-team", 200, "allowed"),
        ("gwen", "a-private", 403, "not_visible"),
        ("ivan", "a-team", 403, "membership_inactive"),  # invited: public assistants only
        ("ivan", "a-public", 200, "allowed"),
        ("mallory", "a-public", 403, "not_a_member"),
    ],
)
def test_who_may_read_an_assistant(authorizer, mint_session, user, assistant, status, reason):
    request = make_request(
        "GET", f"/api/assistants/{assistant}", cookie=mint_session(user, workspace="w1")
    )
    assert_decision(request, status, reason, authorizer=authorizer)


def test_only_owners_manage_billing(authorizer, mint_session):
    for user, status in [("olive", 200), ("alice", 403), ("bob", 403)]:
        cookie = mint_session(user, workspace="w1")
        assert_decision(
            make_request("PATCH", "/api/workspaces/w1/billing", cookie=cookie),
            status,
            authorizer=authorizer,
        )


def test_no_credential_is_401_with_a_challenge(authorizer):
    decision = authorizer.decide(make_request("GET", "/api/assistants"))
    assert_decision(decision, 401, "authentication_required")
    assert dict(decision.headers)["WWW-Authenticate"].startswith("Bearer")


# --- bearer tokens and API keys -----------------------------------------------------------


def test_auth0_bearer(authorizer, mint_bearer):
    token = mint_bearer("alice", workspace="w1")
    assert_decision(
        make_request("DELETE", "/api/assistants/a-team", bearer=token), 200, authorizer=authorizer
    )
    expired = mint_bearer("alice", workspace="w1", now=0, expires_in=60)
    assert_decision(
        make_request("GET", "/api/assistants/a-team", bearer=expired),
        401,
        "token_expired",
        authorizer=authorizer,
    )


def test_api_key_scopes_and_workspace_binding(authorizer, mint_api_key):
    key = mint_api_key("alice", "w1", scopes=["assistant:read", "assistant:list"])
    assert_decision(
        make_request("GET", "/api/assistants/a-private", bearer=key), 200, authorizer=authorizer
    )
    assert_decision(
        make_request("DELETE", "/api/assistants/a-private", bearer=key),
        403,
        "scope_not_granted",
        authorizer=authorizer,
    )
    assert_decision(
        make_request("GET", "/api/assistants", bearer=key, workspace="w2"),
        403,
        "workspace_mismatch",
        authorizer=authorizer,
    )


# --- webhooks -------------------------------------------------------------------------------


def test_twilio_webhook_signature(authorizer, sign_twilio):
    params = {"From": "+15550001111", "Body": "hello"}
    url = "https://api.illumichat.test/api/sms/webhook/a-public"  # what Twilio calls
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-twilio-signature": sign_twilio(url, params),
    }
    good = make_request(
        "POST", "/api/sms/webhook/a-public", body=urlencode(params).encode(), headers=headers
    )
    assert_decision(good, 200, "webhook_verified", authorizer=authorizer)
    tampered = make_request(
        "POST",
        "/api/sms/webhook/a-public",
        body=urlencode({**params, "Body": "pay mallory"}).encode(),
        headers=headers,
    )
    assert_decision(tampered, 403, "invalid_signature", authorizer=authorizer)


# --- fuzzing: nothing malformed is ever allowed or crashes ----------------------------------


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=paths(), credential=malformed_credentials())
def test_malformed_credentials_never_pass(authorizer, path, credential):
    request = make_request("GET", path, headers=dict([credential]))
    decision = authorizer.decide(request)
    assert decision.status in {200, 400, 401, 403, 404, 413, 429}
    if decision.allowed:
        assert decision.principal is None  # only public routes open without a credential


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=requests())
def test_random_requests_get_documented_answers(authorizer, request):
    decision = authorizer.decide(request)
    assert decision.status != 500, decision
    assert decision.allowed == (decision.status == 200)


async def my_app(scope, receive, send):
    """Stands for your service: any ASGI app (no framework needed)."""
    body = b"public" if scope["user"].is_authenticated is False else b"private"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=requests())
def test_fuzzed_requests_through_the_app_itself(authorizer, request):
    # call_asgi_sync delivers the drawn request byte for byte (no client normalization).
    response = call_asgi_sync(AuthzMiddleware(my_app, authorizer=authorizer), request)
    assert response.status_code in {200, 400, 401, 403, 404, 413, 429}
    if response.status_code == 200:
        assert response.content == b"public"  # malformed credentials never get further
