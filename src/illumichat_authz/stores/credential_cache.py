"""A bounded cache of verified credentials, so a repeated one costs a hash and a lookup.

Keyed by the credential exactly as presented (a dict compares keys in full, so only the
very same bytes hit), or by its SHA-256 when it is longer than :data:`MAX_PLAIN_KEY`, so
that the entries' size stays bounded whatever a client sends. It holds only credentials
that verified, so an attacker cannot fill it with garbage. An
entry is served until the earliest of: the credential's own expiry, the entry's time to
live (short for API keys and database sessions, so a revocation or sign-out takes effect
within that many seconds). When full, the oldest entries go first. Time is passed in:
the cache never reads a clock.
"""

from __future__ import annotations

import hashlib
import threading

from ..principal import Principal

__all__ = ["MAX_PLAIN_KEY", "CredentialCache"]

#: Longest credential kept as its own key: 10 000 entries hold at most ~20 MB of keys.
#: Auth.js cookies and Auth0 tokens are well under it; a longer one is hashed (0.4 µs).
MAX_PLAIN_KEY = 2048


class CredentialCache:
    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl_s: float = 60.0,
        revocable_ttl_s: float = 5.0,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        #: For credentials that can be revoked server-side (API keys, database sessions).
        self.revocable_ttl_s = revocable_ttl_s
        self._entries: dict[str | bytes, tuple[Principal, float]] = {}
        # credential_id -> cache keys, for revocable credentials only (see forget()).
        self._by_credential: dict[str, set[str | bytes]] = {}
        self._lock = threading.Lock()
        #: For the metrics (``telemetry``): lookups that found a live entry, and not.
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(kind: str, presented: str) -> str | bytes:
        """``kind`` (one letter: where the credential came from) and what was presented.

        Short ones are their own key: a dict lookup compares them in full, and it costs
        a quarter of hashing them. A ``str`` key never equals a ``bytes`` one.
        """
        if len(presented) <= MAX_PLAIN_KEY:
            return kind + presented
        return hashlib.sha256((kind + presented).encode("utf-8", "surrogatepass")).digest()

    def get(self, key: str | bytes, *, now: float) -> Principal | None:
        entry = self._entries.get(key)
        if entry is not None:
            principal, until = entry
            if now < until:
                self.hits += 1
                return principal
            self._entries.pop(key, None)
        self.misses += 1
        return None

    def put(self, key: str | bytes, principal: Principal, *, now: float, revocable: bool) -> None:
        ttl = self.revocable_ttl_s if revocable else self.ttl_s
        until = now + ttl
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        if until <= now or self.max_entries <= 0:
            return
        with self._lock:
            while len(self._entries) >= self.max_entries:
                self._drop(next(iter(self._entries)))
            self._entries[key] = (principal, until)
            if revocable and principal.credential_id is not None:
                self._by_credential.setdefault(principal.credential_id, set()).add(key)

    def forget(self, credential_id: str) -> None:
        """Drop a revoked credential now (revocation through this process is immediate)."""
        with self._lock:
            for key in self._by_credential.pop(credential_id, set()):
                self._entries.pop(key, None)

    def _drop(self, key: str | bytes) -> None:
        entry = self._entries.pop(key, None)
        cid = entry[0].credential_id if entry is not None else None
        if cid is not None and cid in self._by_credential:
            keys = self._by_credential[cid]
            keys.discard(key)
            if not keys:
                del self._by_credential[cid]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_credential.clear()

    def __len__(self) -> int:
        return len(self._entries)
