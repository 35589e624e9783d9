"""The decision flow end to end, with real credentials, through ``Authorizer.decide``.

Every credential here is the real thing: Auth.js session cookies minted by
``encode_session_token`` (the ``@auth/core`` algorithm), API keys issued by
``issue_api_key`` and kept in a ``MemoryApiKeyStore``, and Twilio signatures computed by
the ``twilio`` package's own ``RequestValidator``. What is checked is the answer a host
would send: the status, the reason code, and the headers (RFC 6750 §3 challenges, RFC
9110 §10.2.3 ``Retry-After``, the RateLimit draft's fields).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from illumichat_authz import Authorizer, Decision, InMemoryFacts, RequestFacts
from illumichat_authz.config import load_settings
from illumichat_authz.credentials.apikeys import issue_api_key
from illumichat_authz.credentials.authjs import encode_session_token
from illumichat_authz.errors import CredentialError
from illumichat_authz.facts import Assistant, Membership, Resource
from illumichat_authz.policy import Policy
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.request import MAX_HEADER_BYTES
from illumichat_authz.stores.api_keys import MemoryApiKeyStore
from illumichat_authz.stores.ratelimit import RateLimiter
from illumichat_authz.testing.minting import LocalIssuer
from illumichat_authz.vocab import Role, Visibility
from oracle import AUTHENTICATED_ENDPOINTS, ROLES, STATUSES, Endpoint, World, oracle

#: One limiter for the module: each RateLimiter starts a storage thread.
_LIMITER = RateLimiter()

SECRET = "core-flow-test-secret-with-enough-entropy"
TWILIO_TOKEN = "twilio-auth-token-core-flow"
NOW = 1_750_000_000.0
COOKIE = "authjs.session-token"
CHALLENGE = 'Bearer realm="illumichat"'
WEBHOOK_PATH = "/api/sms/webhook/a-1"
TICKETS = "/api/widget/tickets/create"


def _world() -> InMemoryFacts:
    return InMemoryFacts(
        memberships=[
            Membership(user="u-alice", workspace="ws-1", role=Role.OWNER),
            Membership(user="u-bob", workspace="ws-1", role=Role.MEMBER),
            Membership(user="u-bob", workspace="ws-2", role=Role.ADMIN),
        ],
        assistants=[
            Assistant(
                id="a-1", workspace="ws-1", visibility=Visibility.WORKSPACE, creator="u-alice"
            ),
        ],
    )


def _overrides(tmp: Path, **extra: Mapping[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "session": {"secrets": [SECRET], "workspace_claim": "ws"},
        # A path only switches API keys on; the store itself is passed in.
        "api_keys": {"database": str(tmp / "unused-keys.sqlite")},
        "twilio": {"auth_tokens": [TWILIO_TOKEN], "max_body_bytes": 1024},
        "proxies": {"trusted": ["10.0.0.0/8"]},
    }
    for section, values in extra.items():
        base[section] = {**base.get(section, {}), **values}
    return base


def make_authorizer(
    tmp: Path,
    *,
    facts: Any = None,
    api_keys: Any = None,
    rate_limiter: Any = None,
    **extra: Mapping[str, Any],
) -> Authorizer:
    settings = load_settings(overrides=_overrides(tmp, **extra))
    return Authorizer.from_settings(
        settings,
        facts=facts if facts is not None else _world(),
        api_keys=api_keys if api_keys is not None else MemoryApiKeyStore(),
        rate_limiter=rate_limiter or _LIMITER,
        clock=lambda: NOW,
    )


def sibling(authz: Authorizer, **changes: Any) -> Authorizer:
    """Another driver over the same compiled core, with some stores swapped."""
    stores: dict[str, Any] = {
        "facts": authz.facts,
        "api_keys": authz.api_keys,
        "rate_limiter": _LIMITER,
        "clock": lambda: NOW,
    }
    stores.update(changes)
    return Authorizer(core=authz.core, **stores)


@pytest.fixture
def store() -> MemoryApiKeyStore:
    return MemoryApiKeyStore()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Authorizer:
    """Built once: compiling the routes and the policy is the slow part."""
    return make_authorizer(tmp_path_factory.mktemp("core"))


@pytest.fixture
def authz(shared: Authorizer, store: MemoryApiKeyStore) -> Authorizer:
    return sibling(shared, facts=_world(), api_keys=store)


def session(user: str = "u-alice", ws: str | None = "ws-1", *, now: float = NOW, **kw: Any) -> str:
    claims: dict[str, Any] = {"sub": user, "email": f"{user}@example.test"}
    if ws is not None:
        claims["ws"] = ws
    return encode_session_token(claims, secret=SECRET, now=now, **kw)


def api_key(store: MemoryApiKeyStore, user: str = "u-bob", ws: str = "ws-1", **kw: Any) -> str:
    kw.setdefault("now", NOW - 60)
    token, record = issue_api_key(user_id=user, workspace=ws, **kw)
    store.add(record)
    return token


def req(
    path: str = "/api/assistants",
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    **kw: Any,
) -> RequestFacts:
    return RequestFacts.build(method=method, path=path, headers=headers or [], **kw)


def cookie(token: str) -> tuple[str, str]:
    return ("Cookie", f"{COOKIE}={token}")


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def www_authenticate(decision: Decision) -> list[str]:
    return [v for k, v in decision.headers if k.lower() == "www-authenticate"]


def header(decision: Decision, name: str) -> str | None:
    values = [v for k, v in decision.headers if k.lower() == name.lower()]
    assert len(values) <= 1
    return values[0] if values else None


def outcome(decision: Decision) -> tuple[int, str]:
    return decision.status, decision.reason.value


# --- Credentials: which one, and what an invalid one means ------------------------------


def test_a_valid_session_cookie_is_allowed(authz: Authorizer) -> None:
    decision = authz.decide(req(headers=[cookie(session())]))
    assert outcome(decision) == (200, "allowed")
    assert decision.principal is not None
    assert decision.principal.kind is CredentialKind.SESSION
    assert decision.principal.user_id == "u-alice"
    assert decision.role == "owner"


def test_authorization_header_beats_the_cookie(authz: Authorizer, store: MemoryApiKeyStore) -> None:
    key = api_key(store, user="u-bob")
    decision = authz.decide(req(headers=[cookie(session("u-alice")), bearer(key)]))
    assert outcome(decision) == (200, "allowed")
    assert decision.principal is not None
    assert decision.principal.user_id == "u-bob"
    assert decision.principal.kind is CredentialKind.API_KEY


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Bearer not-a-jwt-or-key", "invalid_token"),  # no Auth0 configured: bearer JWTs refused
        ("Bearer ick_AAAAAAAAAAAA_short", "api_key_invalid"),
        ("Bearer ", "invalid_token"),
        ("Bearer a b", "invalid_token"),
    ],
)
def test_an_invalid_bearer_never_falls_back_to_the_cookie(
    authz: Authorizer, value: str, reason: str
) -> None:
    decision = authz.decide(req(headers=[cookie(session()), ("Authorization", value)]))
    assert outcome(decision) == (401, reason)
    assert decision.principal is None
    [challenge] = www_authenticate(decision)
    assert challenge.startswith(CHALLENGE)
    assert 'error="invalid_token"' in challenge


def test_two_authorization_headers_are_ambiguous(
    authz: Authorizer, store: MemoryApiKeyStore
) -> None:
    key = api_key(store)
    decision = authz.decide(req(headers=[bearer(key), bearer(key)]))
    assert outcome(decision) == (401, "ambiguous_credential")
    assert decision.principal is None


@pytest.mark.parametrize("scheme", ["Basic dXNlcjpwYXNz", "Token abc", "Digest x=1"])
def test_a_non_bearer_scheme_is_401_with_the_bare_challenge(authz: Authorizer, scheme: str) -> None:
    # RFC 6750 §3.1: a request using another scheme "lacks any authentication information"
    # of ours: the challenge SHOULD NOT carry an error code.
    decision = authz.decide(req(headers=[("Authorization", scheme)]))
    assert outcome(decision) == (401, "invalid_token")
    assert www_authenticate(decision) == [CHALLENGE]


@pytest.mark.parametrize("value", ["bearer", "Bearer ", "Bearer a b"])
def test_a_malformed_bearer_token_is_invalid_token(authz: Authorizer, value: str) -> None:
    decision = authz.decide(req(headers=[("Authorization", value)]))
    assert outcome(decision) == (401, "invalid_token")
    [challenge] = www_authenticate(decision)
    assert challenge.startswith(CHALLENGE + ", ")
    assert 'error="invalid_token"' in challenge


def test_bearer_scheme_is_case_insensitive(authz: Authorizer, store: MemoryApiKeyStore) -> None:
    # RFC 6750 §2.1 / RFC 9110 §11.1: the auth-scheme is case-insensitive.
    key = api_key(store)
    decision = authz.decide(req(headers=[("Authorization", f"bEaReR {key}")]))
    assert outcome(decision) == (200, "allowed")


def test_no_credential_gets_the_bare_challenge(authz: Authorizer) -> None:
    # RFC 6750 §3: "If the request lacks any authentication information ... the resource
    # server SHOULD NOT include an error code".
    decision = authz.decide(req())
    assert outcome(decision) == (401, "authentication_required")
    assert www_authenticate(decision) == [CHALLENGE]


def test_an_undeclared_route_is_401_anonymous_and_403_authenticated(authz: Authorizer) -> None:
    anonymous = authz.decide(req("/api/not-a-route"))
    signed_in = authz.decide(req("/api/not-a-route", headers=[cookie(session())]))
    assert outcome(anonymous) == (401, "undeclared_route")
    assert www_authenticate(anonymous) == [CHALLENGE]
    assert outcome(signed_in) == (403, "undeclared_route")
    assert www_authenticate(signed_in) == []


def test_every_401_carries_a_challenge(authz: Authorizer, store: MemoryApiKeyStore) -> None:
    requests = [
        req(),
        req(headers=[("Authorization", "Basic x")]),
        req(headers=[cookie("garbage.garbage.garbage.garbage.garbage")]),
        req(headers=[cookie(session(now=NOW - 90 * 86400, max_age_s=60))]),
        req(headers=[bearer(_tampered(api_key(store)))]),
    ]
    for request in requests:
        decision = authz.decide(request)
        assert decision.status == 401, decision
        assert len(www_authenticate(decision)) == 1
        assert www_authenticate(decision)[0].startswith(CHALLENGE)


def _tampered(token: str) -> str:
    """``token`` with its last character changed (to one it is not, whatever it was)."""
    return token[:-1] + ("Z" if token[-1] != "Z" else "Y")


def test_an_expired_session_is_session_expired(authz: Authorizer) -> None:
    expired = session(now=NOW - 3600, max_age_s=60)
    decision = authz.decide(req(headers=[cookie(expired)]))
    assert outcome(decision) == (401, "session_expired")
    assert 'error="invalid_token"' in www_authenticate(decision)[0]


def test_a_session_sealed_with_another_secret_is_invalid(authz: Authorizer) -> None:
    other = encode_session_token({"sub": "u-alice", "ws": "ws-1"}, secret="another", now=NOW)
    decision = authz.decide(req(headers=[cookie(other)]))
    assert outcome(decision) == (401, "invalid_credential")


def test_api_key_revoked_through_the_authorizer_is_immediate(
    authz: Authorizer, store: MemoryApiKeyStore
) -> None:
    key = api_key(store)
    assert outcome(authz.decide(req(headers=[bearer(key)]))) == (200, "allowed")
    key_id = key.split("_")[1]
    assert authz.revoke_api_key(key_id)
    assert outcome(authz.decide(req(headers=[bearer(key)]))) == (401, "api_key_revoked")


def test_api_key_revoked_in_the_store_takes_effect_within_the_cache_ttl(
    authz: Authorizer, store: MemoryApiKeyStore
) -> None:
    # [api_keys] cache_ttl_s: "bounds how late a revocation takes effect".
    key = api_key(store)
    assert outcome(authz.decide(req(headers=[bearer(key)]))) == (200, "allowed")
    assert store.revoke(key.split("_")[1], now=NOW)
    later = sibling(authz, clock=lambda: NOW + 5.0 + 1)
    assert outcome(later.decide(req(headers=[bearer(key)]))) == (401, "api_key_revoked")


def test_a_verified_api_key_records_its_last_use(
    authz: Authorizer, store: MemoryApiKeyStore
) -> None:
    key = api_key(store)
    key_id = key.split("_")[1]
    record = store.get(key_id)
    assert record is not None
    assert record.last_used_at is None
    assert outcome(authz.decide(req(headers=[bearer(key)]))) == (200, "allowed")
    record = store.get(key_id)
    assert record is not None
    assert record.last_used_at == NOW


def test_a_store_that_cannot_record_last_use_still_decides(
    shared: Authorizer, store: MemoryApiKeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    class NoTouch(MemoryApiKeyStore):
        def touch(self, key_id: str, *, now: float) -> None:
            raise OSError("read-only disk")

    readonly = NoTouch()
    authz = sibling(shared, facts=_world(), api_keys=readonly)
    key = api_key(readonly)
    assert outcome(authz.decide(req(headers=[bearer(key)]))) == (200, "allowed")
    assert "could not record last use" in caplog.text


def test_api_key_expired(authz: Authorizer, store: MemoryApiKeyStore) -> None:
    key = api_key(store, now=NOW - 7200, expires_at=NOW - 1)
    assert outcome(authz.decide(req(headers=[bearer(key)]))) == (401, "api_key_expired")


def test_api_key_with_a_bad_checksum_never_reaches_the_store(authz: Authorizer) -> None:
    class Tripwire(MemoryApiKeyStore):
        def get(self, key_id: str) -> Any:
            raise AssertionError("a key with a bad checksum reached the store")

    tripwire = Tripwire()
    token, record = issue_api_key(user_id="u-bob", workspace="ws-1", now=NOW)
    tripwire.add(record)
    last = token[-1]
    mutated = token[:-1] + ("A" if last != "A" else "B")
    decision = sibling(authz, api_keys=tripwire).decide(req(headers=[bearer(mutated)]))
    assert outcome(decision) == (401, "api_key_invalid")


def test_an_unknown_api_key_is_invalid(authz: Authorizer) -> None:
    token, _record = issue_api_key(user_id="u-bob", workspace="ws-1", now=NOW)
    assert outcome(authz.decide(req(headers=[bearer(token)]))) == (401, "api_key_invalid")


def test_api_key_scopes_only_narrow(authz: Authorizer, store: MemoryApiKeyStore) -> None:
    key = api_key(store, user="u-alice", scopes={"assistant:read"})
    listing = authz.decide(req(headers=[bearer(key)]))
    reading = authz.decide(req("/api/assistants/a-1", headers=[bearer(key)]))
    assert outcome(listing) == (403, "scope_not_granted")
    assert outcome(reading) == (200, "allowed")
    # A scope cannot add what the role lacks: u-bob is a member, not an admin.
    wide = api_key(store, user="u-bob", scopes={"assistant:delete"})
    deleting = authz.decide(req("/api/assistants/a-1", method="DELETE", headers=[bearer(wide)]))
    assert outcome(deleting) == (403, "insufficient_role")


def test_a_bound_api_key_stays_in_its_workspace(
    authz: Authorizer, store: MemoryApiKeyStore
) -> None:
    # u-bob is admin of ws-2, but this key is bound to ws-1.
    key = api_key(store, user="u-bob", ws="ws-1")
    here = authz.decide(req(headers=[bearer(key), ("X-Workspace-Id", "ws-1")]))
    there = authz.decide(req(headers=[bearer(key), ("X-Workspace-Id", "ws-2")]))
    assert outcome(here) == (200, "allowed")
    assert outcome(there) == (403, "workspace_mismatch")


# --- Workspace selection and malformed requests ------------------------------------------


def test_x_workspace_id_overrides_the_session_workspace(authz: Authorizer) -> None:
    # The session says ws-2 (where u-bob is admin); the header asks for ws-1 (member).
    token = session("u-bob", ws="ws-2")
    create_here = authz.decide(req(method="POST", headers=[cookie(token)]))
    create_ws1 = authz.decide(
        req(method="POST", headers=[cookie(token), ("X-Workspace-Id", "ws-1")])
    )
    assert outcome(create_here) == (200, "allowed")
    assert create_here.resource is not None
    assert create_here.resource.workspace == "ws-2"
    assert outcome(create_ws1) == (403, "insufficient_role")
    assert create_ws1.resource is not None
    assert create_ws1.resource.workspace == "ws-1"


def test_x_workspace_id_of_a_foreign_workspace_is_not_a_member(authz: Authorizer) -> None:
    decision = authz.decide(req(headers=[cookie(session()), ("X-Workspace-Id", "ws-2")]))
    assert outcome(decision) == (403, "not_a_member")


def test_a_repeated_workspace_header_is_400(authz: Authorizer) -> None:
    headers = [cookie(session()), ("X-Workspace-Id", "ws-1"), ("X-Workspace-Id", "ws-1")]
    assert outcome(authz.decide(req(headers=headers))) == (400, "bad_header")


@pytest.mark.parametrize("value", ["a/b", "..\\x", "", " ", "x" * 257])
def test_a_malformed_workspace_header_is_400(authz: Authorizer, value: str) -> None:
    decision = authz.decide(req(headers=[cookie(session(ws=None)), ("X-Workspace-Id", value)]))
    # Present but unusable (even blank) is a malformed request, never "use another one".
    assert outcome(decision) == (400, "bad_header")


@pytest.mark.parametrize("value", ["ws-1\x85", "\xa0ws-1", "ws-1\u2028", "\u3000ws-1"])
def test_only_spaces_and_tabs_are_trimmed_from_the_workspace_header(
    authz: Authorizer, value: str
) -> None:
    # str.strip() would turn each of these into "ws-1", where the caller is a member,
    # while the app behind us reads the raw value: the two must never disagree.
    decision = authz.decide(req(headers=[cookie(session(ws=None)), ("X-Workspace-Id", value)]))
    assert not decision.allowed
    assert decision.resource is None or decision.resource.workspace != "ws-1"
    trimmed = authz.decide(req(headers=[cookie(session(ws=None)), ("X-Workspace-Id", " ws-1\t")]))
    assert outcome(trimmed) == (200, "allowed")


def test_a_workspace_header_with_a_lone_surrogate_is_400(authz: Authorizer) -> None:
    decision = authz.decide(req(headers=[cookie(session()), ("X-Workspace-Id", "ws-\ud800")]))
    assert outcome(decision) == (400, "bad_header")


def test_no_workspace_anywhere_is_missing_workspace(authz: Authorizer) -> None:
    decision = authz.decide(req(headers=[cookie(session(ws=None))]))
    assert outcome(decision) == (400, "missing_workspace")


@pytest.mark.parametrize(
    "method", ["GE T", "", "G\x00T", "GET\r\n", "X" * 33, "ПОСТ", "get", "BREW", "PROPFIND"]
)
def test_malformed_and_unknown_methods_are_400(authz: Authorizer, method: str) -> None:
    for headers in ([cookie(session())], []):
        decision = authz.decide(req(method=method, headers=headers))
        assert outcome(decision) == (400, "bad_method")


@pytest.mark.parametrize("method", ["PUT", "TRACE", "CONNECT", "OPTIONS"])
def test_standard_methods_no_route_declares_are_undeclared(authz: Authorizer, method: str) -> None:
    assert outcome(authz.decide(req(method=method))) == (401, "undeclared_route")
    signed_in = authz.decide(req(method=method, headers=[cookie(session())]))
    assert outcome(signed_in) == (403, "undeclared_route")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("bad name", "x"),
        ("", "x"),
        ("x-ok", "line\nbreak"),
        ("x-ok", "carriage\rreturn"),
        ("x-ok", "nul\x00"),
        ("x-ok", "del\x7f"),
        ("x(y)", "x"),
    ],
)
def test_malformed_headers_are_400(authz: Authorizer, name: str, value: str) -> None:
    decision = authz.decide(req(headers=[cookie(session()), (name, value)]))
    assert outcome(decision) == (400, "bad_header")
    assert decision.principal is None


def test_oversized_headers_are_400_before_any_credential_is_read(
    authz: Authorizer, store: MemoryApiKeyStore
) -> None:
    key = api_key(store)
    padding = [(f"x-pad-{i}", "p" * 1000) for i in range(MAX_HEADER_BYTES // 1000 + 1)]
    decision = authz.decide(req(headers=[bearer(key), *padding]))
    assert outcome(decision) == (400, "bad_header")
    assert decision.principal is None


def test_an_oversized_authorization_header_is_401(authz: Authorizer) -> None:
    decision = authz.decide(req(headers=[("Authorization", "Bearer " + "a" * 20_000)]))
    assert outcome(decision) == (401, "invalid_token")


def test_a_non_canonical_path_is_400(authz: Authorizer) -> None:
    for path in ("/api/../api/assistants", "/api//assistants", "/api/assistants/%2e%2e"):
        decision = authz.decide(req(path, headers=[cookie(session())]))
        assert outcome(decision) == (400, "non_canonical_path"), path


def test_a_cors_preflight_passes_unauthenticated(authz: Authorizer) -> None:
    decision = authz.decide(
        req(method="OPTIONS", headers=[("Access-Control-Request-Method", "POST")])
    )
    assert outcome(decision) == (200, "preflight")
    assert decision.principal is None


# --- Twilio webhooks -----------------------------------------------------------------------


def twilio_request(
    *,
    params: Mapping[str, str] | None = None,
    token: str = TWILIO_TOKEN,
    signature: str | None = "compute",
    body: bytes | None = None,
    path: str = WEBHOOK_PATH,
) -> RequestFacts:
    params = params if params is not None else {"From": "+15550001111", "Body": "hello"}
    url = f"http://api.example.test{path}"
    if signature == "compute":
        signature = RequestValidator(token).compute_signature(url, dict(params))
    headers = [
        ("Host", "api.example.test"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ]
    if signature is not None:
        headers.append(("X-Twilio-Signature", signature))
    return req(
        path,
        method="POST",
        headers=headers,
        body=body if body is not None else urlencode(params).encode(),
        peer="203.0.113.50",
    )


def test_a_valid_twilio_signature_is_webhook_verified(authz: Authorizer) -> None:
    decision = authz.decide(twilio_request())
    assert outcome(decision) == (200, "webhook_verified")
    assert decision.principal is None


def test_a_twilio_status_callback_is_verified_too(authz: Authorizer) -> None:
    decision = authz.decide(twilio_request(path="/api/sms/status/a-9"))
    assert outcome(decision) == (200, "webhook_verified")


@pytest.mark.parametrize(
    "mutation", ["wrong-token", "missing", "tampered-body", "garbage", "other-path"]
)
def test_a_wrong_or_missing_twilio_signature_is_403(authz: Authorizer, mutation: str) -> None:
    params = {"From": "+15550001111", "Body": "hello"}
    if mutation == "wrong-token":
        request = twilio_request(token="not-the-token")
    elif mutation == "missing":
        request = twilio_request(signature=None)
    elif mutation == "tampered-body":
        request = twilio_request(body=urlencode({**params, "Body": "HELLO"}).encode())
    elif mutation == "garbage":
        request = twilio_request(signature="!!not base64!!")
    else:
        good = RequestValidator(TWILIO_TOKEN).compute_signature(
            "http://api.example.test/api/sms/webhook/a-2", params
        )
        request = twilio_request(signature=good)
    decision = authz.decide(request)
    assert outcome(decision) == (403, "invalid_signature")
    assert www_authenticate(decision) == []


def test_two_twilio_signatures_are_refused(authz: Authorizer) -> None:
    good = twilio_request()
    request = RequestFacts(
        method=good.method,
        path=good.path,
        headers=(*good.headers, ("x-twilio-signature", "x")),
        body=good.body,
        peer=good.peer,
    )
    assert outcome(authz.decide(request)) == (403, "invalid_signature")


def test_a_webhook_body_over_the_limit_is_413(authz: Authorizer) -> None:
    params = {"Body": "x" * 2000}
    decision = authz.decide(twilio_request(params=params))
    assert outcome(decision) == (413, "body_too_large")


def test_a_webhook_body_is_read_through_the_reader_with_the_limit(authz: Authorizer) -> None:
    signed = twilio_request()
    lazy = RequestFacts(method="POST", path=signed.path, headers=signed.headers, peer=signed.peer)
    asked: list[int] = []
    body = signed.body or b""

    def read(limit: int) -> bytes | None:
        asked.append(limit)
        return body if len(body) <= limit else None

    assert outcome(authz.decide(lazy, read_body=read)) == (200, "webhook_verified")
    assert asked == [1024]
    # The reader says "larger than the limit": 413, never a verification of a prefix.
    assert outcome(authz.decide(lazy, read_body=lambda _n: None)) == (413, "body_too_large")
    # The adapter gave no reader at all: fail closed.
    assert not authz.decide(lazy).allowed


def test_a_webhook_without_twilio_configuration_is_403() -> None:
    settings = load_settings(overrides={"session": {"secrets": [SECRET]}})
    authz = Authorizer.from_settings(settings, facts=_world(), rate_limiter=_LIMITER)
    assert authz.core.twilio is None
    assert outcome(authz.decide(twilio_request())) == (403, "invalid_signature")


# --- Rate limit on the ticket endpoint ------------------------------------------------------

_ip_counter = iter(range(1, 250))


def fresh_ip(prefix: str = "198.51.100") -> str:
    """A client address no other test has used (the module shares one limiter)."""
    return f"{prefix}.{next(_ip_counter)}"


def ticket(peer: str, *headers: tuple[str, str]) -> RequestFacts:
    return req(TICKETS, method="POST", headers=list(headers), peer=peer)


def test_the_sixth_ticket_in_a_minute_is_429(authz: Authorizer) -> None:
    ip = fresh_ip()
    first = [authz.decide(ticket(ip)) for _ in range(5)]
    assert [outcome(d) for d in first] == [(200, "public")] * 5
    sixth = authz.decide(ticket(ip))
    assert outcome(sixth) == (429, "rate_limited")
    retry_after = header(sixth, "Retry-After")
    assert retry_after is not None
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= 60
    assert header(sixth, "RateLimit-Policy") == '"default";q=5;w=60'
    ratelimit = header(sixth, "RateLimit")
    assert ratelimit is not None
    assert ratelimit.startswith('"default";r=0;t=')
    # Another client is not affected.
    assert outcome(authz.decide(ticket(fresh_ip()))) == (200, "public")


def test_an_ipv6_client_is_counted_per_64(authz: Authorizer) -> None:
    # A new address per request inside one /64 does not buy more tickets...
    prefix = f"2001:db8:{next(_ip_counter):x}:1"
    decisions = [authz.decide(ticket(f"{prefix}::{i:x}")) for i in range(1, 7)]
    assert [d.status for d in decisions] == [200] * 5 + [429]
    # ...while the neighbouring /64 is another subscriber.
    neighbour = f"2001:db8:{next(_ip_counter):x}:2::1"
    assert outcome(authz.decide(ticket(neighbour))) == (200, "public")


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(authz: Authorizer) -> None:
    ip = fresh_ip()
    decisions = [
        authz.decide(ticket(ip, ("X-Forwarded-For", fresh_ip("192.0.2")))) for _ in range(6)
    ]
    assert [d.status for d in decisions] == [200] * 5 + [429]


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(authz: Authorizer) -> None:
    proxy = fresh_ip("10.1.2")  # inside the trusted 10.0.0.0/8
    # Seven distinct clients behind one proxy: none is limited.
    spread = [
        authz.decide(ticket(proxy, ("X-Forwarded-For", fresh_ip("192.0.2")))) for _ in "7" * 7
    ]
    assert [d.status for d in spread] == [200] * 7
    # One client behind it: limited on the sixth, however many proxies there are.
    client = fresh_ip("192.0.2")
    same = [authz.decide(ticket(fresh_ip("10.3.4"), ("X-Forwarded-For", client))) for _ in range(6)]
    assert [d.status for d in same] == [200] * 5 + [429]


def test_a_spoofed_hop_left_of_the_client_does_not_help(authz: Authorizer) -> None:
    proxy = fresh_ip("10.5.6")
    client = fresh_ip("192.0.2")
    decisions = [
        authz.decide(ticket(proxy, ("X-Forwarded-For", f"{fresh_ip('192.0.2')}, {client}")))
        for _ in range(6)
    ]
    assert [d.status for d in decisions] == [200] * 5 + [429]


# --- Fail closed ---------------------------------------------------------------------------


class BrokenFacts:
    def membership(self, user: str, workspace: str) -> Membership | None:
        raise ConnectionError("database is down")

    def resource(self, kind: str, id: str) -> Resource | None:
        raise ConnectionError("database is down")

    def has_grant(self, user: str, kind: str, id: str) -> bool:
        raise ConnectionError("database is down")


class BrokenKeyStore(MemoryApiKeyStore):
    def get(self, key_id: str) -> Any:
        raise OSError("disk I/O error")


class BrokenLimiter:
    def hit(self, key: str, spec: Any) -> Any:
        raise ConnectionError("redis is down")

    async def ahit(self, key: str, spec: Any) -> Any:
        raise ConnectionError("redis is down")


@pytest.mark.parametrize("path", ["/api/assistants", "/api/assistants/a-1"])
def test_facts_that_raise_are_503(shared: Authorizer, path: str) -> None:
    authz = sibling(shared, facts=BrokenFacts())
    decision = authz.decide(req(path, headers=[cookie(session())]))
    assert outcome(decision) == (503, "facts_unavailable")
    assert not decision.allowed
    assert "database is down" not in decision.message


def test_an_api_key_store_that_raises_is_503(shared: Authorizer) -> None:
    broken = BrokenKeyStore()
    authz = sibling(shared, api_keys=broken)
    token, _ = issue_api_key(user_id="u-bob", workspace="ws-1", now=NOW)
    decision = authz.decide(req(headers=[bearer(token)]))
    assert outcome(decision) == (503, "auth_unavailable")
    assert "disk" not in decision.message


def test_no_api_key_store_at_all_is_503(shared: Authorizer) -> None:
    authz = sibling(shared, api_keys=None)
    token, _ = issue_api_key(user_id="u-bob", workspace="ws-1", now=NOW)
    assert outcome(authz.decide(req(headers=[bearer(token)]))) == (503, "auth_unavailable")


def test_a_bug_in_the_policy_is_500_never_allow(
    authz: Authorizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: Policy, *attributes: Any) -> Any:
        raise ZeroDivisionError("bug")

    class BrokenTable(dict[Any, Any]):
        def get(self, *args: Any, **kwargs: Any) -> Any:
            raise ZeroDivisionError("bug")

    # The per-request path: the compiled table, and verdict() for points outside it.
    monkeypatch.setattr(Policy, "verdict", boom)
    monkeypatch.setattr(authz.core.policy, "table", BrokenTable())
    decision = authz.decide(req(headers=[cookie(session())]))
    assert outcome(decision) == (500, "internal_error")
    assert "bug" not in decision.message
    assert "ZeroDivision" not in decision.message


def test_a_rate_limiter_that_raises_is_503(shared: Authorizer) -> None:
    authz = sibling(shared, rate_limiter=BrokenLimiter())
    decision = authz.decide(ticket(fresh_ip()))
    assert outcome(decision) == (503, "auth_unavailable")
    assert not decision.allowed


def test_async_facts_through_the_sync_driver_fail_closed(shared: Authorizer) -> None:
    class AsyncOnly:
        async def membership(self, user: str, workspace: str) -> Membership | None:
            return Membership(user=user, workspace=workspace, role=Role.OWNER)

        async def resource(self, kind: str, id: str) -> Resource | None:
            return None

        async def has_grant(self, user: str, kind: str, id: str) -> bool:
            return True

    authz = sibling(shared, facts=AsyncOnly())
    decision = authz.decide(req(headers=[cookie(session())]))
    # A programming error (adecide is needed), not an outage: 500, not 503.
    assert outcome(decision) == (500, "internal_error")
    assert not decision.allowed


def test_a_facts_store_returning_garbage_is_not_an_allow(shared: Authorizer) -> None:
    class Garbage:
        def membership(self, user: str, workspace: str) -> Any:
            return "owner"

        def resource(self, kind: str, id: str) -> Any:
            return {"workspace": "ws-1"}

        def has_grant(self, user: str, kind: str, id: str) -> bool:
            return True

    authz = sibling(shared, facts=Garbage())
    for path in ("/api/assistants", "/api/assistants/a-1"):
        decision = authz.decide(req(path, headers=[cookie(session())]))
        assert not decision.allowed, path
        assert decision.status == 500


# --- decide_access against the oracle --------------------------------------------------------


def _access_args(
    endpoint: Endpoint, params: Mapping[str, str], header_ws: str | None
) -> dict[str, Any]:
    if endpoint.resource is None:
        return {"workspace": header_ws}
    kind, param = endpoint.resource
    args: dict[str, Any] = {"resource_kind": kind, "resource_id": params[param]}
    if kind == "member":
        args["workspace"] = params["workspaceId"]
    return args


def _sample_points(
    seed: int, count: int
) -> Iterator[tuple[World, Endpoint, dict[str, str], dict[str, Any]]]:
    rng = random.Random(seed)
    memberships: list[tuple[str, str] | None] = [None] + [(r, s) for r in ROLES for s in STATUSES]
    for _ in range(count):
        world = World()
        mine = rng.choice(memberships)
        if mine is not None:
            world.memberships[("u-me", "ws-1")] = mine
        world.memberships[("u-me", "ws-2")] = ("owner", "active")
        world.memberships[("u-other", "ws-1")] = ("member", "active")
        world.memberships[("u-target", "ws-1")] = (rng.choice(ROLES), "active")
        creator = rng.choice(("u-me", "u-other"))
        world.assistants["a-1"] = ("ws-1", rng.choice(("public", "workspace", "private")), creator)
        world.chats["c-1"] = ("ws-1", "a-1", rng.choice(("u-me", "u-other")))
        if rng.random() < 0.3:
            world.grants.add(("u-me", "a-1"))
        endpoint = rng.choice(AUTHENTICATED_ENDPOINTS)
        missing = rng.random() < 0.15
        params = {
            "assistantId": "a-gone" if missing else "a-1",
            "chatId": "c-gone" if missing else "c-1",
            "workspaceId": "ws-1",
            "userId": "u-target" if rng.random() < 0.85 else "u-nobody",
        }
        params = {k: v for k, v in params.items() if "{" + k + "}" in endpoint.template}
        principal_ws = rng.choice(("ws-1", "ws-2", None))
        header_ws = rng.choice(("ws-1", None))
        scopes = rng.choice((None, None, frozenset({endpoint.action}), frozenset({"billing:read"})))
        bound = scopes is not None and principal_ws is not None and rng.random() < 0.5
        yield (
            world,
            endpoint,
            params,
            {
                "principal_ws": principal_ws,
                "header_ws": header_ws,
                "scopes": scopes,
                "bound": bound,
            },
        )


@pytest.mark.parametrize("conceal", [False, True], ids=["403", "conceal"])
def test_decide_access_agrees_with_the_oracle(tmp_path: Path, conceal: bool) -> None:
    problems: list[str] = []
    authz = make_authorizer(tmp_path, decisions={"conceal_hidden": conceal})
    for world, endpoint, params, how in _sample_points(seed=7 + conceal, count=400):
        principal = Principal(
            user_id="u-me",
            kind=CredentialKind.API_KEY if how["scopes"] is not None else CredentialKind.SESSION,
            workspace=how["principal_ws"],
            scopes=how["scopes"],
            workspace_bound=how["bound"],
        )
        decision = sibling(authz, facts=world.facts()).decide_access(
            principal=principal,
            action=endpoint.action,
            **_access_args(endpoint, params, how["header_ws"]),
        )
        expected = oracle(
            world,
            endpoint,
            params,
            user="u-me",
            principal_workspace=how["principal_ws"],
            header_workspace=how["header_ws"],
            scopes=how["scopes"],
            workspace_bound=how["bound"],
            conceal=conceal,
        )
        if decision.status != expected.status or (
            expected.reason is not None and decision.reason.value != expected.reason
        ):
            problems.append(f"{endpoint.action} {params} {how}: {outcome(decision)} vs {expected}")
    assert not problems, f"{len(problems)} disagree:\n" + "\n".join(problems[:10])


def test_decide_access_matches_decide_for_the_same_question(authz: Authorizer) -> None:
    principal = Principal(user_id="u-bob", kind=CredentialKind.SESSION, workspace="ws-1")
    via_http = authz.decide(req("/api/assistants/a-1", method="DELETE"), principal=principal)
    via_access = authz.decide_access(
        principal=principal, action="assistant:delete", resource_kind="assistant", resource_id="a-1"
    )
    assert outcome(via_http) == outcome(via_access) == (403, "insufficient_role")


@pytest.mark.parametrize(
    ("action", "kind"),
    [
        ("assistant:fly", None),
        ("", None),
        ("ASSISTANT:READ", "assistant"),
        ("assistant:read", "spaceship"),
        ("assistant:read", "ASSISTANT"),
        ("workspace:read", ""),
    ],
)
def test_decide_access_denies_unknown_actions_and_kinds(
    authz: Authorizer, action: str, kind: str | None
) -> None:
    owner = Principal(user_id="u-alice", kind=CredentialKind.SESSION, workspace="ws-1")
    decision = authz.decide_access(
        principal=owner, action=action, resource_kind=kind, resource_id="a-1", workspace="ws-1"
    )
    assert not decision.allowed
    assert outcome(decision) == (403, "policy_denied")


@pytest.mark.parametrize("resource_id", ["", "a/b", "x" * 300, "tab\there"])
def test_decide_access_refuses_malformed_ids(authz: Authorizer, resource_id: str) -> None:
    owner = Principal(user_id="u-alice", kind=CredentialKind.SESSION, workspace="ws-1")
    decision = authz.decide_access(
        principal=owner, action="assistant:read", resource_kind="assistant", resource_id=resource_id
    )
    assert decision.status == 400


def test_decide_access_with_broken_facts_is_503(shared: Authorizer) -> None:
    authz = sibling(shared, facts=BrokenFacts())
    owner = Principal(user_id="u-alice", kind=CredentialKind.SESSION, workspace="ws-1")
    decision = authz.decide_access(principal=owner, action="assistant:list")
    assert outcome(decision) == (503, "facts_unavailable")


def test_decisions_are_reported_with_their_context(authz: Authorizer) -> None:
    decision = authz.decide(req("/api/assistants/a-1", headers=[cookie(session("u-bob"))]))
    assert outcome(decision) == (200, "allowed")
    assert decision.route == "GET /api/assistants/{assistantId}"
    assert decision.action == "assistant:read"
    assert decision.resource is not None
    assert decision.resource.as_dict() == {"kind": "assistant", "id": "a-1", "workspace": "ws-1"}
    assert dict(decision.params) == {"assistantId": "a-1"}
    assert cast(Principal, decision.principal).user_id == "u-bob"
    assert decision.explanation


# --- Facts from a database: plain strings, not our enums ----------------------------------


class _DatabaseFacts:
    """A host's store: rows come back as plain strings, as a database column gives them."""

    def __init__(self, rows: dict[tuple[str, str], tuple[str, str]]) -> None:
        self.rows = rows

    def membership(self, user: str, workspace: str) -> Membership | None:
        row = self.rows.get((user, workspace))
        if row is None:
            return None
        role, status = row
        return Membership(user=user, workspace=workspace, role=role, status=status)

    def resource(self, kind: str, id: str) -> Resource | None:
        if (kind, id) != ("assistant", "a-str"):
            return None
        return Resource(
            kind="assistant", id="a-str", workspace="ws-1", visibility="private", creator="u-alice"
        )

    def has_grant(self, user: str, kind: str, id: str) -> bool:
        return False


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_an_admin_never_changes_an_owner_whose_role_is_a_plain_string(
    shared: Authorizer, method: str
) -> None:
    facts = _DatabaseFacts(
        {("u-bob", "ws-1"): ("admin", "active"), ("u-alice", "ws-1"): ("owner", "active")}
    )
    authz = sibling(shared, facts=facts)
    path = "/api/workspaces/ws-1/members/u-alice"
    decision = authz.decide(req(path, method=method, headers=[cookie(session("u-bob"))]))
    assert outcome(decision) == (403, "insufficient_role")
    owner = authz.decide(req(path, method=method, headers=[cookie(session("u-alice"))]))
    assert outcome(owner) == (200, "allowed")


