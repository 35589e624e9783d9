"""The stock denials: the one place their wording and challenge live.

The core, every adapter and the forward-auth server answer "sign in", "internal error"
with these, so a client sees the same words and the
same ``WWW-Authenticate`` challenge wherever the deny was made. Pure: no I/O.
"""

from __future__ import annotations

from .decision import Decision
from .errors import CredentialError
from .reasons import Reason

__all__ = [
    "INTERNAL_ERROR_MESSAGE",
    "REALM",
    "SIGN_IN_MESSAGE",
    "internal_error",
    "sign_in",
    "www_authenticate",
]

REALM = "illumichat"
SIGN_IN_MESSAGE = "authentication required; sign in and retry"
INTERNAL_ERROR_MESSAGE = "internal error; the request was denied"
_BARE_CHALLENGE = (("WWW-Authenticate", f'Bearer realm="{REALM}"'),)


def www_authenticate(exc: CredentialError | None) -> tuple[tuple[str, str], ...]:
    """The challenge a 401 carries (RFC 9110 §15.5.2: a 401 MUST carry one).

    RFC 6750 §3: a request without credentials gets the bare challenge; an invalid or
    expired token gets ``error="invalid_token"`` with a description that cannot break
    out of its quoted string.
    """
    if exc is None or not exc.token_error:
        return _BARE_CHALLENGE
    desc = exc.message.replace("\\", "").replace('"', "'")
    return (
        (
            "WWW-Authenticate",
            f'Bearer realm="{REALM}", error="invalid_token", error_description="{desc}"',
        ),
    )


def sign_in(reason: Reason = Reason.AUTHENTICATION_REQUIRED) -> Decision:
    """No credential where one is needed: 401 with the bare challenge."""
    return Decision.of(reason, SIGN_IN_MESSAGE, status=401, headers=_BARE_CHALLENGE)


def internal_error() -> Decision:
    """Our own failure (never the app's): deny with 500, say nothing about why."""
    return Decision.of(Reason.INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE)
