"""List filtering in SQL: "which rows of this kind may this principal do ``action`` on".

:func:`build_filter` turns the compiled policy into a condition on the resource table with
the principal's own facts inlined (its memberships by role and status, the ids it holds
grants on), so that every branch is an index-friendly ``IN``/``=`` on the row's own columns:
no correlated ``EXISTS``, no join per row. It mirrors the per-row rules step by step (the
relation a row gives the caller, the visibility table a kind asks, NULL visibilities and
creators, values no policy line names), and a property test holds it equal to per-row
decisions. What it cannot translate (an unknown action or kind, a special kind) raises
``ValueError`` when the filter is built, never a wider query.

:func:`principal_facts` reads those facts (one statement, two indexed reads);
:func:`authorized_filter` does both.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    bindparam,
    false,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
)

from ...vocab import NO_ROLE, MembershipStatus, Relation, ResourceKind
from .prepared import Prepared
from .schema import FactsTables, ResourceSource

if TYPE_CHECKING:
    from ...core import Core
    from ...principal import Principal

__all__ = [
    "PrincipalFacts",
    "authorized_filter",
    "build_filter",
    "plain_sql",
    "principal_facts",
]

_ACTIVE = MembershipStatus.ACTIVE.value
_INACTIVE = MembershipStatus.INACTIVE.value
_CREATOR, _GRANTEE, _NONE = Relation.CREATOR.value, Relation.GRANTEE.value, Relation.NONE.value
#: A visibility value no policy line names (all such values get the same verdict).
_UNKNOWN = object()


@dataclass(frozen=True, slots=True)
class PrincipalFacts:
    """The principal's own facts the filter inlines."""

    #: Workspace -> (role, status) of each of its memberships.
    memberships: Mapping[str, tuple[str, str]]
    #: Ids of the resources of the kind it holds a grant on.
    granted: Collection[str]


def principal_facts(engine: Engine, tables: FactsTables, user: str, kind: str) -> PrincipalFacts:
    """The principal's memberships and grants on ``kind``, read now: one statement (two
    indexed reads), compiled once per kind and run as the facts reader's are."""
    key = ("principal", kind, engine.dialect.name, engine.dialect.driver)
    prepared = tables.compiled.get(key)
    if prepared is None:
        prepared = tables.compiled[key] = Prepared(
            engine.dialect, _principal_statement(tables, kind)
        )
    memberships: dict[str, tuple[str, str]] = {}
    granted: set[str] = set()
    for source, id, role, status in prepared.rows(engine, {"user": user}):
        if source == "g":
            granted.add(str(id))
        else:
            status = _ACTIVE if status is None or status == _ACTIVE else _INACTIVE
            memberships[str(id)] = (str(role), status)
    return PrincipalFacts(memberships, frozenset(granted))


def _principal_statement(tables: FactsTables, kind: str) -> Any:
    m, g = tables.memberships, tables.grant(kind)
    status = m.status if m.status is not None else null()
    user: Any = bindparam("user")
    return union_all(
        select(literal_column("'m'"), m.workspace, m.role, status).where(m.user == user),
        select(literal_column("'g'"), g.id, null(), null()).where(g.user == user, g.of_kind()),
    )


def authorized_filter(
    core: Core,
    engine: Engine,
    tables: FactsTables,
    principal: Principal,
    action: str,
    kind: str,
    *,
    workspace: str | None = None,
) -> ColumnElement[bool]:
    """The condition for ``kind``'s table (``tables.resource(kind).table``), facts read now."""
    _check(core, action, kind)
    facts = principal_facts(engine, tables, principal.user_id, kind)
    return build_filter(core, tables.resource(kind), principal, action, facts, workspace=workspace)


def _check(core: Core, action: str, kind: str) -> None:
    if kind in (ResourceKind.WORKSPACE.value, ResourceKind.MEMBER.value) or kind not in core.kinds:
        raise ValueError(f"{kind!r} is not a resource kind rows can be listed of")
    if action not in core.policy.actions:
        raise ValueError(f"unknown action {action!r}")


