"""Auth.js (v5, ``@auth/core``) session cookies: the JWT strategy's encrypted token.

How Auth.js makes the cookie (``packages/core/src/jwt.ts``): the claims are encrypted, not
signed, as a compact JWE with ``alg: "dir"`` and ``enc: "A256CBC-HS512"``; the key is
``hkdf("sha256", secret, salt, `Auth.js Generated Encryption Key (${salt})`, 64)`` where the
salt is the cookie name; the header carries ``kid``, the key's RFC 7638 thumbprint. Its
``decode`` also accepts ``A256GCM`` (32-byte key) and, with a list of secrets, "the first
secret that successfully decrypts the JWT will be used".

Sans-IO: every key is derived once in the constructor; :meth:`AuthjsSessionDecoder.decode`
is a pure function of (cookie, now). A database-strategy cookie (an opaque token, not a
JWE) is not decoded here: the driver looks it up in a :class:`~.sessions.SessionStore`
and :func:`~.sessions.principal_from_session_record` decides what the row means.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, get_args

from illumichat_authz.errors import ConfigurationError, CredentialError
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.reasons import Reason

from . import _jwe
from ._claims import ClaimTypeError, registered_claims, strict_json
from ._jwe import ContentKey, Enc, JweError
from ._util import DEFAULT_CLOCK_TOLERANCE_S, clock_tolerance, credential_id
from .cookies import SessionCookie, find_session_cookie, parse_cookie_header

if TYPE_CHECKING:
    from illumichat_authz.config import SessionSettings

__all__ = [
    "NEXTAUTH_V4_COOKIE",
    "AuthjsSessionDecoder",
    "SessionCookie",
    "encode_session_token",
]

_log = logging.getLogger("illumichat_authz.credentials.authjs")

DEFAULT_COOKIE: Final = "authjs.session-token"
#: NextAuth.js v4's cookie (``next-auth/src/core/lib/cookie.ts``).
NEXTAUTH_V4_COOKIE: Final = "next-auth.session-token"
_SECURE: Final = "__Secure-"
_V4_INFO: Final = b"NextAuth.js Generated Encryption Key"
#: The one answer for every token that fails after parsing began: which step failed
#: (header, kid, tag, padding, JSON) is logged at debug level, never told to the caller.
_GENERIC: Final = "session token is invalid"
_ENCS: Final[tuple[Enc, ...]] = get_args(Enc)
_HEADER_CACHE_SIZE: Final = 64


def _authjs_info(salt: str) -> str:
    return f"Auth.js Generated Encryption Key ({salt})"


def derive_content_key(secret: str, *, salt: str, enc: Enc, secret_index: int = 0) -> ContentKey:
    """The key ``@auth/core``'s ``getDerivedEncryptionKey(enc, secret, salt)`` returns."""
    key = _jwe.derive_key(
        secret, salt=salt, info=_authjs_info(salt), length=_jwe.ENC_KEY_LENGTH[enc]
    )
    return ContentKey.create(key, enc=enc, secret_index=secret_index)


def derive_v4_key(secret: str, *, secret_index: int = 0) -> ContentKey:
    """NextAuth v4: ``hkdf("sha256", secret, "", "NextAuth.js Generated Encryption Key", 32)``."""
    key = _jwe.derive_key(secret, salt=b"", info=_V4_INFO, length=32)
    return ContentKey.create(key, enc="A256GCM", secret_index=secret_index)


class _KeyRing:
    """The keys for one cookie name: by ``kid``, and per ``enc`` newest secret first."""

    __slots__ = ("by_kid", "ordered")

    def __init__(self, keys: Sequence[ContentKey]) -> None:
        self.by_kid: dict[str, ContentKey] = {}
        for key in keys:
            self.by_kid.setdefault(key.kid, key)
        self.ordered: dict[str, tuple[ContentKey, ...]] = {
            enc: tuple(k for k in keys if k.enc == enc) for enc in _ENCS
        }


