"""Interop with the real ``@auth/core`` (npm), driven through tests/interop/authjs_peer.mjs.

Set up once with ``npm ci --prefix tests/interop``. The peer uses the real clock, so
these tests pass ``now=time.time()`` (no test here measures time).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from illumichat_authz.credentials.authjs import (
    AuthjsSessionDecoder,
    SessionCookie,
    encode_session_token,
)
from illumichat_authz.errors import CredentialError
from illumichat_authz.reasons import Reason
from illumichat_authz.testing.minting import AUTHJS_CHUNK_SIZE, chunk_session_cookie

INTEROP = Path(__file__).resolve().parents[1] / "interop"
PEER = INTEROP / "authjs_peer.mjs"
NAME = "authjs.session-token"
SECURE = "__Secure-authjs.session-token"
V4_INFO = "NextAuth.js Generated Encryption Key"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not (INTEROP / "node_modules" / "@auth" / "core").is_dir(),
        reason="tests/interop/node_modules missing: run `npm ci --prefix tests/interop`",
    ),
]


def peer(*requests: dict[str, Any]) -> list[Any]:
    """Run the requests through @auth/core; return the values (``None`` for failures)."""
    node = shutil.which("node")
    assert node is not None, "node is not installed but tests/interop/node_modules is"
    done = subprocess.run(
        [node, str(PEER)],
        input=json.dumps(list(requests)),
        capture_output=True,
        text=True,
        cwd=INTEROP,
        timeout=60,
        check=True,
    )
    results = json.loads(done.stdout)
    assert len(results) == len(requests)
    return [r["value"] if r["ok"] else None for r in results]


def encode_req(token: dict[str, Any], secret: Any, salt: str, **kw: Any) -> dict[str, Any]:
    return {"op": "encode", "token": token, "secret": secret, "salt": salt, **kw}


def decode_req(token: str, secret: Any, salt: str) -> dict[str, Any]:
    return {"op": "decode", "token": token, "secret": secret, "salt": salt}


CLAIMS = {"sub": "user-1", "email": "ann@example.com", "name": "Ann", "workspace": "ws-1"}


def test_authjs_tokens_decode_under_both_names() -> None:
    plain, secure = peer(encode_req(CLAIMS, "s1", NAME), encode_req(CLAIMS, "s1", SECURE))
    dec = AuthjsSessionDecoder(secrets=["s1"], workspace_claim="workspace")
    for name, token in ((NAME, plain), (SECURE, secure)):
        found = dec.find_cookie([f"theme=dark; {name}={token}; other=1"])
        assert found == SessionCookie(name=name, value=token)
        principal = dec.decode(found, now=time.time())
        assert (principal.user_id, principal.workspace, principal.email, principal.name) == (
            "user-1",
            "ws-1",
            "ann@example.com",
            "Ann",
        )
    # The salt is the exact cookie name: each token fails under the other name.
    for name, token in ((SECURE, plain), (NAME, secure)):
        with pytest.raises(CredentialError) as info:
            dec.decode(SessionCookie(name=name, value=token), now=time.time())
        assert info.value.reason is Reason.INVALID_CREDENTIAL


def test_chunked_cookies_from_authjs_session_store() -> None:
    big = {**CLAIMS, "picture": "https://example.com/" + "p" * 9000}
    (token,) = peer(encode_req(big, "s1", SECURE))
    (chunks,) = peer({"op": "chunk", "name": SECURE, "value": token})
    assert len(chunks) >= 3
    assert [c["name"] for c in chunks] == [f"{SECURE}.{i}" for i in range(len(chunks))]
    random.Random(7).shuffle(chunks)
    header = "; ".join(f"{c['name']}={c['value']}" for c in chunks)
    dec = AuthjsSessionDecoder(secrets=["s1"])
    found = dec.find_cookie([header])
    assert found is not None
    assert (found.name, found.value, found.chunks) == (SECURE, token, len(chunks))
    assert dec.decode(found, now=time.time()).claims["picture"] == big["picture"]
    # A lost chunk is a gap, not a shorter token.
    partial = "; ".join(f"{c['name']}={c['value']}" for c in chunks if not c["name"].endswith(".1"))
    with pytest.raises(CredentialError):
        dec.find_cookie([partial])


def test_test_kit_chunks_a_session_as_authjs_does() -> None:
    # The kit's minted chunks (which the proxy tests send) are @auth/core's, byte for byte,
    # at the chunk boundaries too.
    size = AUTHJS_CHUNK_SIZE
    values = ["x" * n for n in (10, size, size + 1, 3 * size, 2 * size + 7)]
    answers = peer(*({"op": "chunk", "name": NAME, "value": v} for v in values))
    for value, chunks in zip(values, answers, strict=True):
        assert chunk_session_cookie(NAME, value) == [(c["name"], c["value"]) for c in chunks]


def test_rotation_and_expiry_with_authjs_tokens() -> None:
    old, short = peer(
        encode_req(CLAIMS, "old-secret", NAME),
        encode_req(CLAIMS, ["new-secret", "old-secret"], NAME, maxAge=60),
    )
    now = time.time()
    assert (
        AuthjsSessionDecoder(secrets=["new-secret", "old-secret"])
        .decode(SessionCookie(name=NAME, value=old), now=now)
        .user_id
        == "user-1"
    )
    with pytest.raises(CredentialError):
        AuthjsSessionDecoder(secrets=["new-secret"]).decode(
            SessionCookie(name=NAME, value=old), now=now
        )
    dec = AuthjsSessionDecoder(secrets=["new-secret"])
    principal = dec.decode(SessionCookie(name=NAME, value=short), now=now)
    assert principal.expires_at is not None
    exp = principal.expires_at
    assert dec.decode(SessionCookie(name=NAME, value=short), now=exp + 14).user_id == "user-1"
    with pytest.raises(CredentialError) as info:
        dec.decode(SessionCookie(name=NAME, value=short), now=exp + 15)
    assert info.value.reason is Reason.SESSION_EXPIRED


@pytest.mark.parametrize("enc", ["A256CBC-HS512", "A256GCM"])
def test_our_tokens_are_accepted_by_authjs_decode(enc: Any) -> None:
    now = time.time()
    plain = encode_session_token(CLAIMS, secret="s1", enc=enc, now=now)
    secure = encode_session_token(CLAIMS, secret="s1", cookie_name=SECURE, enc=enc, now=now)
    rotated = encode_session_token(CLAIMS, secret="old", enc=enc, now=now)
    results = peer(
        decode_req(plain, "s1", NAME),
        decode_req(secure, "s1", SECURE),
        decode_req(rotated, ["new", "old"], NAME),
        decode_req(plain, "s1", SECURE),  # wrong name
        decode_req(plain, "s2", NAME),  # wrong secret
    )
    for payload in results[:3]:
        assert payload is not None
        assert {k: payload[k] for k in CLAIMS} == CLAIMS
        assert payload["exp"] - payload["iat"] == 30 * 24 * 3600
        assert isinstance(payload["jti"], str)
    assert results[3:] == [None, None]


def test_gcm_and_kidless_tokens_from_jose() -> None:
    requests = [
        {
            "op": "encrypt",
            "payload": CLAIMS,
            "secret": secret,
            "salt": NAME,
            "key_info": f"Auth.js Generated Encryption Key ({NAME})",
            "enc": enc,
            "kid": kid,
        }
        for enc in ("A256GCM", "A256CBC-HS512")
        for kid in (True, False)
        for secret in ("s1", "s0")
    ]
    tokens = peer(*requests)
    dec = AuthjsSessionDecoder(secrets=["s1", "s0"])
    # What @auth/core's own decode says of each token with the same two secrets: a kid
    # picks its secret; without one only the newest is tried.
    verdicts = peer(
        *({"op": "decode", "token": t, "secret": ["s1", "s0"], "salt": NAME} for t in tokens)
    )
    for request, token, theirs in zip(requests, tokens, verdicts, strict=True):
        expect = bool(request["kid"]) or request["secret"] == "s1"
        assert (theirs is not None) == expect, request
        cookie = SessionCookie(name=NAME, value=token)
        if expect:
            assert dec.decode(cookie, now=time.time()).user_id == "user-1"
        else:
            with pytest.raises(CredentialError):
                dec.decode(cookie, now=time.time())


def test_nextauth_v4_tokens() -> None:
    (token,) = peer(
        {
            "op": "encrypt",
            "payload": {"sub": "v4-user", "email": "v4@example.com"},
            "secret": "v4-secret",
            "salt": "",
            "key_info": V4_INFO,
            "enc": "A256GCM",
            "kid": False,
        }
    )
    dec = AuthjsSessionDecoder(secrets=["v4-secret"], accept_nextauth_v4=True)
    found = dec.find_cookie([f"__Secure-next-auth.session-token={token}"])
    assert found is not None
    assert dec.decode(found, now=time.time()).user_id == "v4-user"
    with pytest.raises(CredentialError):
        AuthjsSessionDecoder(secrets=["v4-secret"]).decode(found, now=time.time())


#: Registered claims of the wrong type that @auth/core's ``encode`` writes as given (it
#: sets ``iat``, ``exp`` and ``jti`` itself).
BAD_CLAIMS_VIA_ENCODE = [
    ("iss", None),
    ("iss", 5),
    ("aud", None),
    ("aud", {"x": "y"}),
    ("aud", ["a", 1]),
    ("sub", 7),
    ("sub", ["user-1"]),
    ("nbf", None),
    ("nbf", "0"),
    ("nbf", True),
    ("nbf", [0]),
    ("nbf", {"t": 0}),
]


def test_badly_typed_registered_claims_written_by_authjs_are_refused() -> None:
    tokens = peer(*(encode_req({**CLAIMS, c: v}, "s1", NAME) for c, v in BAD_CLAIMS_VIA_ENCODE))
    verdicts = peer(*(decode_req(token, "s1", NAME) for token in tokens))
    dec = AuthjsSessionDecoder(secrets=["s1"])
    for (claim, value), token, theirs in zip(BAD_CLAIMS_VIA_ENCODE, tokens, verdicts, strict=True):
        assert token is not None, (claim, value)
        if claim == "nbf":  # jose: '"nbf" claim must be a number'
            assert theirs is None, value
        # Wherever @auth/core refuses we refuse; we also refuse what jose does not type
        # without an issuer/audience option (RFC 7519 §4.1: iss, sub are strings, aud a
        # string or strings).
        with pytest.raises(CredentialError) as info:
            dec.decode(SessionCookie(name=NAME, value=token), now=time.time())
        assert info.value.reason is Reason.INVALID_CREDENTIAL
        assert repr(claim) in info.value.message


def _sealed(raw: bytes, secret: str) -> str:
    """Exactly these claim bytes, encrypted as @auth/core's encode encrypts."""
    from illumichat_authz.credentials import _jwe
    from illumichat_authz.credentials.authjs import derive_content_key

    key = derive_content_key(secret, salt=NAME, enc="A256CBC-HS512")
    return _jwe.encrypt(raw, key, header={"alg": "dir", "enc": "A256CBC-HS512", "kid": key.kid})


