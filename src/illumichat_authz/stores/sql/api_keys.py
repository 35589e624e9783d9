"""API key records in SQL (``authz_api_keys``), for a fleet sharing one database.

Adding and revoking a key are writes like the facts': they bump the revision and log the
key ``("api_key", key_id)``, so that every instance's feed drops the verified key from its
credential cache (:class:`CredentialRevocations`) within milliseconds, instead of after
``[api_keys] cache_ttl_s``. ``touch`` (the last use) is throttled as in the SQLite store
and is not a change of facts: it bumps nothing.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

from sqlalchemy import Engine, Row, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from ...credentials.apikeys import ApiKeyRecord
from ..api_keys import TouchThrottle
from ..credential_cache import CredentialCache
from .engine import reader, unreachable
from .schema import api_keys
from .writes import bump_revision, log_changes

__all__ = ["CredentialRevocations", "SqlApiKeyStore"]


def _record(row: Row[Any]) -> ApiKeyRecord:
    scopes = row.scopes
    return ApiKeyRecord(
        key_id=str(row.key_id),
        digest=bytes.fromhex(str(row.digest)),
        user_id=str(row.user_id),
        workspace=str(row.workspace),
        scopes=None if scopes is None else frozenset(json.loads(scopes)),
        name=row.name,
        created_at=float(row.created_at),
        expires_at=None if row.expires_at is None else float(row.expires_at),
        revoked_at=None if row.revoked_at is None else float(row.revoked_at),
        last_used_at=None if row.last_used_at is None else float(row.last_used_at),
    )


class SqlApiKeyStore:
    """``credentials.apikeys.ApiKeyStore`` on ``authz_api_keys``."""

    def __init__(
        self,
        engine: Engine,
        *,
        touch_interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        close_with: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self._close_with = close_with
        self._read = reader(engine)
        self._throttle = TouchThrottle(interval_s=touch_interval_s)
        self.clock = clock
        #: Where the keys are, for messages (never the password).
        self.path = engine.url.render_as_string(hide_password=True)

    def get(self, key_id: str) -> ApiKeyRecord | None:
        with unreachable(), self._read.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
        return None if row is None else _record(row)

    def add(self, record: ApiKeyRecord) -> None:
        values = {
            "key_id": record.key_id,
            "digest": record.digest.hex(),
            "user_id": record.user_id,
            "workspace": record.workspace,
            "scopes": None if record.scopes is None else json.dumps(sorted(record.scopes)),
            "name": record.name,
            "created_at": record.created_at,
            "expires_at": record.expires_at,
            "revoked_at": record.revoked_at,
            "last_used_at": record.last_used_at,
        }
        try:
            with unreachable(), self.engine.begin() as conn:
                rev = bump_revision(conn)
                conn.execute(api_keys.insert().values(values))
                log_changes(conn, rev, [("api_key", record.key_id)], self.clock())
        except IntegrityError as exc:
            raise ValueError(f"API key id {record.key_id} already exists") from exc

    def list(
        self, *, workspace: str | None = None, user: str | None = None
    ) -> builtins.list[ApiKeyRecord]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if workspace is not None:
            query = query.where(api_keys.c.workspace == workspace)
        if user is not None:
            query = query.where(api_keys.c.user_id == user)
        with unreachable(), self._read.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def revoke(self, key_id: str, *, now: float) -> bool:
        """Revoke (the first revocation time is kept) and tell every instance."""
        with unreachable(), self.engine.begin() as conn:
            rev = bump_revision(conn)
            count = conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id)
                .values(revoked_at=func.coalesce(api_keys.c.revoked_at, now))
            ).rowcount
            log_changes(conn, rev, [("api_key", key_id)], now)
        return count > 0

    def touch(self, key_id: str, *, now: float) -> None:
        if not self._throttle.due(key_id, now):
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(api_keys)
                    .where(api_keys.c.key_id == key_id)
                    .where(
                        (api_keys.c.last_used_at.is_(None))
                        | (api_keys.c.last_used_at <= now - self._throttle.interval_s)
                    )
                    .values(last_used_at=now)
                )
        except DBAPIError:
            self._throttle.forget(key_id)
            raise

    def close(self) -> None:
        """Close what ``close_with`` names (the engine is its database's otherwise)."""
        if self._close_with is not None:
            self._close_with()


class CredentialRevocations:
    """A feed subscriber: a changed API key leaves this process's credential cache."""

    def __init__(self, cache: CredentialCache) -> None:
        self.cache = cache
        self.applied = -1

    def apply(
        self,
        rev: int,
        keys: Iterable[tuple[str, ...]] | None,
        removed: Collection[tuple[str, ...]] = (),
    ) -> None:
        if keys is None:
            self.cache.clear()
        else:
            for key in keys:
                if key[0] == "api_key" and len(key) == 2:
                    self.cache.forget(key[1])
        self.applied = rev

    def confirm(self, rev: int) -> None:
        """Nothing to confirm: the cache's own time to live still bounds every entry."""

    def reset(self, rev: int) -> None:
        self.cache.clear()
        self.applied = rev
