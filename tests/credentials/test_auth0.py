"""Auth0 bearer verification: tokens minted by PyJWT, keys served by a loopback JWKS tenant."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from illumichat_authz.authorizer import Authorizer, build_core
from illumichat_authz.config import Auth0Settings, load_settings
from illumichat_authz.credentials.auth0 import (
    MAX_TOKEN_CHARS,
    Auth0BearerVerifier,
    auth0_permissions,
    auth0_scopes,
)
from illumichat_authz.credentials.jwk import parse_jwks
from illumichat_authz.errors import ConfigurationError, CredentialError, DependencyUnavailableError
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.reasons import Reason
from illumichat_authz.request import RequestFacts
from illumichat_authz.stores.jwks import JwksCache, UrllibJwksFetcher

DOMAIN = "illumichat-test.us.auth0.com"
ISSUER = f"https://{DOMAIN}/"
AUDIENCE = "https://api.illumichat.com"
NOW = 1_750_000_000.0

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwk(public: Any, kid: str, alg: str, algorithm: Any) -> dict[str, Any]:
    return {**json.loads(algorithm.to_jwk(public)), "kid": kid, "use": "sig", "alg": alg}


JWKS = json.dumps(
    {
        "keys": [
            _jwk(RSA_KEY.public_key(), "rsa-1", "RS256", RSAAlgorithm),
            {**_jwk(RSA_KEY.public_key(), "rsa-ps", "PS256", RSAAlgorithm)},
            _jwk(EC_KEY.public_key(), "ec-1", "ES256", ECAlgorithm),
        ]
    }
).encode()
KEYS = parse_jwks(JWKS)


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "auth0|user-1",
        "aud": [AUDIENCE, f"{ISSUER}userinfo"],
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 3600,
        "azp": "client-abc",
        "scope": "openid profile read:assistants",
        "permissions": ["read:assistants", "create:chats"],
        "https://illumichat.com/workspace": "ws-1",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def mint(
    payload: dict[str, Any] | None = None,
    *,
    key: Any = RSA_KEY,
    alg: str = "RS256",
    kid: str | None = "rsa-1",
    headers: dict[str, Any] | None = None,
) -> str:
    extra = {"kid": kid} if kid is not None else {}
    return jwt.encode(
        payload if payload is not None else claims(),
        key,
        algorithm=alg,
        headers={**extra, **(headers or {})},
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any] | None = None, sig: bytes = b"") -> str:
    """A token with an arbitrary header (PyJWT will not write some of these)."""
    body = payload if payload is not None else claims()
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}.{b64(sig)}"


def verifier(**kw: Any) -> Auth0BearerVerifier:
    base: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "algorithms": ("RS256", "PS256", "ES256"),
        "workspace_claim": "https://illumichat.com/workspace",
    }
    return Auth0BearerVerifier(**{**base, **kw})


def check(token: str, v: Auth0BearerVerifier | None = None, *, now: float = NOW) -> Principal:
    v = v or verifier()
    parsed = v.parse(token)
    return v.verify(parsed, KEYS[parsed.kid], now=now)


def rejected(token: str, *, reason: Reason = Reason.INVALID_TOKEN, now: float = NOW) -> str:
    with pytest.raises(CredentialError) as info:
        check(token, now=now)
    assert info.value.reason is reason
    assert info.value.status == 401
    return info.value.message


# --- a real tenant -------------------------------------------------------------------------


class Tenant:
    def __init__(self, body: bytes) -> None:
        self.body, self.requests = body, 0
        tenant = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                tenant.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(tenant.body)))
                self.end_headers()
                self.wfile.write(tenant.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def tenant() -> Iterator[Tenant]:
    t = Tenant(JWKS)
    yield t
    t.close()


def bearer_request(token: str) -> RequestFacts:
    return RequestFacts.build(
        method="GET",
        path="/",
        headers={"host": "api.illumichat.test", "authorization": f"Bearer {token}"},
    )


@pytest.mark.interop
def test_end_to_end_sync_and_async_against_loopback_tenant(tenant: Tenant) -> None:
    """Through the driver: parse, the key from the tenant's JWKS (fetched once), verify."""
    auth0 = {
        "domain": DOMAIN,
        "audience": AUDIENCE,
        "algorithms": ["RS256", "PS256", "ES256"],
        "workspace_claim": "https://illumichat.com/workspace",
        "jwks_url": tenant.url,
    }
    settings = load_settings(overrides={"auth0": auth0}, environment=False)
    cache = JwksCache(url=tenant.url, fetcher=UrllibJwksFetcher())
    authz = Authorizer(core=build_core(settings), jwks=cache, clock=lambda: NOW)
    principal = authz.identify(bearer_request(mint())).principal
    assert principal is not None
    assert principal.user_id == "auth0|user-1"
    assert principal.kind is CredentialKind.AUTH0
    assert principal.workspace == "ws-1"
    assert principal.scopes is None
    assert principal.expires_at == NOW + 3600
    assert principal.claims["azp"] == "client-abc"
    assert auth0_permissions(principal) == {"read:assistants", "create:chats"}
    assert auth0_scopes(principal) == {"openid", "profile", "read:assistants"}
    ec_token = mint(key=EC_KEY, alg="ES256", kid="ec-1")
    ec_principal = asyncio.run(authz.aidentify(bearer_request(ec_token))).principal
    assert ec_principal is not None
    assert ec_principal.user_id == "auth0|user-1"
    assert tenant.requests == 1
    unknown = authz.identify(bearer_request(mint(kid="unknown")))
    assert (unknown.status, unknown.reason) == (401, Reason.INVALID_TOKEN)


