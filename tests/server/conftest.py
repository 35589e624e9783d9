"""Fixtures for the real-proxy tests (see proxy_stack)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import Settings
from illumichat_authz.testing import build_test_authorizer, make_test_settings
from illumichat_authz.testing.fixtures import FactsBuilder
from illumichat_authz.testing.minting import JwksServer, LocalIssuer


@pytest.fixture(scope="module")
def module_authorizer() -> Iterator[tuple[Authorizer, Settings, LocalIssuer]]:
    """One seeded authorizer per proxy module: alice (admin) and bob (member) of w1."""
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
