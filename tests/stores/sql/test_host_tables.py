"""Facts read from a host's own tables: a Prisma-style schema (quoted camelCase names, a
membership table without a status column), mapped in ``[database.tables]``, never ours."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

from illumichat_authz import Authorizer, CredentialKind, Principal, load_settings
from illumichat_authz.stores.sql import migrate
from illumichat_authz.stores.sql.database import Database

pytestmark = pytest.mark.interop

PRISMA_SCHEMA = [
    'CREATE TABLE "Membership" ("id" TEXT PRIMARY KEY, "userId" TEXT NOT NULL, '
    '"workspaceId" TEXT NOT NULL, "role" TEXT NOT NULL, UNIQUE ("userId", "workspaceId"))',
    'CREATE TABLE "Assistant" ("id" TEXT PRIMARY KEY, "workspaceId" TEXT NOT NULL, '
    '"visibility" TEXT NOT NULL, "createdById" TEXT, "name" TEXT)',
    'CREATE TABLE "AssistantShare" ("assistantId" TEXT NOT NULL, "userId" TEXT NOT NULL, '
    'PRIMARY KEY ("assistantId", "userId"))',
    "INSERT INTO \"Membership\" VALUES ('m1', 'alice', 'w1', 'owner'), "
    "('m2', 'bob', 'w1', 'member'), ('m3', 'carol', 'w1', 'guest')",
    "INSERT INTO \"Assistant\" VALUES ('a1', 'w1', 'private', 'alice', 'Secret'), "
    "('a2', 'w1', 'workspace', NULL, 'Shared')",
    "INSERT INTO \"AssistantShare\" VALUES ('a1', 'carol')",
]

MAPPING = """
[database]
url = "{url}"
[database.tables.memberships]
table = "Membership"
user = "userId"
workspace = "workspaceId"
role = "role"
[database.tables.resources.assistant]
table = "Assistant"
id = "id"
workspace = "workspaceId"
visibility = "visibility"
creator = "createdById"
[database.tables.grants.assistant]
table = "AssistantShare"
user = "userId"
id = "assistantId"
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'host.db'}"
    else:
        url = str(request.getfixturevalue("fresh_database"))
    path = tmp_path / "authz.toml"
    path.write_text(MAPPING.format(url=url))
    settings = load_settings(path, environment=False)
    database = Database(settings.database)
    with database.engine.begin() as conn:
        for statement in PRISMA_SCHEMA:
            conn.execute(text(statement))
    migrate.upgrade(database.engine)  # the revision and the change log are still ours
    database.close()
    return path


def _read(authorizer: Authorizer, user: str, assistant: str) -> int:
    return int(
        authorizer.decide_access(
            principal=Principal(user_id=user, kind=CredentialKind.SESSION),
            action="assistant:read",
            resource_kind="assistant",
            resource_id=assistant,
        ).status
    )


def test_decisions_come_from_the_mapped_tables(config: Path) -> None:
    authorizer = Authorizer.from_settings(load_settings(config, environment=False))
    try:
        assert _read(authorizer, "alice", "a1") == 200  # owner and creator
        assert _read(authorizer, "bob", "a1") == 403  # private, not shared with bob
        assert _read(authorizer, "carol", "a1") == 200  # shared with carol
        assert _read(authorizer, "bob", "a2") == 200  # workspace visibility
        assert _read(authorizer, "dave", "a2") == 403  # not a member
        assert _read(authorizer, "bob", "a9") == 404  # no such row
        member = authorizer.facts.membership("bob", "w1")  # type: ignore[union-attr]
        assert member is not None
        assert member.status == "active"  # no status column: every row is active
        assert authorizer.database.facts.tables.mapped.keys() == {
            "memberships",
            "resources.assistant",
            "grants.assistant",
        }
    finally:
        authorizer.close()


def test_db_check_names_a_mapped_column_the_table_lacks(config: Path) -> None:
    settings = load_settings(config, environment=False)
    database = Database(settings.database)
    try:
        assert migrate.check(database.engine, database.tables) == []
        with database.engine.begin() as conn:
            conn.execute(text('ALTER TABLE "Assistant" RENAME COLUMN "createdById" TO "ownerId"'))
        problems = migrate.check(database.engine, database.tables)
        assert len(problems) == 1
        assert "resources.assistant" in problems[0]
        assert "createdById" in problems[0]
    finally:
        database.close()


def test_the_hosts_own_writes_reach_the_cache_through_the_triggers(
    fresh_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from illumichat_authz.cli import main

    path = tmp_path / "authz.toml"
    path.write_text(
        MAPPING.format(url=fresh_database).replace(
            "[database.tables.memberships]", "poll_interval_s = 30\n[database.tables.memberships]"
        )
    )
    settings = load_settings(path, environment=False)
    database = Database(settings.database)
    with database.engine.begin() as conn:
        for statement in PRISMA_SCHEMA:
            conn.execute(text(statement))
    migrate.upgrade(database.engine)
    assert main(["db", "trigger-sql", "--config", str(path)]) == 0
    script = capsys.readouterr().out
    assert 'ON "Membership"' in script
    with database.engine.begin() as conn:
        conn.exec_driver_sql(script)
    database.close()
    authorizer = Authorizer.from_settings(settings)
    try:
        feed = authorizer.database.feed
        deadline = time.monotonic() + 5
        while not feed.status().listening and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _read(authorizer, "bob", "a2") == 200
        assert _read(authorizer, "carol", "a1") == 200
        with authorizer.database.engine.begin() as conn:  # the host's own SQL, not ours
            conn.execute(text('DELETE FROM "Membership" WHERE "userId" = \'bob\''))
            conn.execute(text('DELETE FROM "AssistantShare" WHERE "userId" = \'carol\''))
        # The poll is 30 s away: only the notification can make this happen now.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and (
            _read(authorizer, "bob", "a2") == 200 or _read(authorizer, "carol", "a1") == 200
        ):
            time.sleep(0.005)
        assert _read(authorizer, "bob", "a2") == 403
        assert _read(authorizer, "carol", "a1") == 403
        assert feed.status().applied == 2
    finally:
        authorizer.close()
