"""Auth.js *database* session strategy: the cookie holds an opaque token looked up in a table.

With ``session: { strategy: "database" }`` Auth.js stores ``{ sessionToken, userId,
expires }`` through its adapter and puts only ``sessionToken`` in the cookie.

Pure: :func:`check_session_token` bounds the token before any lookup, and
:func:`principal_from_session_record` decides what the looked-up row means. The lookup
itself is a :class:`SessionStore` (the SQLite one is
:class:`illumichat_authz.stores.sessions.SqliteSessionStore`; tests pass their own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from illumichat_authz.credentials._util import credential_id
from illumichat_authz.errors import CredentialError
from illumichat_authz.principal import CredentialKind, Principal
from illumichat_authz.reasons import Reason

__all__ = [
    "MAX_SESSION_TOKEN_CHARS",
    "SessionRecord",
    "SessionStore",
    "check_session_token",
    "principal_from_session_record",
]

#: Auth.js generates ``crypto.randomUUID()`` (36 characters); custom generators are free to
#: be longer, but nothing reaches the database beyond this.
MAX_SESSION_TOKEN_CHARS: Final = 512
_TOKEN_RE: Final = re.compile(r"[\x21-\x7e]+")  # visible ASCII, no space


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
        credential_id=credential_id(record.session_token),
    )
