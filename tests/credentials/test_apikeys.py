"""API key format, parsing and verification (pure functions; fake stores).

The whole bearer path (parse, look up, verify, record use) is the driver's: those tests go
through :meth:`Authorizer.identify` with a fake or in-memory store.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.credentials.apikeys import (
    API_KEY_LENGTH,
    API_KEY_PATTERN,
    API_KEY_SCAN_PATTERN,
    ApiKeyRecord,
    ApiKeyStore,
    ParsedApiKey,
    issue_api_key,
    looks_like_api_key,
    parse_api_key,
    validate_scope,
    verify_api_key,
)
from illumichat_authz.decision import Decision
from illumichat_authz.errors import CredentialError, DependencyUnavailableError
from illumichat_authz.principal import CredentialKind
from illumichat_authz.reasons import STATUS_OF, Reason
from illumichat_authz.request import RequestFacts
from illumichat_authz.stores.api_keys import MemoryApiKeyStore
from illumichat_authz.testing.fixtures import build_test_authorizer, make_test_settings

NOW = 1_800_000_000.0
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _issue(**kw: object) -> tuple[str, ApiKeyRecord]:
    args: dict[str, object] = {"user_id": "user_1", "workspace": "ws_1", "now": NOW}
    args.update(kw)
    return issue_api_key(**args)  # type: ignore[arg-type]


#: The test kit's core (API keys on) without a credential cache: every request asks the store.
CORE = build_test_authorizer(make_test_settings(api_keys={"cache_ttl_s": 0})).core


def identify(token: str, store: ApiKeyStore, *, now: float) -> Decision:
    """``Authorization: Bearer <token>`` through the driver, at unix time ``now``."""
    request = RequestFacts.build(
        method="GET",
        path="/",
        headers={"host": "api.illumichat.test", "authorization": f"Bearer {token}"},
    )
    return Authorizer(core=CORE, api_keys=store, clock=lambda: now).identify(request)


@dataclass
class RecordingStore:
    """A fake store that records every call, to prove what was (not) looked up."""

    inner: MemoryApiKeyStore = field(default_factory=MemoryApiKeyStore)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key_id: str) -> ApiKeyRecord | None:
        self.calls.append(("get", key_id))
        return self.inner.get(key_id)

    def add(self, record: ApiKeyRecord) -> None:
        self.inner.add(record)

    def list(self, *, workspace: str | None = None, user: str | None = None) -> list[ApiKeyRecord]:
        return self.inner.list(workspace=workspace, user=user)

    def revoke(self, key_id: str, *, now: float) -> bool:
        return self.inner.revoke(key_id, now=now)

    def touch(self, key_id: str, *, now: float) -> None:
        self.calls.append(("touch", key_id))
        self.inner.touch(key_id, now=now)


# -- format ----------------------------------------------------------------------------


def test_format_matches_documented_grammar() -> None:
    token, record = _issue()
    assert len(token) == API_KEY_LENGTH == 66
    assert re.fullmatch(r"ick_[0-9A-Za-z]{12}_[0-9A-Za-z]{49}", token)
    match = API_KEY_PATTERN.fullmatch(token)
    assert match is not None
    assert match["key_id"] == record.key_id
    # The checksum is CRC32 of everything before it, base62, fixed width 6.
    crc = zlib.crc32(token[:-6].encode())
    digits = "".join(B62[(crc // 62**i) % 62] for i in reversed(range(6)))
    assert token[-6:] == digits


def test_round_trip_and_record_holds_only_a_hash() -> None:
    token, record = _issue()
    parsed = parse_api_key(token)
    assert parsed.key_id == record.key_id
    assert parsed.digest == record.digest
    secret = token.split("_")[2][:43]
    assert secret not in repr(record)
    assert record.digest.hex() not in repr(record)
    assert secret.encode() not in record.digest
    assert len(record.digest) == 32


def test_keys_are_unique_and_carry_256_random_bits() -> None:
    tokens = {_issue()[0] for _ in range(200)}
    assert len(tokens) == 200
    # 43 base62 characters hold 256 bits; the encoding spreads over the alphabet.
    assert 62**43 > 2**256
    secrets_part = "".join(t[17:60] for t in tokens)
    assert len(set(secrets_part)) == 62


def test_scan_pattern_finds_keys_in_text_and_prefix_check() -> None:
    token, _ = _issue()
    text = f'export ILLUMICHAT_KEY="{token}"\nother=ick_short and x{token}'
    assert API_KEY_SCAN_PATTERN.findall(text) == [token]
    assert looks_like_api_key(token)
    assert not looks_like_api_key("eyJhbGciOiJIUzI1NiJ9.e30.sig")
    assert not looks_like_api_key("")


def test_checksum_rejects_without_touching_the_store() -> None:
    token, record = _issue()
    store = RecordingStore()
    store.add(record)
    last = token[-1]
    bad = token[:-1] + ("A" if last != "A" else "B")
    decision = identify(bad, store, now=NOW)
    assert decision.reason is Reason.API_KEY_INVALID
    assert decision.status == 401
    assert store.calls == []
    assert bad not in decision.message
    assert token[17:60] not in decision.message


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_single_character_change_is_caught(data: st.DataObject) -> None:
    token, _ = _issue()
    position = data.draw(st.integers(0, len(token) - 1), label="position")
    replacement = data.draw(
        st.characters(codec="utf-8").filter(lambda c: c != token[position]), label="char"
    )
    mutated = token[:position] + replacement + token[position + 1 :]
    with pytest.raises(CredentialError) as info:
        parse_api_key(mutated)
    assert info.value.reason is Reason.API_KEY_INVALID


def test_every_single_character_change_is_caught_exhaustively_for_one_key() -> None:
    token, _ = _issue()
    for i in range(len(token)):
        for c in B62 + "_-.":
            if c == token[i]:
                continue
            with pytest.raises(CredentialError):
                parse_api_key(token[:i] + c + token[i + 1 :])


@pytest.mark.parametrize(
    "token",
    [
        "",
        "ick_",
        "ick_" + "A" * 62,
        "x" * 10_000,
        "Bearer ick_abc",
        "ick_" + "é" * 62,
        "ick_" + "\x00" * 62,
    ],
)
def test_malformed_keys(token: str) -> None:
    with pytest.raises(CredentialError) as info:
        parse_api_key(token)
    assert info.value.reason is Reason.API_KEY_INVALID


def test_whitespace_around_a_valid_key_is_rejected() -> None:
    token, _ = _issue()
    for bad in (token + "\n", " " + token, token[:-1], token + "0"):
        with pytest.raises(CredentialError):
            parse_api_key(bad)


def test_non_string_input_fails_closed() -> None:
    token, _ = _issue()
    with pytest.raises(CredentialError):
        parse_api_key(token.encode())  # type: ignore[arg-type]
    with pytest.raises(CredentialError):
        parse_api_key(None)  # type: ignore[arg-type]


@settings(max_examples=200)
@given(st.text(max_size=120) | st.from_regex(r"ick_[0-9A-Za-z_]{55,65}", fullmatch=True))
def test_fuzz_parse_raises_only_credential_error(token: str) -> None:
    outcome: ParsedApiKey | CredentialError
    try:
        outcome = parse_api_key(token)
    except CredentialError as exc:
        outcome = exc
    # Only a real checksum passes; anything else is api_key_invalid, never another error.
    if isinstance(outcome, CredentialError):
        assert outcome.reason is Reason.API_KEY_INVALID


# -- verification ------------------------------------------------------------------------


def test_verify_gives_a_workspace_bound_principal_with_scopes() -> None:
    token, record = _issue(scopes=["chats:read", "assistants:use"], expires_at=NOW + 60)
    principal = verify_api_key(parse_api_key(token), record, now=NOW)
    assert principal.kind is CredentialKind.API_KEY
    assert principal.user_id == "user_1"
    assert principal.workspace == "ws_1"
    assert principal.workspace_bound is True
    assert principal.scopes == frozenset({"chats:read", "assistants:use"})
    assert principal.expires_at == NOW + 60
    assert principal.credential_id == record.key_id
    assert token[17:60] not in repr(principal)


def test_unscoped_key_is_not_narrowed_and_empty_scopes_stay_empty() -> None:
    token, record = _issue()
    assert verify_api_key(parse_api_key(token), record, now=NOW).scopes is None
    token, record = _issue(scopes=[])
    assert verify_api_key(parse_api_key(token), record, now=NOW).scopes == frozenset()


def test_unknown_key_and_wrong_secret_are_invalid() -> None:
    token, record = _issue()
    _other_token, other = _issue()
    parsed = parse_api_key(token)
    for rec in (None, other, replace(record, digest=other.digest)):
        with pytest.raises(CredentialError) as info:
            verify_api_key(parsed, rec, now=NOW)
        assert info.value.reason is Reason.API_KEY_INVALID


def test_revoked_and_expired() -> None:
    token, record = _issue(expires_at=NOW + 10)
    parsed = parse_api_key(token)
    with pytest.raises(CredentialError) as info:
        verify_api_key(parsed, replace(record, revoked_at=NOW + 5), now=NOW)
    assert info.value.reason is Reason.API_KEY_REVOKED
    assert STATUS_OF[info.value.reason] == 401
    verify_api_key(parsed, record, now=NOW + 9.999)
    for when in (NOW + 10, NOW + 1e6):
        with pytest.raises(CredentialError) as info:
            verify_api_key(parsed, record, now=when)
        assert info.value.reason is Reason.API_KEY_EXPIRED


def test_revoked_or_expired_is_only_revealed_to_the_secret_holder() -> None:
    _token, record = _issue(expires_at=NOW + 10)
    _, stranger = _issue()
    forged = ParsedApiKey(key_id=record.key_id, digest=stranger.digest)
    for rec in (replace(record, revoked_at=NOW), record):
        with pytest.raises(CredentialError) as info:
            verify_api_key(forged, rec, now=NOW + 100)
        assert info.value.reason is Reason.API_KEY_INVALID


def test_revocation_takes_effect_for_the_next_verify() -> None:
    token, record = _issue()
    store = RecordingStore()
    store.add(record)
    principal = identify(token, store, now=NOW).principal
    assert principal is not None
    assert principal.user_id == "user_1"
    assert store.calls == [("get", record.key_id), ("touch", record.key_id)]
    assert store.revoke(record.key_id, now=NOW + 1)
    decision = identify(token, store, now=NOW + 1)
    assert (decision.status, decision.reason) == (401, Reason.API_KEY_REVOKED)
    assert not store.revoke("nope", now=NOW)


def test_touch_is_throttled_per_key() -> None:
    token, record = _issue()
    store = MemoryApiKeyStore(touch_interval_s=60)
    store.add(record)
    for i in range(100):
        assert identify(token, store, now=NOW + i * 0.5).allowed  # 50 s of traffic
    assert store.writes == 1
    assert identify(token, store, now=NOW + 61).allowed
    assert store.writes == 2
    last = store.get(record.key_id)
    assert last is not None
    assert last.last_used_at == NOW + 61


class _BrokenTouch(MemoryApiKeyStore):
    def touch(self, key_id: str, *, now: float) -> None:
        raise DependencyUnavailableError("down")


class _BrokenGet(MemoryApiKeyStore):
    def get(self, key_id: str) -> ApiKeyRecord | None:
        raise DependencyUnavailableError("down")


def test_store_failures() -> None:
    token, record = _issue()
    broken_touch = _BrokenTouch()
    broken_touch.add(record)
    principal = identify(token, broken_touch, now=NOW).principal
    assert principal is not None
    assert principal.user_id == "user_1"
    broken_get = _BrokenGet()
    assert identify(token, broken_get, now=NOW).status == 503


# -- issuance input ---------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["chats:read", "assistant_settings:update"])
def test_valid_scopes(scope: str) -> None:
    assert validate_scope(scope) == scope


@pytest.mark.parametrize(
    "scope", ["", "chats", "Chats:read", "chats:read:x", "*", "a:b ", "a" * 200]
)
def test_invalid_scopes(scope: str) -> None:
    with pytest.raises(ValueError, match="resource:verb"):
        validate_scope(scope)
    with pytest.raises(ValueError, match="resource:verb"):
        _issue(scopes=[scope])


@pytest.mark.parametrize(
    "kw",
    [
        {"user_id": ""},
        {"workspace": ""},
        {"workspace": " ws"},
        {"user_id": "a\nb"},
        {"name": ""},
        {"expires_at": NOW},
        {"expires_at": NOW - 1},
    ],
)
def test_invalid_issue_arguments(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        _issue(**kw)


def test_documented_scanner_regex_is_the_one_we_ship() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "credentials-api-keys.md").read_text()
    block = doc.split("<!-- scan-regex -->", 1)[1].split("```regex\n", 1)[1].split("\n```", 1)[0]
    assert block == API_KEY_SCAN_PATTERN.pattern
    token, _ = _issue()
    assert re.findall(block, f"key={token};") == [token]
    simple = r"\bick_[0-9A-Za-z]{12}_[0-9A-Za-z]{49}\b"
    assert simple in doc
    assert re.findall(simple, f"key={token};") == [token]