def build_filter(
    core: Core,
    source: ResourceSource,
    principal: Principal,
    action: str,
    facts: PrincipalFacts,
    *,
    workspace: str | None = None,
) -> ColumnElement[bool]:
    """The condition (pure: no I/O). See the module docstring."""
    kind = source.kind
    _check(core, action, kind)
    if principal.scopes is not None and action not in principal.scopes:
        return false()
    spec = core.kinds[kind]
    known: tuple[Any, ...] = tuple(spec.visibilities)
    values: tuple[Any, ...] = (*known, None, _UNKNOWN)
    user = principal.user_id
    grants_count = kind in core.grant_kinds
    granted = sorted(facts.granted) if grants_count else []

    def allowed(role: str, status: str, rel: str, vis: Any) -> bool:
        probe = "\x00not-a-visibility" if vis is _UNKNOWN else vis
        vkind = kind if probe is not None or kind in core.visibility_kinds else None
        return core.policy.verdict(role, status, action, rel, vkind, probe).allowed

    ws_col, vis_col, creator_col, id_col = (
        source.workspace,
        source.visibility,
        source.creator,
        source.id,
    )

    def vis_in(chosen: Collection[Any]) -> ColumnElement[bool]:
        if vis_col is None:  # the table has no visibility: every row's is NULL
            return true() if None in chosen else false()
        parts: list[ColumnElement[bool]] = []
        named = [v for v in known if v in chosen]
        if named:
            parts.append(vis_col.in_(named))
        if None in chosen:
            parts.append(vis_col.is_(None))
        if _UNKNOWN in chosen:
            parts.append(
                and_(vis_col.is_not(None), vis_col.not_in(known)) if known else vis_col.is_not(None)
            )
        return or_(*parts) if parts else false()

    is_creator: ColumnElement[bool] = creator_col == user if creator_col is not None else false()
    not_creator: ColumnElement[bool] = (
        creator_col.is_distinct_from(user) if creator_col is not None else true()
    )
    is_granted: ColumnElement[bool] = id_col.in_(granted) if granted else false()

    def group(role: str, status: str, lifted: Collection[Any]) -> ColumnElement[bool]:
        """The rows a caller with this role and status in the row's workspace may act on."""
        vc = {v for v in values if allowed(role, status, _CREATOR, v)}
        # A grant counts only on rows with a visibility, and only for kinds with grants.
        vg = {v for v in values if v is not None and allowed(role, status, _GRANTEE, v)}
        vn = {v for v in values if allowed(role, status, _NONE, v)} - set(lifted)
        branches: list[ColumnElement[bool]] = []
        if vc:
            branches.append(and_(is_creator, vis_in(vc)))
        if granted and vg:
            guard = [] if vg <= vc else [not_creator]
            branches.append(and_(is_granted, vis_in(vg), *guard))
        vn_set = {v for v in vn if v is not None}
        if vn_set:
            guard = [] if vn_set <= vc else [not_creator]
            if granted and not vn_set <= vg:
                guard.append(~is_granted)
            branches.append(and_(vis_in(vn_set), *guard))
        if None in vn:
            guard = [] if None in vc else [not_creator]
            branches.append(and_(vis_in({None}), *guard))
        return or_(*branches) if branches else false()

    # Workspaces the caller may be in: a bound credential only its own.
    scope = workspace
    if principal.workspace_bound:
        if workspace is not None and workspace != principal.workspace:
            return false()
        scope = principal.workspace
    memberships = dict(facts.memberships)
    if scope is not None:
        memberships = {ws: rs for ws, rs in memberships.items() if ws == scope}
    by_role: dict[tuple[str, str], list[str]] = {}
    for ws, (role, status) in sorted(memberships.items()):
        by_role.setdefault((role, status), []).append(ws)
    groups = [*by_role, (NO_ROLE, _ACTIVE)]

    # Visibilities any caller may act on under any relation (say "public"): one branch for
    # all workspaces, the shape an index on (kind, visibility) answers best.
    lifted = [
        v
        for v in values
        if v is not None
        and all(
            allowed(r, s, _NONE, v)
            and allowed(r, s, _CREATOR, v)
            and (not granted or allowed(r, s, _GRANTEE, v))
            for r, s in groups
        )
    ]
    branches: list[ColumnElement[bool]] = []
    if lifted:
        branches.append(and_(ws_col.is_not(None), vis_in(lifted)))
    for (role, status), workspaces in by_role.items():
        branches.append(and_(ws_col.in_(workspaces), group(role, status, lifted)))
    # Rows in any other workspace: the caller is no member there.
    outside: list[ColumnElement[bool]] = (
        [ws_col.not_in(list(memberships))] if memberships else [ws_col.is_not(None)]
    )
    if scope is not None:
        outside.append(ws_col == scope)
    branches.append(and_(*outside, group(NO_ROLE, _ACTIVE, lifted)))
    condition = or_(*branches)
    if scope is not None:
        condition = and_(ws_col == scope, condition)
    return and_(source.of_kind(), condition)


def plain_sql(
    condition: ColumnElement[bool], engine: Engine
) -> tuple[str, dict[str, Any] | tuple[Any, ...]]:
    """The condition as SQL text in the driver's own parameter style (``%(name)s`` for
    psycopg, ``?`` for sqlite3) and its parameters in the matching shape, for a host that
    runs its queries on the driver's cursor: ``cursor.execute(f"SELECT ... WHERE {sql}",
    params)``."""
    compiled = condition.compile(
        dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
    )
    if compiled.positional:
        order = compiled.positiontup or []
        return str(compiled), tuple(compiled.params[name] for name in order)
    return str(compiled), dict(compiled.params)