def test_badly_typed_dates_authjs_never_writes_are_refused_as_authjs_refuses_them() -> None:
    now = int(time.time())
    good = {**CLAIMS, "iat": now, "exp": now + 3600, "jti": "j"}
    cases = [("jti", "5"), ("jti", "null")] + [
        (claim, text)
        for claim in ("exp", "iat")
        for text in ("null", '"1"', "true", "[1]", "1" + "0" * 400, "NaN", "1e309", "-1")
    ]
    tokens = []
    for claim, text in cases:
        rest = json.dumps({k: v for k, v in good.items() if k != claim})
        tokens.append(_sealed(f'{rest[:-1]}, "{claim}": {text}}}'.encode(), "s1"))
    verdicts = peer(*(decode_req(token, "s1", NAME) for token in tokens))
    dec = AuthjsSessionDecoder(secrets=["s1"])
    for (claim, text), token, theirs in zip(cases, tokens, verdicts, strict=True):
        if claim in ("exp", "iat") and text in ("null", '"1"', "true", "[1]", "NaN"):
            assert theirs is None, (claim, text)  # jose: not a number, or not JSON
        # A 400-digit exp is Infinity to JavaScript: a session that never ends there.
        with pytest.raises(CredentialError) as info:
            dec.decode(SessionCookie(name=NAME, value=token), now=time.time())
        assert info.value.reason is Reason.INVALID_CREDENTIAL, (claim, text)
