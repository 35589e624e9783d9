"""Which credential a request carries, and verifying it (sans-IO).

RFC 6750 and the IllumiChat page fix the order: an ``Authorization: Bearer`` header wins
over the session cookie. A credential that is present but invalid is a 401; we never
fall back to another credential or to anonymous. Everything external (the credential
cache, an API key row, a JWKS key, a database session row) is a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..credentials.apikeys import looks_like_api_key, parse_api_key, verify_api_key
from ..credentials.auth0 import Auth0BearerVerifier
from ..credentials.authjs import AuthjsSessionDecoder
from ..credentials.sessions import check_session_token, principal_from_session_record
from ..errors import CredentialError
from ..principal import CredentialKind, Principal
from ..reasons import Reason
from ..request import RequestFacts
from .lookups import Lookups, unavailable

__all__ = ["Authenticators", "CredentialSource", "authenticate"]

#: Longest Authorization header value we look at (a JWT with many claims is ~2-4 KB).
MAX_AUTHORIZATION_CHARS = 16 * 1024


class CredentialSource(StrEnum):
    """Where a request's credential came from (also the credential cache's key prefix)."""

    AUTHORIZATION = "authorization"
    COOKIE = "cookie"


_AUTHORIZATION = CredentialSource.AUTHORIZATION
_COOKIE = CredentialSource.COOKIE
_API_KEY = CredentialKind.API_KEY


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticators:
    """The pure verifiers, built once at start-up; ``None``/``False`` turns a kind off."""

    session: AuthjsSessionDecoder | None = None
    session_database: bool = False
    auth0: Auth0BearerVerifier | None = None
    api_keys: bool = False


def authenticate(
    request: RequestFacts, authn: Authenticators, lookups: Lookups, now: float
) -> Principal | None:
    """The verified principal, ``None`` when no credential was presented.

    Raises :class:`CredentialError` for a credential that is present but not valid (or
    for two ``Authorization`` headers). A credential the cache knows costs one lookup; one
    it does not is verified, then cached.
    """
    authorization: str | None = None
    cookies: list[str] = []
    for name, value in request.headers:  # one pass over the headers
        if name == "authorization":
            if authorization is not None:
                raise CredentialError(
                    "more than one Authorization header", reason=Reason.AMBIGUOUS_CREDENTIAL
                )
            authorization = value
        elif name == "cookie":
            cookies.append(value)
    if authorization is not None:
        source, credential = _AUTHORIZATION, authorization
    elif cookies and authn.session is not None:
        source, credential = _COOKIE, "\n".join(cookies)
    else:
        return None
    try:
        hit = lookups.cached_principal(source, credential, now)
    except BaseException as exc:
        raise unavailable("cached_principal", exc) from None
    if hit is not None:
        return hit
    verified = (
        _bearer(credential, authn, lookups, now)
        if source is _AUTHORIZATION
        else _session(cookies, authn, lookups, now)
    )
    if verified is None:
        return None
    principal, revocable = verified
    if principal.kind is _API_KEY and principal.credential_id is not None:
        # Before caching: a replay that finds this lookup failed must not find the key
        # in the cache and skip it (an API key costs one hash to verify again).
        try:
            lookups.record_api_key_use(principal.credential_id)
        except BaseException as exc:
            raise unavailable("record_api_key_use", exc) from None
    try:
        lookups.cache_principal(source, credential, principal, now, revocable)
    except BaseException as exc:
        raise unavailable("cache_principal", exc) from None
    return principal


# Each verifier returns the principal and whether it is revocable server-side (an API key
# or a database session: cached briefly, so that a revocation takes effect soon).


def _session(
    cookies: list[str], authn: Authenticators, lookups: Lookups, now: float
) -> tuple[Principal, bool] | None:
    session = authn.session
    if session is None:
        return None
    cookie = session.find_cookie(cookies)
    if cookie is None:
        return None
    if session.is_jwt(cookie):
        return session.decode(cookie, now=now), False
    if not authn.session_database:
        raise CredentialError("invalid session", reason=Reason.INVALID_CREDENTIAL)
    check_session_token(cookie.value)
    try:
        record = lookups.session(cookie.value)
    except BaseException as exc:
        raise unavailable("session", exc) from None
    return principal_from_session_record(record, now=now), True


def _bearer(
    value: str, authn: Authenticators, lookups: Lookups, now: float
) -> tuple[Principal, bool]:
    token = _bearer_token(value)
    if looks_like_api_key(token):
        if not authn.api_keys:
            raise CredentialError("API keys are not accepted here", reason=Reason.API_KEY_INVALID)
        parsed_key = parse_api_key(token)  # checksum first: garbage never reaches a store
        try:
            record = lookups.api_key(parsed_key.key_id)
        except BaseException as exc:
            raise unavailable("api_key", exc) from None
        return verify_api_key(parsed_key, record, now=now), True
    if authn.auth0 is None:
        raise CredentialError("bearer tokens are not accepted here", reason=Reason.INVALID_TOKEN)
    parsed_jwt = authn.auth0.parse(token)
    try:
        key = lookups.jwk(parsed_jwt.kid, parsed_jwt.alg)
    except BaseException as exc:
        raise unavailable("jwk", exc) from None
    return authn.auth0.verify(parsed_jwt, key, now=now), False


def _bearer_token(value: str) -> str:
    # RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive.
    if len(value) > MAX_AUTHORIZATION_CHARS:
        raise CredentialError("Authorization header too long", reason=Reason.INVALID_TOKEN)
    scheme, _, token = value.strip().partition(" ")
    token = token.strip(" ")
    if scheme.lower() != "bearer":
        raise CredentialError(
            "unsupported Authorization scheme; use 'Bearer <token>'",
            reason=Reason.INVALID_TOKEN,
            token_error=False,
        )
    if not token or " " in token:
        raise CredentialError("malformed bearer token", reason=Reason.INVALID_TOKEN)
    return token
