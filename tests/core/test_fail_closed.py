"""Fail closed in one place per question: whatever raises inside a decision is a deny.

An exception is injected into every lookup (the registry below is checked against the
``Lookups`` protocol, so a new lookup cannot be forgotten), every verifier and every rule
step, sync and async. Every time the answer is a deny: 503 for a lookup that failed (a
dependency is down; the body is the client's broken request, 400), 500 for anything
else, our own ``AuthzError`` keeping its status; each 5xx is logged exactly once.
Cancellation and interpreter exits pass through untouched.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from illumichat_authz import Authorizer, Decision, InMemoryFacts, RequestFacts
from illumichat_authz.compile import build_core
from illumichat_authz.config import load_settings
from illumichat_authz.core import (
    Core,
    CredentialSource,
    Lookups,
    decide,
    decide_access,
    flow,
    identify,
)
from illumichat_authz.core.lookups import LOOKUPS
from illumichat_authz.credentials.apikeys import ApiKeyRecord, issue_api_key
from illumichat_authz.credentials.auth0 import Auth0BearerVerifier
from illumichat_authz.credentials.authjs import AuthjsSessionDecoder, encode_session_token
from illumichat_authz.credentials.jwk import JwkKey, parse_jwks
from illumichat_authz.credentials.sessions import SessionRecord
from illumichat_authz.credentials.twilio import TwilioSignatureVerifier
from illumichat_authz.errors import PermissionDeniedError
from illumichat_authz.facts import Assistant, Membership, Resource
from illumichat_authz.policy import Policy
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.ratelimit import RateLimitOutcome, RateLimitSpec
from illumichat_authz.routes import RouteTable
from illumichat_authz.stores.api_keys import MemoryApiKeyStore
from illumichat_authz.stores.credential_cache import CredentialCache
from illumichat_authz.stores.jwks import JwksCache
from illumichat_authz.testing.minting import LocalIssuer

NOW = 1_750_000_000.0
SECRET = "fail-closed-test-secret-with-entropy"
TWILIO_TOKEN = "twilio-token-fail-closed"
DB_SESSION = "0b7c6f7e-4f7a-4a51-9d1e-5c3c2b1a0f9e"
ISSUER = LocalIssuer(issuer="https://tenant.example/", audience="https://api.example")
API_KEY, API_KEY_RECORD = issue_api_key(user_id="u-bob", workspace="ws-1", now=NOW - 60)
JWK: JwkKey = parse_jwks(json.dumps(ISSUER.jwks()).encode())[ISSUER.kid]


class CustomBase(BaseException):
    """A BaseException of the host's own (not one Python reserves)."""


ERRORS: dict[str, Callable[[], BaseException]] = {
    "ours": lambda: PermissionDeniedError("ours"),
    "runtime": lambda: RuntimeError("password=hunter2"),
    "key": lambda: KeyError("hunter2"),
    "base": lambda: CustomBase("hunter2"),
}


def world() -> InMemoryFacts:
    return InMemoryFacts(
        memberships=[
            Membership(user="u-alice", workspace="ws-1", role="owner"),
            Membership(user="u-bob", workspace="ws-1", role="member"),
        ],
        assistants=[
            Assistant(id="a-1", workspace="ws-1", visibility="private", creator="u-alice"),
        ],
    )


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Core:
    tmp = tmp_path_factory.mktemp("fail-closed")
    settings = load_settings(
        overrides={
            "session": {
                "secrets": [SECRET],
                "workspace_claim": "ws",
                "database": str(tmp / "sessions.sqlite"),
            },
            "api_keys": {"database": str(tmp / "keys.sqlite")},
            "auth0": {"domain": "tenant.example", "audience": ISSUER.audience},
            "twilio": {"auth_tokens": [TWILIO_TOKEN]},
        }
    )
    return build_core(settings)


# --- requests that reach each lookup -------------------------------------------------------


