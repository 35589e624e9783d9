"""Auth0-issued bearer JWTs (RFC 7519 / RFC 9068 access tokens), verified sans-IO.

Two pure steps, so the caller decides where keys come from and what time it is:

* :meth:`Auth0BearerVerifier.parse` checks the token's shape and header (size, three
  strict base64url parts, JSON objects, an allowed ``alg``, a ``kid``, no key-bearing or
  critical headers) and returns a :class:`ParsedJwt`. No crypto, no I/O.
* :meth:`Auth0BearerVerifier.verify` checks the signature with ``cryptography`` on the key
  the :class:`~illumichat_authz.credentials.jwk.JwkKey` the caller looked up, then the, then the
  claims, and returns a :class:`Principal`.

The algorithm is fixed by configuration; the token's ``alg`` is only checked against it
(RFC 8725 §3.1: "libraries MUST enable the caller to specify a supported set of
algorithms and MUST NOT use any other algorithms when performing cryptographic operations").
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from illumichat_authz.credentials._claims import (
    ClaimTypeError,
    RegisteredClaims,
    registered_claims,
    strict_json,
)
from illumichat_authz.credentials._util import (
    DEFAULT_CLOCK_TOLERANCE_S,
    clock_tolerance,
    credential_id,
)
from illumichat_authz.credentials.jwk import SUPPORTED_ALGORITHMS, JwkKey
from illumichat_authz.errors import ConfigurationError, CredentialError
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.reasons import Reason

if TYPE_CHECKING:
    from illumichat_authz.config import Auth0Settings

__all__ = [
    "MAX_TOKEN_CHARS",
    "Auth0BearerVerifier",
    "ParsedJwt",
    "auth0_permissions",
    "auth0_scopes",
]

#: Longest token accepted. Auth0 access tokens with many RBAC permissions reach a few KB;
#: anything past this is refused before base64 or JSON work.
MAX_TOKEN_CHARS = 16 * 1024
_MAX_HEADER_CHARS = 2048
_MAX_KID_CHARS = 256
_MAX_CLAIM_CHARS = 1024

#: RFC 8725 §3.1 and §2.7: headers that would let the token pick its own key, or demand
#: processing we do not do, are refused outright.
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "zip", "enc", "b64"})
#: RFC 9068 §2.1 ``typ`` is "at+jwt"; Auth0's default access tokens say "JWT".
_ALLOWED_TYP = frozenset({"jwt", "at+jwt", "application/at+jwt"})

_HASHES: Mapping[str, hashes.HashAlgorithm] = MappingProxyType(
    {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
)
_PKCS1 = padding.PKCS1v15()
#: RFC 7518 §3.5: "The size of the salt value is the same size as the hash function output."
_PSS: Mapping[str, padding.AsymmetricPadding] = MappingProxyType(
    {
        f"PS{bits}": padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
        for bits, h in _HASHES.items()
    }
)
_ECDSA = MappingProxyType({f"ES{bits}": ec.ECDSA(h) for bits, h in _HASHES.items()})
_EC_SIZES = MappingProxyType({"ES256": 32, "ES384": 48, "ES512": 66})


def _invalid(message: str) -> CredentialError:
    return CredentialError(message, reason=Reason.INVALID_TOKEN)


_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64URL_VALUE = MappingProxyType({c: i for i, c in enumerate(_B64URL_ALPHABET)})
#: base64url to standard base64, and '+', '/', '=' (not in base64url) to '!', which
#: ``a2b_base64(strict_mode=True)`` refuses along with every other non-alphabet byte.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
#: Unused low bits of the last character, by ``len % 4`` (2: four bits, 3: two bits).
_SLACK_BITS = MappingProxyType({0: 0, 2: 0x0F, 3: 0x03})
_PADDING = MappingProxyType({0: b"", 2: b"==", 3: b"="})


def _b64url_decode(part: str, what: str) -> bytes:
    """RFC 7515 §2: base64url "with all trailing '=' characters omitted"; strict.

    Strict means: base64url alphabet only, no padding, and the
    canonical encoding (the unused low bits are zero), so one token has exactly one
    spelling. The canonical check is O(1): only the last character carries slack bits.
    """
    rem = len(part) % 4
    if rem == 1:
        raise _invalid(f"token {what} is not base64url")
    try:
        raw = binascii.a2b_base64(
            part.encode("ascii").translate(_TO_STANDARD) + _PADDING[rem], strict_mode=True
        )
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise _invalid(f"token {what} is not base64url") from None
    if rem and _B64URL_VALUE[part[-1]] & _SLACK_BITS[rem]:
        raise _invalid(f"token {what} is not canonical base64url")
    return raw


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """RFC 7515 §5.2 step 4 / RFC 7519 §7.2: a UTF-8 JSON object, read strictly."""
    try:
        value = strict_json(raw)
    except ValueError:
        raise _invalid(f"token {what} is not a JSON object") from None
    if not isinstance(value, dict):
        raise _invalid(f"token {what} is not a JSON object")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedJwt:
    """A token whose shape and header passed; its signature and claims are NOT yet checked."""

    alg: str
    kid: str
    header: Mapping[str, Any] = field(repr=False)
    claims: Mapping[str, Any] = field(repr=False)
    signing_input: bytes = field(repr=False)
    signature: bytes = field(repr=False)


class Auth0BearerVerifier:
    """Verifies Auth0 access tokens for one tenant (issuer) and one API (audience)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: Sequence[str] = ("RS256",),
        user_id_claim: str = "sub",
        workspace_claim: str | None = None,
        clock_tolerance_s: float = DEFAULT_CLOCK_TOLERANCE_S,
        authorized_parties: Iterable[str] | None = None,
    ) -> None:
        if not issuer or not audience:
            raise ConfigurationError("auth0: issuer and audience are required")
        if isinstance(algorithms, str) or not algorithms:
            raise ConfigurationError("auth0.algorithms: a non-empty list of algorithm names")
        unknown = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
        if unknown:
            raise ConfigurationError(
                f"auth0.algorithms: unsupported {unknown}; use {sorted(SUPPORTED_ALGORITHMS)}"
            )
        tolerance = clock_tolerance(clock_tolerance_s, key="auth0.clock_tolerance_s")
        self.issuer = issuer
        self.audience = audience
        self.algorithms = frozenset(algorithms)
        self.user_id_claim = user_id_claim
        self.workspace_claim = workspace_claim
        self.clock_tolerance_s = tolerance
        #: Client ids whose tokens are accepted (``azp``); ``None``: any client of the tenant.
        self.authorized_parties = (
            None if authorized_parties is None else frozenset(authorized_parties)
        )

    @classmethod
    def from_settings(cls, settings: Auth0Settings) -> Auth0BearerVerifier:
        """Build from ``settings.auth0``; the issuer is ``https://{domain}/`` as Auth0 writes it."""
        if settings.issuer is None or not settings.audience:
            raise ConfigurationError("auth0.domain and auth0.audience must both be set")
        return cls(
            issuer=settings.issuer,
            audience=settings.audience,
            algorithms=tuple(settings.algorithms),
            user_id_claim=settings.user_id_claim,
            workspace_claim=settings.workspace_claim,
            clock_tolerance_s=settings.clock_tolerance_s,
            authorized_parties=settings.authorized_parties,
        )

    # --- step 1: shape and header -----------------------------------------------------------

    def parse(self, token: str) -> ParsedJwt:
        """Check the token's form and header; raise :class:`CredentialError` if it is bad."""
        if not isinstance(token, str):
            raise _invalid("token must be text")
        if len(token) > MAX_TOKEN_CHARS:
            raise _invalid("token is too long")
        if not token.isascii():
            raise _invalid("token has characters outside base64url")
        # RFC 7515 §7.1: BASE64URL(header) '.' BASE64URL(payload) '.' BASE64URL(signature)
        parts = token.split(".")
        if len(parts) != 3:
            raise _invalid("token is not a JWS compact serialization (three parts)")
        header_b64, payload_b64, signature_b64 = parts
        if not header_b64 or not payload_b64:
            raise _invalid("token has an empty part")
        if len(header_b64) > _MAX_HEADER_CHARS:
            raise _invalid("token header is too long")
        header = _json_object(_b64url_decode(header_b64, "header"), "header")
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise _invalid("token header has no alg")
        # RFC 8725 §2.1: "alg": "none" in any spelling is never a signature.
        if alg.strip().lower() == "none":
            raise _invalid("unsigned tokens (alg none) are not accepted")
        if alg not in self.algorithms:
            raise _invalid("token alg is not one this API accepts")
        forbidden = _FORBIDDEN_HEADERS.intersection(header)
        if forbidden:
            raise _invalid(f"token header {sorted(forbidden)[0]!r} is not accepted")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ALLOWED_TYP):
            raise _invalid("token typ is not a JWT access token")
        kid = header.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID_CHARS:
            raise _invalid("token header has no usable kid")
        if not signature_b64:
            raise _invalid("token has no signature")
        signature = _b64url_decode(signature_b64, "signature")
        claims = _json_object(_b64url_decode(payload_b64, "payload"), "payload")
        return ParsedJwt(
            alg=alg,
            kid=kid,
            header=MappingProxyType(header),
            claims=MappingProxyType(claims),
            signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
            signature=signature,
        )

    # --- step 2: signature and claims -------------------------------------------------------

    def _check_signature(self, parsed: ParsedJwt, key: JwkKey) -> None:
        alg = parsed.alg
        if alg not in self.algorithms or not key.fits(alg):
            raise _invalid("token algorithm does not match its signing key")
        digest = _HASHES[alg[2:]]
        public_key = key.public_key
        try:
            if isinstance(public_key, rsa.RSAPublicKey):
                if len(parsed.signature) != (public_key.key_size + 7) // 8:
                    raise InvalidSignature
                pad = _PSS.get(alg, _PKCS1)
                public_key.verify(parsed.signature, parsed.signing_input, pad, digest)
            else:
                # RFC 7518 §3.4: the signature is R || S, each exactly the curve's size.
                size = _EC_SIZES[alg]
                if len(parsed.signature) != 2 * size:
                    raise InvalidSignature
                r = int.from_bytes(parsed.signature[:size], "big")
                s = int.from_bytes(parsed.signature[size:], "big")
                public_key.verify(encode_dss_signature(r, s), parsed.signing_input, _ECDSA[alg])
        except InvalidSignature:
            raise _invalid("token signature does not verify") from None

    def _check_claims(self, claims: Mapping[str, Any], now: float) -> RegisteredClaims:
        try:
            registered = registered_claims(claims)
        except ClaimTypeError as exc:
            raise _invalid(f"token {exc}") from None
        leeway = self.clock_tolerance_s
        # RFC 7519 §4.1.1 / Auth0: "iss" is exactly "https://{domain}/" (trailing slash).
        if registered.iss != self.issuer:
            raise _invalid("token issuer is not this API's Auth0 tenant")
        # RFC 7519 §4.1.3: "each principal intended to process the JWT MUST identify itself
        # with a value in the audience claim ... the JWT MUST be rejected".
        if registered.aud is None or self.audience not in registered.aud:
            raise _invalid("token audience is not this API")
        # RFC 7519 §4.1.4: "the current date/time MUST be before the expiration date/time".
        exp = registered.exp
        if exp is None:
            raise _invalid("token has no exp")
        if now >= exp + leeway:
            raise CredentialError("token has expired", reason=Reason.TOKEN_EXPIRED)
        # RFC 7519 §4.1.5: "MUST NOT be accepted for processing" before "nbf".
        if registered.nbf is not None and now + leeway < registered.nbf:
            raise _invalid("token is not valid yet (nbf)")
        if registered.iat is not None and registered.iat > now + leeway:
            raise _invalid("token was issued in the future (iat)")
        permissions = claims.get("permissions")
        if permissions is not None and (
            not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions)
        ):
            raise _invalid("token permissions claim is not a list of strings")
        scope = claims.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise _invalid("token scope claim is not a string")
        azp = claims.get("azp")
        if azp is not None and not isinstance(azp, str):
            raise _invalid("token azp claim is not a string")
        # OpenID Connect Core §3.1.3.7: "If an azp (authorized party) Claim is present, the
        # Client SHOULD verify that its client_id is the Claim Value". Here: one of the
        # configured clients, and a token naming no client is refused too.
        if self.authorized_parties is not None and azp not in self.authorized_parties:
            raise _invalid("token was issued to a client this API does not accept (azp)")
        return registered

    @staticmethod
    def _text_claim(claims: Mapping[str, Any], name: str) -> str:
        value = claims.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_CLAIM_CHARS:
            raise _invalid(f"token claim {name!r} is missing or not a string")
        return value

    def verify(self, parsed: ParsedJwt, key: JwkKey, *, now: float) -> Principal:
        """Verify signature then claims at unix time ``now``; return the caller's principal.

        ``scopes`` stays ``None``: Auth0 ``permissions``/``scope`` are reported (see
        :func:`auth0_permissions`), never used to narrow the workspace role.
        """
        self._check_signature(parsed, key)
        claims = parsed.claims
        registered = self._check_claims(claims, now)
        user_id = self._text_claim(claims, self.user_id_claim)
        workspace = None
        if self.workspace_claim is not None and claims.get(self.workspace_claim) is not None:
            workspace = self._text_claim(claims, self.workspace_claim)
        jti = registered.jti
        if jti is not None and 0 < len(jti) <= 128:
            cid = f"jti:{jti}"
        else:
            cid = "jwt:" + credential_id(parsed.signature)
        email, name = claims.get("email"), claims.get("name")
        return Principal(
            user_id=user_id,
            kind=CredentialKind.AUTH0,
            workspace=workspace,
            email=email if isinstance(email, str) else None,
            name=name if isinstance(name, str) else None,
            scopes=None,
            expires_at=registered.exp,
            credential_id=cid,
            claims=claims,
        )


def auth0_permissions(principal: Principal) -> frozenset[str]:
    """The Auth0 RBAC ``permissions`` claim of an Auth0 principal (empty for other kinds)."""
    if principal.kind is not CredentialKind.AUTH0:
        return frozenset()
    value = principal.claims.get("permissions")
    return frozenset(value) if isinstance(value, list) else frozenset()


def auth0_scopes(principal: Principal) -> frozenset[str]:
    """The space-separated ``scope`` claim (RFC 8693 §4.2) of an Auth0 principal."""
    if principal.kind is not CredentialKind.AUTH0:
        return frozenset()
    value = principal.claims.get("scope")
    return frozenset(value.split()) if isinstance(value, str) else frozenset()
