"""``authorized_filter`` selects exactly the rows that per-row decisions allow.

The oracle is the decision core itself (``core.decide_access`` over ``InMemoryFacts`` holding
the same facts), independent of the SQL: hypothesis generates fact sets with inactive
memberships, unknown roles, NULL creators and visibilities, visibility values no policy
line names, grants to non-members, case-variant ids, workspace-bound and scoped
credentials; each is written to a real database (SQLite in memory, and the throwaway
PostgreSQL) and the filter's rows compared with the allowed ones. Also: the SQL has no
correlated subquery, and what cannot be translated is refused when the filter is built.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert, select

from illumichat_authz import CredentialKind, Principal, build_core, load_settings
from illumichat_authz.core import decide_access
from illumichat_authz.facts import Grant, InMemoryFacts, Membership, Resource
from illumichat_authz.stores.sql import create_engine
from illumichat_authz.stores.sql.filters import PrincipalFacts, build_filter, principal_facts
from illumichat_authz.stores.sql.schema import FactsTables, grants, memberships, metadata, resources

CORE = build_core(load_settings(environment=False))
TABLES = FactsTables()
KINDS = ("assistant", "chat")
ACTIONS = {kind: sorted(a for a, k in CORE.access_routes if k == kind) for kind in KINDS}
USERS = ["u1", "U1", "u2", "u3", "u4"]
WORKSPACES = ["w1", "W1", "w2"]
ROLES = [*CORE.policy.roles, "auditor"]  # a role no policy line names
STATUSES = ["active", "invited", "suspended"]
VISIBILITIES = [*CORE.kinds["assistant"].visibilities, None, "secret"]
CHAT_VIS = [None, None, None, "public"]  # a chat has no visibility; a stray value denies
SCOPES = [None, None, frozenset(), frozenset(ACTIONS["assistant"][:2])]
#: Hypothesis examples per backend (shrinking finds the smallest failing fact set).
EXAMPLES = int(os.environ.get("AUTHZ_FILTER_EXAMPLES", "400"))
#: Seeded fact sets per backend in the bulk run (100 sets share the tables at a time).
BULK = int(os.environ.get("AUTHZ_FILTER_BULK", "10000"))


def make_case(pick: Callable[[Sequence[Any]], Any], ns: str = "") -> dict[str, Any]:
    """One fact set and one question, every choice made by ``pick`` (hypothesis draws, or a
    seeded ``random.choice`` for the bulk run); ``ns`` prefixes every name, so that many
    fact sets can share the tables."""
    members: dict[tuple[str, str], tuple[str, str]] = {}
    for _ in range(pick(range(9))):
        key = (ns + pick(USERS), ns + pick(WORKSPACES))
        members[key] = (pick(ROLES), pick(STATUSES))
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for i in range(pick(range(11))):
        kind = pick(KINDS)
        row = {
            "kind": kind,
            "id": ns + pick([f"r{i}", f"R{i}"]),
            "workspace_id": ns + pick(WORKSPACES),
            "visibility": pick(VISIBILITIES) if kind == "assistant" else pick(CHAT_VIS),
            "creator_id": (lambda c: None if c is None else ns + c)(pick([*USERS, None])),
        }
        unique[(kind, row["id"])] = row
    ids = list(unique)
    granted = {(ns + pick(USERS), *pick(ids)) for _ in range(pick(range(7)))} if ids else set()
    user = ns + pick(USERS)
    bound = (lambda w: None if w is None else ns + w)(pick([None, *WORKSPACES]))
    scopes = pick(SCOPES)
    kind = pick(KINDS)
    return {
        "members": members,
        "resources": list(unique.values()),
        "grants": sorted(granted),
        "principal": Principal(
            user_id=user,
            kind=CredentialKind.API_KEY if bound or scopes is not None else CredentialKind.SESSION,
            workspace=bound,
            workspace_bound=bound is not None,
            scopes=scopes,
        ),
        "kind": kind,
        "action": pick(ACTIONS[kind]),
        "workspace": (lambda w: None if w is None else ns + w)(pick([None, None, *WORKSPACES])),
    }


@st.composite
def fact_sets(draw: st.DrawFn) -> dict[str, Any]:
    return make_case(lambda options: draw(st.sampled_from(options)))


def _oracle(case: dict[str, Any]) -> set[str]:
    facts = InMemoryFacts(
        memberships=[
            Membership(user=u, workspace=w, role=r, status=s)
            for (u, w), (r, s) in case["members"].items()
        ],
        resources=[
            Resource(
                kind=r["kind"],
                id=r["id"],
                workspace=r["workspace_id"],
                visibility=r["visibility"],
                creator=r["creator_id"],
            )
            for r in case["resources"]
        ],
        grants=[Grant(user=u, kind=k, id=i) for u, k, i in case["grants"]],
    )
    allowed = set()
    for r in case["resources"]:
        if r["kind"] != case["kind"]:
            continue
        if case["workspace"] is not None and r["workspace_id"] != case["workspace"]:
            continue
        decision = decide_access(
            CORE,
            principal=case["principal"],
            action=case["action"],
            resource_kind=case["kind"],
            resource_id=r["id"],
            lookups=facts,  # type: ignore[arg-type]
        )
        if decision.allowed:
            allowed.add(r["id"])
    return allowed


def _write(engine: Engine, *cases: dict[str, Any]) -> None:
    """Replace the tables' rows by the facts of ``cases``."""
    member_rows = [
        {"user_id": u, "workspace_id": w, "role": r, "status": s}
        for case in cases
        for (u, w), (r, s) in case["members"].items()
    ]
    resource_rows = [r for case in cases for r in case["resources"]]
    grant_rows = [
        {"user_id": u, "kind": k, "resource_id": i} for case in cases for u, k, i in case["grants"]
    ]
    with engine.begin() as conn:
        for table in (memberships, resources, grants):
            conn.execute(delete(table))
        for table, rows in (
            (memberships, member_rows),
            (resources, resource_rows),
            (grants, grant_rows),
        ):
            if rows:
                conn.execute(insert(table), rows)


