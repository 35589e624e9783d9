"""The SQL shape of the facts: our own tables, or the host's own, named by a mapping.

Our tables (``authz_*``) are created by the migrations (``illumichat-authz db upgrade``).
A host that already keeps memberships, assistants, chats or grants in its own tables (say
camelCase columns written by Prisma) maps them instead (``[database.tables]``,
docs/fleet.md); :class:`FactsTables` then reads those, and our tables hold only what is not
mapped, the revision and the change log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ColumnElement,
    Float,
    FromClause,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    literal,
)

__all__ = [
    "NOTIFY_CHANNEL",
    "VERSION_TABLE",
    "FactsTables",
    "GrantSource",
    "MembershipSource",
    "ResourceSource",
    "api_keys",
    "change_log",
    "decision_log",
    "grants",
    "memberships",
    "metadata",
    "policy_instances",
    "policy_state",
    "policy_versions",
    "resources",
    "revision",
]

#: Alembic's version table for our migrations: never a host's own ``alembic_version``.
VERSION_TABLE = "authz_alembic_version"
#: The LISTEN/NOTIFY channel every write notifies on.
NOTIFY_CHANNEL = "illumichat_authz"

metadata = MetaData()
_ID = 256
_NAME = 64

memberships = Table(
    "authz_memberships",
    metadata,
    Column("user_id", String(_ID), primary_key=True),
    Column("workspace_id", String(_ID), primary_key=True),
    Column("role", String(_NAME), nullable=False),
    Column("status", String(_NAME), nullable=False, server_default="active"),
    Index("authz_memberships_workspace", "workspace_id", "role"),
)
#: Every kind the route file declares, one row per resource (unless the kind is mapped).
resources = Table(
    "authz_resources",
    metadata,
    Column("kind", String(_NAME), primary_key=True),
    Column("id", String(_ID), primary_key=True),
    Column("workspace_id", String(_ID), nullable=False),
    Column("visibility", String(_NAME)),
    Column("creator_id", String(_ID)),
    #: A chat's assistant.
    Column("parent_id", String(_ID)),
    Index("authz_resources_listing", "kind", "workspace_id", "visibility"),
    Index("authz_resources_creator", "kind", "creator_id"),
)
grants = Table(
    "authz_grants",
    metadata,
    Column("user_id", String(_ID), primary_key=True),
    Column("kind", String(_NAME), primary_key=True),
    Column("resource_id", String(_ID), primary_key=True),
    Index("authz_grants_resource", "kind", "resource_id"),
)
#: One row: the facts revision, bumped in the transaction of every write.
revision = Table(
    "authz_revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="authz_revision_one_row"),
)
#: What each revision changed: the cache keys (JSON), for listeners catching up.
change_log = Table(
    "authz_change_log",
    metadata,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("changed_at", Float, nullable=False),
    Column("keys", Text, nullable=False),
)
api_keys = Table(
    "authz_api_keys",
    metadata,
    Column("key_id", String(_ID), primary_key=True),
    Column("digest", String(128), nullable=False),
    Column("user_id", String(_ID), nullable=False),
    Column("workspace", String(_ID), nullable=False),
    Column("scopes", Text),
    Column("name", Text),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("revoked_at", Float),
    Column("last_used_at", Float),
    Index("authz_api_keys_workspace", "workspace"),
    Index("authz_api_keys_user", "user_id"),
)

#: The decision log (``audit``): one row per logged decision, the fields of
#: ``audit.DecisionEvent``; ``time`` is RFC 3339 UTC text, which sorts as time does, and
#: ``decision_id`` starts with the time too, so rows append at the indexes' right edge.
#: Indexed by time and by principal only: each index halves the rows a COPY writes per
#: second, and a query by route or reason reads a time range (``audit tail --since``).
decision_log = Table(
    "authz_decision_log",
    metadata,
    Column("decision_id", String(32), primary_key=True),
    Column("time", String(24), nullable=False),
    Column("request_id", String(128)),
    Column("trace_id", String(32)),
    Column("principal", String(_ID)),
    Column("credential", String(_NAME)),
    Column("credential_id", String(_ID)),
    Column("route", String(_ID)),
    Column("action", String(_ID)),
    Column("resource_kind", String(_ID)),
    Column("resource_id", String(_ID)),
    Column("workspace", String(_ID)),
    Column("status", Integer, nullable=False),
    Column("reason", String(_NAME), nullable=False),
    Column("policy_revision", String(_NAME)),
    Column("facts_revision", BigInteger),
    Column("latency_us", Float, nullable=False),
    Index("authz_decision_log_time", "time"),
    Index("authz_decision_log_principal", "principal", "time"),
)

#: Policy versions (``policy publish``): each one's files (JSON, name -> text) and the
#: revision its core compiles to; a version is never changed once stored.
policy_versions = Table(
    "authz_policy_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("revision", String(_NAME), nullable=False),
    Column("files", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("note", Text),
    #: When it last became the active version (rollback's "the one before").
    Column("activated_at", Float),
)
#: One row: the version instances enforce, the one they only prepare, and the one they
#: evaluate in shadow.
policy_state = Table(
    "authz_policy_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("active", Integer),
    Column("staged", Integer),
    Column("shadow", Integer),
    Column("changed_at", Float, nullable=False),
    CheckConstraint("id = 1", name="authz_policy_state_one_row"),
)
#: Each instance's heartbeat: what it enforces, what it has prepared, what it refused.
policy_instances = Table(
    "authz_policy_instances",
    metadata,
    Column("instance", String(_ID), primary_key=True),
    Column("version", Integer),
    Column("revision", String(_NAME)),
    Column("prepared", Integer),
    Column("shadow", Integer),
    Column("error", Text),
    Column("applied_at", Float),
    Column("seen_at", Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class MembershipSource:
    table: FromClause
    user: ColumnElement[str]
    workspace: ColumnElement[str]
    role: ColumnElement[str]
    #: ``None``: the host's table has no status (every row is an active membership).
    status: ColumnElement[str] | None


@dataclass(frozen=True, slots=True)
class ResourceSource:
    """Where the resources of one kind live; ``kind_column`` for our shared table."""

    kind: str
    table: FromClause
    id: ColumnElement[str]
    workspace: ColumnElement[str]
    visibility: ColumnElement[str] | None
    creator: ColumnElement[str] | None
    parent: ColumnElement[str] | None
    kind_column: ColumnElement[str] | None

    def of_kind(self) -> ColumnElement[bool]:
        """The condition that selects this kind's rows (always true in its own table)."""
        if self.kind_column is None:
            return literal(True)
        return self.kind_column == self.kind


