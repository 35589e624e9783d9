"""Strict JSON and the RFC 7519 registered claims: one copy for every token we read.

Auth0 bearer JWTs (:mod:`.auth0`) and Auth.js session JWEs (:mod:`.authjs`, whose
protected headers :mod:`._jwe` parses) all decode through :func:`strict_json` and type
their registered claims with :func:`registered_claims`, so a claim means the same thing
whichever way a token came in, and a badly typed claim is always a ``ValueError`` the
caller turns into its 401, never an exception that escapes as a 500.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

__all__ = [
    "MAX_NUMERIC_DATE",
    "ClaimTypeError",
    "RegisteredClaims",
    "registered_claims",
    "strict_json",
]

#: The latest NumericDate accepted: 9999-12-31T23:59:59Z. Past it a date means nothing
#: (``datetime`` cannot hold it) and a huge integer would overflow ``float``.
MAX_NUMERIC_DATE: Final = 253_402_300_799


class ClaimTypeError(ValueError):
    """A registered claim of the wrong type; the message names the claim, never its value."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name")
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


#: Built once: ``json.loads`` with keyword arguments builds a new decoder on every call.
_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_finite_float
)


def strict_json(raw: bytes) -> Any:
    """RFC 8259 JSON from UTF-8 bytes; ``ValueError`` for anything else.

    Refused beyond what Python's ``json`` refuses: ``NaN``/``Infinity`` (not JSON; an
    ``exp`` of NaN never compares as expired), numbers that overflow a float (``1e309``),
    duplicate member names (RFC 7519 §4: "either reject JWTs with duplicate Claim Names or
    use a JSON parser that returns only the lexically last duplicate member name"; we
    reject, so one token has one meaning) and nesting deep enough to exhaust the stack.
    Integers past Python's 4300-digit limit are a ``ValueError`` of ``json`` itself.
    """
    try:
        return _DECODER.decode(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None


class RegisteredClaims(NamedTuple):
    """RFC 7519 §4.1, typed: each ``None`` when the claim is absent. A tuple: built once per
    token on the hot path (a frozen dataclass costs a ``object.__setattr__`` per field)."""

    iss: str | None = None
    sub: str | None = None
    aud: tuple[str, ...] | None = None
    exp: float | None = None
    nbf: float | None = None
    iat: float | None = None
    jti: str | None = None


#: What ``dict.get`` answers for an absent claim (``None`` is a JSON value: ``null``).
_ABSENT: Final[Any] = object()


def _numeric_date(value: Any, name: str) -> float | None:
    # RFC 7519 §4.1.4-6: the value "MUST be a number containing a NumericDate value";
    # §2: NumericDate is "A JSON numeric value". Present as null is not absent (jose:
    # only `undefined` is absent, anything else "claim must be a number").
    if value is _ABSENT:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ClaimTypeError(f"{name!r} claim is not a number")
    # Compared before any float(): exact for huge integers, and false for NaN.
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise ClaimTypeError(f"{name!r} claim is not a date between 1970 and 9999")
    return float(value)


def _string(value: Any, name: str) -> str | None:
    # RFC 7519 §4.1.1, §4.1.2, §4.1.7: iss and sub are StringOrURI, jti "a case-sensitive
    # string".
    if value is _ABSENT:
        return None
    if not isinstance(value, str):
        raise ClaimTypeError(f"{name!r} claim is not a string")
    return value


def _audience(value: Any) -> tuple[str, ...] | None:
    # RFC 7519 §4.1.3: "an array of case-sensitive strings, each containing a StringOrURI
    # value", or "a single case-sensitive string".
    if value is _ABSENT:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ClaimTypeError("'aud' claim is not a string or a list of strings")


def registered_claims(claims: Mapping[str, Any]) -> RegisteredClaims:
    """Type the registered claims of ``claims``; :class:`ClaimTypeError` for the first bad one.

    Only types and ranges: whether the issuer, audience and times are the right ones is
    each verifier's business (they differ in what they require).
    """
    get = claims.get
    return RegisteredClaims(
        _string(get("iss", _ABSENT), "iss"),
        _string(get("sub", _ABSENT), "sub"),
        _audience(get("aud", _ABSENT)),
        _numeric_date(get("exp", _ABSENT), "exp"),
        _numeric_date(get("nbf", _ABSENT), "nbf"),
        _numeric_date(get("iat", _ABSENT), "iat"),
        _string(get("jti", _ABSENT), "jti"),
    )
