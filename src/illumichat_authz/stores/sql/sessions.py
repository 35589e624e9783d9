"""Auth.js database sessions in PostgreSQL (or SQLite): the adapter's ``sessions`` table.

``@auth/pg-adapter`` writes ``sessions("sessionToken", "userId", expires)`` with ``expires``
a ``timestamptz`` and ``userId`` the integer id of its ``users`` table. Read-only, one
autocommit statement per lookup; what a row means is decided by the pure
:func:`illumichat_authz.credentials.sessions.principal_from_session_record`.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from ...credentials.sessions import SessionRecord
from ...errors import ConfigurationError, DependencyUnavailableError
from ...reasons import Reason
from ..sessions import session_from_rows
from .engine import reader

__all__ = ["SqlSessionStore"]

_log = logging.getLogger("illumichat_authz.stores.sql.sessions")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class SqlSessionStore:
    """``credentials.sessions.SessionStore`` over the adapter's table in ``[database]``."""

    def __init__(self, engine: Engine, *, table: str = "sessions") -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise ConfigurationError(f"session table name {table!r} is not an identifier")
        self._read = reader(engine)
        # The identifier is validated above; the token is a parameter.
        self._query = text(
            f'SELECT "sessionToken", "userId", expires FROM "{table}" '  # noqa: S608
            'WHERE "sessionToken" = :token LIMIT 2'
        )

    def get_session(self, token: str) -> SessionRecord | None:
        try:
            with self._read.connect() as conn:
                rows = conn.execute(self._query, {"token": token}).all()
        except DBAPIError as exc:
            _log.warning("session store unavailable: %s", type(exc.orig).__name__)
            raise DependencyUnavailableError(
                "session store unavailable", reason=Reason.AUTH_UNAVAILABLE
            ) from None
        return session_from_rows(token, rows, integer_ids=True)

    def close(self) -> None:
        """The engine is the database's."""