def _selected(engine: Engine, case: dict[str, Any], ns: str = "") -> set[str]:
    facts = principal_facts(engine, TABLES, case["principal"].user_id, case["kind"])
    condition = build_filter(
        CORE,
        TABLES.resource(case["kind"]),
        case["principal"],
        case["action"],
        facts,
        workspace=case["workspace"],
    )
    # The host's own WHERE beside ours (here: this fact set's rows only).
    query = select(resources.c.id).where(condition)
    if ns:
        query = query.where(resources.c.id.startswith(ns, autoescape=True))
    with engine.connect() as conn:
        return set(conn.execute(query).scalars())


@pytest.fixture(scope="module")
def sqlite_engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@_SETTINGS
@given(case=fact_sets())
def test_the_filter_selects_what_per_row_decisions_allow_on_sqlite(
    sqlite_engine: Engine, case: dict[str, Any]
) -> None:
    _write(sqlite_engine, case)
    assert _selected(sqlite_engine, case) == _oracle(case)


@pytest.fixture(scope="module")
def pg_engine(postgres: Any) -> Iterator[Engine]:
    engine = create_engine(postgres.create_database())
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.mark.interop
@_SETTINGS
@given(case=fact_sets())
def test_the_filter_selects_what_per_row_decisions_allow_on_postgresql(
    pg_engine: Engine, case: dict[str, Any]
) -> None:
    _write(pg_engine, case)
    assert _selected(pg_engine, case) == _oracle(case)


def _bulk(engine: Engine, seed: int) -> None:
    rng = random.Random(seed)
    for start in range(0, BULK, 100):
        cases = {
            f"s{n}:": make_case(rng.choice, f"s{n}:") for n in range(start, min(start + 100, BULK))
        }
        _write(engine, *cases.values())
        for ns, case in cases.items():
            assert _selected(engine, case, ns) == _oracle(case), (ns, case)


def test_bulk_fact_sets_on_sqlite(sqlite_engine: Engine) -> None:
    _bulk(sqlite_engine, seed=20261203)


@pytest.mark.interop
def test_bulk_fact_sets_on_postgresql(pg_engine: Engine) -> None:
    _bulk(pg_engine, seed=20261204)


def test_the_sql_has_no_correlated_subquery_and_inlines_the_facts() -> None:
    member = Principal(user_id="u1", kind=CredentialKind.SESSION)
    facts = PrincipalFacts({"w1": ("member", "active"), "w2": ("admin", "active")}, {"a9"})
    condition = build_filter(CORE, TABLES.resource("assistant"), member, "assistant:read", facts)
    sql = str(condition.compile(compile_kwargs={"literal_binds": True})).upper()
    assert "EXISTS" not in sql
    assert "SELECT" not in sql
    assert "'W1'" in sql.upper()
    assert "'A9'" in sql.upper()


@pytest.mark.parametrize(
    ("action", "kind"),
    [
        ("assistant:read", "workspace"),
        ("assistant:read", "member"),
        ("nope:read", "assistant"),
        ("assistant:read", "document"),
    ],
)
def test_what_cannot_be_translated_is_refused_when_built(action: str, kind: str) -> None:
    member = Principal(user_id="u1", kind=CredentialKind.SESSION)
    with pytest.raises(ValueError, match=r"kind|action"):
        build_filter(
            CORE, TABLES.resource(kind), member, action, PrincipalFacts({}, ()), workspace=None
        )
