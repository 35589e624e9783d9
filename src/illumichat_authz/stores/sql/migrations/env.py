"""Alembic's environment for our tables: run on the connection ``migrate`` hands in.

Our version table is ``authz_alembic_version``, so that a host's own alembic history in the
same database is never touched.
"""

from __future__ import annotations

from alembic import context

from illumichat_authz.stores.sql.schema import VERSION_TABLE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, version_table=VERSION_TABLE, transaction_per_migration=True
)
with context.begin_transaction():
    context.run_migrations()
