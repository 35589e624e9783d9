"""Policy versions, the active one, and each instance's heartbeat (``policy publish``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = 256
_NAME = 64


def upgrade() -> None:
    op.create_table(
        "authz_policy_versions",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.String(_NAME), nullable=False),
        sa.Column("files", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("activated_at", sa.Float),
    )
    op.create_table(
        "authz_policy_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("active", sa.Integer),
        sa.Column("staged", sa.Integer),
        sa.Column("shadow", sa.Integer),
        sa.Column("changed_at", sa.Float, nullable=False),
        sa.CheckConstraint("id = 1", name="authz_policy_state_one_row"),
    )
    op.create_table(
        "authz_policy_instances",
        sa.Column("instance", sa.String(_ID), primary_key=True),
        sa.Column("version", sa.Integer),
        sa.Column("revision", sa.String(_NAME)),
        sa.Column("prepared", sa.Integer),
        sa.Column("shadow", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("applied_at", sa.Float),
        sa.Column("seen_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("authz_policy_instances")
    op.drop_table("authz_policy_state")
    op.drop_table("authz_policy_versions")
