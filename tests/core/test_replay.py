"""What a replay costs: one more run per awaited lookup, and nothing done twice.

The async driver runs the plain function again after each lookup it had to await. These
tests count the runs (calls of the envelope check, the first step of every run) and the
side effects: a rate-limit hit, the body read, a key-use record, a credential verified.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

import illumichat_authz.core as core_module
from illumichat_authz import Authorizer, Decision, InMemoryFacts, RequestFacts
from illumichat_authz.compile import build_core
from illumichat_authz.config import load_settings
from illumichat_authz.core import Core
from illumichat_authz.credentials.apikeys import issue_api_key
from illumichat_authz.credentials.authjs import AuthjsSessionDecoder, encode_session_token
from illumichat_authz.facts import Assistant, Membership, Resource
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.ratelimit import RateLimitOutcome, RateLimitSpec
from illumichat_authz.stores.api_keys import MemoryApiKeyStore
from illumichat_authz.stores.ratelimit import RateLimiter

NOW = 1_750_000_000.0
SECRET = "replay-test-secret-with-enough-entropy"
TWILIO_TOKEN = "twilio-token-replay"
BOB = Principal(user_id="u-bob", kind=CredentialKind.SESSION, workspace="ws-1")


def world() -> InMemoryFacts:
    return InMemoryFacts(
        memberships=[Membership(user="u-bob", workspace="ws-1", role="member")],
        assistants=[
            Assistant(id="a-1", workspace="ws-1", visibility="workspace", creator="u-alice")
        ],
    )


class AsyncFacts:
    """Awaits only the facts named in ``slow``; counts every call."""

    def __init__(self, slow: set[str]) -> None:
        self.facts, self.slow, self.calls = world(), slow, dict[str, int]()

    async def _call(self, name: str, *args: Any) -> Any:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.slow:
            await asyncio.sleep(0)
        return getattr(self.facts, name)(*args)

    async def membership(self, user: str, workspace: str) -> Membership | None:
        return await self._call("membership", user, workspace)  # type: ignore[no-any-return]

    async def resource(self, kind: str, id: str) -> Resource | None:
        return await self._call("resource", kind, id)  # type: ignore[no-any-return]

    async def has_grant(self, user: str, kind: str, id: str) -> bool:
        return await self._call("has_grant", user, kind, id)  # type: ignore[no-any-return]


class CountingLimiter(RateLimiter):
    def __init__(self) -> None:
        super().__init__()
        self.hits = 0

    def hit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        self.hits += 1
        return super().hit(key, spec)

    async def ahit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        self.hits += 1
        return super().hit(key, spec)


class CountingKeys(MemoryApiKeyStore):
    def __init__(self) -> None:
        super().__init__(touch_interval_s=0.0)
        self.gets = self.touches = 0

    def get(self, key_id: str) -> Any:
        self.gets += 1
        return super().get(key_id)

    def touch(self, key_id: str, *, now: float) -> None:
        self.touches += 1
        super().touch(key_id, now=now)


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Core:
    tmp = tmp_path_factory.mktemp("replay")
    return build_core(
        load_settings(
            overrides={
                "session": {"secrets": [SECRET], "workspace_claim": "ws"},
                "api_keys": {"database": str(tmp / "keys.sqlite")},
                "twilio": {"auth_tokens": [TWILIO_TOKEN]},
            }
        )
    )


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per run of a decision (the envelope check starts every run)."""
    counted: list[int] = []
    check = core_module.check_envelope

    def counting(*args: Any) -> None:
        counted.append(1)
        check(*args)

    monkeypatch.setattr(core_module, "check_envelope", counting)
    return counted


def run(coro: Any) -> Decision:
    return asyncio.run(coro)  # type: ignore[no-any-return]


def authorizer(core: Core, **stores: Any) -> Authorizer:
    stores.setdefault("facts", world())
    stores.setdefault("rate_limiter", CountingLimiter())
    return Authorizer(core=core, clock=lambda: NOW, **stores)


def cookie(user: str = "u-bob") -> tuple[str, str]:
    token = encode_session_token({"sub": user, "ws": "ws-1"}, secret=SECRET, now=NOW)
    return ("Cookie", f"authjs.session-token={token}")


def test_sync_facts_run_once_sync_and_async(core: Core, runs: list[int]) -> None:
    authz = authorizer(core)
    request = RequestFacts.build(method="GET", path="/api/assistants/a-1")
    assert authz.decide(request, principal=BOB).allowed
    assert len(runs) == 1
    assert run(authz.adecide(request, principal=BOB)).allowed
    assert len(runs) == 2


@pytest.mark.parametrize("slow", [set(), {"membership"}, {"resource", "membership"}])
def test_each_awaited_fact_costs_one_more_run(core: Core, runs: list[int], slow: set[str]) -> None:
    facts = AsyncFacts(slow)
    authz = authorizer(core, facts=facts)
    request = RequestFacts.build(method="GET", path="/api/assistants/a-1")
    decision = run(authz.adecide(request, principal=BOB))
    assert decision.allowed
    # Every lookup of an AsyncFacts store is awaited: one run more for each of them.
    assert len(runs) == 1 + sum(facts.calls.values())
    assert all(count == 1 for count in facts.calls.values()), facts.calls


