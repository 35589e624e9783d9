"""The test kit's fixtures: facts, settings, an in-process authorizer, and credential minters.

Registered by the ``pytest11`` plugin (:mod:`illumichat_authz.testing.plugin`). Importing
this module costs only ``pytest`` and the standard library: everything heavy (casbin,
pydantic, cryptography) is imported inside the fixtures, so projects that never ask for
them pay nothing and cannot be broken by them.

The authorizer is the real one: the shipped policy and route table, a development session
secret, an in-memory API key store, a Twilio auth token, and an Auth0 tenant whose JWKS a
loopback HTTP server (started once per test session) publishes. Credentials minted by the
fixtures therefore go through exactly the verification production does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from illumichat_authz.authorizer import Authorizer
    from illumichat_authz.config import Settings
    from illumichat_authz.core import Core
    from illumichat_authz.facts import InMemoryFacts
    from illumichat_authz.stores.api_keys import MemoryApiKeyStore

    from .minting import JwksServer, LocalIssuer, MintedCookie

__all__ = [
    "AUDIENCE",
    "AUTH0_DOMAIN",
    "DEV_SESSION_SECRET",
    "TWILIO_AUTH_TOKEN",
    "FactsBuilder",
    "WorkspaceBuilder",
    "authorizer",
    "authz_api_keys",
    "authz_facts",
    "authz_issuer",
    "authz_settings",
    "build_test_authorizer",
    "make_test_settings",
    "mint_api_key",
    "mint_bearer",
    "mint_session",
    "sign_twilio",
]

#: Test-only secrets: fixed so failures reproduce; never valid anywhere real.
DEV_SESSION_SECRET = "illumichat-authz-testing-session-secret-not-for-production"  # noqa: S105
TWILIO_AUTH_TOKEN = "illumichat-authz-testing-twilio-token"  # noqa: S105
AUTH0_DOMAIN = "illumichat-test.auth0.invalid"
AUDIENCE = "https://api.illumichat.test"
WORKSPACE_CLAIM = "workspace"


class WorkspaceBuilder:
    """Adds facts to one workspace; every method returns ``self`` so calls chain."""

    def __init__(self, parent: FactsBuilder, workspace: str) -> None:
        self._parent = parent
        self.id = workspace

    def member(
        self, user: str, *, role: str = "member", status: str = "active"
    ) -> WorkspaceBuilder:
        from illumichat_authz.facts import Membership

        # Any role the policy names: the policy, not an enum, decides what it may do.
        self._parent.facts.add(Membership(user=user, workspace=self.id, role=role, status=status))
        return self

    def assistant(
        self, assistant_id: str, *, visibility: str = "workspace", creator: str | None = None
    ) -> WorkspaceBuilder:
        from illumichat_authz.facts import Assistant

        self._parent.facts.add(
            Assistant(
                id=assistant_id,
                workspace=self.id,
                visibility=visibility,
                creator=creator or "nobody",
            )
        )
        return self

    def chat(self, chat_id: str, *, assistant: str, creator: str) -> WorkspaceBuilder:
        from illumichat_authz.facts import Chat

        self._parent.facts.add(
            Chat(id=chat_id, workspace=self.id, assistant=assistant, creator=creator)
        )
        return self

    def grant(self, user: str, assistant: str) -> WorkspaceBuilder:
        self._parent.grant(user, assistant)
        return self

    def workspace(self, workspace: str) -> WorkspaceBuilder:
        """Switch to another workspace (so one chain can seed several)."""
        return self._parent.workspace(workspace)


class FactsBuilder:
    """Seeds an :class:`~illumichat_authz.facts.InMemoryFacts` the authorizer reads live.

    ``authz_facts.workspace("w1").member("alice", role="admin").assistant("a1",
    visibility="private", creator="alice").grant("bob", "a1")``
    """

    def __init__(self) -> None:
        from illumichat_authz.facts import InMemoryFacts

        self.facts: InMemoryFacts = InMemoryFacts()

    def workspace(self, workspace: str) -> WorkspaceBuilder:
        return WorkspaceBuilder(self, workspace)

    def grant(self, user: str, assistant: str) -> FactsBuilder:
        from illumichat_authz.facts import Grant

        self.facts.add(Grant(user=user, assistant=assistant))
        return self


def make_test_settings(*, jwks_url: str | None = None, **sections: dict[str, Any]) -> Settings:
    """Settings for tests: the shipped policy, the kit's test credentials and ``sections``.

    Nothing else: no ``ILLUMICHAT_AUTHZ_*`` variable is read, so a developer's or a CI
    job's real settings (a production session secret, ``conceal_hidden``, another policy)
    can neither sign the kit's credentials nor change what the tests decide. Without
    ``jwks_url`` (the ``authz_issuer`` JWKS server's URL) no Auth0 tenant is configured and
    bearer JWTs are refused.
    """
    from illumichat_authz.config import load_settings

    data: dict[str, dict[str, Any]] = {
        "session": {"secrets": [DEV_SESSION_SECRET], "workspace_claim": WORKSPACE_CLAIM},
        "twilio": {"auth_tokens": [TWILIO_AUTH_TOKEN]},
    }
    if jwks_url is not None:
        data["auth0"] = {
            "domain": AUTH0_DOMAIN,
            "audience": AUDIENCE,
            "jwks_url": jwks_url,
            "workspace_claim": WORKSPACE_CLAIM,
            "jwks_min_refresh_s": 0.0,
        }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return load_settings(overrides=data, environment=False)


_CORES: dict[str, Core] = {}


def _core_for(settings: Settings) -> Core:
    """Compile once per distinct settings: casbin and the route table are the slow part."""
    from dataclasses import replace

    from illumichat_authz.compile import build_core

    key = settings.model_dump_json()
    core = _CORES.get(key)
    if core is None:
        core = build_core(settings)
        # The test kit always has an API key store (in memory), whatever [api_keys] says.
        core = replace(core, authenticators=replace(core.authenticators, api_keys=True))
        _CORES[key] = core
    return core


def build_test_authorizer(
    settings: Settings,
    *,
    facts: InMemoryFacts | None = None,
    api_keys: MemoryApiKeyStore | None = None,
) -> Authorizer:
    """An :class:`Authorizer` on ``settings`` with in-memory stores (and a fresh rate limiter)."""
    from illumichat_authz.authorizer import Authorizer
    from illumichat_authz.facts import InMemoryFacts
    from illumichat_authz.stores.api_keys import MemoryApiKeyStore
    from illumichat_authz.stores.jwks import JwksCache, UrllibJwksFetcher
    from illumichat_authz.stores.ratelimit import RateLimiter

    url = settings.auth0.resolved_jwks_url
    jwks = (
        JwksCache(
            url=url,
            fetcher=UrllibJwksFetcher(trust_env=False),
            min_refresh_s=settings.auth0.jwks_min_refresh_s,
            ttl_s=settings.auth0.jwks_ttl_s,
        )
        if url
        else None
    )
    return Authorizer(
        core=_core_for(settings),
        facts=facts if facts is not None else InMemoryFacts(),
        api_keys=api_keys if api_keys is not None else MemoryApiKeyStore(),
        jwks=jwks,
        rate_limiter=RateLimiter(storage_uri="memory://"),
    )


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def authz_issuer() -> Iterator[tuple[LocalIssuer, JwksServer]]:
    """A local Auth0 tenant: an RSA key pair and a loopback server publishing its JWKS."""
    from .minting import JwksServer, LocalIssuer

    issuer = LocalIssuer(issuer=f"https://{AUTH0_DOMAIN}/", audience=AUDIENCE)
    server = JwksServer(issuer.jwks()).start()
    try:
        yield issuer, server
    finally:
        server.stop()


@pytest.fixture
def authz_settings(authz_issuer: tuple[LocalIssuer, JwksServer]) -> Settings:
    """Settings for the test authorizer; override this fixture to change sections."""
    return make_test_settings(jwks_url=authz_issuer[1].url)


@pytest.fixture
def authz_facts() -> FactsBuilder:
    """An empty facts store with a builder: ``authz_facts.workspace("w1").member(...)``."""
    return FactsBuilder()


@pytest.fixture
def authz_api_keys() -> MemoryApiKeyStore:
    """The API key store the ``authorizer`` fixture reads and ``mint_api_key`` writes."""
    from illumichat_authz.stores.api_keys import MemoryApiKeyStore

    return MemoryApiKeyStore()


@pytest.fixture
def authorizer(
    authz_settings: Settings, authz_facts: FactsBuilder, authz_api_keys: MemoryApiKeyStore
) -> Iterator[Authorizer]:
    """The real :class:`Authorizer` over ``authz_settings``, ``authz_facts``, ``authz_api_keys``."""
    authz = build_test_authorizer(authz_settings, facts=authz_facts.facts, api_keys=authz_api_keys)
    try:
        yield authz
    finally:
        authz.rate_limiter.close()


@pytest.fixture(name="assert_decision")
def assert_decision_fixture(authorizer: Authorizer) -> Callable[..., None]:
    """``assert_decision(request, status=403, reason="not_visible")``, decided by the
    ``authorizer`` fixture (the importable function needs ``authorizer=`` for requests)."""
    from .assertions import assert_decision

    def check(outcome: Any, status: int | None = None, reason: str | None = None) -> None:
        assert_decision(outcome, status, reason, authorizer=authorizer)

    return check


@pytest.fixture
def mint_session(authz_settings: Settings) -> Callable[..., MintedCookie]:
    """``mint_session("alice", workspace="w1") -> "authjs.session-token=..."``: a Cookie
    header value, with ``.name`` and ``.value`` for Flask's ``client.set_cookie``."""
    from .minting import session_cookie

    session = authz_settings.session

    def mint(user: str, *, workspace: str | None = None, **kwargs: Any) -> MintedCookie:
        return session_cookie(
            user,
            secret=session.secrets[0],
            workspace=workspace,
            workspace_claim=session.workspace_claim or WORKSPACE_CLAIM,
            cookie_name=session.cookie_name,
            **kwargs,
        )

    return mint


@pytest.fixture
def mint_bearer(
    authz_settings: Settings, authz_issuer: tuple[LocalIssuer, JwksServer]
) -> Callable[..., str]:
    """``mint_bearer("alice", workspace="w1") -> token``: RS256, verifiable via the JWKS server."""
    issuer = authz_issuer[0]

    def mint(user: str, *, workspace: str | None = None, **kwargs: Any) -> str:
        kwargs.setdefault("workspace_claim", authz_settings.auth0.workspace_claim)
        return issuer.mint(user, workspace=workspace, **kwargs)

    return mint


@pytest.fixture
def mint_api_key(authz_api_keys: MemoryApiKeyStore) -> Callable[..., str]:
    """``mint_api_key("alice", "w1", scopes=["assistant:read"]) -> "ick_..."`` (stored)."""
    from illumichat_authz.credentials.apikeys import issue_api_key

    def mint(
        user: str,
        workspace: str,
        *,
        scopes: Iterable[str] | None = None,
        expires_at: float | None = None,
        name: str | None = None,
    ) -> str:
        token, record = issue_api_key(
            user_id=user,
            workspace=workspace,
            scopes=None if scopes is None else frozenset(scopes),
            expires_at=expires_at,
            name=name,
            now=time.time(),
        )
        authz_api_keys.add(record)
        return token

    return mint


@pytest.fixture
def sign_twilio(authz_settings: Settings) -> Callable[..., str]:
    """``sign_twilio(url, params) -> X-Twilio-Signature`` with the test auth token."""
    from .minting import sign_twilio as sign

    default = authz_settings.twilio.auth_tokens[0] if authz_settings.twilio.auth_tokens else ""

    def signer(url: str, params: dict[str, Any], *, token: str | None = None) -> str:
        return sign(url, params, token=token or default)

    return signer