@dataclass(frozen=True, slots=True)
class GrantSource:
    kind: str
    table: FromClause
    user: ColumnElement[str]
    id: ColumnElement[str]
    kind_column: ColumnElement[str] | None

    def of_kind(self) -> ColumnElement[bool]:
        if self.kind_column is None:
            return literal(True)
        return self.kind_column == self.kind


def _host_table(name: str, columns: Mapping[str, str | None]) -> Table:
    """A host's table, as far as we read it (reflection would cost a round trip)."""
    schema, _, bare = name.rpartition(".")
    cols = [Column(col, String) for col in columns.values() if col is not None]
    return Table(bare, MetaData(), *cols, schema=schema or None)


class FactsTables:
    """The tables the reader queries and the writer writes, per fact and kind."""

    def __init__(
        self,
        *,
        membership_map: Mapping[str, str | None] | None = None,
        resource_maps: Mapping[str, Mapping[str, str | None]] | None = None,
        grant_maps: Mapping[str, Mapping[str, str | None]] | None = None,
    ) -> None:
        if membership_map is None:
            self.memberships = MembershipSource(
                memberships,
                memberships.c.user_id,
                memberships.c.workspace_id,
                memberships.c.role,
                memberships.c.status,
            )
        else:
            table = _host_table(str(membership_map["table"]), _columns(membership_map))
            status = membership_map.get("status")
            self.memberships = MembershipSource(
                table,
                table.c[str(membership_map["user"])],
                table.c[str(membership_map["workspace"])],
                table.c[str(membership_map["role"])],
                table.c[status] if status else None,
            )
        self._resource_maps = dict(resource_maps or {})
        self._grant_maps = dict(grant_maps or {})
        self._resources: dict[str, ResourceSource] = {}
        self._grants: dict[str, GrantSource] = {}
        #: Statements over these tables, compiled once per shape and dialect
        #: (``stores.sql.prepared.Prepared``): the facts reader's and the filters'.
        self.compiled: dict[Any, Any] = {}
        for kind, mapping in self._resource_maps.items():
            table = _host_table(str(mapping["table"]), _columns(mapping))

            def col(
                key: str, table: Table = table, mapping: Mapping[str, str | None] = mapping
            ) -> ColumnElement[str] | None:
                name = mapping.get(key)
                return table.c[name] if name else None

            self._resources[kind] = ResourceSource(
                kind,
                table,
                table.c[str(mapping["id"])],
                table.c[str(mapping["workspace"])],
                col("visibility"),
                col("creator"),
                col("parent"),
                None,
            )
        for kind, mapping in self._grant_maps.items():
            table = _host_table(str(mapping["table"]), _columns(mapping))
            self._grants[kind] = GrantSource(
                kind, table, table.c[str(mapping["user"])], table.c[str(mapping["id"])], None
            )

    def resource(self, kind: str) -> ResourceSource:
        found = self._resources.get(kind)
        if found is None:
            found = self._resources[kind] = ResourceSource(
                kind,
                resources,
                resources.c.id,
                resources.c.workspace_id,
                resources.c.visibility,
                resources.c.creator_id,
                resources.c.parent_id,
                resources.c.kind,
            )
        return found

    def grant(self, kind: str) -> GrantSource:
        found = self._grants.get(kind)
        if found is None:
            found = self._grants[kind] = GrantSource(
                kind, grants, grants.c.user_id, grants.c.resource_id, grants.c.kind
            )
        return found

    @property
    def mapped(self) -> dict[str, FromClause]:
        """The host's own tables, by what they hold (for ``db check``)."""
        out: dict[str, FromClause] = {}
        if self.memberships.table is not memberships:
            out["memberships"] = self.memberships.table
        for kind in self._resource_maps:
            out[f"resources.{kind}"] = self._resources[kind].table
        for kind in self._grant_maps:
            out[f"grants.{kind}"] = self._grants[kind].table
        return out


def _columns(mapping: Mapping[str, str | None]) -> dict[str, str | None]:
    return {k: v for k, v in mapping.items() if k != "table"}
