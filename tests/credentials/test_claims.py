"""Registered JWT claims (RFC 7519 §4.1) are typed the same for every credential.

Auth0 bearer tokens are signed for real (RS256, keys served by the kit's loopback
:class:`JwksServer`) and checked against PyJWT's own ``decode`` as an oracle; Auth.js
sessions are encrypted with our JWE encoder (the ``@auth/core`` side is in
test_authjs_interop.py). Every bad type of every registered claim is a 401, never an
accepted token and never an exception (a 500).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.credentials import _jwe
from illumichat_authz.credentials._claims import (
    MAX_NUMERIC_DATE,
    ClaimTypeError,
    registered_claims,
    strict_json,
)
from illumichat_authz.credentials.auth0 import Auth0BearerVerifier
from illumichat_authz.credentials.authjs import AuthjsSessionDecoder, derive_content_key
from illumichat_authz.credentials.cookies import SessionCookie
from illumichat_authz.errors import CredentialError
from illumichat_authz.principal import Principal
from illumichat_authz.reasons import Reason
from illumichat_authz.request import RequestFacts
from illumichat_authz.stores.jwks import JwksCache, UrllibJwksFetcher
from illumichat_authz.testing.fixtures import (
    AUDIENCE,
    AUTH0_DOMAIN,
    DEV_SESSION_SECRET,
    build_test_authorizer,
    make_test_settings,
)
from illumichat_authz.testing.minting import JwksServer, LocalIssuer

ISSUER = f"https://{AUTH0_DOMAIN}/"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
COOKIE = "authjs.session-token"

#: JSON texts that are not a NumericDate (or not JSON at all: NaN, Infinity, 1e309).
BAD_DATES = [
    "null",
    "true",
    "false",
    '"1750000000"',
    "[1750000000]",
    '{"t": 1750000000}',
    "1" + "0" * 400,
    "-1" + "0" * 400,
    "1e309",
    "-1e309",
    "NaN",
    "Infinity",
    "-Infinity",
    "-1",
    str(MAX_NUMERIC_DATE + 1),
]
BAD_STRINGS = ["null", "42", "1.5", "true", '["x"]', '{"x": "y"}']
BAD_AUDIENCES = [
    "null",
    "42",
    "true",
    json.dumps({"x": AUDIENCE}),
    json.dumps([AUDIENCE, 5]),
    json.dumps([[AUDIENCE]]),
    "[null]",
]
BAD_CLAIMS = [
    *((claim, text) for claim in ("exp", "nbf", "iat") for text in BAD_DATES),
    *((claim, text) for claim in ("iss", "sub", "jti") for text in BAD_STRINGS),
    *(("aud", text) for text in BAD_AUDIENCES),
]
#: Python's json accepts these; RFC 8259 does not, so the claim never gets typed.
NOT_JSON = {"NaN", "Infinity", "-Infinity", "1e309", "-1e309"}


def good_claims(now: float) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "sub": "auth0|user-1",
        "aud": [AUDIENCE, f"{ISSUER}userinfo"],
        "iat": int(now) - 10,
        "nbf": int(now) - 10,
        "exp": int(now) + 3600,
        "jti": "token-1",
        "workspace": "w1",
    }


def payload_with(claims: dict[str, Any], claim: str, text: str) -> bytes:
    """``claims`` as JSON with ``claim`` set to the raw JSON ``text`` (NaN, 1e309...)."""
    rest = {k: v for k, v in claims.items() if k != claim}
    return (json.dumps(rest)[:-1] + f', "{claim}": {text}}}').encode()


# --- Auth0: RS256 tokens, keys from the kit's loopback JWKS server -------------------------


@pytest.fixture(scope="module")
def tenant() -> Iterator[tuple[LocalIssuer, JwksServer]]:
    issuer = LocalIssuer(issuer=ISSUER, audience=AUDIENCE, _private=KEY)
    server = JwksServer(issuer.jwks()).start()
    yield issuer, server
    server.stop()


@pytest.fixture(scope="module")
def bearer(tenant: tuple[LocalIssuer, JwksServer]) -> tuple[Auth0BearerVerifier, JwksCache]:
    server = tenant[1]
    cache = JwksCache(url=server.url, fetcher=UrllibJwksFetcher(trust_env=False))
    return Auth0BearerVerifier(issuer=ISSUER, audience=AUDIENCE), cache


@pytest.fixture(scope="module")
def authz(tenant: tuple[LocalIssuer, JwksServer]) -> Iterator[Authorizer]:
    authorizer = build_test_authorizer(make_test_settings(jwks_url=tenant[1].url))
    yield authorizer
    authorizer.rate_limiter.close()


def verify_bearer(
    bearer: tuple[Auth0BearerVerifier, JwksCache], token: str, *, now: float
) -> Principal:
    """The pure verifier and the JWKS store, as the driver combines them."""
    verifier, cache = bearer
    parsed = verifier.parse(token)
    return verifier.verify(parsed, cache.get_key(parsed.kid, parsed.alg), now=now)


def sign(issuer: LocalIssuer, payload: bytes) -> str:
    """RS256 over exactly these payload bytes (PyJWS signs bytes as given)."""
    return jwt.PyJWS().encode(payload, KEY, algorithm="RS256", headers={"kid": issuer.kid})


def bearer_request(token: str) -> RequestFacts:
    return RequestFacts.build(
        method="GET",
        path="/api/workspaces/w1/assistants",
        headers={"host": "api.illumichat.test", "authorization": f"Bearer {token}"},
    )


def test_a_well_typed_token_passes(
    tenant: tuple[LocalIssuer, JwksServer],
    bearer: tuple[Auth0BearerVerifier, JwksCache],
    authz: Authorizer,
) -> None:
    now = time.time()
    token = sign(tenant[0], json.dumps(good_claims(now)).encode())
    principal = verify_bearer(bearer, token, now=now)
    assert principal.user_id == "auth0|user-1"
    assert principal.expires_at == int(now) + 3600
    assert authz.identify(bearer_request(token)).status == 200


@pytest.mark.parametrize(("claim", "text"), BAD_CLAIMS)
def test_a_badly_typed_registered_claim_is_an_invalid_token(
    tenant: tuple[LocalIssuer, JwksServer],
    bearer: tuple[Auth0BearerVerifier, JwksCache],
    authz: Authorizer,
    claim: str,
    text: str,
) -> None:
    now = time.time()
    token = sign(tenant[0], payload_with(good_claims(now), claim, text))
    with pytest.raises(CredentialError) as info:
        verify_bearer(bearer, token, now=now)
    assert (info.value.status, info.value.reason) == (401, Reason.INVALID_TOKEN)
    expected = "payload is not a JSON object" if text in NOT_JSON else repr(claim)
    assert expected in info.value.message
    # The whole decision: a 401 deny with the reason, never a 500.
    decision = authz.identify(bearer_request(token))
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
    assert expected in decision.message


# --- PyJWT's decode as the oracle -------------------------------------------------------------

_NOW = time.time()
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from([int(_NOW) - 86_400, int(_NOW) + 86_400, _NOW + 86_400.5, ISSUER, AUDIENCE]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=5,
)
_REGISTERED = ("iss", "sub", "aud", "exp", "nbf", "iat", "jti")


def _pyjwt_rejects(token: str) -> bool:
    try:
        jwt.decode(
            token,
            KEY.public_key(),
            algorithms=["RS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=15,
            options={"require": ["exp", "iss", "aud"]},
        )
    except Exception:  # any refusal, typed or not, is a refusal
        return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=st.dictionaries(st.sampled_from(_REGISTERED), _VALUES, min_size=1, max_size=4))
def test_wherever_pyjwt_rejects_a_claim_we_reject_it(
    tenant: tuple[LocalIssuer, JwksServer],
    bearer: tuple[Auth0BearerVerifier, JwksCache],
    overrides: dict[str, Any],
) -> None:
    now = time.time()
    payload = {**good_claims(now), **overrides}
    # Python's json writes NaN and Infinity, as PyJWT's encoder would (it refuses to write
    # some bad types at all, so the payload is signed as bytes).
    token = sign(tenant[0], json.dumps(payload).encode())
    refusal: CredentialError | None = None
    try:
        verify_bearer(bearer, token, now=now)
    except CredentialError as exc:  # anything else escapes and fails the test: a 500
        refusal = exc
    ours_reject = refusal is not None
    if refusal is not None:
        assert refusal.status == 401
        assert refusal.reason in {Reason.INVALID_TOKEN, Reason.TOKEN_EXPIRED}
    if _pyjwt_rejects(token):
        assert ours_reject, payload
    if not ours_reject:
        # What we accept is typed as RFC 7519 says, whatever PyJWT tolerates ("exp": "1").
        typed = registered_claims(payload)
        assert all(
            isinstance(getattr(typed, name), float) and math.isfinite(getattr(typed, name))
            for name in ("exp", "nbf", "iat")
            if name in payload
        )


# --- Auth.js sessions: the same claims in a JWE -------------------------------------------


def seal(plaintext: bytes, *, secret: str = DEV_SESSION_SECRET) -> str:
    """A session JWE over exactly these bytes, as @auth/core's encode seals its claims."""
    key = derive_content_key(secret, salt=COOKIE, enc="A256CBC-HS512")
    return _jwe.encrypt(
        plaintext, key, header={"alg": "dir", "enc": "A256CBC-HS512", "kid": key.kid}
    )