def test_a_credential_is_verified_once_across_replays(
    core: Core, runs: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes: list[int] = []
    decode = AuthjsSessionDecoder.decode

    def counting(self: AuthjsSessionDecoder, *args: Any, **kwargs: Any) -> Principal:
        decodes.append(1)
        return decode(self, *args, **kwargs)

    monkeypatch.setattr(AuthjsSessionDecoder, "decode", counting)
    facts = AsyncFacts({"membership"})
    authz = authorizer(core, facts=facts)
    request = RequestFacts.build(method="GET", path="/api/assistants/a-1", headers=[cookie()])
    authz.credential_cache.max_entries = 0  # not even the cache can help
    decision = run(authz.adecide(request))
    assert decision.allowed
    assert decodes == [1]
    assert len(runs) == 1 + sum(facts.calls.values())


def test_a_rate_limit_hit_is_counted_once(core: Core, runs: list[int]) -> None:
    limiter = CountingLimiter()
    authz = authorizer(core, rate_limiter=limiter)
    ticket = RequestFacts.build(
        method="POST", path="/api/widget/tickets/create", peer="203.0.113.91"
    )
    assert authz.decide(ticket).allowed
    assert (limiter.hits, len(runs)) == (1, 2)  # a side effect: asked once, then replayed
    assert run(authz.adecide(ticket)).allowed
    assert (limiter.hits, len(runs)) == (2, 4)


def test_the_body_is_read_once(core: Core, runs: list[int]) -> None:
    params = {"From": "+15550001111", "Body": "hello"}
    path = "/api/sms/webhook/a-1"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        f"http://api.example.test{path}", params
    )
    request = RequestFacts.build(
        method="POST",
        path=path,
        headers=[
            ("Host", "api.example.test"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Twilio-Signature", signature),
        ],
        peer="203.0.113.50",
    )
    body = b"From=%2B15550001111&Body=hello"
    reads: list[int] = []

    def read(max_bytes: int) -> bytes:
        reads.append(max_bytes)
        return body

    async def aread(max_bytes: int) -> bytes:
        return read(max_bytes)

    authz = authorizer(core)
    assert authz.decide(request, read_body=read).reason.value == "webhook_verified"
    assert len(reads) == 1
    assert run(authz.adecide(request, read_body=aread)).reason.value == "webhook_verified"
    assert len(reads) == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_api_key_is_looked_up_and_recorded_once(core: Core, mode: str) -> None:
    keys = CountingKeys()
    token, record = issue_api_key(user_id="u-bob", workspace="ws-1", now=NOW - 60)
    keys.add(record)
    facts = AsyncFacts({"membership"}) if mode == "async" else world()
    authz = authorizer(core, facts=facts, api_keys=keys)
    request = RequestFacts.build(
        method="GET", path="/api/assistants/a-1", headers=[("Authorization", f"Bearer {token}")]
    )
    decide: Callable[[], Decision] = (
        (lambda: run(authz.adecide(request)))
        if mode == "async"
        else (lambda: authz.decide(request))
    )
    assert decide().allowed
    assert (keys.gets, keys.touches) == (1, 1)
    assert decide().allowed  # now cached: no lookup, no record
    assert (keys.gets, keys.touches) == (1, 1)


class _HostAbort(BaseException):
    """A host's own BaseException subclass (not one Python reserves)."""


@pytest.mark.parametrize("error", [ConnectionError("down"), KeyError("x"), _HostAbort()])
def test_run_flow_turns_any_failed_answer_into_the_lookups_deny(error: BaseException) -> None:
    core = build_core(load_settings(environment=False))
    request = RequestFacts.build(method="GET", path="/api/assistants/asst_1")
    caller = Principal(user_id="auth0|mia", kind=CredentialKind.SESSION)

    def failing(query: core_module.Query) -> Any:
        raise error

    steps = core_module.flow(core_module.decide, request, core, now=0.0, principal=caller)
    decision = core_module.run_flow(steps, failing)
    assert (decision.status, decision.reason.value) == (503, "facts_unavailable")


def test_run_flow_lets_an_interpreter_exit_through() -> None:
    core = build_core(load_settings(environment=False))
    request = RequestFacts.build(method="GET", path="/api/assistants/asst_1")
    caller = Principal(user_id="auth0|mia", kind=CredentialKind.SESSION)

    def interrupted(query: core_module.Query) -> Any:
        raise KeyboardInterrupt

    steps = core_module.flow(core_module.decide, request, core, now=0.0, principal=caller)
    with pytest.raises(KeyboardInterrupt):
        core_module.run_flow(steps, interrupted)