def test_string_visibility_and_status_from_a_database_decide_like_enums(
    shared: Authorizer,
) -> None:
    facts = _DatabaseFacts(
        {("u-bob", "ws-1"): ("member", "active"), ("u-carol", "ws-1"): ("admin", "suspended")}
    )
    authz = sibling(shared, facts=facts)
    path = "/api/assistants/a-str"
    bob = authz.decide(req(path, headers=[cookie(session("u-bob"))]))
    assert outcome(bob) == (403, "not_visible")
    carol = authz.decide(req(path, headers=[cookie(session("u-carol"))]))
    assert outcome(carol) == (403, "membership_inactive")


def test_identify_says_who_calls_without_a_route(authz: Authorizer) -> None:
    # For endpoints that name their resource themselves: any path, no policy.
    known = authz.identify(req("/anything/at/all", headers=[cookie(session())]))
    assert outcome(known) == (200, "allowed")
    assert known.principal is not None
    assert known.principal.user_id == "u-alice"
    assert outcome(authz.identify(req("/x"))) == (401, "authentication_required")
    bad = authz.identify(req("/x", headers=[cookie("garbage")]))
    assert outcome(bad) == (401, "invalid_credential")
    assert bad.principal is None
    assert outcome(authz.identify(req("/x", method="BREW"))) == (400, "bad_method")


