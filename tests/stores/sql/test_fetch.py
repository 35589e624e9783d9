"""A cold decision is one round trip, a batch of resources is one round trip, and both decide
exactly as the in-memory facts do; async hosts await the read on an async driver.

The oracle is ``InMemoryFacts`` holding the same records. Round trips are counted where
every read goes out (``Prepared.rows`` and ``Prepared.arows``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import illumichat_authz as ia
from illumichat_authz.config import DatabaseSettings
from illumichat_authz.decision import Decision
from illumichat_authz.facts import Assistant, Chat, Grant, InMemoryFacts, Membership
from illumichat_authz.stores.sql import migrate
from illumichat_authz.stores.sql.database import Database
from illumichat_authz.stores.sql.prepared import Prepared

pytestmark = pytest.mark.interop

ACTIONS = ("assistant:read", "assistant:update", "assistant:delete", "assistant:share")


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+asyncpg"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'facts.db'}"
    found = str(request.getfixturevalue("fresh_database"))
    return found.replace("+psycopg", "+asyncpg") if "asyncpg" in request.param else found


def _records(seed: int) -> list[Any]:
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(8)] + ["U0"]  # a case variant of u0 is someone else
    records: list[Any] = []
    for ws in ("w1", "w2"):
        for user in users:
            if rng.random() < 0.7:
                role = rng.choice(["owner", "admin", "member", "guest"])
                status = "inactive" if rng.random() < 0.15 else "active"
                records.append(Membership(user=user, workspace=ws, role=role, status=status))
    for i in range(40):
        records.append(
            Assistant(
                id=f"a{i}",
                workspace=rng.choice(["w1", "w2", "w3"]),  # w3: nobody is a member
                visibility=rng.choice(["public", "workspace", "private"]),
                creator=rng.choice([*users, "gone"]),
            )
        )
    for _ in range(30):
        records.append(Grant(user=rng.choice(users), assistant=f"a{rng.randrange(45)}"))
    records.append(Chat(id="c1", workspace="w1", assistant="a1", creator="u1"))
    return records


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    database = Database(DatabaseSettings(url=url, poll_interval_s=0.05))
    migrate.upgrade(database.engine)
    database.writer.apply(upsert=_records(7))
    database.feed.check()
    yield database
    database.close()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"sync": 0, "async": 0}
    rows, arows = Prepared.rows, Prepared.arows

    def counted(self: Prepared, *args: Any) -> Any:
        counts["sync"] += 1
        return rows(self, *args)

    async def acounted(self: Prepared, *args: Any) -> Any:
        counts["async"] += 1
        return await arows(self, *args)

    monkeypatch.setattr(Prepared, "rows", counted)
    monkeypatch.setattr(Prepared, "arows", acounted)
    return counts


def _core() -> Any:
    return ia.build_core(ia.load_settings(None, environment=False))


def _seen(decision: Decision) -> tuple[Any, ...]:
    return (decision.status, decision.reason, decision.message)


IDS = [f"a{i}" for i in range(45)]  # a40..a44 do not exist
USERS = [f"u{i}" for i in range(8)] + ["U0", "stranger"]


def test_a_cold_decision_is_one_round_trip_and_decides_as_memory(
    db: Database, round_trips: dict[str, int]
) -> None:
    core = _core()
    sql = ia.Authorizer(core=core, facts=db.facts)
    oracle = ia.Authorizer(core=core, facts=InMemoryFacts(**_split(_records(7))))
    for user in USERS:
        principal = ia.Principal(user_id=user, kind=ia.CredentialKind.SESSION)
        for action in ACTIONS:
            for assistant in IDS:
                db.facts.reset(db.facts.applied)  # every fact missing
                before = round_trips["sync"]
                got = sql.decide_access(
                    principal=principal,
                    action=action,
                    resource_kind="assistant",
                    resource_id=assistant,
                )
                want = oracle.decide_access(
                    principal=principal,
                    action=action,
                    resource_kind="assistant",
                    resource_id=assistant,
                )
                assert _seen(got) == _seen(want), (user, action, assistant)
                # One round trip for every fact it needs (none if it is refused before any).
                assert round_trips["sync"] - before == (got.resource is not None), got
                assert got.facts_revision is None or got.facts_revision >= 1


def test_a_batch_is_one_round_trip_and_each_decision_is_the_single_one(
    db: Database, round_trips: dict[str, int]
) -> None:
    core = _core()
    sql = ia.Authorizer(core=core, facts=db.facts)
    oracle = ia.Authorizer(core=core, facts=InMemoryFacts(**_split(_records(7))))
    for user in USERS:
        principal = ia.Principal(user_id=user, kind=ia.CredentialKind.SESSION)
        for action in ACTIONS:
            db.facts.reset(db.facts.applied)
            before = round_trips["sync"]
            got = sql.decide_access_many(
                principal=principal, action=action, resource_kind="assistant", resource_ids=IDS
            )
            assert round_trips["sync"] - before == 1
            want = [
                oracle.decide_access(
                    principal=principal, action=action, resource_kind="assistant", resource_id=i
                )
                for i in IDS
            ]
            assert [_seen(d) for d in got] == [_seen(d) for d in want], (user, action)
            before = round_trips["sync"]  # now warm: no round trip at all
            again = sql.decide_access_many(
                principal=principal, action=action, resource_kind="assistant", resource_ids=IDS
            )
            assert round_trips["sync"] == before
            assert [_seen(d) for d in again] == [_seen(d) for d in want]


def test_async_hosts_await_the_read_and_decide_as_memory(
    db: Database, url: str, round_trips: dict[str, int]
) -> None:
    core = _core()
    sql = ia.Authorizer(core=core, facts=db.facts)
    oracle = ia.Authorizer(core=core, facts=InMemoryFacts(**_split(_records(7))))
    postgres = url.startswith("postgresql")

    async def run() -> None:
        for user in [*USERS[:5], "U0", "stranger"]:
            principal = ia.Principal(user_id=user, kind=ia.CredentialKind.SESSION)
            for action in ACTIONS[:2]:
                db.facts.reset(db.facts.applied)
                got = await sql.adecide_access_many(
                    principal=principal,
                    action=action,
                    resource_kind="assistant",
                    resource_ids=IDS,
                )
                want = [
                    oracle.decide_access(
                        principal=principal,
                        action=action,
                        resource_kind="assistant",
                        resource_id=i,
                    )
                    for i in IDS
                ]
                assert [_seen(d) for d in got] == [_seen(d) for d in want]
                db.facts.reset(db.facts.applied)
                one = await sql.adecide_access(
                    principal=principal, action=action, resource_kind="assistant", resource_id="a3"
                )
                assert _seen(one) == _seen(want[3])
        await sql.aclose()

    asyncio.run(run())
    if postgres:  # awaited on the async driver: the event loop never blocked on a read
        assert round_trips["async"] == 7 * 2 * 2
        assert round_trips["sync"] == 0
    else:  # SQLite: the read runs in a worker thread
        assert round_trips["sync"] == 7 * 2 * 2
        assert round_trips["async"] == 0


def test_a_batch_while_the_database_is_away_is_503_for_every_item(
    db: Database, round_trips: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from illumichat_authz.errors import DependencyUnavailableError

    def down(*_args: Any) -> Any:
        raise DependencyUnavailableError("the database is unavailable: test")

    monkeypatch.setattr(Prepared, "rows", down)
    sql = ia.Authorizer(core=_core(), facts=db.facts)
    db.facts.reset(db.facts.applied)
    principal = ia.Principal(user_id="u1", kind=ia.CredentialKind.SESSION)
    got = sql.decide_access_many(
        principal=principal, action="assistant:read", resource_kind="assistant", resource_ids=IDS
    )
    assert {d.status for d in got} == {503}


def _split(records: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"memberships": [], "resources": [], "grants": []}
    for record in records:
        key = (
            "memberships"
            if isinstance(record, Membership)
            else "grants"
            if isinstance(record, Grant)
            else "resources"
        )
        out[key].append(record)
    return out


def test_a_removal_notified_is_refused_without_a_read(
    db: Database, url: str, round_trips: dict[str, int]
) -> None:
    """The notification says what was deleted: the cache knows the answer (absent) at that
    revision, so the next decision refuses at once instead of reading it again. Catching
    up from the change log (or SQLite's poll) evicts instead, and the next read decides."""
    import time

    sql = ia.Authorizer(core=_core(), facts=db.facts)
    member = next(r for r in _records(7) if isinstance(r, Membership) and r.status == "active")
    shared = next(
        r
        for r in _records(7)
        if isinstance(r, Assistant)
        and r.workspace == member.workspace
        and r.visibility == "workspace"
        and r.creator != member.user
    )
    principal = ia.Principal(user_id=member.user, kind=ia.CredentialKind.SESSION)

    def read() -> int:
        return int(
            sql.decide_access(
                principal=principal,
                action="assistant:read",
                resource_kind="assistant",
                resource_id=shared.id,
            ).status
        )

    db.feed.start()
    assert read() == 200
    other = Database(db.settings)
    try:
        rev = other.writer.apply(remove=[member])
    finally:
        other.close()
    deadline = time.monotonic() + 5
    while db.facts.applied < rev:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    before = round_trips["sync"]
    assert read() == 403
    if url.startswith("postgresql"):
        assert round_trips["sync"] == before  # known absent from the notification
    else:
        assert round_trips["sync"] == before + 1  # evicted by the poll, read again
