"""parse_jwks: a JWKS document to the public signing keys it holds (pure, no fetching)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from illumichat_authz.config import Auth0Settings
from illumichat_authz.credentials.jwk import SUPPORTED_ALGORITHMS, parse_jwks

RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_A = ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256", **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "ES256", **extra}


def jwks(*keys: object) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


# --- parsing -------------------------------------------------------------------------------


def test_parse_keeps_only_public_signing_keys() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private_jwk = json.loads(RSAAlgorithm.to_jwk(RSA_B))
    body = jwks(
        rsa_jwk(RSA_A, "good"),
        {**rsa_jwk(RSA_A, "no-alg"), "alg": None},
        rsa_jwk(RSA_A, "enc", use="enc"),
        rsa_jwk(RSA_A, "ops", key_ops=["encrypt"]),
        rsa_jwk(weak, "weak"),
        rsa_jwk(RSA_A, "hs", alg="HS256"),
        rsa_jwk(RSA_A, "wrong-family", alg="ES256"),
        {**private_jwk, "kid": "private"},
        ec_jwk(EC_A, "ec-good"),
        ec_jwk(EC_A, "ec-wrong-curve", alg="ES384"),
        {**ec_jwk(EC_A, "ec-off-curve"), "y": ec_jwk(EC_A, "x")["x"]},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        "not an object",
        rsa_jwk(RSA_A, "dup"),
        rsa_jwk(RSA_B, "dup"),
    )
    keys = parse_jwks(body.replace(b'"alg": null, ', b""))
    assert set(keys) == {"good", "no-alg", "ec-good"}
    assert keys["no-alg"].alg is None
    assert keys["no-alg"].fits("PS256")
    assert not keys["good"].fits("PS256")


def test_parse_bounds_the_number_of_keys() -> None:
    body = jwks(*(rsa_jwk(RSA_A, f"k{i}") for i in range(10)))
    assert len(parse_jwks(body, max_keys=3)) == 3


@pytest.mark.parametrize("body", [b"", b"{", b"null", b'{"keys": [1, 2]}', b"x" * 300_000])
def test_parse_rejects_documents_without_keys(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"JWKS|Expecting|JSON|usable|value"):
        parse_jwks(body)


def test_the_settings_accept_exactly_the_supported_algorithms() -> None:
    """One allow-list: ``auth0.algorithms`` is checked against the verifier's own."""
    assert Auth0Settings(algorithms=sorted(SUPPORTED_ALGORITHMS)).algorithms
    for bad in (["HS256"], ["none"], []):
        with pytest.raises(ValidationError, match="non-empty subset"):
            Auth0Settings(algorithms=bad)
