"""Which credential a request carries, and verifying it (sans-IO).

RFC 6750 and the IllumiChat page fix the order: an ``Authorization: Bearer`` header wins
over the session cookie. A credential that is present but invalid is a 401; we never
fall back to another credential or to anonymous. Any I/O (an API key row, a JWKS key, a
database session row) is a query yielded to the driver.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from .credentials.apikeys import looks_like_api_key, parse_api_key, verify_api_key
from .credentials.auth0 import Auth0BearerVerifier
from .credentials.authjs import AuthjsSessionDecoder
from .credentials.cache import CredentialCache
from .credentials.sessions_db import check_session_token, principal_from_session_record
from .errors import CredentialError
from .principal import CredentialKind, Principal
from .queries import NeedApiKey, NeedJwk, NeedSession, Query
from .reasons import Reason
from .request import RequestFacts

__all__ = ["Authenticators", "authenticate"]

#: Longest Authorization header value we look at (a JWT with many claims is ~2-4 KB).
MAX_AUTHORIZATION_CHARS = 16 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticators:
    """The pure verifiers, built once at start-up; ``None``/``False`` turns a kind off."""

    session: AuthjsSessionDecoder | None = None
    session_database: bool = False
    auth0: Auth0BearerVerifier | None = None
    api_keys: bool = False
    #: Verified credentials by hash; ``None`` turns caching off.
    cache: CredentialCache | None = field(default_factory=CredentialCache)


def _bearer_token(value: str) -> str:
    # RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive.
    if len(value) > MAX_AUTHORIZATION_CHARS:
        raise CredentialError("Authorization header too long", reason=Reason.INVALID_TOKEN)
    scheme, _, token = value.strip().partition(" ")
    token = token.strip(" ")
    if scheme.lower() != "bearer":
        raise CredentialError(
            "unsupported Authorization scheme; use 'Bearer <token>'", reason=Reason.INVALID_TOKEN
        )
    if not token or " " in token:
        raise CredentialError("malformed bearer token", reason=Reason.INVALID_TOKEN)
    return token


def authenticate(
    request: RequestFacts, authn: Authenticators, *, now: float
) -> Generator[Query, Any, Principal | None]:
    """The verified principal, ``None`` when no credential was presented.

    Raises :class:`CredentialError` for a credential that is present but not valid.
    """
    authorization = request.header_values("authorization")
    if len(authorization) > 1:
        raise CredentialError(
            "more than one Authorization header", reason=Reason.AMBIGUOUS_CREDENTIAL
        )
    cache = authn.cache
    if authorization:
        key = cache.key(b"A", authorization[0]) if cache is not None else b""
        if cache is not None and (hit := cache.get(key, now=now)) is not None:
            return hit
        principal = yield from _bearer(authorization[0], authn, now)
        if cache is not None:
            cache.put(key, principal, now=now, revocable=principal.kind is CredentialKind.API_KEY)
        return principal

    cookies = request.header_values("cookie")
    if not cookies or authn.session is None:
        return None
    key = cache.key(b"C", "\n".join(cookies)) if cache is not None else b""
    if cache is not None and (hit := cache.get(key, now=now)) is not None:
        return hit
    cookie = authn.session.find_cookie(cookies)
    if cookie is None:
        return None
    database = not authn.session.is_jwt(cookie)
    if not database:
        principal = authn.session.decode(cookie, now=now)
    elif not authn.session_database:
        raise CredentialError("invalid session", reason=Reason.INVALID_CREDENTIAL)
    else:
        check_session_token(cookie.value)
        record = yield NeedSession(cookie.value)
        principal = principal_from_session_record(record, now=now)
    if cache is not None:
        cache.put(key, principal, now=now, revocable=database)
    return principal


def _bearer(value: str, authn: Authenticators, now: float) -> Generator[Query, Any, Principal]:
    token = _bearer_token(value)
    if looks_like_api_key(token):
        if not authn.api_keys:
            raise CredentialError("API keys are not accepted here", reason=Reason.API_KEY_INVALID)
        parsed_key = parse_api_key(token)  # checksum first: garbage never reaches a store
        record = yield NeedApiKey(parsed_key.key_id)
        return verify_api_key(parsed_key, record, now=now)
    if authn.auth0 is None:
        raise CredentialError("bearer tokens are not accepted here", reason=Reason.INVALID_TOKEN)
    parsed_jwt = authn.auth0.parse(token)
    key = yield NeedJwk(parsed_jwt.kid, parsed_jwt.alg)
    return authn.auth0.verify(parsed_jwt, key, now=now)