def _req(
    path: str,
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> RequestFacts:
    return RequestFacts.build(
        method=method, path=path, headers=headers or [], body=body, peer="203.0.113.7"
    )


def _cookie(value: str) -> tuple[str, str]:
    return ("Cookie", f"authjs.session-token={value}")


def jwt_cookie(user: str = "u-bob") -> tuple[str, str]:
    return _cookie(encode_session_token({"sub": user, "ws": "ws-1"}, secret=SECRET, now=NOW))


WEBHOOK_PATH = "/api/sms/webhook/a-1"
WEBHOOK_PARAMS = {"From": "+15550001111", "Body": "hello"}
WEBHOOK_BODY = urlencode(WEBHOOK_PARAMS).encode()


def webhook() -> RequestFacts:
    """A signed Twilio webhook whose body is still to be read (``Lookups.body``)."""
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        f"http://api.example.test{WEBHOOK_PATH}", WEBHOOK_PARAMS
    )
    return RequestFacts.build(
        method="POST",
        path=WEBHOOK_PATH,
        headers=[
            ("Host", "api.example.test"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Twilio-Signature", signature),
        ],
        peer="203.0.113.50",
    )


BOB = Principal(user_id="u-bob", kind=CredentialKind.SESSION, workspace="ws-1")


@dataclass(frozen=True)
class Call:
    """One question put to the core: which function, with which arguments."""

    name: str
    question: Callable[..., Decision]
    args: Callable[[Core], tuple[Any, ...]]
    kwargs: Callable[[], dict[str, Any]]


def _decide(request: Callable[[], RequestFacts], **kw: Any) -> Call:
    return Call("decide", decide, lambda core: (request(), core), lambda: {"now": NOW, **kw})


def _identify(request: Callable[[], RequestFacts]) -> Call:
    return Call("identify", identify, lambda core: (request(), core), lambda: {"now": NOW})


def _access(**kw: Any) -> Call:
    return Call(
        "decide_access", decide_access, lambda core: (core,), lambda: {"principal": BOB, **kw}
    )


ASSISTANT = {"action": "assistant:read", "resource_kind": "assistant", "resource_id": "a-1"}

#: Lookup -> the questions that ask it. Checked against the protocol below.
REACHES: dict[str, list[Call]] = {
    "membership": [
        _decide(lambda: _req("/api/assistants", headers=[jwt_cookie()])),
        _access(action="assistant:list"),
    ],
    "resource": [
        _decide(lambda: _req("/api/assistants/a-1", headers=[jwt_cookie()])),
        _access(**ASSISTANT),
    ],
    "has_grant": [
        _decide(lambda: _req("/api/assistants/a-1"), principal=BOB),
        _access(**ASSISTANT),
    ],
    "api_key": [
        _decide(lambda: _req("/api/assistants", headers=[("Authorization", f"Bearer {API_KEY}")])),
        _identify(lambda: _req("/x", headers=[("Authorization", f"Bearer {API_KEY}")])),
    ],
    "record_api_key_use": [
        _decide(lambda: _req("/api/assistants", headers=[("Authorization", f"Bearer {API_KEY}")])),
        _identify(lambda: _req("/x", headers=[("Authorization", f"Bearer {API_KEY}")])),
    ],
    "jwk": [
        _decide(
            lambda: _req(
                "/api/assistants",
                headers=[("Authorization", f"Bearer {ISSUER.mint('u-bob', workspace='ws-1')}")],
            )
        ),
    ],
    "session": [
        _decide(lambda: _req("/api/assistants", headers=[_cookie(DB_SESSION)])),
        _identify(lambda: _req("/x", headers=[_cookie(DB_SESSION)])),
    ],
    "cached_principal": [
        _decide(lambda: _req("/api/assistants", headers=[jwt_cookie()])),
        _identify(lambda: _req("/x", headers=[jwt_cookie()])),
    ],
    "cache_principal": [
        _decide(lambda: _req("/api/assistants", headers=[jwt_cookie()])),
        _identify(lambda: _req("/x", headers=[jwt_cookie()])),
    ],
    "body": [_decide(webhook)],
    "rate_limit_hit": [_decide(lambda: _req("/api/widget/tickets/create", method="POST"))],
}


def test_the_registry_covers_every_lookup_of_the_protocol() -> None:
    declared = {name for name in vars(Lookups) if not name.startswith("_")}
    assert declared == set(LOOKUPS) == set(REACHES)


class FakeLookups:
    """Answers every lookup from fixed data; the one named ``inject`` raises ``error``."""

    def __init__(self, inject: str | None = None, error: BaseException | None = None) -> None:
        self.inject, self.error, self.asked = inject, error, set[str]()
        self.facts = world()

    def _maybe(self, name: str) -> None:
        self.asked.add(name)
        if name == self.inject:
            assert self.error is not None
            raise self.error

    def membership(self, user: str, workspace: str) -> Membership | None:
        self._maybe("membership")
        return self.facts.membership(user, workspace)

    def resource(self, kind: str, id: str) -> Resource | None:
        self._maybe("resource")
        return self.facts.resource(kind, id)

    def has_grant(self, user: str, kind: str, id: str) -> bool:
        self._maybe("has_grant")
        return False

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        self._maybe("api_key")
        return API_KEY_RECORD

    def record_api_key_use(self, key_id: str) -> None:
        self._maybe("record_api_key_use")

    def jwk(self, kid: str, alg: str) -> JwkKey:
        self._maybe("jwk")
        return JWK

    def session(self, token: str) -> SessionRecord | None:
        self._maybe("session")
        return SessionRecord(session_token=token, user_id="u-bob", expires=NOW + 3600)

    def cached_principal(
        self, source: CredentialSource, credential: str, now: float
    ) -> Principal | None:
        self._maybe("cached_principal")
        return None

    def cache_principal(
        self,
        source: CredentialSource,
        credential: str,
        principal: Principal,
        now: float,
        revocable: bool,
    ) -> None:
        self._maybe("cache_principal")

    def body(self, max_bytes: int) -> bytes | None:
        self._maybe("body")
        return WEBHOOK_BODY

    def rate_limit_hit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        self._maybe("rate_limit_hit")
        return RateLimitOutcome(allowed=True, limit=5, remaining=4, reset_after_s=0.0)


def _lookup_cases() -> Iterator[Any]:
    for lookup, calls in REACHES.items():
        for call in calls:
            for error in ERRORS:
                yield pytest.param(lookup, call, error, id=f"{lookup}-{call.name}-{error}")


def expected_for_lookup(lookup: str, error: str) -> tuple[int, str]:
    if error == "ours":
        return (403, "policy_denied")
    if lookup == "body":
        return (400, "malformed_request")
    if lookup in ("membership", "resource", "has_grant"):
        return (503, "facts_unavailable")
    return (503, "auth_unavailable")


def _check(decision: Decision, expected: tuple[int, str], caplog: pytest.LogCaptureFixture) -> None:
    assert not decision.allowed
    assert (decision.status, decision.reason.value) == expected
    assert "hunter2" not in decision.message
    logged = [
        r for r in caplog.records if r.name == "illumichat_authz" and r.levelno >= logging.WARNING
    ]
    # Each 5xx is logged once, where the deny is made; a deny with our own 4xx is not an
    # incident and is not logged at all.
    assert len(logged) == (1 if expected[0] >= 500 else 0), [r.getMessage() for r in logged]


def test_every_call_of_the_registry_reaches_its_lookup(core: Core) -> None:
    for lookup, calls in REACHES.items():
        for call in calls:
            fake = FakeLookups()
            decision = call.question(*call.args(core), lookups=fake, **call.kwargs())
            assert lookup in fake.asked, (lookup, call.name, decision.reason)


@pytest.mark.parametrize(("lookup", "call", "error"), list(_lookup_cases()))
def test_a_lookup_that_raises_is_a_deny_sync(
    core: Core, lookup: str, call: Call, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeLookups(lookup, ERRORS[error]())
    decision = call.question(*call.args(core), lookups=fake, **call.kwargs())
    _check(decision, expected_for_lookup(lookup, error), caplog)


async def _drive(call: Call, core: Core, fake: FakeLookups) -> Decision:
    """An async host over the generator form: every answer awaited, failures thrown in."""
    steps = flow(call.question, *call.args(core), **call.kwargs())
    try:
        query = next(steps)
        while True:
            await asyncio.sleep(0)
            try:
                answer = getattr(fake, query.lookup)(*query.args)
            except BaseException as exc:
                query = steps.throw(exc)
            else:
                query = steps.send(answer)
    except StopIteration as done:
        decision: Decision = done.value
        return decision


@pytest.mark.parametrize(("lookup", "call", "error"), list(_lookup_cases()))
def test_a_lookup_that_raises_is_a_deny_async(
    core: Core, lookup: str, call: Call, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeLookups(lookup, ERRORS[error]())
    decision = asyncio.run(_drive(call, core, fake))
    _check(decision, expected_for_lookup(lookup, error), caplog)


# --- the same through the Authorizer's async driver, failing in the stores ----------------


class _AsyncFacts:
    def __init__(self, fail: str | None, error: BaseException | None) -> None:
        self.fake = FakeLookups(fail, error)

    async def membership(self, user: str, workspace: str) -> Membership | None:
        await asyncio.sleep(0)
        return self.fake.membership(user, workspace)

    async def resource(self, kind: str, id: str) -> Resource | None:
        await asyncio.sleep(0)
        return self.fake.resource(kind, id)

    async def has_grant(self, user: str, kind: str, id: str) -> bool:
        await asyncio.sleep(0)
        return self.fake.has_grant(user, kind, id)


class _Fetcher:
    def fetch(self, url: str, *, timeout_s: float) -> bytes:
        return json.dumps(ISSUER.jwks()).encode()


class _Limiter:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def hit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        raise AssertionError("the async driver awaits ahit")

    async def ahit(self, key: str, spec: RateLimitSpec) -> RateLimitOutcome:
        if self.error is not None:
            raise self.error
        return RateLimitOutcome(allowed=True, limit=5, remaining=4, reset_after_s=0.0)


class _Sessions:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def get_session(self, token: str) -> SessionRecord | None:
        if self.error is not None:
            raise self.error
        return SessionRecord(session_token=token, user_id="u-bob", expires=NOW + 3600)


class _Cache(CredentialCache):
    def __init__(self, fail: str | None, error: BaseException | None) -> None:
        super().__init__()
        self.fail, self.error = fail, error

    def get(self, key: str | bytes, *, now: float) -> Principal | None:
        if self.fail == "cached_principal" and self.error is not None:
            raise self.error
        return super().get(key, now=now)

    def put(self, key: str | bytes, principal: Principal, *, now: float, revocable: bool) -> None:
        if self.fail == "cache_principal" and self.error is not None:
            raise self.error
        super().put(key, principal, now=now, revocable=revocable)


def _raising(error: BaseException | None) -> Callable[..., Any]:
    def boom(*args: Any) -> Any:
        assert error is not None
        raise error

    return boom


def async_authorizer(core: Core, fail: str | None, error: BaseException | None) -> Authorizer:
    keys = MemoryApiKeyStore()
    keys.add(API_KEY_RECORD)
    if fail == "api_key":
        keys.get = _raising(error)  # type: ignore[method-assign]
    jwks = JwksCache(url="https://tenant.example/.well-known/jwks.json", fetcher=_Fetcher())
    if fail == "jwk":

        async def broken(kid: str, alg: str) -> JwkKey:
            assert error is not None
            raise error

        jwks.aget_key = broken  # type: ignore[method-assign]
    authz = Authorizer(
        core=core,
        facts=_AsyncFacts(fail if fail in ("membership", "resource", "has_grant") else None, error),
        api_keys=keys,
        jwks=jwks,
        sessions=_Sessions(error if fail == "session" else None),
        rate_limiter=_Limiter(error if fail == "rate_limit_hit" else None),  # type: ignore[arg-type]
        credential_cache=_Cache(fail, error),
        clock=lambda: NOW,
    )
    if fail == "record_api_key_use":
        # The driver's own lookup (the store's failures are logged and ignored by design).
        authz._record_api_key_use = _raising(error)  # type: ignore[method-assign]
    return authz


async def _ask(
    authz: Authorizer, call: Call, core: Core, fail: str | None, error: BaseException | None
) -> Decision:
    async def read_body(max_bytes: int) -> bytes | None:
        if fail == "body" and error is not None:
            raise error
        return WEBHOOK_BODY

    if call.name == "decide":
        request, _ = call.args(core)
        principal = call.kwargs().get("principal")
        return await authz.adecide(request, principal=principal, read_body=read_body)
    if call.name == "identify":
        request, _ = call.args(core)
        return await authz.aidentify(request)
    return await authz.adecide_access(**call.kwargs())


def test_the_async_driver_reaches_every_lookup(core: Core) -> None:
    for lookup, calls in REACHES.items():
        for call in calls:
            authz = async_authorizer(core, None, None)
            decision = asyncio.run(_ask(authz, call, core, None, None))
            assert decision.status < 500, (lookup, call.name, decision.reason)


@pytest.mark.parametrize(("lookup", "call", "error"), list(_lookup_cases()))
def test_a_store_that_raises_is_a_deny_through_adecide(
    core: Core, lookup: str, call: Call, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    exc = ERRORS[error]()
    authz = async_authorizer(core, lookup, exc)
    decision = asyncio.run(_ask(authz, call, core, lookup, exc))
    _check(decision, expected_for_lookup(lookup, error), caplog)


def test_cancellation_passes_through_an_awaited_lookup(core: Core) -> None:
    authz = async_authorizer(core, "membership", asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_ask(authz, REACHES["membership"][0], core, None, None))


def test_interpreter_exits_pass_through_a_lookup(core: Core) -> None:
    call = REACHES["membership"][0]
    for exc in (KeyboardInterrupt(), SystemExit(3)):
        with pytest.raises(type(exc)):
            call.question(*call.args(core), lookups=FakeLookups("membership", exc), **call.kwargs())


# --- verifiers and rule steps -----------------------------------------------------------

#: Where to inject (object, attribute) and a question that reaches it.
STEPS: dict[str, tuple[Any, str, Call]] = {
    "authjs-decode": (
        AuthjsSessionDecoder,
        "decode",
        _decide(lambda: _req("/api/assistants", headers=[jwt_cookie()])),
    ),
    "auth0-verify": (
        Auth0BearerVerifier,
        "verify",
        REACHES["jwk"][0],
    ),
    "api-key-verify": (
        "illumichat_authz.core.authn",
        "verify_api_key",
        REACHES["api_key"][0],
    ),
    "twilio-verify": (TwilioSignatureVerifier, "verify", REACHES["body"][0]),
    "session-record": (
        "illumichat_authz.core.authn",
        "principal_from_session_record",
        REACHES["session"][0],
    ),
    "envelope": ("illumichat_authz.core", "check_envelope", REACHES["membership"][0]),
    "route-classification": (RouteTable, "classify", REACHES["membership"][0]),
    "rules": ("illumichat_authz.core", "authorize", REACHES["resource"][0]),
    "rules-access": ("illumichat_authz.core", "authorize", REACHES["resource"][1]),
    "policy-verdict": (Policy, "verdict", REACHES["membership"][0]),
}


def _step_cases() -> Iterator[Any]:
    for step in STEPS:
        for error in ERRORS:
            for mode in ("sync", "async"):
                yield pytest.param(step, error, mode, id=f"{step}-{error}-{mode}")


@pytest.mark.parametrize(("step", "error", "mode"), list(_step_cases()))
def test_a_step_that_raises_is_a_deny(
    core: Core,
    step: str,
    error: str,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target, attribute, call = STEPS[step]
    exc = ERRORS[error]()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise exc

    if isinstance(target, str):
        target = importlib.import_module(target)
    monkeypatch.setattr(target, attribute, boom)
    if step == "policy-verdict":
        # The compiled table answers first; an empty one sends every lookup to verdict().
        monkeypatch.setattr(core.policy, "table", {})
    if mode == "sync":
        decision = call.question(*call.args(core), lookups=FakeLookups(), **call.kwargs())
    else:
        decision = asyncio.run(_ask(async_authorizer(core, None, None), call, core, None, None))
    expected = (403, "policy_denied") if error == "ours" else (500, "internal_error")
    _check(decision, expected, caplog)
