"""``db upgrade`` and ``db check``: our migrations, run with alembic on the configured URL."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from .schema import VERSION_TABLE, FactsTables

__all__ = ["check", "head", "upgrade"]

_SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def head() -> str:
    heads = ScriptDirectory.from_config(_config()).get_heads()
    return str(heads[0])


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring our tables to the newest migration (nothing to do when they are): (from, to)."""
    from alembic import command

    before = current(engine)
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return before, head()


def check(engine: Engine, tables: FactsTables) -> list[str]:
    """What is wrong with the database for this configuration; empty when nothing is."""
    problems: list[str] = []
    at, want = current(engine), head()
    if at != want:
        problems.append(
            f"our tables are at migration {at or 'none'}, not {want}: run "
            "`illumichat-authz db upgrade --config FILE`"
        )
    inspector = inspect(engine)
    for what, table in tables.mapped.items():
        name, schema = table.name, getattr(table, "schema", None)  # type: ignore[attr-defined]
        if not inspector.has_table(name, schema=schema):
            problems.append(f"database.tables.{what}: no table {name!r}")
            continue
        have = {c["name"] for c in inspector.get_columns(name, schema=schema)}
        missing = sorted(c.name for c in table.columns if c.name not in have)
        if missing:
            problems.append(f"database.tables.{what}: table {name!r} has no column {missing}")
    return problems
