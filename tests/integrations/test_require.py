"""The shared "require" steps (``integrations._require``), framework-free, sync and async.

Every adapter's ``require``/``authorized``/DRF permission is these steps; the per-framework
tests check the translation, these check the steps themselves, through both drivers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from conftest import Exploding, cookie_header, make_authorizer

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.decision import Decision
from illumichat_authz.errors import BadRequestError
from illumichat_authz.integrations import DECIDE, Endpoint, Incoming, arequire, require
from illumichat_authz.reasons import Reason
from illumichat_authz.request import RequestFacts

CHATS = "/api/chats"
WIDGET = "/api/widget/a1/config"  # a public route
BOTS = "/v2/bots/a1"  # undeclared: only an endpoint naming its resource decides it


def incoming(
    path: str,
    *,
    user: str | None = None,
    method: str = "GET",
    host: bool = True,
    params: Mapping[str, Any] | None = None,
) -> Incoming:
    headers = [("host", "testserver")] if host else []
    if user is not None:
        headers += list(cookie_header(user).items())
    facts = RequestFacts.build(method=method, path=path, headers=headers)
    return Incoming(lambda: facts, "rid-1", "1.1", params or {})


def both(
    authorizer: Authorizer, endpoint: Endpoint, seen: Decision | None, asked: Incoming
) -> Decision:
    """The decision of both drivers, which must agree."""
    sync = require(authorizer, endpoint, seen, asked)
    async_ = asyncio.run(arequire(authorizer, endpoint, seen, asked))
    assert (sync.allowed, sync.status, sync.reason) == (
        async_.allowed,
        async_.status,
        async_.reason,
    )
    assert sync.principal == async_.principal
    return sync


@pytest.fixture(scope="module")
def authorizer() -> Authorizer:
    return make_authorizer()


def test_a_resource_needs_an_action() -> None:
    with pytest.raises(ValueError, match="needs an action"):
        Endpoint(resource="assistant_id")
    with pytest.raises(ValueError, match="needs an action"):
        Endpoint(workspace="ws")
    assert Endpoint("chat:list").names_resource is False
    assert Endpoint("billing:read", workspace="ws").names_resource is True


def test_route_mode_decides_when_no_middleware_did(authorizer: Authorizer) -> None:
    allowed = both(authorizer, Endpoint("chat:list"), None, incoming(CHATS, user="u1"))
    assert allowed.allowed
    assert allowed.principal is not None
    assert allowed.principal.user_id == "u1"
    anonymous = both(authorizer, Endpoint("chat:list"), None, incoming(CHATS))
    assert (anonymous.status, anonymous.reason) == (401, Reason.AUTHENTICATION_REQUIRED)


def test_route_mode_enforces_the_middlewares_decision(authorizer: Authorizer) -> None:
    asked = incoming(CHATS, user="u1")
    seen = authorizer.decide(asked.facts())

    def never() -> RequestFacts:
        raise AssertionError("the middleware decided: nothing is asked again")

    again = both(authorizer, Endpoint("chat:list"), seen, asked._replace(facts=never))
    assert again is seen or again == seen


def test_an_action_mismatch_is_a_logged_500(
    authorizer: Authorizer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "illumichat_authz"):
        decision = both(authorizer, Endpoint("chat:read"), None, incoming(CHATS, user="u1"))
    assert (decision.status, decision.reason) == (500, Reason.INTERNAL_ERROR)
    assert "configuration error" in caplog.text
    assert "rid-1" in caplog.text


def test_a_public_route_is_a_401_unless_anonymous_is_enough(authorizer: Authorizer) -> None:
    signed_in = both(authorizer, Endpoint("widget:config"), None, incoming(WIDGET))
    assert (signed_in.status, signed_in.reason) == (401, Reason.AUTHENTICATION_REQUIRED)
    assert ("WWW-Authenticate", 'Bearer realm="illumichat"') in signed_in.headers
    anyone = both(authorizer, Endpoint("widget:config", signed_in=False), None, incoming(WIDGET))
    assert anyone.allowed
    assert anyone.principal is None
    # DECIDE is what the middlewares ask: no action, anonymous is enough.
    assert both(authorizer, DECIDE, None, incoming(WIDGET)).allowed


def test_resource_mode_identifies_and_decides_access(authorizer: Authorizer) -> None:
    update = Endpoint("assistant:update", resource="assistant_id")
    params = {"assistant_id": "a1"}
    owner = both(authorizer, update, None, incoming(BOTS, user="boss", params=params))
    assert owner.allowed
    assert owner.principal is not None
    assert owner.principal.user_id == "boss"
    member = both(authorizer, update, None, incoming(BOTS, user="u1", params=params))
    assert (member.status, member.reason) == (403, Reason.INSUFFICIENT_ROLE)
    missing = incoming(BOTS, user="boss", params={"assistant_id": "nope"})
    assert both(authorizer, update, None, missing).reason is Reason.NOT_FOUND
    anonymous = both(authorizer, update, None, incoming(BOTS, params=params))
    assert (anonymous.status, anonymous.reason) == (401, Reason.AUTHENTICATION_REQUIRED)
    # The workspace comes from its path parameter, else the principal's.
    billing = Endpoint("billing:read", workspace="ws")
    elsewhere = incoming("/v2/spaces/w9", user="boss", params={"ws": "w9"})
    assert both(authorizer, billing, None, elsewhere).reason is Reason.NOT_A_MEMBER
    assert both(authorizer, billing, None, incoming("/v2/x", user="boss")).allowed


def test_resource_mode_never_overrides_a_denial(authorizer: Authorizer) -> None:
    # A denial handed in by an adapter (its middleware's) is enforced as it is, even when
    # it carries a principal whose decide_access on the resource would allow.
    update = Endpoint("assistant:update", resource="assistant_id")
    asked = incoming(BOTS, user="boss", params={"assistant_id": "a1"})
    allowed = both(authorizer, update, None, asked)
    assert allowed.allowed
    denied = Decision.of(Reason.WORKSPACE_MISMATCH, "bound elsewhere", principal=allowed.principal)
    assert both(authorizer, update, denied, asked).reason is Reason.WORKSPACE_MISMATCH


def test_resource_mode_identifies_a_caller_the_middleware_let_through_anonymously(
    authorizer: Authorizer,
) -> None:
    """A public route: the middleware verified no credential, so the caller is identified
    here (and the middleware's Host check is not repeated)."""
    asked = incoming(WIDGET, user="boss", params={"assistantId": "a1"})
    seen = authorizer.decide(asked.facts())
    assert seen.allowed
    assert seen.principal is None
    update = Endpoint("assistant:update", resource="assistantId")
    decided = both(authorizer, update, seen, asked)
    assert decided.allowed
    assert decided.principal is not None
    assert decided.principal.user_id == "boss"


def test_an_action_on_no_resource_kind_is_denied(authorizer: Authorizer) -> None:
    endpoint = Endpoint("assistant:list", resource="id")
    decision = both(authorizer, endpoint, None, incoming(BOTS, user="boss", params={"id": "x"}))
    assert (decision.status, decision.reason) == (403, Reason.POLICY_DENIED)
    assert "acts on no resource kind" in decision.message


@pytest.mark.parametrize(
    "endpoint", [DECIDE, Endpoint("chat:list"), Endpoint("assistant:update", resource="id")]
)
def test_the_host_is_checked_when_no_middleware_did(
    authorizer: Authorizer, endpoint: Endpoint
) -> None:
    decision = both(authorizer, endpoint, None, incoming(CHATS, user="u1", host=False))
    assert (decision.status, decision.reason) == (400, Reason.BAD_HEADER)


@pytest.mark.parametrize("endpoint", [DECIDE, Endpoint("assistant:update", resource="id")])
def test_a_target_the_mount_disagrees_with_is_a_400(
    authorizer: Authorizer, endpoint: Endpoint
) -> None:
    def disagreeing() -> RequestFacts:
        raise BadRequestError("they disagree", reason=Reason.NON_CANONICAL_PATH)

    asked = incoming(CHATS, user="u1")._replace(facts=disagreeing)
    decision = both(authorizer, endpoint, None, asked)
    assert (decision.status, decision.reason) == (400, Reason.NON_CANONICAL_PATH)


@pytest.mark.parametrize(
    "endpoint", [DECIDE, Endpoint("chat:list"), Endpoint("assistant:update", resource="id")]
)
def test_our_own_failure_is_a_500_logged_with_the_request_id(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    exploding = Exploding()
    exploding.identify = exploding.decide  # type: ignore[method-assign]
    exploding.aidentify = exploding.adecide  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, "illumichat_authz"):
        decision = both(exploding, endpoint, None, incoming(CHATS, user="u1"))
    assert (decision.status, decision.reason) == (500, Reason.INTERNAL_ERROR)
    assert "secret-token-bytes" not in decision.message
    failures = [r for r in caplog.records if "authorization failed" in r.getMessage()]
    assert len(failures) == 2  # once per driver
    assert all("rid-1" in r.getMessage() for r in failures)
