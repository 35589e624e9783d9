"""The hypothesis strategies draw what they promise, and the core answers all of it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.principal import Principal
from illumichat_authz.request import RequestFacts
from illumichat_authz.testing import make_request
from illumichat_authz.testing.fixtures import FactsBuilder
from illumichat_authz.testing.strategies import malformed_credentials, paths, principals, requests

_FIXTURES = [HealthCheck.function_scoped_fixture]


@settings(max_examples=200, deadline=None, suppress_health_check=_FIXTURES)
@given(request=requests())
def test_requests_never_crash_or_allow_without_a_credential(
    authorizer: Authorizer, request: RequestFacts
) -> None:
    assert isinstance(request, RequestFacts)
    decision = authorizer.decide(request)
    assert decision.status != 500, decision
    if decision.allowed:
        assert decision.principal is None
        assert decision.reason.value in {"public", "preflight"}


@settings(max_examples=200, deadline=None, suppress_health_check=_FIXTURES)
@given(credential=malformed_credentials())
def test_malformed_credentials_are_401_on_an_authenticated_route(
    authorizer: Authorizer, credential: tuple[str, str]
) -> None:
    name, value = credential
    request = make_request("GET", "/api/assistants", headers={name: value}, workspace="w1")
    decision = authorizer.decide(request)
    # 401 (invalid credential, or a cookie that is no session at all: no credential), or
    # 400 when the header itself is malformed (control characters).
    assert decision.status in {400, 401}, (credential, decision)
    if decision.status == 400:
        assert decision.reason.value == "bad_header"


@settings(max_examples=200, deadline=None, suppress_health_check=_FIXTURES)
@given(principal=principals(), path=paths())
def test_principals_are_decided_by_the_policy(
    authorizer: Authorizer, authz_facts: FactsBuilder, principal: Principal, path: str
) -> None:
    assert principal.user_id
    if principal.workspace_bound:
        assert principal.workspace is not None
    decision = authorizer.decide(make_request("GET", path), principal=principal)
    assert decision.status != 500
    if decision.allowed and decision.reason.value == "allowed":
        assert decision.role is not None  # nobody without a membership gets in