def test_from_settings() -> None:
    settings = Auth0Settings(domain=DOMAIN, audience=AUDIENCE, workspace_claim="ws")
    v = Auth0BearerVerifier.from_settings(settings)
    assert v.issuer == ISSUER
    assert v.algorithms == {"RS256"}
    assert v.workspace_claim == "ws"
    with pytest.raises(ConfigurationError, match="domain"):
        Auth0BearerVerifier.from_settings(Auth0Settings(audience=AUDIENCE))


@pytest.mark.parametrize("algs", [(), ("HS256",), ("none",), "RS256", ("RS256", "EdDSA")])
def test_configuration_only_accepts_asymmetric_algorithms(algs: Any) -> None:
    with pytest.raises(ConfigurationError):
        verifier(algorithms=algs)


# --- good tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "alg", "kid"),
    [(RSA_KEY, "RS256", "rsa-1"), (RSA_KEY, "PS256", "rsa-ps"), (EC_KEY, "ES256", "ec-1")],
)
def test_accepts_each_configured_algorithm(key: Any, alg: str, kid: str) -> None:
    assert check(mint(key=key, alg=alg, kid=kid)).user_id == "auth0|user-1"


@pytest.mark.parametrize(
    "domain", ["https://t.auth0.com", "t.auth0.com/", "t.auth0.com/x", "", "t auth0.com"]
)
def test_a_domain_that_is_not_a_bare_host_fails_at_start_up(domain: str) -> None:
    with pytest.raises(ValueError, match="bare host"):
        Auth0Settings(domain=domain, audience=AUDIENCE)


def test_authorized_parties_limit_which_clients_tokens_are_accepted() -> None:
    token = mint()  # azp: client-abc
    assert check(token, verifier(authorized_parties=["client-abc"])).user_id
    for allowed in (["client-other"], []):
        with pytest.raises(CredentialError, match="azp"):
            check(token, verifier(authorized_parties=allowed))
    no_azp = mint(claims(azp=None))
    with pytest.raises(CredentialError, match="azp"):
        check(no_azp, verifier(authorized_parties=["client-abc"]))
    assert check(no_azp).user_id  # unset: any client of the tenant


def test_audience_as_string_and_custom_user_claim() -> None:
    token = mint(claims(aud=AUDIENCE, email="a@b.c", uid="u-9"))
    principal = check(token, verifier(user_id_claim="uid"))
    assert principal.user_id == "u-9"
    assert principal.email == "a@b.c"


def test_clock_tolerance_applies_to_exp_nbf_iat() -> None:
    token = mint(claims(exp=int(NOW) - 10, nbf=int(NOW) + 10, iat=int(NOW) + 10))
    assert check(token).user_id == "auth0|user-1"


def test_missing_workspace_claim_is_none_and_credential_id_is_not_the_token() -> None:
    token = mint(claims(**{"https://illumichat.com/workspace": None}))
    principal = check(token)
    assert principal.workspace is None
    assert principal.credential_id is not None
    assert principal.credential_id not in token
    assert check(mint(claims(jti="abc"))).credential_id == "jti:abc"


# --- bad headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", " none"])
def test_alg_none_in_any_spelling(alg: str) -> None:
    for sig in (b"", b"x" * 256):
        message = rejected(forge({"alg": alg, "kid": "rsa-1", "typ": "JWT"}, sig=sig))
        assert "none" in message


