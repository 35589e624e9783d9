"""The I/O behind the pure verifiers: where credentials and counters are looked up.

SQLite API keys (:mod:`.api_keys`) and Auth.js database sessions (:mod:`.sessions`), the
tenant's JWKS fetched and cached (:mod:`.jwks`), rate-limit counters on ``limits``
(:mod:`.ratelimit`) and the cache of verified credentials (:mod:`.credential_cache`).
Facts in SQL, PostgreSQL or SQLite, live in :mod:`.sql` (the ``db`` extra), opened from
``[database]`` by :func:`open_database`. Nothing is imported
eagerly: import the module you use, so a caller that needs one store (or only a type)
does not pull in ``sqlite3``, ``urllib``, ``threading`` or ``limits`` with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..config import Settings
    from .sql.database import Database

__all__ = ["open_database"]


def open_database(settings: Settings) -> Database:
    """``[database]`` opened (its feed not yet started); a configuration error when no URL
    is set or the ``db`` extra is not installed."""
    if settings.database.url is None:
        raise ConfigurationError(
            "no database configured: set [database] url (or ILLUMICHAT_AUTHZ_DATABASE__URL)"
        )
    try:
        from .sql.database import Database
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"[database] needs the db extra ({exc.name} is missing): "
            "pip install 'illumichat-authz[postgres]'"
        ) from None
    try:
        return Database(settings.database)
    except ConfigurationError as exc:
        raise ConfigurationError(f"database.url: {exc}") from None