def session_claims(now: float) -> dict[str, Any]:
    claims = good_claims(now)
    claims["sub"] = "alice"
    return claims


def test_a_well_typed_session_passes(authz: Authorizer) -> None:
    now = time.time()
    token = seal(json.dumps(session_claims(now)).encode())
    decoder = AuthjsSessionDecoder(secrets=[DEV_SESSION_SECRET])
    assert decoder.decode(SessionCookie(name=COOKIE, value=token), now=now).user_id == "alice"


@pytest.mark.parametrize(("claim", "text"), BAD_CLAIMS)
def test_a_badly_typed_claim_in_a_session_is_refused(
    authz: Authorizer, claim: str, text: str
) -> None:
    now = time.time()
    token = seal(payload_with(session_claims(now), claim, text))
    decoder = AuthjsSessionDecoder(secrets=[DEV_SESSION_SECRET])
    with pytest.raises(CredentialError) as info:
        decoder.decode(SessionCookie(name=COOKIE, value=token), now=now)
    assert (info.value.status, info.value.reason) == (401, Reason.INVALID_CREDENTIAL)
    if text not in NOT_JSON:
        assert repr(claim) in info.value.message
    request = RequestFacts.build(
        method="GET",
        path="/api/workspaces/w1/assistants",
        headers={"host": "app.illumichat.test", "cookie": f"{COOKIE}={token}"},
    )
    decision = authz.identify(request)
    assert (decision.status, decision.reason) == (401, Reason.INVALID_CREDENTIAL)


# --- the helper itself ------------------------------------------------------------------------


def test_absent_claims_are_none_and_present_ones_typed() -> None:
    assert registered_claims({}).exp is None
    typed = registered_claims({"aud": "a", "exp": 10**9, "iat": 1.5, "iss": "i"})
    assert (typed.aud, typed.exp, typed.iat, typed.iss) == (("a",), 1e9, 1.5, "i")
    with pytest.raises(ClaimTypeError, match="'nbf' claim is not a number"):
        registered_claims({"nbf": None})


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"a": 1, "a": 2}', "duplicate member"),
        (b'{"exp": NaN}', "NaN is not JSON"),
        (b'{"exp": -Infinity}', "-Infinity is not JSON"),
        (b'{"exp": 1e309}', "out of range"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"sub": "\xff"}', "can't decode"),
    ],
)
def test_strict_json_refuses_what_rfc_8259_does_not_define(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        strict_json(raw)
