"""Twilio webhook signatures (``X-Twilio-Signature``).

Twilio's rule, as its security docs state it: "Take the full URL of the request URL you
specify for your phone number or app, from the protocol (https...) through the end of the
query string", then, for a form POST, "sort the list of POST variables by the parameter
name" and "append each POST variable, name and value, to the string with no delimiters",
then "sign the resulting string with HMAC-SHA1 using your AuthToken as the key" and
base64-encode the digest. JSON bodies are not appended: Twilio adds a ``bodySHA256`` query
parameter (the hex SHA-256 of the body) to the URL, so the URL signature covers the body.

This module is sans-IO: :meth:`TwilioSignatureVerifier.verify` is a pure function of the
URL Twilio called (see :func:`illumichat_authz.net.public_url`), the header and the body.
Every failure is :class:`SignatureError` (403, ``invalid_signature``); nothing here returns
a boolean that a caller could forget to check.

Where we are deliberately stricter than ``twilio.request_validator.RequestValidator``:

* Twilio's validator retries with *any* port removed (``:8443`` too); we only add or
  remove the scheme's *default* port (``:443`` for https, ``:80`` for http).
* A non-form body must be covered by exactly one ``bodySHA256`` query parameter (Twilio's
  validator raises ``TypeError`` for a JSON body without it; a repeated one uses the first).
* The form body is parsed strictly (see :func:`parse_form`), within fixed bounds, before
  any HMAC is computed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote_to_bytes

from illumichat_authz.errors import ConfigurationError, SignatureError
from illumichat_authz.reasons import Reason

if TYPE_CHECKING:
    from illumichat_authz.config import TwilioSettings

__all__ = [
    "FORM_CONTENT_TYPE",
    "MAX_FORM_FIELDS",
    "MAX_SIGNATURE_CHARS",
    "MAX_URL_CHARS",
    "SIGNATURE_HEADER",
    "SignatureAlgorithm",
    "TwilioSignatureVerifier",
    "parse_form",
]

logger = logging.getLogger("illumichat_authz.credentials.twilio")

SIGNATURE_HEADER = "X-Twilio-Signature"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

#: Bounds checked before any parsing or HMAC work.
MAX_URL_CHARS = 8192
#: base64 of a SHA-256 digest is 44 characters; anything much longer is not a signature.
MAX_SIGNATURE_CHARS = 128
#: An inbound SMS carries about 20 fields; a thousand is generous and still bounded.
MAX_FORM_FIELDS = 1000
DEFAULT_MAX_BODY_BYTES = 64 * 1024

#: A ``%`` not followed by two hex digits.
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_BODY_HASH_PARAM = b"bodySHA256"
_DEFAULT_PORT = {"https": "443", "http": "80"}


class SignatureAlgorithm(StrEnum):
    """The HMAC Twilio signs with: the classic auth-token HMAC-SHA1, or HMAC-SHA256."""

    HMAC_SHA1 = "sha1"
    HMAC_SHA256 = "sha256"

    @property
    def digest(self) -> Callable[[], hashlib._Hash]:
        return hashlib.sha1 if self is SignatureAlgorithm.HMAC_SHA1 else hashlib.sha256


def _fail(message: str) -> SignatureError:
    return SignatureError(message, reason=Reason.INVALID_SIGNATURE)


def parse_form(body: bytes, *, max_fields: int = MAX_FORM_FIELDS) -> dict[str, frozenset[str]]:
    """Parse an ``application/x-www-form-urlencoded`` body, strictly.

    Returns each name with the *set* of its values: Twilio's reference validator signs a
    repeated parameter as ``name + value`` for each distinct value in sorted order, so
    duplicates carry no information. Raises :class:`SignatureError` on an empty field, a
    field without ``=``, a bad ``%`` escape, bytes that are not UTF-8 after decoding, or
    more than ``max_fields`` fields; a malformed body can never be signed by Twilio.
    """
    if not body:
        return {}
    if body.count(b"&") >= max_fields:
        raise _fail("form body has too many fields")
    if _BAD_PERCENT.search(body):
        raise _fail("form body has an invalid percent-encoding")
    fields: dict[str, set[str]] = {}
    for field in body.split(b"&"):
        raw_name, eq, raw_value = field.partition(b"=")
        if not eq:
            raise _fail("form body has a field without '='")
        try:
            name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8")
            value = unquote_to_bytes(raw_value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise _fail("form body is not UTF-8") from None
        fields.setdefault(name, set()).add(value)
    return {name: frozenset(values) for name, values in fields.items()}


def _signed_suffix(params: Mapping[str, Iterable[str]]) -> str:
    """Twilio: "sort the list of POST variables by the parameter name" and append
    "name and value ... with no delimiters" (distinct values sorted, per the reference)."""
    return "".join(name + value for name in sorted(params) for value in sorted(set(params[name])))


def _url_variants(url: str) -> tuple[str, ...]:
    """The URL as given, plus the same URL with the default port added or removed.

    Twilio's reference validator checks both because "sig generation on back end is
    inconsistent" about ``:443`` / ``:80``. A non-default port is never removed.
    """
    scheme, sep, rest = url.partition("://")
    default = _DEFAULT_PORT.get(scheme.lower())
    if not sep or default is None:
        raise _fail("webhook URL is not an absolute http(s) URL")
    cut = len(rest)
    for ch in "/?#":
        idx = rest.find(ch)
        if idx != -1:
            cut = min(cut, idx)
    authority, tail = rest[:cut], rest[cut:]
    userinfo, at, hostport = authority.rpartition("@")
    prefix = f"{scheme}://{userinfo}{at}"
    host, colon, port = hostport.rpartition(":")
    if not colon or "]" in port:  # no port (an IPv6 literal's colons are inside [...])
        return (url, f"{prefix}{hostport}:{default}{tail}")
    if port == default:
        return (url, f"{prefix}{host}{tail}")
    return (url,)


def _query_values(url: str, name: bytes) -> list[bytes]:
    """Values of ``name`` in the URL's query (strictly percent-decoded)."""
    query = url.partition("?")[2].partition("#")[0].encode("utf-8")
    if _BAD_PERCENT.search(query):
        raise _fail("webhook URL has an invalid percent-encoding")
    values: list[bytes] = []
    for field in query.split(b"&") if query else ():
        raw_name, _, raw_value = field.partition(b"=")
        if unquote_to_bytes(raw_name.replace(b"+", b" ")) == name:
            values.append(unquote_to_bytes(raw_value.replace(b"+", b" ")))
    return values