@pytest.mark.parametrize("value", [None, 5, ["x"]])
def test_request_facts_refuse_header_values_that_are_not_text(value: Any) -> None:
    with pytest.raises(TypeError, match="str or bytes"):
        RequestFacts.build(method="GET", path="/", headers=[("x-workspace-id", value)])
    raw = RequestFacts.build(method="GET", path="/", headers=[(b"Cookie", b"a=\xe9")])
    assert raw.headers == (("cookie", "a=\xe9"),)  # bytes are HTTP's Latin-1 view


def test_decide_access_never_raises_on_bad_arguments_or_odd_store_errors(
    shared: Authorizer,
) -> None:
    principal = Principal(user_id="u-alice", kind=CredentialKind.SESSION)
    authz = sibling(shared, facts=_world())
    odd = authz.decide_access(
        principal=principal,
        action="assistant:read",
        resource_kind="assistant",
        resource_id=7,  # type: ignore[arg-type]
    )
    assert outcome(odd) == (500, "internal_error")
    assert not odd.allowed

    class RefusingStore:
        def membership(self, *args: str) -> None:
            raise CredentialError("session revoked upstream")

        resource = has_grant = membership

    refused = sibling(shared, facts=RefusingStore()).decide_access(
        principal=principal, action="assistant:read", resource_kind="assistant", resource_id="a-1"
    )
    assert outcome(refused) == (401, "invalid_credential")
    assert refused.principal is None


