"""The test kit's fixtures drive the real authorizer: every minted credential verifies."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from twilio.request_validator import RequestValidator

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.testing import assert_decision, make_request, sign_twilio
from illumichat_authz.testing.fixtures import TWILIO_AUTH_TOKEN, FactsBuilder

Mint = Callable[..., str]


@pytest.fixture
def seeded(authz_facts: FactsBuilder) -> FactsBuilder:
    (
        authz_facts.workspace("w1")
        .member("alice", role="admin")
        .member("bob", role="member")
        .member("gus", role="guest", status="invited")
        .assistant("a-pub", visibility="public", creator="alice")
        .assistant("a-priv", visibility="private", creator="alice")
        .assistant("a-shared", visibility="private", creator="alice")
        .grant("bob", "a-shared")
        .chat("c1", assistant="a-pub", creator="bob")
    )
    return authz_facts


def test_session_cookie_verifies(
    seeded: FactsBuilder, authorizer: Authorizer, mint_session: Mint
) -> None:
    cookie = mint_session("bob", workspace="w1")
    assert cookie.startswith("authjs.session-token=")
    decision = authorizer.decide(make_request("GET", "/api/assistants/a-pub", cookie=cookie))
    assert_decision(decision, status=200, reason="allowed")
    assert decision.principal is not None
    assert decision.principal.workspace == "w1"
    assert_decision(
        make_request("GET", "/api/assistants/a-priv", cookie=cookie),
        status=403,
        reason="not_visible",
        authorizer=authorizer,
    )
    assert_decision(
        make_request("GET", "/api/assistants/a-shared", cookie=cookie), 200, authorizer=authorizer
    )


def test_expired_session_is_401(
    seeded: FactsBuilder, authorizer: Authorizer, mint_session: Mint
) -> None:
    cookie = mint_session("bob", workspace="w1", now=time.time() - 7200, expires_in=60)
    decision = authorizer.decide(make_request("GET", "/api/assistants/a-pub", cookie=cookie))
    assert_decision(decision, 401, "session_expired")


def test_bearer_verifies_through_loopback_jwks(
    seeded: FactsBuilder, authorizer: Authorizer, mint_bearer: Mint
) -> None:
    token = mint_bearer("alice", workspace="w1")
    decision = authorizer.decide(make_request("PATCH", "/api/assistants/a-priv", bearer=token))
    assert_decision(decision, 200, "allowed")
    assert decision.principal is not None
    assert decision.principal.kind.value == "auth0"
    wrong_aud = mint_bearer("alice", audience="https://elsewhere.test")
    assert_decision(
        make_request("GET", "/api/assistants/a-pub", bearer=wrong_aud), 401, authorizer=authorizer
    )


async def _adecide(authorizer: Authorizer, token: str) -> int:
    return (
        await authorizer.adecide(make_request("GET", "/api/assistants/a-pub", bearer=token))
    ).status


def test_bearer_async(seeded: FactsBuilder, authorizer: Authorizer, mint_bearer: Mint) -> None:
    import asyncio

    assert asyncio.run(_adecide(authorizer, mint_bearer("bob"))) == 200


def test_api_key_scopes_narrow(
    seeded: FactsBuilder, authorizer: Authorizer, mint_api_key: Mint
) -> None:
    key = mint_api_key("alice", "w1", scopes=["assistant:read"])
    assert_decision(
        make_request("GET", "/api/assistants/a-priv", bearer=key), 200, authorizer=authorizer
    )
    assert_decision(
        make_request("DELETE", "/api/assistants/a-priv", bearer=key),
        403,
        "scope_not_granted",
        authorizer=authorizer,
    )


def test_facts_builder_is_live(
    authz_facts: FactsBuilder, authorizer: Authorizer, mint_session: Mint
) -> None:
    cookie = mint_session("carol", workspace="w2")
    request = make_request("GET", "/api/workspaces/w2", cookie=cookie)
    assert_decision(request, 403, "not_a_member", authorizer=authorizer)
    authz_facts.workspace("w2").member("carol", role="guest")
    assert_decision(request, 200, "allowed", authorizer=authorizer)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"Body": "hello", "From": "+15551234567", "To": "+15557654321"},
        {"Body": ["b", "a", "a"], "Empty": ""},
        {"Body": "ünïcödé ✓", "MessageSid": "SM123"},
    ],
)
def test_sign_twilio_matches_twilio_package(params: dict[str, object]) -> None:
    url = "https://api.illumichat.test/api/sms/webhook/a1?x=1"
    ours = sign_twilio(url, params, token=TWILIO_AUTH_TOKEN)  # type: ignore[arg-type]
    theirs = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(url, _QueryDict(params))
    assert ours == theirs


class _QueryDict(dict[str, object]):
    """Django's QueryDict shape, which twilio's RequestValidator reads repeats from."""

    def getlist(self, name: str) -> list[object]:
        value = self[name]
        return list(value) if isinstance(value, list) else [value]


def test_signed_webhook_is_verified(authorizer: Authorizer, sign_twilio: Mint) -> None:
    from urllib.parse import urlencode

    url = "https://api.illumichat.test/api/sms/webhook/a1"
    params = {"Body": "hi", "From": "+15550000000"}
    request = make_request(
        "POST",
        "/api/sms/webhook/a1",
        body=urlencode(params).encode(),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": sign_twilio(url, params),
        },
    )
    assert_decision(request, 200, "webhook_verified", authorizer=authorizer)
    forged = make_request(
        "POST",
        "/api/sms/webhook/a1",
        body=b"Body=hi",
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": sign_twilio(url, params, token="wrong"),
        },
    )
    assert_decision(forged, 403, "invalid_signature", authorizer=authorizer)


def test_assert_decision_reports_what_was_decided(
    seeded: FactsBuilder, authorizer: Authorizer
) -> None:
    decision = authorizer.decide(make_request("GET", "/api/assistants/a-pub"))
    with pytest.raises(
        AssertionError, match=r"(?s)status 401 != expected 200.*authentication_required"
    ):
        assert_decision(decision, 200)
    with pytest.raises(TypeError):
        assert_decision(decision)
    with pytest.raises(TypeError):
        assert_decision(object(), 200)


def test_the_assert_decision_fixture_decides_requests_itself(
    request: pytest.FixtureRequest, seeded: FactsBuilder, mint_session: Mint
) -> None:
    # The issue's own example: assert_decision(request, status=..., reason=...).
    check = request.getfixturevalue("assert_decision")
    check(
        make_request("GET", "/api/assistants/a-pub"), status=401, reason="authentication_required"
    )
    member = mint_session("bob", workspace="w1")
    check(make_request("DELETE", "/api/workspaces/w1", cookie=member), 403, "insufficient_role")
    with pytest.raises(AssertionError, match="status 403 != expected 200"):
        check(make_request("DELETE", "/api/workspaces/w1", cookie=member), status=200)


def test_public_surface_resolves() -> None:
    import illumichat_authz.server as server
    import illumichat_authz.testing as testing

    assert sorted(testing.__all__) == sorted(dir(testing))
    for name in testing.__all__:
        assert getattr(testing, name) is not None
    for name in server.__all__:
        assert getattr(server, name) is not None
    with pytest.raises(AttributeError):
        _ = testing.nothing_here
