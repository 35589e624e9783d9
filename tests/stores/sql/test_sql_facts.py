"""Facts in SQL, on a real PostgreSQL (a throwaway cluster) and on SQLite, through one code path.

What is checked: the migrations (idempotent, and what ``db check`` reports), writes that
bump the revision and log their keys, reads that come back as the core's records, the
revision-stamped cache (served only while confirmed fresh, evicted by newer changes and
never refilled by a read older than an applied change), the change feed over LISTEN/NOTIFY
and over the poll, and decisions through ``Authorizer.from_settings`` with ``[database]``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from illumichat_authz import Authorizer, CredentialKind, Principal, load_settings
from illumichat_authz.config import DatabaseSettings
from illumichat_authz.core.lookups import Query
from illumichat_authz.errors import DependencyUnavailableError
from illumichat_authz.facts import Assistant, Chat, Grant, Membership, Resource
from illumichat_authz.stores.sql import migrate
from illumichat_authz.stores.sql.database import Database
from illumichat_authz.stores.sql.engine import unreachable
from postgres_server import PostgresServer

pytestmark = pytest.mark.interop


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'facts.db'}"
    return str(request.getfixturevalue("fresh_database"))


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = Database(DatabaseSettings(url=url, poll_interval_s=0.05))
    migrate.upgrade(database.engine)
    yield database
    database.close()


def _second(database: Database) -> Database:
    """Another instance on the same database (its own pool, cache and feed)."""
    return Database(database.settings)


ALICE = Membership(user="alice", workspace="w1", role="admin")
BOB = Membership(user="bob", workspace="w1", role="member")
SECRET = Assistant(id="a1", workspace="w1", visibility="private", creator="alice")
CHAT = Chat(id="c1", workspace="w1", assistant="a1", creator="bob")
DOC = Resource(kind="document", id="d1", workspace="w1", visibility=None, creator=None)
GRANT = Grant(user="bob", assistant="a1")


def test_upgrade_is_idempotent_and_check_reports_what_is_missing(url: str) -> None:
    database = Database(DatabaseSettings(url=url))
    try:
        problems = migrate.check(database.engine, database.tables)
        assert len(problems) == 1
        assert "db upgrade" in problems[0]
        assert migrate.upgrade(database.engine) == (None, migrate.head())
        assert migrate.upgrade(database.engine) == (migrate.head(), migrate.head())
        assert migrate.check(database.engine, database.tables) == []
    finally:
        database.close()


def test_writes_read_back_as_the_cores_records(db: Database) -> None:
    rev = db.writer.apply(upsert=[ALICE, BOB, SECRET, CHAT, DOC, GRANT])
    assert rev == 1
    assert db.facts.membership("alice", "w1") == ALICE
    assert db.facts.membership("alice", "w2") is None
    assert db.facts.resource("assistant", "a1") == SECRET
    assert isinstance(db.facts.resource("assistant", "a1"), Assistant)
    assert db.facts.resource("chat", "c1") == CHAT
    assert db.facts.resource("document", "d1") == DOC
    assert db.facts.resource("document", "a1") is None  # the kind is part of the key
    assert db.facts.has_grant("bob", "assistant", "a1")
    assert not db.facts.has_grant("alice", "assistant", "a1")
    # An upsert replaces; a removal names the row by its key alone.
    assert db.writer.apply(upsert=[Membership(user="bob", workspace="w1", role="guest")]) == 2
    assert db.facts.membership("bob", "w1") == Membership(user="bob", workspace="w1", role="guest")
    assert db.writer.apply(remove=[BOB, GRANT, DOC]) == 3
    assert db.facts.membership("bob", "w1") is None
    assert not db.facts.has_grant("bob", "assistant", "a1")
    assert db.facts.resource("document", "d1") is None
    with db.engine.connect() as conn:
        log = conn.execute(text("SELECT revision, keys FROM authz_change_log ORDER BY 1")).all()
    assert [r for r, _ in log] == [1, 2, 3]
    assert json.loads(log[2][1]) == [
        ["grant", "bob", "assistant", "a1"],
        ["membership", "bob", "w1"],
        ["resource", "document", "d1"],
    ]


def test_without_a_confirmed_feed_nothing_is_served_from_memory(db: Database) -> None:
    other = _second(db)
    try:
        db.writer.apply(upsert=[ALICE])
        assert db.facts.membership("alice", "w1") == ALICE
        other.writer.apply(remove=[ALICE])
        assert db.facts.membership("alice", "w1") is None  # read again, not the cached allow
    finally:
        other.close()


def test_the_cache_serves_while_fresh_and_a_change_evicts_it(db: Database) -> None:
    other = _second(db)
    try:
        db.writer.apply(upsert=[ALICE])
        db.feed.check()
        assert db.facts.membership("alice", "w1") == ALICE
        hits = db.facts.entries
        with db.engine.connect() as conn:  # the row is gone behind the cache's back ...
            conn.execute(text("DELETE FROM authz_memberships"))
            conn.commit()
        assert db.facts.membership("alice", "w1") == ALICE  # ... so a hit is from memory
        assert db.facts.entries == hits
        other.writer.apply(remove=[ALICE])  # through the library: logged, so evicted
        assert db.feed.check() == 2
        assert db.facts.membership("alice", "w1") is None
    finally:
        other.close()


def test_past_the_staleness_bound_the_cache_serves_nothing(db: Database) -> None:
    now = [1000.0]
    db.facts.clock = lambda: now[0]
    db.writer.apply(upsert=[ALICE])
    db.feed.check()
    assert db.facts.membership("alice", "w1") == ALICE
    with db.engine.connect() as conn:  # a write the feed cannot see
        conn.execute(text("DELETE FROM authz_memberships"))
        conn.commit()
    now[0] += db.settings.max_staleness_s - 0.01
    assert db.facts.membership("alice", "w1") == ALICE
    now[0] += 0.02
    assert db.facts.membership("alice", "w1") is None


def test_a_read_older_than_an_applied_change_is_not_kept(db: Database) -> None:
    db.writer.apply(upsert=[ALICE])
    db.feed.check()
    # The feed applies revision 2 (say alice's removal) while a read made at revision 1
    # is still on its way back: that read must not refill the cache.
    db.facts.apply(2, [("membership", "alice", "w1")])
    key, query = ("alice", "w1"), Query("membership", ("alice", "w1"))
    db.facts._keep([(db.facts._memberships, key, query, ALICE)], 1)
    assert ("alice", "w1") not in db.facts._memberships
    # A read at (or after) the applied revision is kept; an older change does not evict it.
    db.facts._keep([(db.facts._memberships, key, query, ALICE)], 2)
    db.facts.apply(2, [("membership", "alice", "w1")])
    assert ("alice", "w1") in db.facts._memberships


def test_the_feed_catches_up_from_the_change_log_and_resets_on_a_gap(db: Database) -> None:
    db.feed.check()
    other = _second(db)
    try:
        for i in range(5):
            other.writer.apply(upsert=[Membership(user=f"u{i}", workspace="w1", role="member")])
        assert db.feed.check() == 5
        with db.engine.connect() as conn:
            conn.execute(text("DELETE FROM authz_change_log WHERE revision = 6"))
            conn.commit()
        other.writer.apply(upsert=[ALICE])  # 6, whose log row is then pruned
        with db.engine.connect() as conn:
            conn.execute(text("DELETE FROM authz_change_log WHERE revision = 6"))
            conn.commit()
        other.writer.apply(upsert=[BOB])  # 7
        db.facts.membership("zed", "w1")
        assert db.feed.check() == 7
        assert db.facts.entries == 0  # reset: nothing cached survives a gap
    finally:
        other.close()


def _wait(condition: object, timeout: float = 5.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.001)
    raise AssertionError("condition not met in time")


def test_another_instances_revocation_reaches_the_running_feed(db: Database) -> None:
    """Notifications on PostgreSQL, the poll on SQLite: either way, within the bound."""
    db.writer.apply(upsert=[ALICE])
    db.feed.start()
    _wait(lambda: db.feed.status().applied == 1)
    assert db.facts.membership("alice", "w1") == ALICE
    other = _second(db)
    try:
        other.writer.apply(remove=[ALICE])
        took = _wait(lambda: db.facts.membership("alice", "w1") is None)
        assert took < 1.0
        if db.engine.dialect.name == "postgresql":
            assert db.feed.status().listening
    finally:
        other.close()


def test_a_killed_listener_reconnects_and_loses_no_change(fresh_database: str) -> None:
    db = Database(DatabaseSettings(url=fresh_database, poll_interval_s=0.5))
    migrate.upgrade(db.engine)
    writer = _second(db)
    try:
        db.feed.start()
        _wait(lambda: db.feed.status().listening)
        users = [f"u{i}" for i in range(200)]
        stop = threading.Event()

        def write() -> None:
            for user in users:
                writer.writer.apply(upsert=[Membership(user=user, workspace="w", role="member")])
            stop.set()

        thread = threading.Thread(target=write)
        thread.start()
        killed = 0
        while not stop.is_set() and killed < 3:
            time.sleep(0.02)
            with writer.engine.connect() as conn:
                killed += int(
                    conn.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                        )
                    ).scalar_one()
                )
        thread.join()
        assert killed >= 1
        _wait(lambda: db.feed.status().applied == len(users), timeout=10)
        # Everything was cached as absent before; every one of them is a member now.
        assert all(db.facts.membership(u, "w") is not None for u in users)
    finally:
        writer.close()
        db.close()


def test_a_lookup_while_the_database_is_down_is_unavailable() -> None:
    """A cluster of its own, stopped mid-test: warm within the bound, then 503, then back."""
    server = PostgresServer()
    server.start()
    db = Database(DatabaseSettings(url=server.url(), poll_interval_s=0.05, max_staleness_s=0.5))
    try:
        migrate.upgrade(db.engine)
        db.writer.apply(upsert=[ALICE])
        db.feed.start()
        _wait(lambda: db.feed.status().applied == 1)
        assert db.facts.membership("alice", "w1") == ALICE
        server.stop()
        assert db.facts.membership("alice", "w1") == ALICE  # warm, within the bound
        time.sleep(0.6)
        with pytest.raises(DependencyUnavailableError), unreachable():
            db.facts.membership("alice", "w1")
        with pytest.raises(DependencyUnavailableError), unreachable():
            db.facts.membership("carol", "w1")  # cold
        assert db.feed.status().error is not None
        server.start()
        _wait(lambda: db.feed.status().error is None, timeout=15)
        assert db.facts.membership("alice", "w1") == ALICE
    finally:
        db.close()
        server.remove()


def test_decisions_while_the_database_is_down_fail_closed_and_recover() -> None:
    """Through the Authorizer, sync and async: warm decisions within the staleness bound,
    then 503 for every one (never an allow the database would refuse), then back by
    themselves once the server returns, resynced from the change log."""
    import asyncio

    from illumichat_authz import build_core

    server = PostgresServer()
    server.start()
    db = Database(DatabaseSettings(url=server.url(), poll_interval_s=0.05, max_staleness_s=0.5))
    core = build_core(load_settings(None, environment=False))
    authorizer = Authorizer(core=core, facts=db.facts)
    bob = Principal(user_id="bob", kind=CredentialKind.SESSION)

    def read(resource: str = "a2") -> int:
        return int(
            authorizer.decide_access(
                principal=bob,
                action="assistant:read",
                resource_kind="assistant",
                resource_id=resource,
            ).status
        )

    def aread(resource: str = "a2") -> int:
        async def run() -> int:
            decision = await authorizer.adecide_access(
                principal=bob,
                action="assistant:read",
                resource_kind="assistant",
                resource_id=resource,
            )
            await authorizer.aclose()
            return int(decision.status)

        return asyncio.run(run())

    shared = Assistant(id="a2", workspace="w1", visibility="workspace", creator="alice")
    try:
        migrate.upgrade(db.engine)
        db.writer.apply(upsert=[BOB, shared])
        db.feed.start()
        _wait(lambda: db.feed.status().applied == 1)
        assert (read(), aread()) == (200, 200)
        server.stop()
        assert read() == 200  # warm, within the bound
        time.sleep(0.6)
        assert (read(), aread()) == (503, 503)  # past it: nothing served from memory
        assert (read("a9"), aread("a9")) == (503, 503)  # cold
        many = authorizer.decide_access_many(
            principal=bob, action="assistant:read", resource_kind="assistant", resource_ids=["a2"]
        )
        assert [d.status for d in many] == [503]
        server.start()
        _wait(lambda: db.feed.status().error is None, timeout=15)
        assert (read(), aread(), read("a9")) == (200, 200, 404)
        db.writer.apply(remove=[BOB])  # and the feed follows again
        _wait(lambda: read() == 403)
        assert aread() == 403
    finally:
        db.close()
        server.remove()


POLICY_CONFIG = """
[session]
secrets = ["test-secret-0123456789abcdef0123456789"]
[database]
url = "{url}"
poll_interval_s = 0.05
"""


def test_decisions_through_from_settings_follow_the_database(db: Database, tmp_path: Path) -> None:
    db.writer.apply(upsert=[ALICE, BOB, SECRET])
    config = tmp_path / "authz.toml"
    config.write_text(POLICY_CONFIG.format(url=db.settings.url))
    authorizer = Authorizer.from_settings(load_settings(config, environment=False))
    try:
        bob = Principal(user_id="bob", kind=CredentialKind.SESSION)

        def read() -> int:
            return int(
                authorizer.decide_access(
                    principal=bob,
                    action="assistant:read",
                    resource_kind="assistant",
                    resource_id="a1",
                ).status
            )

        assert read() == 403  # a private assistant: bob is neither creator nor grantee
        db.writer.apply(upsert=[GRANT])
        _wait(lambda: read() == 200)
        db.writer.apply(remove=[BOB])
        _wait(lambda: read() == 403)
    finally:
        authorizer.close()


def test_authorized_filter_composes_with_the_hosts_query_and_as_plain_sql(
    db: Database, tmp_path: Path
) -> None:
    from sqlalchemy import select

    from illumichat_authz.stores.sql.filters import plain_sql
    from illumichat_authz.stores.sql.schema import resources

    extra = [
        Assistant(id=f"p{i}", workspace="w1", visibility="public", creator="zed") for i in range(3)
    ]
    extra.append(Assistant(id="q0", workspace="w2", visibility="public", creator="zed"))
    extra.append(Membership(user="bob", workspace="w2", role="guest", status="invited"))
    db.writer.apply(
        upsert=[
            ALICE,
            BOB,
            SECRET,
            *extra,
            Assistant(id="a2", workspace="w1", visibility="workspace", creator="alice"),
        ]
    )
    config = tmp_path / "authz.toml"
    config.write_text(POLICY_CONFIG.format(url=db.settings.url))
    authorizer = Authorizer.from_settings(load_settings(config, environment=False))
    try:
        bob = Principal(user_id="bob", kind=CredentialKind.SESSION)
        condition = authorizer.authorized_filter(bob, "assistant:read", "assistant")
        query = select(resources.c.id).where(condition).order_by(resources.c.id.desc()).limit(3)
        with db.engine.connect() as conn:
            assert conn.execute(query).scalars().all() == ["q0", "p2", "p1"]
            everything = set(conn.execute(select(resources.c.id).where(condition)).scalars())
            assert everything == {"a2", "p0", "p1", "p2", "q0"}  # not the private a1
            sql, params = plain_sql(condition, db.engine)
            rows = conn.exec_driver_sql(f"SELECT id FROM authz_resources WHERE {sql}", params)
            assert {row[0] for row in rows} == everything
        in_w1 = authorizer.authorized_filter(bob, "assistant:read", "assistant", workspace="w1")
        with db.engine.connect() as conn:
            assert set(conn.execute(select(resources.c.id).where(in_w1)).scalars()) == {
                "a2",
                "p0",
                "p1",
                "p2",
            }
        with pytest.raises(ValueError, match="kind"):
            authorizer.authorized_filter(bob, "assistant:read", "workspace")
    finally:
        authorizer.close()


def test_decisions_carry_the_revision_and_read_their_writes(db: Database, tmp_path: Path) -> None:
    """Read-your-writes across instances: a writer's revision passed back (``at_least`` or
    the ``X-Authz-Revision`` header) makes an instance whose feed lags catch up first."""
    from illumichat_authz import RequestFacts

    db.writer.apply(upsert=[ALICE, SECRET])
    config = tmp_path / "authz.toml"
    config.write_text(POLICY_CONFIG.format(url=db.settings.url).replace("0.05", "60"))
    authorizer = Authorizer.from_settings(load_settings(config, environment=False))
    try:
        _wait(lambda: authorizer.database.feed.status().applied == 1)
        bob = Principal(user_id="bob", kind=CredentialKind.SESSION)

        def read(**kw: object) -> tuple[int, int | None]:
            d = authorizer.decide_access(
                principal=bob,
                action="assistant:read",
                resource_kind="assistant",
                resource_id="a1",
                **kw,  # type: ignore[arg-type]
            )
            return int(d.status), d.facts_revision

        assert read() == (403, 1)
        authorizer.database.feed.stop()  # no notification will arrive, no poll run
        rev = db.writer.apply(upsert=[BOB, GRANT])
        assert read() == (403, 1)  # latency first: the cached facts, within the bound
        assert read(at_least=rev) == (200, rev)  # caught up: bob's own write is seen
        rev2 = db.writer.apply(remove=[GRANT])
        assert read(at_least="full") == (403, rev2)

        def ask(value: str) -> tuple[int, int | None, dict[str, str]]:
            request = RequestFacts.build(
                method="GET",
                path="/api/widget/a1/config",
                headers=[("x-authz-revision", value)],
            )
            d = authorizer.decide(request)
            return int(d.status), d.facts_revision, dict(d.headers)

        rev3 = db.writer.apply(upsert=[GRANT])
        assert ask(str(rev3))[:2] == (200, rev3)
        # A revision from the future costs one read per 0.1 s, not one per request.
        checks = []
        check = authorizer.database.feed.check
        authorizer.database.feed.check = lambda: checks.append(1) or check()  # type: ignore[method-assign,func-returns-value]
        for _ in range(50):
            assert ask(str(rev3 + 1000))[:2] == (200, rev3)
        assert len(checks) <= 2
        for bad in ("-1", "1.5", "x", "9" * 40, "\uff11"):
            assert ask(bad)[0] == 400
    finally:
        authorizer.close()
