"""One configured database: the engine, the table mapping, the cached facts, the feed, the
writer. What ``Authorizer.from_settings``, the ``db``/``facts`` commands and ``serve`` open
from ``[database]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api_keys import SqlApiKeyStore
from .engine import create_engine, dispose
from .facts import SqlFacts
from .feed import ChangeFeed
from .schema import FactsTables
from .writes import FactsWriter

if TYPE_CHECKING:
    from ...config import DatabaseSettings

__all__ = ["Database", "tables_from"]


def tables_from(settings: DatabaseSettings) -> FactsTables:
    mapped = settings.tables
    return FactsTables(
        membership_map=(None if mapped.memberships is None else mapped.memberships.model_dump()),
        resource_maps={kind: m.model_dump() for kind, m in mapped.resources.items()},
        grant_maps={kind: m.model_dump() for kind, m in mapped.grants.items()},
    )


class Database:
    def __init__(self, settings: DatabaseSettings) -> None:
        if settings.url is None:
            raise ValueError("no database.url")
        self.settings = settings
        self.engine = create_engine(settings.url)
        self.tables = tables_from(settings)
        self.facts = SqlFacts(
            self.engine,
            self.tables,
            max_staleness_s=settings.max_staleness_s,
            max_entries=settings.cache_entries,
            async_url=settings.url,
        )
        self.feed = ChangeFeed(
            self.engine,
            [self.facts],
            poll_interval_s=settings.poll_interval_s,
            listen=settings.listen,
        )
        self.writer = FactsWriter(self.engine, self.tables)
        self.api_keys = SqlApiKeyStore(self.engine)

    def close(self) -> None:
        self.feed.stop()
        self.facts.async_readers.close()
        dispose(self.engine)
