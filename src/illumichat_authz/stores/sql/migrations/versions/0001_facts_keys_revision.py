"""Facts, API keys, the revision and the change log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = 256
_NAME = 64


def upgrade() -> None:
    op.create_table(
        "authz_memberships",
        sa.Column("user_id", sa.String(_ID), primary_key=True),
        sa.Column("workspace_id", sa.String(_ID), primary_key=True),
        sa.Column("role", sa.String(_NAME), nullable=False),
        sa.Column("status", sa.String(_NAME), nullable=False, server_default="active"),
    )
    op.create_index("authz_memberships_workspace", "authz_memberships", ["workspace_id", "role"])
    op.create_table(
        "authz_resources",
        sa.Column("kind", sa.String(_NAME), primary_key=True),
        sa.Column("id", sa.String(_ID), primary_key=True),
        sa.Column("workspace_id", sa.String(_ID), nullable=False),
        sa.Column("visibility", sa.String(_NAME)),
        sa.Column("creator_id", sa.String(_ID)),
        sa.Column("parent_id", sa.String(_ID)),
    )
    op.create_index(
        "authz_resources_listing", "authz_resources", ["kind", "workspace_id", "visibility"]
    )
    op.create_index("authz_resources_creator", "authz_resources", ["kind", "creator_id"])
    op.create_table(
        "authz_grants",
        sa.Column("user_id", sa.String(_ID), primary_key=True),
        sa.Column("kind", sa.String(_NAME), primary_key=True),
        sa.Column("resource_id", sa.String(_ID), primary_key=True),
    )
    op.create_index("authz_grants_resource", "authz_grants", ["kind", "resource_id"])
    op.create_table(
        "authz_revision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="authz_revision_one_row"),
    )
    op.execute("INSERT INTO authz_revision (id, revision) VALUES (1, 0)")
    op.create_table(
        "authz_change_log",
        sa.Column("revision", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("changed_at", sa.Float, nullable=False),
        sa.Column("keys", sa.Text, nullable=False),
    )
    op.create_table(
        "authz_api_keys",
        sa.Column("key_id", sa.String(_ID), primary_key=True),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(_ID), nullable=False),
        sa.Column("workspace", sa.String(_ID), nullable=False),
        sa.Column("scopes", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
        sa.Column("last_used_at", sa.Float),
    )
    op.create_index("authz_api_keys_workspace", "authz_api_keys", ["workspace"])
    op.create_index("authz_api_keys_user", "authz_api_keys", ["user_id"])


def downgrade() -> None:
    for table in (
        "authz_api_keys",
        "authz_change_log",
        "authz_revision",
        "authz_grants",
        "authz_resources",
        "authz_memberships",
    ):
        op.drop_table(table)
