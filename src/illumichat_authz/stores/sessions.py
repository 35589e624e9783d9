"""Auth.js database sessions in SQLite: the adapter's ``sessions`` table, read-only.

The SQL adapters on SQLite (``@auth/d1-adapter``, ``@auth/kysely-adapter``) keep
``expires`` as an ISO 8601 string (``Date.prototype.toISOString()``); Drizzle's SQLite
schema keeps it as an integer of milliseconds (``mode: "timestamp_ms"``). Both are read
here. What a row means is decided by the pure
:func:`illumichat_authz.credentials.sessions.principal_from_session_record`.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from illumichat_authz.credentials.sessions import SessionRecord
from illumichat_authz.errors import ConfigurationError, CredentialError, DependencyUnavailableError
from illumichat_authz.reasons import Reason

from ._sqlite import ConnectionPool

__all__ = ["SqliteSessionStore", "parse_expires", "session_from_rows"]

_log = logging.getLogger("illumichat_authz.stores.sessions")

_IDENTIFIER_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


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
        return session_from_rows(token, rows)


def session_from_rows(
    token: str, rows: Sequence[Sequence[object]], *, integer_ids: bool = False
) -> SessionRecord | None:
    """What the adapter's rows for ``token`` (``sessionToken``, ``userId``, ``expires``)
    say: no row is no session, two are ambiguous, an unreadable ``expires`` is invalid.
    ``integer_ids``: the adapter's users have integer ids (``@auth/pg-adapter``)."""
    if not rows:
        return None
    if len(rows) > 1:
        raise CredentialError("duplicate session", reason=Reason.AMBIGUOUS_CREDENTIAL)
    stored_token, user_id, expires = rows[0]
    if integer_ids and isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if stored_token != token or not isinstance(user_id, str):
        return None
    try:
        if isinstance(expires, datetime):
            at = expires if expires.tzinfo is not None else expires.replace(tzinfo=UTC)
            expires_s = at.timestamp()
        else:
            expires_s = parse_expires(expires)
    except (ValueError, OverflowError, OSError):
        _log.warning("session row has an unreadable expires value")
        raise CredentialError("invalid session", reason=Reason.INVALID_CREDENTIAL) from None
    return SessionRecord(session_token=token, user_id=user_id, expires=expires_s)