def test_hs256_signed_with_the_public_key_pem() -> None:
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = b64(json.dumps(claims()).encode())
    sig = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert "alg" in rejected(f"{header}.{payload}.{b64(sig)}")


def test_alg_not_configured() -> None:
    token = mint(key=RSA_KEY, alg="RS384", kid="rsa-1")
    assert "alg" in rejected(token)
    # Configured for RS256 only: a valid ES256 token is refused before any key lookup.
    with pytest.raises(CredentialError):
        verifier(algorithms=("RS256",)).parse(mint(key=EC_KEY, alg="ES256", kid="ec-1"))


def test_alg_that_does_not_fit_the_key() -> None:
    # PS256 token naming the RS256-published key: the JWK's alg binds the key.
    token = mint(key=RSA_KEY, alg="PS256", kid="rsa-1")
    assert "match" in rejected(token)
    token = mint(key=RSA_KEY, alg="RS256", kid="ec-1")
    assert "match" in rejected(token)


@pytest.mark.parametrize("kid", [None, "", 7, "k" * 257])
def test_missing_or_bad_kid(kid: Any) -> None:
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    assert "kid" in rejected(forge(header, sig=b"x" * 256))


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c", "crit"])
def test_key_bearing_and_critical_headers(name: str) -> None:
    value: Any = {
        "jku": "https://evil.example/jwks.json",
        "x5u": "https://evil.example/cert.pem",
        "jwk": json.loads(RSAAlgorithm.to_jwk(RSA_OTHER.public_key())),
        "x5c": ["MIIB"],
        "crit": ["exp"],
    }[name]
    token = mint(key=RSA_OTHER, headers={name: value})
    assert name in rejected(token)


def test_typ_other_than_jwt() -> None:
    assert "typ" in rejected(mint(headers={"typ": "JOSE+JSON"}))
    assert check(mint(headers={"typ": "at+jwt"})).user_id == "auth0|user-1"


# --- bad signatures and claims -------------------------------------------------------------


def test_signature_by_another_key() -> None:
    assert "signature" in rejected(mint(key=RSA_OTHER))


def test_tampered_payload() -> None:
    header, _, sig = mint().split(".")
    payload = b64(json.dumps(claims(sub="auth0|admin")).encode())
    assert "signature" in rejected(f"{header}.{payload}.{sig}")


@pytest.mark.parametrize(
    "over",
    [
        {"iss": "https://evil.auth0.com/"},
        {"iss": f"https://{DOMAIN}"},  # no trailing slash: not what Auth0 writes
        {"iss": None},
        {"aud": "https://other.api"},
        {"aud": ["https://other.api"]},
        {"aud": None},
        {"aud": {"x": AUDIENCE}},
        {"exp": None},
        {"exp": "9999999999"},
        {"exp": True},
        {"nbf": int(NOW) + 60},
        {"nbf": "0"},
        {"iat": int(NOW) + 60},
        {"sub": None},
        {"sub": 42},
        {"sub": ""},
        {"permissions": "read:assistants"},
        {"permissions": [1]},
        {"scope": ["openid"]},
        {"azp": 3},
        {"https://illumichat.com/workspace": ["ws-1"]},
    ],
)
def test_bad_claims(over: dict[str, Any]) -> None:
    payload = claims()
    for k, v in over.items():
        if v is None:
            payload.pop(k, None)
        else:
            payload[k] = v
    rejected(mint(payload))


def test_expired_is_token_expired() -> None:
    token = mint(claims(exp=int(NOW) - 16))
    message = rejected(token, reason=Reason.TOKEN_EXPIRED)
    assert "expired" in message
    assert token not in message


def test_non_finite_numbers_are_not_json() -> None:
    header = b64(json.dumps({"alg": "RS256", "kid": "rsa-1"}).encode())
    for literal in (b"NaN", b"Infinity", b"1e999"):
        raw = (
            json.dumps(claims())
            .encode()
            .replace(b'"exp": ' + str(int(NOW) + 3600).encode(), b'"exp": ' + literal)
        )
        assert literal in raw
        payload = b64(raw)
        sig = RSA_KEY.sign(f"{header}.{payload}".encode(), *_pkcs1())
        rejected(f"{header}.{payload}.{b64(sig)}")


def _pkcs1() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PKCS1v15(), hashes.SHA256()


