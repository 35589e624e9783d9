"""Auth.js *database* session strategy: the cookie holds an opaque token looked up in a table.

With ``session: { strategy: "database" }`` Auth.js stores ``{ sessionToken, userId,
expires }`` through its adapter and puts only ``sessionToken`` in the cookie. The SQL
adapters on SQLite (``@auth/d1-adapter``, ``@auth/kysely-adapter``) keep ``expires`` as an
ISO 8601 string (``Date.prototype.toISOString()``); Drizzle's SQLite schema keeps it as an
integer of milliseconds (``mode: "timestamp_ms"``). Both are read here.

The decision is the pure :func:`principal_from_session_record`; the lookup is a
:class:`SessionStore` so tests (and other databases) pass their own.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from illumichat_authz.credentials._sqlite import ConnectionPool
from illumichat_authz.errors import ConfigurationError, CredentialError, DependencyUnavailableError
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.reasons import Reason

__all__ = [
    "MAX_SESSION_TOKEN_CHARS",
    "SessionRecord",
    "SessionStore",
    "SqliteSessionStore",
    "check_session_token",
    "principal_from_session_record",
]

_log = logging.getLogger("illumichat_authz.credentials.sessions_db")

#: Auth.js generates ``crypto.randomUUID()`` (36 characters); custom generators are free to
#: be longer, but nothing reaches the database beyond this.
MAX_SESSION_TOKEN_CHARS: Final = 512
_TOKEN_RE: Final = re.compile(r"[\x21-\x7e]+")  # visible ASCII, no space
_IDENTIFIER_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRecord:
    """One row of the adapter's sessions table. ``expires`` is unix seconds."""

    session_token: str
    user_id: str
    expires: float

    def __repr__(self) -> str:
        return f"SessionRecord(user_id={self.user_id!r}, expires={self.expires!r})"


@runtime_checkable
class SessionStore(Protocol):
    """Looks a session token up. Raises ``DependencyUnavailableError`` when it cannot."""

    def get_session(self, token: str) -> SessionRecord | None: ...


def session_credential_id(token: str) -> str:
    """Safe to log: a short SHA-256 prefix of the token, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def check_session_token(token: str) -> None:
    """Bound the opaque token before it goes anywhere near the database."""
    if len(token) > MAX_SESSION_TOKEN_CHARS or not _TOKEN_RE.fullmatch(token):
        raise CredentialError("invalid session token", reason=Reason.INVALID_CREDENTIAL)


def principal_from_session_record(record: SessionRecord | None, *, now: float) -> Principal:
    """The principal a database session stands for, or ``CredentialError``.

    Auth.js ``session`` action: ``if (session.expires.valueOf() < Date.now())`` the session
    is deleted and the user is signed out.
    """
    if record is None:
        raise CredentialError("session not found", reason=Reason.INVALID_CREDENTIAL)
    if not isinstance(record.user_id, str) or not record.user_id:
        raise CredentialError("session has no user", reason=Reason.INVALID_CREDENTIAL)
    if record.expires < now:
        raise CredentialError("session expired", reason=Reason.SESSION_EXPIRED)
    return Principal(
        user_id=record.user_id,
        kind=CredentialKind.SESSION,
        expires_at=record.expires,
        credential_id=session_credential_id(record.session_token),
    )


def parse_expires(value: object) -> float:
    """The adapters' stored ``expires`` to unix seconds (``ValueError`` when unreadable)."""
    if isinstance(value, bool):
        raise ValueError("boolean expires")
    if isinstance(value, int):
        return value / 1000.0  # Drizzle ``timestamp_ms``
    if isinstance(value, str) and 10 <= len(value) <= 40:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:  # SQLite ``datetime('now')`` is UTC without a zone
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise ValueError("unsupported expires value")


class SqliteSessionStore:
    """Reads the Auth.js adapter table (``sessions``: ``sessionToken``, ``userId``,
    ``expires``) from a SQLite file, read-only, on pooled connections shared by threads.

    The file is the app's: its journal mode is left as the app set it. Under WAL a lookup
    never waits for the app's writes; under a rollback journal it waits up to
    ``timeout_s`` for a commit to finish (and answers 503 past that).
    """

    def __init__(self, path: str | Path, *, table: str = "sessions", timeout_s: float = 2.0):
        if not _IDENTIFIER_RE.fullmatch(table):
            raise ConfigurationError(f"session table name {table!r} is not an identifier")
        self._uri = Path(path).resolve().as_uri() + "?mode=ro"
        self._timeout_s = timeout_s
        # The identifier is validated above; parameters carry the token.
        self._query = (
            f'SELECT "sessionToken", "userId", "expires" FROM "{table}" '  # noqa: S608
            'WHERE "sessionToken" = ? LIMIT 2'
        )
        # Opening a connection costs some 30 times the lookup itself: they are kept.
        self._pool = ConnectionPool(self._open)

    def _open(self) -> sqlite3.Connection:
        # Autocommit: each lookup is one statement and sees the app's latest commit.
        return sqlite3.connect(
            self._uri,
            uri=True,
            timeout=self._timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )

    def close(self) -> None:
        """Close the open connections (call at shutdown); a later lookup reopens."""
        self._pool.close()

    def get_session(self, token: str) -> SessionRecord | None:
        try:
            rows = self._pool.run(lambda conn: conn.execute(self._query, (token,)).fetchall())
        except sqlite3.Error as exc:
            _log.warning("session store unavailable: %s", type(exc).__name__)
            raise DependencyUnavailableError(
                "session store unavailable", reason=Reason.AUTH_UNAVAILABLE
            ) from None
        if not rows:
            return None
        if len(rows) > 1:
            raise CredentialError("duplicate session", reason=Reason.AMBIGUOUS_CREDENTIAL)
        stored_token, user_id, expires = rows[0]
        if stored_token != token or not isinstance(user_id, str):
            return None
        try:
            expires_s = parse_expires(expires)
        except ValueError:
            _log.warning("session row has an unreadable expires value")
            raise CredentialError("invalid session", reason=Reason.INVALID_CREDENTIAL) from None
        return SessionRecord(session_token=token, user_id=user_id, expires=expires_s)