class AuthjsSessionDecoder:
    """Verifies Auth.js session cookies and maps them to a :class:`Principal`.

    ``secrets`` are ``AUTH_SECRET`` values, newest first; removing one rejects its tokens.
    """

    def __init__(
        self,
        *,
        secrets: Sequence[str],
        cookie_name: str = DEFAULT_COOKIE,
        user_id_claim: str = "sub",
        workspace_claim: str | None = None,
        email_claim: str = "email",
        name_claim: str = "name",
        clock_tolerance_s: float = DEFAULT_CLOCK_TOLERANCE_S,
        accept_nextauth_v4: bool = False,
    ) -> None:
        if isinstance(secrets, str):
            raise ConfigurationError("session.secrets must be a list of strings")
        if any(not isinstance(s, str) or not s.strip() for s in secrets):
            raise ConfigurationError("session.secrets must not contain empty strings")
        if not cookie_name or any(c in cookie_name for c in " ;=,\t\r\n"):
            raise ConfigurationError(f"session.cookie_name {cookie_name!r} is not a cookie name")
        tolerance = clock_tolerance(clock_tolerance_s, key="session.clock_tolerance_s")
        if accept_nextauth_v4 and cookie_name.removeprefix(_SECURE) == NEXTAUTH_V4_COOKIE:
            raise ConfigurationError(
                "session.cookie_name is the NextAuth v4 cookie; set accept_nextauth_v4 instead"
            )
        self.cookie_name = cookie_name
        self.user_id_claim = user_id_claim
        self.workspace_claim = workspace_claim
        self.email_claim = email_claim
        self.name_claim = name_claim
        self.clock_tolerance_s = tolerance
        self.accept_nextauth_v4 = accept_nextauth_v4

        # Auth.js: "Use secure prefix for cookie name, unless URL ... is http://".
        names = (
            [cookie_name]
            if cookie_name.startswith(("__Secure-", "__Host-"))
            else [
                cookie_name,
                _SECURE + cookie_name,
            ]
        )
        # Every (secret, name, enc) key derived here, once; never per request.
        self._rings: dict[str, _KeyRing] = {
            name: _KeyRing(
                [
                    derive_content_key(secret, salt=name, enc=enc, secret_index=i)
                    for i, secret in enumerate(secrets)
                    for enc in _ENCS
                ]
            )
            for name in names
        }
        if accept_nextauth_v4:
            v4 = _KeyRing([derive_v4_key(s, secret_index=i) for i, s in enumerate(secrets)])
            self._rings[NEXTAUTH_V4_COOKIE] = v4
            self._rings[_SECURE + NEXTAUTH_V4_COOKIE] = v4
        self.cookie_names: tuple[str, ...] = tuple(self._rings)
        # Validated header segment -> header. Only headers that parsed and whose kid (if
        # any) names one of our keys get in, and it never grows past a small bound, so an
        # attacker cannot fill it with strings of their choosing.
        self._headers: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_settings(cls, settings: SessionSettings) -> AuthjsSessionDecoder:
        """Build from ``settings.session`` (its ``database`` is the driver's store, not ours)."""
        return cls(
            secrets=list(settings.secrets),
            cookie_name=settings.cookie_name,
            user_id_claim=settings.user_id_claim,
            workspace_claim=settings.workspace_claim,
            email_claim=settings.email_claim,
            name_claim=settings.name_claim,
            clock_tolerance_s=settings.clock_tolerance_s,
            accept_nextauth_v4=settings.accept_nextauth_v4,
        )

    def __repr__(self) -> str:
        return f"AuthjsSessionDecoder(cookie_names={self.cookie_names!r})"

    # -- cookies -------------------------------------------------------------------------

    def find_cookie(self, cookie_header_values: Sequence[str]) -> SessionCookie | None:
        """The session cookie in these ``Cookie`` header values, or ``None`` when absent.

        ``CredentialError``: oversized headers, ambiguous or malformed session cookies.
        """
        if isinstance(cookie_header_values, str):
            cookie_header_values = (cookie_header_values,)
        return find_session_cookie(parse_cookie_header(cookie_header_values), self.cookie_names)

    @staticmethod
    def is_jwt(cookie: SessionCookie) -> bool:
        """True when the value has the shape of a compact JWE (five dot-separated parts).

        Database-strategy tokens are ``crypto.randomUUID()`` values: no dots.
        """
        return cookie.value.count(".") == 4

    # -- decoding ------------------------------------------------------------------------

    def decode(self, cookie: SessionCookie, *, now: float) -> Principal:
        """Verify a JWE session ``cookie`` into a :class:`Principal`.

        Raises ``CredentialError`` (401) for anything not a valid, current session token,
        including a database-strategy token (see :meth:`is_jwt`: the driver looks those up).
        """
        ring = self._rings.get(cookie.name)
        if ring is None:
            raise CredentialError("not a session cookie", reason=Reason.INVALID_CREDENTIAL)
        if not self.is_jwt(cookie):
            raise CredentialError(_GENERIC, reason=Reason.INVALID_CREDENTIAL)
        try:
            _key, payload = self._open(cookie.value, ring)
        except JweError as exc:
            _log.debug("session token rejected: %s", exc)
            raise CredentialError(_GENERIC, reason=Reason.INVALID_CREDENTIAL) from None
        claims, exp = self._claims(payload, now=now)
        return self._principal(claims, exp=exp, token=cookie.value)

    def _header(self, token: str, ring: _KeyRing) -> dict[str, Any]:
        segment = token.partition(".")[0]
        header = self._headers.get(segment)
        if header is not None:
            return header
        header = _jwe.parse_header(segment)
        kid = header.get("kid")
        if kid is not None and kid in ring.by_kid and len(self._headers) < _HEADER_CACHE_SIZE:
            self._headers[segment] = header
        return header

    def _open(self, token: str, ring: _KeyRing) -> tuple[ContentKey, bytes]:
        if len(token) > _jwe.MAX_TOKEN_CHARS:
            raise JweError("token too long")
        parts = _jwe.parse_compact(token, header=self._header(token, ring))
        kid = parts.kid
        if kid is not None:
            # The kid picks the secret: no trial decryption (and a kid from another
            # cookie name or a removed secret simply is not in this ring).
            key = ring.by_kid.get(kid)
            if key is None or key.enc != parts.enc:
                raise JweError("unknown kid")
            return key, _jwe.decrypt(parts, key)
        # No kid (NextAuth v4, or a hand-made token): the newest secret only, as
        # @auth/core's decode does ("if (kid === undefined) return encryptionSecret" for
        # the first secret). Trying the older ones would accept what Auth.js refuses.
        keys = ring.ordered[parts.enc]
        if not keys:
            raise JweError("no secret for this enc")
        return keys[0], _jwe.decrypt(parts, keys[0])

    def _claims(self, payload: bytes, *, now: float) -> tuple[dict[str, Any], float]:
        """The claims and their ``exp``, checked as ``@auth/core``'s ``decode`` (jose) does."""
        try:
            claims = strict_json(payload)
        except ValueError:
            raise CredentialError(_GENERIC, reason=Reason.INVALID_CREDENTIAL) from None
        if not isinstance(claims, dict):
            raise CredentialError(_GENERIC, reason=Reason.INVALID_CREDENTIAL)
        try:
            registered = registered_claims(claims)
        except ClaimTypeError as exc:
            raise CredentialError(
                f"session token {exc}", reason=Reason.INVALID_CREDENTIAL
            ) from None
        tolerance = self.clock_tolerance_s
        exp = registered.exp
        # Auth.js always sets exp ("setExpirationTime(now() + maxAge)"); a session without
        # one would never end, so it is refused.
        if exp is None:
            raise CredentialError("session token has no exp", reason=Reason.INVALID_CREDENTIAL)
        # jose: `if (payload.exp <= now - tolerance)` -> "exp" claim timestamp check failed.
        if exp <= now - tolerance:
            raise CredentialError("session expired", reason=Reason.SESSION_EXPIRED)
        if registered.nbf is not None and registered.nbf > now + tolerance:
            raise CredentialError("session token not yet valid", reason=Reason.INVALID_CREDENTIAL)
        if registered.iat is not None and registered.iat > now + tolerance:
            raise CredentialError(
                "session token issued in the future", reason=Reason.INVALID_CREDENTIAL
            )
        return claims, exp

    def _principal(self, claims: dict[str, Any], *, exp: float, token: str) -> Principal:
        user_id = claims.get(self.user_id_claim)
        if not isinstance(user_id, str) or not user_id:
            raise CredentialError("session token has no user id", reason=Reason.INVALID_CREDENTIAL)
        workspace: str | None = None
        if self.workspace_claim is not None:
            raw = claims.get(self.workspace_claim)
            if raw is not None and (not isinstance(raw, str) or not raw):
                raise CredentialError(
                    "session token has an invalid workspace", reason=Reason.INVALID_CREDENTIAL
                )
            workspace = raw
        email = claims.get(self.email_claim)
        name = claims.get(self.name_claim)
        return Principal(
            user_id=user_id,
            kind=CredentialKind.SESSION,
            workspace=workspace,
            email=email if isinstance(email, str) else None,
            name=name if isinstance(name, str) else None,
            expires_at=exp,
            credential_id=credential_id(token),
            claims=MappingProxyType(claims),
        )


def encode_session_token(
    claims: Mapping[str, Any],
    *,
    secret: str,
    cookie_name: str = DEFAULT_COOKIE,
    enc: Enc = "A256CBC-HS512",
    now: float,
    max_age_s: int = 30 * 24 * 3600,
) -> str:
    """Mint a session token as ``@auth/core``'s ``encode`` does (development and tests).

    ``{...claims, iat, exp: iat + maxAge, jti}`` under ``{alg: "dir", enc, kid}``, the key
    derived from ``secret`` with the exact ``cookie_name`` as salt.
    """
    if enc not in _ENCS:
        raise ValueError(f"enc must be one of {_ENCS}")
    if not secret:
        raise ValueError("secret must not be empty")
    key = derive_content_key(secret, salt=cookie_name, enc=enc)
    iat = int(now)
    payload = {**claims, "iat": iat, "exp": iat + int(max_age_s), "jti": str(uuid.uuid4())}
    header = {"alg": "dir", "enc": enc, "kid": key.kid}
    plaintext = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return _jwe.encrypt(plaintext, key, header=header)
