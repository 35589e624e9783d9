"""IllumiChat API keys: format, parsing, issuance and verification (sans-IO).

A key looks like ``ick_<key id>_<secret><checksum>``::

    ick_ 4Fq9ZkT0pLmA _ <43 base62 chars: 256 random bits> <6 base62 chars: CRC32>
    └┬─┘ └────┬─────┘
   prefix  key id (public, safe to log, the store's lookup key)

* The prefix tells a key apart from a JWT (``eyJ...``) without guessing, and lets secret
  scanners find leaked keys (``API_KEY_SCAN_PATTERN``), as Stripe's ``sk_`` and GitHub's
  ``ghp_`` prefixes do.
* The checksum is CRC32 of everything before it, in fixed-width base62, as in GitHub's
  token format: a scanner, or :func:`parse_api_key`, can reject a mistyped or made-up key
  offline, before any lookup, and a single changed character always changes the checksum.
* Only SHA-256 of the secret part is stored, never the secret.

Nothing here does I/O or reads the clock: the store is a :class:`ApiKeyStore` passed in,
and ``now`` (unix seconds) is an argument.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
import re
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Literal, Protocol

from illumichat_authz.errors import CredentialError
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.reasons import Reason

__all__ = [
    "API_KEY_LENGTH",
    "API_KEY_PATTERN",
    "API_KEY_PREFIX",
    "API_KEY_SCAN_PATTERN",
    "SCOPE_PATTERN",
    "ApiKeyRecord",
    "ApiKeyStatus",
    "ApiKeyStore",
    "ParsedApiKey",
    "issue_api_key",
    "looks_like_api_key",
    "parse_api_key",
    "validate_scope",
    "verify_api_key",
]

_log = logging.getLogger("illumichat_authz.credentials.apikeys")

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CLASS = "[0-9A-Za-z]"

API_KEY_PREFIX = "ick_"
_KEY_ID_LEN = 12  # ~71 random bits: unique without coordination, short enough to log
_SECRET_LEN = 43  # 62**43 > 2**256: exactly holds 256 bits from secrets.token_bytes(32)
_CHECKSUM_LEN = 6  # 62**6 > 2**32: holds any CRC32
#: Every key has exactly this many characters (66).
API_KEY_LENGTH = len(API_KEY_PREFIX) + _KEY_ID_LEN + 1 + _SECRET_LEN + _CHECKSUM_LEN

#: The strict grammar :func:`parse_api_key` accepts (whole string, ASCII only).
API_KEY_PATTERN = re.compile(
    rf"ick_(?P<key_id>{_CLASS}{{{_KEY_ID_LEN}}})_"
    rf"(?P<secret>{_CLASS}{{{_SECRET_LEN}}})(?P<checksum>{_CLASS}{{{_CHECKSUM_LEN}}})",
    re.ASCII,
)
#: For secret scanners: finds keys inside arbitrary text (then check the CRC32).
API_KEY_SCAN_PATTERN = re.compile(
    rf"(?<![0-9A-Za-z_])ick_{_CLASS}{{{_KEY_ID_LEN}}}_{_CLASS}{{{_SECRET_LEN + _CHECKSUM_LEN}}}"
    r"(?![0-9A-Za-z_])",
    re.ASCII,
)
#: Scopes are policy action names, ``resource:verb``; the core checks them against the policy.
SCOPE_PATTERN = re.compile(r"[a-z_]+:[a-z_]+", re.ASCII)
_MAX_SCOPE_LEN = 128
_MAX_ID_LEN = 256  # user ids and workspace ids
_MAX_NAME_LEN = 200

ApiKeyStatus = Literal["active", "revoked", "expired"]


def _b62(value: int, width: int) -> str:
    """Fixed-width base62, most significant digit first."""
    out = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        out.append(_ALPHABET[rem])
    if value:
        raise ValueError("value does not fit")  # unreachable for our widths
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _b62(zlib.crc32(body.encode("ascii")), _CHECKSUM_LEN)


def _digest(secret: str) -> bytes:
    # SHA-256, not bcrypt/argon2/PBKDF2: slow hashes exist to make guessing low-entropy
    # passwords expensive. The secret is 256 uniformly random bits, so a preimage search
    # is out of reach at any speed and stretching would only add latency (and a CPU DoS
    # lever) to every request. See benchmarks/bench_apikeys.py for the cost of PBKDF2.
    return hashlib.sha256(secret.encode("ascii")).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedApiKey:
    """A syntactically valid key with a correct checksum; not yet verified."""

    key_id: str
    #: SHA-256 of the secret part; compared with the stored digest in constant time.
    digest: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyRecord:
    """What the store keeps about a key. Holds the digest only, never the secret."""

    key_id: str
    digest: bytes = field(repr=False)
    user_id: str
    workspace: str
    #: ``None``: not narrowed (the role decides). Otherwise the only actions allowed.
    scopes: frozenset[str] | None = None
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None
    name: str | None = None

    def status(self, *, now: float) -> ApiKeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


class ApiKeyStore(Protocol):
    """Where records live (SQLite now, PostgreSQL later). Implementations raise
    :class:`DependencyUnavailableError` when the backend cannot answer."""

    def get(self, key_id: str) -> ApiKeyRecord | None: ...

    def add(self, record: ApiKeyRecord) -> None:
        """Insert; raises ``ValueError`` if ``key_id`` exists."""
        ...

    def list(
        self, *, workspace: str | None = None, user: str | None = None
    ) -> builtins.list[ApiKeyRecord]: ...

    def revoke(self, key_id: str, *, now: float) -> bool:
        """Mark revoked (keeping the first revocation time); False if the key is unknown."""
        ...

    def touch(self, key_id: str, *, now: float) -> None:
        """Record use; implementations throttle writes (at most one per interval per key)."""
        ...


def _invalid(message: str = "invalid API key") -> CredentialError:
    return CredentialError(message, reason=Reason.API_KEY_INVALID)


def looks_like_api_key(token: str) -> bool:
    """True when ``token`` claims to be an API key (prefix only; JWTs start ``eyJ``).

    The bearer dispatcher routes on this, so a malformed ``ick_`` token is reported as
    an invalid API key rather than an invalid JWT.
    """
    return token.startswith(API_KEY_PREFIX)


def parse_api_key(token: str) -> ParsedApiKey:
    """Check grammar and checksum, and hash the secret. Raises ``CredentialError``
    (``api_key_invalid``) for anything else, before any store is consulted."""
    # Bounded work first: every key has the same length, so anything else is rejected
    # before the regex, the CRC or the hash look at it.
    if not isinstance(token, str) or len(token) != API_KEY_LENGTH or not token.isascii():
        raise _invalid("malformed API key")
    match = API_KEY_PATTERN.fullmatch(token)
    if match is None:
        raise _invalid("malformed API key")
    body = token[:-_CHECKSUM_LEN]
    # CRC32 is not a MAC and is not compared in constant time on purpose: it is a public
    # function of public text, a typo/garbage filter that spares the store a lookup.
    if _checksum(body) != match["checksum"]:
        raise _invalid("API key checksum mismatch")
    return ParsedApiKey(key_id=match["key_id"], digest=_digest(match["secret"]))


def validate_scope(scope: str) -> str:
    """Return ``scope`` if it is an action name ``resource:verb``; else ``ValueError``."""
    if len(scope) > _MAX_SCOPE_LEN or SCOPE_PATTERN.fullmatch(scope) is None:
        raise ValueError(f"scope {scope[:_MAX_SCOPE_LEN]!r} is not an action name resource:verb")
    return scope


def _check_label(what: str, value: str, limit: int) -> None:
    if not value or len(value) > limit or not value.isprintable() or value != value.strip():
        raise ValueError(f"{what} must be 1-{limit} printable characters without edge spaces")


def issue_api_key(
    *,
    user_id: str,
    workspace: str,
    scopes: frozenset[str] | set[str] | list[str] | tuple[str, ...] | None = None,
    expires_at: float | None = None,
    name: str | None = None,
    now: float,
) -> tuple[str, ApiKeyRecord]:
    """Mint a key. Returns ``(plaintext, record)``: show the plaintext once, store the record.

    Raises ``ValueError`` for bad input (an operator error, not a request error).
    """
    _check_label("user_id", user_id, _MAX_ID_LEN)
    _check_label("workspace", workspace, _MAX_ID_LEN)
    if name is not None:
        _check_label("name", name, _MAX_NAME_LEN)
    narrowed = None if scopes is None else frozenset(validate_scope(s) for s in scopes)
    if expires_at is not None and not expires_at > now:
        raise ValueError("expires_at must be in the future")
    key_id = "".join(secrets.choice(_ALPHABET) for _ in range(_KEY_ID_LEN))
    secret = _b62(int.from_bytes(secrets.token_bytes(32), "big"), _SECRET_LEN)
    body = f"{API_KEY_PREFIX}{key_id}_{secret}"
    token = body + _checksum(body)
    record = ApiKeyRecord(
        key_id=key_id,
        digest=_digest(secret),
        user_id=user_id,
        workspace=workspace,
        scopes=narrowed,
        created_at=now,
        expires_at=expires_at,
        name=name,
    )
    return token, record


_NO_MATCH = hashlib.sha256(b"illumichat-authz: no such key").digest()


def verify_api_key(parsed: ParsedApiKey, record: ApiKeyRecord | None, *, now: float) -> Principal:
    """Turn a parsed key and its stored record into a :class:`Principal`.

    The secret is checked before revocation and expiry, so only a holder of the real
    secret learns that a key is revoked or expired; everyone else sees ``api_key_invalid``.
    """
    stored = record.digest if record is not None else _NO_MATCH
    # Constant time: the digest comparison must not leak how many leading bytes matched.
    same = hmac.compare_digest(parsed.digest, stored)
    if record is None or not same or record.key_id != parsed.key_id:
        _log.info("API key %s rejected: unknown key or wrong secret", parsed.key_id)
        raise _invalid()
    # A revocation is final whatever the clocks say: revoked_at is informational.
    if record.revoked_at is not None:
        _log.info("API key %s rejected: revoked", parsed.key_id)
        raise CredentialError("API key revoked", reason=Reason.API_KEY_REVOKED)
    if record.expires_at is not None and now >= record.expires_at:
        _log.info("API key %s rejected: expired", parsed.key_id)
        raise CredentialError("API key expired", reason=Reason.API_KEY_EXPIRED)
    return Principal(
        user_id=record.user_id,
        kind=CredentialKind.API_KEY,
        workspace=record.workspace,
        workspace_bound=True,
        scopes=record.scopes,
        expires_at=record.expires_at,
        credential_id=record.key_id,
    )
