"""Auth.js session decoder: the RFC vector, bad input, claims, rotation, database strategy.

Database-strategy cookies go through the driver (``Authorizer.identify`` with a fake
store); the SQLite store itself is tested in tests/stores/test_sessions_sqlite.py.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illumichat_authz.authorizer import Authorizer, build_core
from illumichat_authz.config import SessionSettings, load_settings
from illumichat_authz.credentials import _jwe
from illumichat_authz.credentials.authjs import (
    AuthjsSessionDecoder,
    SessionCookie,
    derive_content_key,
    derive_v4_key,
    encode_session_token,
)
from illumichat_authz.credentials.sessions import SessionRecord, principal_from_session_record
from illumichat_authz.decision import Decision
from illumichat_authz.errors import ConfigurationError, CredentialError
from illumichat_authz.principal import CredentialKind
from illumichat_authz.reasons import Reason
from illumichat_authz.request import RequestFacts

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
NAME = "authjs.session-token"
SECURE = "__Secure-authjs.session-token"
NOW = 1_750_000_000.0
GENERIC = "session token is invalid"


def _vector_path() -> Path:
    for base in (Path(__file__).resolve().parent, *Path(__file__).resolve().parents):
        candidate = base / "shared" / "vectors" / "rfc7518-b3-a256cbc-hs512.json"
        if candidate.exists():
            return candidate
    return Path("/work/shared/vectors/rfc7518-b3-a256cbc-hs512.json")


def mint(claims: dict[str, Any] | None = None, **kw: Any) -> str:
    kw.setdefault("secret", "s1")
    kw.setdefault("now", NOW)
    return encode_session_token({"sub": "u1"} if claims is None else claims, **kw)


def decoder(**kw: Any) -> AuthjsSessionDecoder:
    kw.setdefault("secrets", ["s1"])
    return AuthjsSessionDecoder(**kw)


def cookie(value: str, name: str = NAME) -> SessionCookie:
    return SessionCookie(name=name, value=value)


def reject(
    dec: AuthjsSessionDecoder, value: str, name: str = NAME, now: float = NOW
) -> CredentialError:
    with pytest.raises(CredentialError) as info:
        dec.decode(cookie(value, name), now=now)
    assert value not in info.value.message or len(value) < 4
    return info.value


def raw_token(header: dict[str, Any], payload: bytes, key: _jwe.ContentKey) -> str:
    return _jwe.encrypt(payload, key, header=header)


# -- RFC 7518 Appendix B.3 --------------------------------------------------------------


def test_rfc7518_b3_vector() -> None:
    v = {
        k: bytes.fromhex(x)
        for k, x in json.loads(_vector_path().read_text()).items()
        if k != "source"
    }
    key = _jwe.ContentKey.create(v["K"], enc="A256CBC-HS512")
    ciphertext, tag = _jwe.seal(v["P"], key, aad=v["A"], iv=v["IV"])
    assert ciphertext == v["E"]
    assert tag == v["T"]
    parts = _jwe.Compact(v["A"].decode(), {"enc": "A256CBC-HS512"}, v["IV"], v["E"], v["T"])
    assert _jwe.decrypt(parts, key) == v["P"]
    bad = _jwe.Compact(v["A"].decode(), {"enc": "A256CBC-HS512"}, v["IV"], v["E"], bytes(32))
    with pytest.raises(_jwe.JweError):
        _jwe.decrypt(bad, key)


def test_b64url_is_strict() -> None:
    assert _jwe.b64url_decode("AQID") == b"\x01\x02\x03"
    assert _jwe.b64url_decode("-_8") == b"\xfb\xff"
    for bad in ("A", "AQ==", "+/8", "AQ D", "é"):
        with pytest.raises(_jwe.JweError):
            _jwe.b64url_decode(bad)


# -- round trips and claims --------------------------------------------------------------


@pytest.mark.parametrize("enc", ["A256CBC-HS512", "A256GCM"])
@pytest.mark.parametrize("name", [NAME, SECURE])
def test_round_trip(enc: Any, name: str) -> None:
    token = mint(
        {"sub": "u1", "email": "a@example.com", "name": "Ann", "ws": "w1"},
        enc=enc,
        cookie_name=name,
    )
    principal = decoder(workspace_claim="ws").decode(cookie(token, name), now=NOW + 60)
    assert principal.kind is CredentialKind.SESSION
    assert principal.user_id == "u1"
    assert principal.workspace == "w1"
    assert principal.email == "a@example.com"
    assert principal.name == "Ann"
    assert principal.expires_at == NOW + 30 * 24 * 3600
    assert principal.credential_id is not None
    assert len(principal.credential_id) == 16
    assert principal.credential_id not in token
    assert principal.claims["jti"]


def test_header_is_what_authjs_writes() -> None:
    token = mint()
    header = json.loads(_jwe.b64url_decode(token.split(".")[0]))
    assert header == {
        "alg": "dir",
        "enc": "A256CBC-HS512",
        "kid": derive_content_key("s1", salt=NAME, enc="A256CBC-HS512").kid,
    }
    assert token.split(".")[1] == ""


def test_token_under_another_name_fails() -> None:
    token = mint(cookie_name=NAME)
    err = reject(decoder(), token, name=SECURE)
    assert err.reason is Reason.INVALID_CREDENTIAL
    # ... and a custom cookie name is its own salt.
    custom = decoder(cookie_name="illumichat.session")
    err = reject(custom, token, name="illumichat.session")
    assert err.message == GENERIC


def test_unknown_cookie_name_is_refused() -> None:
    err = reject(decoder(), mint(), name="other")
    assert err.reason is Reason.INVALID_CREDENTIAL


def test_expiry_with_tolerance() -> None:
    token = mint(max_age_s=100)
    dec = decoder()
    exp = NOW + 100
    assert dec.decode(cookie(token), now=exp + 14.9).user_id == "u1"
    err = reject(dec, token, now=exp + 15)
    assert err.reason is Reason.SESSION_EXPIRED
    assert err.status == 401
    strict = decoder(clock_tolerance_s=0)
    assert reject(strict, token, now=exp).reason is Reason.SESSION_EXPIRED


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": None},
        {"exp": "9999999999"},
        {"exp": True},
        {"exp": 10**400},
        {"nbf": NOW + 100},
        {"nbf": "0"},
        {"iat": NOW + 100},
        {"iat": None},
        {"sub": None},
        {"sub": 42},
        {"sub": ""},
        {"ws": 7},
        {"ws": ""},
    ],
)
def test_bad_claims(claims: dict[str, Any]) -> None:
    key = derive_content_key("s1", salt=NAME, enc="A256CBC-HS512")
    payload = {"sub": "u1", "iat": NOW, "exp": NOW + 60, **claims}
    token = raw_token(
        {"alg": "dir", "enc": "A256CBC-HS512", "kid": key.kid}, json.dumps(payload).encode(), key
    )
    err = reject(decoder(workspace_claim="ws"), token)
    assert err.reason is Reason.INVALID_CREDENTIAL


def test_missing_exp_and_non_object_payloads() -> None:
    key = derive_content_key("s1", salt=NAME, enc="A256CBC-HS512")
    header = {"alg": "dir", "enc": "A256CBC-HS512", "kid": key.kid}
    for payload in (b'{"sub":"u1"}', b"[1]", b"not json", b'{"sub":"u1","exp":NaN}', b"\xff"):
        err = reject(decoder(), raw_token(header, payload, key))
        assert err.reason is Reason.INVALID_CREDENTIAL


def test_non_string_email_and_name_are_dropped() -> None:
    principal = decoder().decode(cookie(mint({"sub": "u1", "email": 1, "name": None})), now=NOW)
    assert principal.email is None
    assert principal.name is None


# -- rotation, kid, key derivation ------------------------------------------------------


def test_rotation() -> None:
    old = mint(secret="old")
    new = mint(secret="new")
    both = decoder(secrets=["new", "old"])
    assert both.decode(cookie(old), now=NOW).user_id == "u1"
    assert both.decode(cookie(new), now=NOW).user_id == "u1"
    only_new = decoder(secrets=["new"])
    assert reject(only_new, old).message == GENERIC
    assert only_new.decode(cookie(new), now=NOW).user_id == "u1"


@pytest.mark.parametrize("enc", ["A256CBC-HS512", "A256GCM"])
def test_without_kid_only_the_newest_secret_is_tried(enc: Any) -> None:
    # @auth/core's decode: "if (kid === undefined) return encryptionSecret" for the first
    # secret. The interop test checks the peer itself says the same.
    key = derive_content_key("old", salt=NAME, enc=enc)
    payload = json.dumps({"sub": "u1", "exp": NOW + 60}).encode()
    token = raw_token({"alg": "dir", "enc": enc}, payload, key)
    assert decoder(secrets=["old", "new"]).decode(cookie(token), now=NOW).user_id == "u1"
    assert reject(decoder(secrets=["new", "old"]), token).message == GENERIC
    assert reject(decoder(secrets=["new"]), token).message == GENERIC


def test_kid_picks_the_key_without_trial_decryption(monkeypatch: pytest.MonkeyPatch) -> None:
    dec = decoder(secrets=["a", "b", "c"])
    calls: list[str] = []
    real = _jwe.decrypt

    def counting(parts: _jwe.Compact, key: _jwe.ContentKey) -> bytes:
        calls.append(key.kid)
        return real(parts, key)

    monkeypatch.setattr(_jwe, "decrypt", counting)
    assert dec.decode(cookie(mint(secret="c")), now=NOW).user_id == "u1"
    assert len(calls) == 1
    calls.clear()
    reject(dec, mint(secret="zzz"))
    assert calls == []  # unknown kid: no crypto at all


def test_keys_are_derived_once(monkeypatch: pytest.MonkeyPatch) -> None:
    dec = decoder(secrets=["a", "b"], accept_nextauth_v4=True)
    token = mint(secret="b")
    calls = 0
    real = _jwe.derive_key

    def counting(*args: Any, **kw: Any) -> bytes:
        nonlocal calls
        calls += 1
        return real(*args, **kw)

    monkeypatch.setattr(_jwe, "derive_key", counting)
    for _ in range(20):
        dec.decode(cookie(token), now=NOW)
    assert calls == 0


# -- malformed tokens: one generic answer ------------------------------------------------


def _key(enc: Any = "A256CBC-HS512") -> _jwe.ContentKey:
    return derive_content_key("s1", salt=NAME, enc=enc)


def _good_header(**extra: Any) -> dict[str, Any]:
    return {"alg": "dir", "enc": "A256CBC-HS512", "kid": _key().kid, **extra}


_PAYLOAD = json.dumps({"sub": "u1", "exp": NOW + 60}).encode()


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "A256KW", "enc": "A256CBC-HS512"},
        {"alg": "none", "enc": "A256CBC-HS512"},
        {"enc": "A256CBC-HS512"},
        {"alg": "dir", "enc": "A128CBC-HS256"},
        {"alg": "dir", "enc": "A256GCM"},  # enc disagrees with the key's kid
        {"alg": "dir"},
        _good_header(zip="DEF"),
        _good_header(crit=["exp"]),
        _good_header(jku="https://evil.example/jwks"),
        _good_header(jwk={"kty": "oct", "k": "AAAA"}),
        _good_header(cty="JWT"),
        _good_header(x5u="https://evil.example"),
        _good_header(p2c=1000000),
        _good_header(typ="JOSE+JSON"),
        _good_header(kid=1),
        _good_header(kid="not-a-thumbprint"),
    ],
)
def test_bad_headers(header: dict[str, Any]) -> None:
    token = raw_token(header, _PAYLOAD, _key())
    err = reject(decoder(), token)
    assert (err.reason, err.message) == (Reason.INVALID_CREDENTIAL, GENERIC)


def test_typ_jwt_is_allowed() -> None:
    token = raw_token(_good_header(typ="JWT"), _PAYLOAD, _key())
    assert decoder().decode(cookie(token), now=NOW).user_id == "u1"


def _with_part(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


def _b64(data: bytes) -> str:
    return _jwe.b64url_encode(data)


def test_structural_rejections() -> None:
    good = mint()
    h, _, _iv, ct, tag = good.split(".")
    dup = _b64(b'{"alg":"dir","alg":"dir","enc":"A256CBC-HS512"}')
    cases = [
        "a.b.c.d.e.f",
        h + "..." + tag,
        _with_part(good, 1, _b64(bytes(64))),  # a non-empty encrypted key
        _with_part(good, 2, _b64(bytes(12))),  # CBC wants a 16-byte IV
        _with_part(good, 4, _b64(bytes(16))),  # CBC-HS512 wants a 32-byte tag
        _with_part(good, 3, ct[:-2]),  # not whole blocks
        _with_part(good, 3, ""),
        _with_part(good, 0, dup),
        _with_part(good, 0, _b64(b"[]")),
        _with_part(good, 0, _b64(b"\xff\xfe")),
        _with_part(good, 0, "!!!"),
        _with_part(good, 0, "A" * 5000),
        _with_part(good, 3, ct + "A" * (_jwe.MAX_TOKEN_CHARS + 1)),
        _with_part(good, 3, "+" + ct[1:]),  # base64, not base64url
        _with_part(good, 3, ct + "=" * (-len(ct) % 4 or 4)),  # padded
    ]
    dec = decoder()
    for token in cases:
        if token.count(".") != 4:
            token = token + ".x" if token.count(".") < 4 else token
        err = reject(dec, token)
        assert (err.reason, err.message) == (Reason.INVALID_CREDENTIAL, GENERIC)


def test_gcm_lengths() -> None:
    key = _key("A256GCM")
    good = raw_token({"alg": "dir", "enc": "A256GCM", "kid": key.kid}, _PAYLOAD, key)
    dec = decoder()
    assert dec.decode(cookie(good), now=NOW).user_id == "u1"
    for token in (_with_part(good, 2, _b64(bytes(16))), _with_part(good, 4, _b64(bytes(32)))):
        assert reject(dec, token).message == GENERIC


@pytest.mark.parametrize("enc", ["A256CBC-HS512", "A256GCM"])
def test_flipped_bytes_in_every_part_fail_the_same_way(enc: Any) -> None:
    token = mint({"sub": "u1", "name": "x" * 40}, enc=enc)
    dec = decoder()
    outcomes: set[tuple[Reason, str]] = set()
    for index in (0, 2, 3, 4):
        raw = _jwe.b64url_decode(token.split(".")[index])
        for pos in range(len(raw)):
            for bit in (0x01, 0x80):
                flipped = bytearray(raw)
                flipped[pos] ^= bit
                err = reject(dec, _with_part(token, index, _b64(bytes(flipped))))
                outcomes.add((err.reason, err.message))
    # The encrypted key part, too: anything there is refused.
    outcomes.add(((e := reject(dec, _with_part(token, 1, "AA"))).reason, e.message))
    assert outcomes == {(Reason.INVALID_CREDENTIAL, GENERIC)}


def test_bad_padding_under_a_valid_tag_is_the_generic_error() -> None:
    key = _key()
    header = _b64(json.dumps(_good_header(), separators=(",", ":")).encode())
    iv = bytes(16)
    # Encrypt a block whose last byte is not valid PKCS#7, then tag it properly.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.AES(key.key[32:]), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(b"A" * 15 + b"\x00") + enc.finalize()
    tag = _jwe._cbc_tag(key, header.encode(), iv, ciphertext)
    token = ".".join((header, "", _b64(iv), _b64(ciphertext), _b64(tag)))
    err = reject(decoder(), token)
    assert (err.reason, err.message) == (Reason.INVALID_CREDENTIAL, GENERIC)


# -- NextAuth v4 --------------------------------------------------------------------------


def _v4_token(secret: str = "s1", enc: Any = "A256GCM") -> str:
    if enc == "A256GCM":
        key = derive_v4_key(secret)
    else:
        key = _jwe.ContentKey.create(
            _jwe.derive_key(
                secret, salt=b"", info=b"NextAuth.js Generated Encryption Key", length=64
            ),
            enc=enc,
        )
    payload = json.dumps({"sub": "u4", "iat": NOW, "exp": NOW + 60}).encode()
    return raw_token({"alg": "dir", "enc": enc}, payload, key)


@pytest.mark.parametrize("name", ["next-auth.session-token", "__Secure-next-auth.session-token"])
def test_nextauth_v4_opt_in(name: str) -> None:
    token = _v4_token()
    assert decoder(accept_nextauth_v4=True).decode(cookie(token, name), now=NOW).user_id == "u4"
    assert reject(decoder(), token, name=name).reason is Reason.INVALID_CREDENTIAL
    # v4 means A256GCM only, and a v4 token is not an Auth.js v5 token.
    assert reject(decoder(accept_nextauth_v4=True), _v4_token(enc="A256CBC-HS512"), name=name)
    assert reject(decoder(accept_nextauth_v4=True), token, name=NAME)


def test_v4_cookie_is_found_only_when_opted_in() -> None:
    header = ["next-auth.session-token=abc"]
    assert decoder().find_cookie(header) is None
    found = decoder(accept_nextauth_v4=True).find_cookie(header)
    assert found is not None
    assert found.name == "next-auth.session-token"
    with pytest.raises(CredentialError) as info:
        decoder(accept_nextauth_v4=True).find_cookie(
            ["next-auth.session-token=a; authjs.session-token=b"]
        )
    assert info.value.reason is Reason.AMBIGUOUS_CREDENTIAL


# -- database strategy --------------------------------------------------------------------


class FakeStore:
    def __init__(self, records: dict[str, SessionRecord]) -> None:
        self.records = records
        self.asked: list[str] = []

    def get_session(self, token: str) -> SessionRecord | None:
        self.asked.append(token)
        return self.records.get(token)


UUID = "0b7a3e8e-4f0e-4d1b-9d8a-3c2f1e0d9c8b"


def test_is_jwt() -> None:
    assert AuthjsSessionDecoder.is_jwt(cookie(mint()))
    assert not AuthjsSessionDecoder.is_jwt(cookie(UUID))


#: The default policy with sessions on, database strategy included (the store is passed in).
DATABASE_CORE = build_core(
    load_settings(
        overrides={"session": {"secrets": ["s1"], "database": "sessions.sqlite3"}},
        environment=False,
    )
)


def identify_session(value: str, store: FakeStore, *, now: float = NOW) -> Decision:
    """The session cookie through the driver, which looks a database token up in ``store``."""
    request = RequestFacts.build(
        method="GET", path="/", headers={"host": "app.illumichat.test", "cookie": f"{NAME}={value}"}
    )
    authz = Authorizer(core=DATABASE_CORE, sessions=store, clock=lambda: now)
    decision = authz.identify(request)
    assert value not in decision.message or len(value) < 4
    return decision


def test_database_session() -> None:
    store = FakeStore({UUID: SessionRecord(session_token=UUID, user_id="u9", expires=NOW + 10)})
    principal = identify_session(UUID, store).principal
    assert principal is not None
    assert (principal.user_id, principal.kind, principal.expires_at) == ("u9", "session", NOW + 10)
    assert principal.credential_id is not None
    assert UUID not in principal.credential_id
    expired = identify_session(UUID, store, now=NOW + 11)
    assert (expired.status, expired.reason) == (401, Reason.SESSION_EXPIRED)
    unknown = identify_session("f" * 36, store)
    assert (unknown.status, unknown.reason) == (401, Reason.INVALID_CREDENTIAL)
    # Bounded before the store is asked.
    store.asked.clear()
    assert identify_session("x" * 600, store).status == 401
    assert identify_session("has space", store).status == 401
    assert store.asked == []


def test_the_decoder_never_decodes_a_database_token() -> None:
    """The pure decoder refuses an opaque token whatever a store would say: lookups are
    the driver's (``session.database``), not the decoder's."""
    settings = SessionSettings(secrets=["s1"], database=Path("sessions.sqlite3"))
    assert reject(AuthjsSessionDecoder.from_settings(settings), UUID).message == GENERIC


def test_non_jwe_without_store_is_invalid() -> None:
    assert reject(decoder(), UUID).message == GENERIC


def test_principal_from_session_record() -> None:
    with pytest.raises(CredentialError) as info:
        principal_from_session_record(None, now=NOW)
    assert info.value.reason is Reason.INVALID_CREDENTIAL
    record = SessionRecord(session_token="t", user_id="u", expires=NOW)
    assert principal_from_session_record(record, now=NOW).user_id == "u"
    with pytest.raises(CredentialError) as info:
        principal_from_session_record(record, now=NOW + 0.001)
    assert info.value.reason is Reason.SESSION_EXPIRED
    empty = SessionRecord(session_token="t", user_id="", expires=NOW)
    with pytest.raises(CredentialError):
        principal_from_session_record(empty, now=NOW)


# -- construction ---------------------------------------------------------------------------


def test_from_settings() -> None:
    s = SessionSettings(
        secrets=["s2", "s1"], workspace_claim="ws", clock_tolerance_s=5, accept_nextauth_v4=True
    )
    dec = AuthjsSessionDecoder.from_settings(s)
    assert dec.cookie_names == (
        NAME,
        SECURE,
        "next-auth.session-token",
        "__Secure-next-auth.session-token",
    )
    assert dec.decode(cookie(mint({"sub": "u", "ws": "w"})), now=NOW).workspace == "w"
    assert "s1" not in repr(dec)


@pytest.mark.parametrize(
    "kw",
    [
        {"secrets": "s1"},
        {"secrets": [""]},
        {"cookie_name": "a;b"},
        {"cookie_name": ""},
        {"clock_tolerance_s": -1},
        {"clock_tolerance_s": float("nan")},
        {"cookie_name": "next-auth.session-token", "accept_nextauth_v4": True},
    ],
)
def test_bad_configuration(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        decoder(**kw)


def test_secure_prefixed_cookie_name_is_used_as_is() -> None:
    dec = decoder(cookie_name=SECURE)
    assert dec.cookie_names == (SECURE,)


def test_encode_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="enc"):
        mint(enc="A128GCM")
    with pytest.raises(ValueError, match="secret"):
        mint(secret="")


# -- fuzz ---------------------------------------------------------------------------------

_DEC = decoder(secrets=["s1", "s0"], accept_nextauth_v4=True)
_TOKEN = mint({"sub": "u1", "name": "fuzz"})


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=400), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_fuzz_decode_random_values(value: str) -> None:
    with contextlib.suppress(CredentialError):
        _DEC.decode(cookie(value), now=NOW)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(_TOKEN) - 1), st.sampled_from("AZaz09-_.=+/ %")),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_mutated_tokens(edits: list[tuple[int, str]]) -> None:
    chars = list(_TOKEN)
    for pos, ch in edits:
        chars[pos] = ch
    value = "".join(chars)
    try:
        principal = _DEC.decode(cookie(value), now=NOW)
    except CredentialError as exc:
        status = exc.status
    else:
        status = 0
        # Only edits that decode to the same bytes (non-canonical base64 bits) survive.
        assert principal.user_id == "u1"
    assert status in (0, 401)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=200), max_size=3))
def test_fuzz_find_then_decode(headers: list[str]) -> None:
    try:
        found = _DEC.find_cookie(headers)
        if found is not None:
            _DEC.decode(found, now=NOW)
    except CredentialError:
        pass


def test_concurrent_decoding_shares_nothing_mutable() -> None:
    from concurrent.futures import ThreadPoolExecutor

    dec = decoder(secrets=["s1"])
    tokens = [mint({"sub": f"u{i}", "pad": "x" * i}) for i in range(64)]

    def work(i: int) -> str:
        return dec.decode(cookie(tokens[i % 64]), now=NOW).user_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(2000)))
    assert results == [f"u{i % 64}" for i in range(2000)]


def test_threads_decoding_at_once_each_get_the_right_session() -> None:
    """The AES-CBC decryptors are reused across requests, lent to one caller at a time."""
    dec = decoder()
    tokens = [mint({"sub": f"u{i}", "pad": "x" * (i * 40)}) for i in range(8)]
    start = threading.Barrier(len(tokens))
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(200):
                assert dec.decode(cookie(tokens[i]), now=NOW).user_id == f"u{i}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(tokens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ring = dec._rings[NAME].ordered["A256CBC-HS512"][0]
    assert 1 <= len(ring._ecbs) <= len(tokens)
