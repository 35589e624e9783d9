"""JWKs: the JWS algorithms we accept, and a JWKS document parsed into public signing keys.

Pure: bytes in, keys out. Fetching, caching and refreshing the tenant's JWKS is I/O and
lives in :mod:`illumichat_authz.stores.jwks`; the verifier (:mod:`.auth0`) only ever
sees a :class:`JwkKey`.

Only public signing keys whose ``kty``/``crv``/``alg``/``use``/``key_ops`` fit an
asymmetric JWS algorithm are kept (at most ``max_keys``), and a ``kid`` published twice
is dropped (it is ambiguous).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["DEFAULT_MAX_JWKS_BYTES", "SUPPORTED_ALGORITHMS", "JwkKey", "parse_jwks"]

logger = logging.getLogger("illumichat_authz.credentials.jwk")

#: RFC 7518 §3.1 asymmetric JWS algorithms, with the key family (and curve) each needs.
SUPPORTED_ALGORITHMS: Mapping[str, tuple[Literal["RSA", "EC"], str | None]] = MappingProxyType(
    {
        "RS256": ("RSA", None),
        "RS384": ("RSA", None),
        "RS512": ("RSA", None),
        "PS256": ("RSA", None),
        "PS384": ("RSA", None),
        "PS512": ("RSA", None),
        "ES256": ("EC", "P-256"),
        "ES384": ("EC", "P-384"),
        "ES512": ("EC", "P-521"),
    }
)

_CURVES: Mapping[str, tuple[ec.EllipticCurve, int]] = MappingProxyType(
    {"P-256": (ec.SECP256R1(), 32), "P-384": (ec.SECP384R1(), 48), "P-521": (ec.SECP521R1(), 66)}
)
_MIN_RSA_BITS = 2048
_MAX_RSA_BITS = 8192
_MAX_KID_CHARS = 256
#: A JWKS larger than this is not a JWKS (Auth0's is ~2 KB); refuse before parsing JSON.
DEFAULT_MAX_JWKS_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class JwkKey:
    """One parsed public signing key. ``alg`` is the JWK's own ``alg`` (``None`` if absent)."""

    kid: str
    kty: Literal["RSA", "EC"]
    alg: str | None
    crv: str | None
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = field(repr=False)

    def fits(self, alg: str) -> bool:
        """Whether this key may verify a JWS made with ``alg``.

        RFC 7517 §4.4: "The 'alg' member ... identifies the algorithm intended for use with
        the key"; and RFC 7518 §3.4 fixes the curve of each ES algorithm.
        """
        family = SUPPORTED_ALGORITHMS.get(alg)
        if family is None or family[0] != self.kty:
            return False
        if self.alg is not None and self.alg != alg:
            return False
        return family[1] is None or family[1] == self.crv


# --- parsing -------------------------------------------------------------------------------


def _b64u_int(value: object) -> int:
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise ValueError("bad base64url integer")
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return int.from_bytes(raw, "big")


def _parse_jwk(jwk: Mapping[str, Any]) -> JwkKey:
    """One JWK to a key, or ``ValueError`` saying why it is not a usable signing key."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID_CHARS:
        raise ValueError("missing or oversized kid")
    # RFC 7517 §4.2: "'sig' (signature)"; a key published for encryption is not ours to use.
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"use {use!r} is not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise ValueError("key_ops does not include 'verify'")
    if "d" in jwk:
        raise ValueError("private key material published in the JWKS")
    alg = jwk.get("alg")
    if alg is not None and alg not in SUPPORTED_ALGORITHMS:
        raise ValueError("unsupported alg")
    kty = jwk.get("kty")
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if kty == "RSA":
        n, e = _b64u_int(jwk.get("n")), _b64u_int(jwk.get("e"))
        if not _MIN_RSA_BITS <= n.bit_length() <= _MAX_RSA_BITS or e < 3 or e % 2 == 0:
            raise ValueError("RSA key size or exponent out of range")
        public_key = rsa.RSAPublicNumbers(e, n).public_key()
        crv = None
    elif kty == "EC":
        crv = jwk.get("crv")
        if not isinstance(crv, str) or crv not in _CURVES:
            raise ValueError("unsupported curve")
        curve, _ = _CURVES[crv]
        # cryptography checks that the point lies on the curve.
        numbers = ec.EllipticCurvePublicNumbers(
            _b64u_int(jwk.get("x")), _b64u_int(jwk.get("y")), curve
        )
        public_key = numbers.public_key()
    else:
        raise ValueError("unsupported kty")
    key = JwkKey(kid=kid, kty=kty, alg=alg, crv=crv, public_key=public_key)
    if alg is not None and not key.fits(alg):
        raise ValueError("alg does not fit the key type")
    return key


def parse_jwks(body: bytes, *, max_keys: int = 64) -> Mapping[str, JwkKey]:
    """Parse a JWKS document into ``kid -> key``; ``ValueError`` if nothing usable is in it.

    Unusable entries are skipped (logged), so one odd key never hides the others. A ``kid``
    published twice is ambiguous: both copies are dropped.
    """
    if len(body) > DEFAULT_MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    try:
        document = json.loads(body)
    except RecursionError:
        # The parser has one error type (the cache catches more, other callers may not).
        raise ValueError("JWKS is nested too deeply") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS is not an object with a 'keys' array")
    keys: dict[str, JwkKey] = {}
    duplicated: set[str] = set()
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict):
            logger.warning("JWKS entry %d skipped: not an object", index)
            continue
        try:
            key = _parse_jwk(jwk)
        except (ValueError, TypeError, OverflowError) as exc:
            logger.info("JWKS entry %d skipped: %s", index, exc)
            continue
        if key.kid in keys or key.kid in duplicated:
            duplicated.add(key.kid)
            keys.pop(key.kid, None)
            continue
        if len(keys) >= max_keys:
            logger.warning("JWKS has more than %d usable keys; the rest are ignored", max_keys)
            break
        keys[key.kid] = key
    if duplicated:
        logger.warning("JWKS publishes %d kid(s) more than once; they are ignored", len(duplicated))
    if not keys:
        raise ValueError("JWKS holds no usable signing key")
    return MappingProxyType(keys)