@dataclass(frozen=True, slots=True)
class _Key:
    """One auth token, kept as a keyed HMAC whose state is copied per message."""

    mac: hmac.HMAC

    def sign(self, message: bytes) -> bytes:
        mac = self.mac.copy()
        mac.update(message)
        return base64.b64encode(mac.digest())


class TwilioSignatureVerifier:
    """Verifies ``X-Twilio-Signature`` for the SMS webhook routes.

    Tokens are looked up per assistant (``assistant_tokens[assistant_id]``), else the
    default list; each list is newest first, and any token in it may have signed (token
    rotation keeps the old token valid until Twilio stops using it).
    """

    __slots__ = ("_algorithm", "_assistants", "_default", "_max_body_bytes")

    def __init__(
        self,
        *,
        default_tokens: Sequence[str] = (),
        assistant_tokens: Mapping[str, Sequence[str]] | None = None,
        algorithm: SignatureAlgorithm | Literal["sha1", "sha256"] = SignatureAlgorithm.HMAC_SHA1,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        try:
            self._algorithm = SignatureAlgorithm(algorithm)
        except ValueError:
            raise ConfigurationError(
                f"twilio.algorithm must be one of {[a.value for a in SignatureAlgorithm]}"
            ) from None
        if max_body_bytes < 1:
            raise ConfigurationError("twilio.max_body_bytes must be positive")
        self._max_body_bytes = max_body_bytes
        self._default = self._keys(default_tokens, "twilio.auth_tokens")
        self._assistants = {
            assistant: self._keys(tokens, f"twilio.assistants.{assistant}")
            for assistant, tokens in (assistant_tokens or {}).items()
        }

    @classmethod
    def from_settings(cls, settings: TwilioSettings) -> TwilioSignatureVerifier:
        return cls(
            default_tokens=settings.auth_tokens,
            assistant_tokens=settings.assistants,
            algorithm=settings.algorithm,
            max_body_bytes=settings.max_body_bytes,
        )

    def _keys(self, tokens: Sequence[str], where: str) -> tuple[_Key, ...]:
        if isinstance(tokens, str):
            raise ConfigurationError(f"{where} must be a list of tokens, not a string")
        keys = []
        for token in tokens:
            if not token or not token.strip():
                raise ConfigurationError(f"{where} must not contain empty tokens")
            keys.append(_Key(hmac.new(token.encode("utf-8"), digestmod=self._algorithm.digest)))
        return tuple(keys)

    @property
    def algorithm(self) -> SignatureAlgorithm:
        return self._algorithm

    def verify(
        self,
        *,
        assistant_id: str | None,
        url: str,
        signature: str | None,
        body: bytes,
        content_type: str | None,
    ) -> None:
        """Return if Twilio signed this request; raise :class:`SignatureError` otherwise.

        ``url`` is the URL Twilio requested (scheme, host, raw path and query), ``body``
        the raw request body, ``content_type`` the ``Content-Type`` header.
        """
        if not signature:
            raise _fail("missing X-Twilio-Signature header")
        keys = self._assistants.get(assistant_id, self._default) if assistant_id else self._default
        if not keys:
            raise _fail("no Twilio auth token is configured for this assistant")
        if len(signature) > MAX_SIGNATURE_CHARS or not signature.isascii():
            raise _fail("malformed X-Twilio-Signature header")
        if len(url) > MAX_URL_CHARS:
            raise _fail("webhook URL is too long")
        try:
            url.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail("webhook URL is not valid text") from None
        if len(body) > self._max_body_bytes:
            raise _fail("webhook body is too large")

        variants = _url_variants(url)
        media_type = (content_type or "").partition(";")[0].strip().lower()
        if media_type == FORM_CONTENT_TYPE:
            suffix = _signed_suffix(parse_form(body))
        else:
            # Twilio: for JSON bodies "the request URL will contain a bodySHA256 query
            # parameter" and you "validate the body by comparing its SHA-256 hash".
            hashes = _query_values(url, _BODY_HASH_PARAM)
            if len(hashes) > 1:
                raise _fail("webhook URL has more than one bodySHA256 parameter")
            if hashes:
                actual = hashlib.sha256(body).hexdigest().encode("ascii")
                if not hmac.compare_digest(actual, hashes[0]):
                    raise _fail("webhook body does not match its bodySHA256")
            elif body:
                raise _fail("webhook body is not covered by the signature (no bodySHA256)")
            suffix = ""

        messages = [(v + suffix).encode("utf-8") for v in variants]
        given = signature.encode("ascii")
        matched = False
        for key in keys:
            for message in messages:
                # Constant-time per comparison; every token and variant is tried.
                matched |= hmac.compare_digest(key.sign(message), given)
        if not matched:
            logger.debug("twilio signature mismatch (assistant=%r)", assistant_id)
            raise _fail("X-Twilio-Signature does not match")
