"""Facts (and soon API keys and sessions) in SQL: PostgreSQL for a fleet, SQLite embedded.

Needs the ``db`` extra (SQLAlchemy, alembic), plus ``postgres`` for psycopg. Nothing here is
imported unless ``[database] url`` is configured or a host imports it.

- :mod:`.schema`: our tables, or a mapping onto the host's own;
- :mod:`.migrations` / :mod:`.migrate`: ``db upgrade`` and ``db check``;
- :mod:`.writes`: writes that bump the revision, log the change and notify;
- :mod:`.facts`: the revision-stamped in-process cache the core reads through;
- :mod:`.feed`: LISTEN/NOTIFY, catch-up from the change log, and the poll that bounds
  staleness.
"""

from __future__ import annotations

from .engine import create_engine
from .facts import SqlFacts
from .feed import ChangeFeed, FeedStatus
from .schema import FactsTables
from .writes import FactsWriter

__all__ = ["ChangeFeed", "FactsTables", "FactsWriter", "FeedStatus", "SqlFacts", "create_engine"]