# --- malformed tokens ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",  # JWE compact
        "..",
        "x" * (MAX_TOKEN_CHARS + 1),
        mint()[:-5],  # truncated signature
        mint().rsplit(".", 1)[0] + ".",
        mint().split(".", 1)[1],
        mint() + "=",
        mint()[:-4] + "+AAA",
        mint()[:-4] + "/AAA",
        mint()[:-4] + "A AA",
        mint()[:-4] + "AA\nA",
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0=.e30.AAAA",
        mint().replace(".", ". ", 1),
        "eyJhbGciOiJSUzI1NiJ9.e30.AA==",
        "é.é.é",
        "\udcff.a.b",
        b64(b"[1]") + ".e30.AAAA",
        b64(b'{"alg":"RS256","alg":"none","kid":"rsa-1"}') + ".e30.AAAA",
        b64(b"\xff\xfe") + ".e30.AAAA",
        b64(json.dumps({"alg": "RS256", "kid": "rsa-1"}).encode()) + "." + b64(b"[]") + ".AAAA",
    ],
)
def test_malformed_tokens(token: str) -> None:
    rejected(token)


def test_non_canonical_base64() -> None:
    token = mint()
    header, payload, sig = token.split(".")
    # Flip the unused low bits of the last signature character: same bytes, other spelling.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    assert len(sig) % 4 == 2  # 256-byte signature: 4 unused bits at the end
    twin = sig[:-1] + alphabet[last | 1]
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(sig + "==")
    assert "canonical" in rejected(f"{header}.{payload}.{twin}")


def test_bytes_are_not_a_token() -> None:
    with pytest.raises(CredentialError):
        verifier().parse(mint().encode())  # type: ignore[arg-type]


def test_messages_never_echo_token_bytes() -> None:
    token = mint(key=RSA_OTHER, headers={"jku": "https://evil.example/SECRETPART"})
    message = rejected(token)
    assert "SECRETPART" not in message
    assert token.split(".")[2][:20] not in message


# --- fuzzing: only CredentialError may escape ----------------------------------------------


def _only_credential_errors(token: Any) -> None:
    v = verifier()
    try:
        parsed = v.parse(token)
        key = KEYS.get(parsed.kid) or KEYS["rsa-1"]
        v.verify(parsed, key, now=NOW)
    except CredentialError:
        pass
    except DependencyUnavailableError:
        pytest.fail("parse/verify must never report unavailability")


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(max_size=300)
    | st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
    | st.binary(max_size=300)
)
def test_fuzz_random_strings(token: str | bytes) -> None:
    _only_credential_errors(token)


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "jku", "crit", "x"]) | st.text(max_size=5),
        st.sampled_from(["RS256", "ES256", "PS256", "none", "rsa-1", "ec-1", "JWT"]) | _JSONISH,
        max_size=5,
    ),
    payload=st.dictionaries(
        st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "sub", "permissions", "scope"]),
        st.sampled_from([ISSUER, AUDIENCE, int(NOW) + 100]) | _JSONISH,
        max_size=8,
    ),
    sig=st.binary(max_size=300),
)
def test_fuzz_structured_tokens(
    header: dict[str, Any], payload: dict[str, Any], sig: bytes
) -> None:
    _only_credential_errors(forge(header, payload, sig))


@settings(max_examples=100)
@given(payload=st.dictionaries(st.text(max_size=8), _JSONISH, max_size=6))
def test_fuzz_validly_signed_garbage_claims(payload: dict[str, Any]) -> None:
    token = jwt.encode(payload, RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    _only_credential_errors(token)


class _MemoryFetcher:
    """The tenant's JWKS from memory: a JwksCache that never touches the network."""

    def fetch(self, url: str, *, timeout_s: float) -> bytes:
        return JWKS


@pytest.mark.parametrize("exp", [10**400, -(10**400), 10**20])
def test_a_huge_integer_exp_is_a_401_not_a_500(exp: int) -> None:
    """A tenant-signed token whose ``exp`` no float can hold is a bad token, not a crash.

    (``float(10**400)`` raises ``OverflowError``: an unguarded number check turns that into
    a logged 500.) Pure verifier first, then the whole decision through the driver.
    """
    token = mint(claims(exp=exp))
    with pytest.raises(CredentialError) as info:
        check(token)
    assert (info.value.status, info.value.reason) == (401, Reason.INVALID_TOKEN)
    assert "'exp'" in info.value.message
    auth0 = {"domain": DOMAIN, "audience": AUDIENCE, "jwks_url": "https://tenant.invalid/"}
    settings = load_settings(overrides={"auth0": auth0}, environment=False)
    cache = JwksCache(url="https://tenant.invalid/", fetcher=_MemoryFetcher())
    authz = Authorizer(core=build_core(settings), jwks=cache, clock=lambda: NOW)
    decision = authz.identify(bearer_request(token))
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
