"""Small things every verifier shares, one copy each.

Strict JSON and the typed registered claims (the number checks) live in :mod:`._claims`,
the loopback-host check in :mod:`illumichat_authz.net`, the JWS algorithm allow-list in
:mod:`.jwk`. Here: the clock tolerance every token check allows, and the credential id
that names a credential in logs and caches without revealing it.
"""

from __future__ import annotations

import hashlib
from typing import Final

from illumichat_authz.errors import ConfigurationError

__all__ = ["DEFAULT_CLOCK_TOLERANCE_S", "MAX_CLOCK_TOLERANCE_S", "clock_tolerance", "credential_id"]

#: Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat`` (the settings' default too).
DEFAULT_CLOCK_TOLERANCE_S: Final = 15.0
#: More than five minutes of skew is a broken clock, not skew.
MAX_CLOCK_TOLERANCE_S: Final = 300.0


def clock_tolerance(value: object, *, key: str) -> float:
    """``value`` as seconds of tolerance; ``ConfigurationError`` naming ``key`` otherwise.

    A number from 0 to :data:`MAX_CLOCK_TOLERANCE_S` (not a bool, not NaN).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_CLOCK_TOLERANCE_S
    ):
        raise ConfigurationError(f"{key} must be between 0 and {MAX_CLOCK_TOLERANCE_S:g} seconds")
    return float(value)


def credential_id(secret: str | bytes) -> str:
    """Safe to log: the first 16 hex digits of the SHA-256 of ``secret``, never ``secret``."""
    data = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(data).hexdigest()[:16]