_ISSUER = LocalIssuer(issuer="https://tenant.example/", audience="https://api.example")


@pytest.mark.parametrize(
    ("principal", "headers"),
    [
        # A given caller: the rules' replay is the flow that receives the throw.
        (Principal(user_id="u1", kind=CredentialKind.SESSION, workspace="w1"), []),
        # A bearer token: the credential step asks first (the JWKS key).
        (None, [("authorization", f"Bearer {_ISSUER.mint('u1', workspace='w1')}")]),
    ],
)
def test_any_exception_thrown_into_a_hand_driven_flow_is_a_deny(
    principal: Principal | None, headers: list[tuple[str, str]]
) -> None:
    # A host driving core.decide itself may throw whatever its store raised: that is a
    # lookup that failed, a 503 deny, never an exception out of the flow (nor an allow).
    from illumichat_authz.compile import build_core
    from illumichat_authz.core import decide, flow

    settings = load_settings(
        overrides={"auth0": {"domain": "tenant.example", "audience": _ISSUER.audience}}
    )
    request = RequestFacts.build(
        method="GET", path="/api/assistants/a1", headers=[("host", "x"), *headers]
    )
    steps = flow(decide, request, build_core(settings), now=0.0, principal=principal)
    first = next(steps)
    with pytest.raises(StopIteration) as done:
        steps.throw(ConnectionError("db down"))
    decision: Decision = done.value.value
    expected = "facts_unavailable" if first.lookup == "resource" else "auth_unavailable"
    assert (decision.status, decision.reason.value) == (503, expected)


@pytest.mark.parametrize("action", ["assistant:read", "assistant:update"])
def test_an_assistant_without_a_visibility_is_visible_to_no_one(
    tmp_path: Path, action: str
) -> None:
    # A host's store with a NULL visibility column must not skip the visibility table:
    # a missing fact is a deny, never the role table's allow alone.
    world = _world()
    hidden = Assistant(id="a-2", workspace="ws-1", visibility=None, creator="u-alice")  # type: ignore[arg-type]
    world.add(hidden)
    authz = make_authorizer(tmp_path, facts=world)
    for user in ("u-bob", "u-alice"):
        decision = authz.decide_access(
            principal=Principal(user_id=user, kind=CredentialKind.SESSION),
            action=action,
            resource_kind="assistant",
            resource_id="a-2",
        )
        assert not decision.allowed, (user, decision)
        assert decision.status == 403
    visible = authz.decide_access(
        principal=Principal(user_id="u-alice", kind=CredentialKind.SESSION),
        action=action,
        resource_kind="assistant",
        resource_id="a-1",
    )
    assert visible.allowed
