"""Which credential a request carries, and verifying it (sans-IO).

RFC 6750 and the IllumiChat page fix the order: an ``Authorization: Bearer`` header wins
over the session cookie. A credential that is present but invalid is a 401; we never
fall back to another credential or to anonymous. Any I/O (an API key row, a JWKS key, a
database session row) is a query yielded to the driver.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .credentials.apikeys import looks_like_api_key, parse_api_key, verify_api_key
from .credentials.auth0 import Auth0BearerVerifier
from .credentials.authjs import AuthjsSessionDecoder
from .credentials.sessions import check_session_token, principal_from_session_record
from .errors import CredentialError
from .principal import CredentialKind, Principal
from .queries import NeedApiKey, NeedJwk, NeedSession, Query, RecordApiKeyUse
from .reasons import Reason
from .request import RequestFacts
from .stores.credential_cache import CredentialCache

__all__ = ["Authenticators", "Presented", "authenticate", "cached", "presented", "verify"]

_new_tuple = tuple.__new__

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
            "unsupported Authorization scheme; use 'Bearer <token>'",
            reason=Reason.INVALID_TOKEN,
            token_error=False,
        )
    if not token or " " in token:
        raise CredentialError("malformed bearer token", reason=Reason.INVALID_TOKEN)
    return token


class Presented(NamedTuple):
    """The credential a request carries, before anything is verified."""

    #: ``"A"``: the Authorization header; ``"C"``: the Cookie header(s).
    source: str
    values: tuple[str, ...]
    #: The credential cache's key for what was presented; ``""``: no cache.
    cache_key: str | bytes


def presented(request: RequestFacts, authn: Authenticators) -> Presented | None:
    """Which credential ``request`` carries (one pass over its headers); ``None``: none.

    Raises :class:`CredentialError` for two ``Authorization`` headers.
    """
    authorization: str | None = None
    cookies: list[str] = []
    for name, value in request.headers:
        if name == "authorization":
            if authorization is not None:
                raise CredentialError(
                    "more than one Authorization header", reason=Reason.AMBIGUOUS_CREDENTIAL
                )
            authorization = value
        elif name == "cookie":
            cookies.append(value)
    cache = authn.cache
    if authorization is not None:
        key = cache.key("A", authorization) if cache is not None else ""
        return _new_tuple(Presented, ("A", (authorization,), key))
    if not cookies or authn.session is None:
        return None
    key = cache.key("C", "\n".join(cookies)) if cache is not None else ""
    return _new_tuple(Presented, ("C", tuple(cookies), key))


def cached(found: Presented, authn: Authenticators, *, now: float) -> Principal | None:
    """The principal this very credential verified as recently, if still cached."""
    cache = authn.cache
    return cache.get(found.cache_key, now=now) if cache is not None else None


def authenticate(
    request: RequestFacts, authn: Authenticators, *, now: float
) -> Generator[Query, Any, Principal | None]:
    """The verified principal, ``None`` when no credential was presented.

    Raises :class:`CredentialError` for a credential that is present but not valid.
    """
    found = presented(request, authn)
    if found is None:
        return None
    hit = cached(found, authn, now=now)
    if hit is not None:
        return hit
    return (yield from verify(found, authn, now=now))


def verify(
    found: Presented, authn: Authenticators, *, now: float
) -> Generator[Query, Any, Principal | None]:
    """Verify a presented credential (I/O as queries) and cache what verifies."""
    cache = authn.cache
    if found.source == "A":
        principal = yield from _bearer(found.values[0], authn, now)
        if cache is not None:
            revocable = principal.kind is CredentialKind.API_KEY
            cache.put(found.cache_key, principal, now=now, revocable=revocable)
        return principal
    session = authn.session
    if session is None:
        return None
    cookie = session.find_cookie(found.values)
    if cookie is None:
        return None
    database = not session.is_jwt(cookie)
    if not database:
        principal = session.decode(cookie, now=now)
    elif not authn.session_database:
        raise CredentialError("invalid session", reason=Reason.INVALID_CREDENTIAL)
    else:
        check_session_token(cookie.value)
        record = yield NeedSession(cookie.value)
        principal = principal_from_session_record(record, now=now)
    if cache is not None:
        cache.put(found.cache_key, principal, now=now, revocable=database)
    return principal


def _bearer(value: str, authn: Authenticators, now: float) -> Generator[Query, Any, Principal]:
    token = _bearer_token(value)
    if looks_like_api_key(token):
        if not authn.api_keys:
            raise CredentialError("API keys are not accepted here", reason=Reason.API_KEY_INVALID)
        parsed_key = parse_api_key(token)  # checksum first: garbage never reaches a store
        record = yield NeedApiKey(parsed_key.key_id)
        principal = verify_api_key(parsed_key, record, now=now)
        yield RecordApiKeyUse(parsed_key.key_id)
        return principal
    if authn.auth0 is None:
        raise CredentialError("bearer tokens are not accepted here", reason=Reason.INVALID_TOKEN)
    parsed_jwt = authn.auth0.parse(token)
    key = yield NeedJwk(parsed_jwt.kid, parsed_jwt.alg)
    return authn.auth0.verify(parsed_jwt, key, now=now)
