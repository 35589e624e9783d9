"""The decision log table.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = 256
_NAME = 64


def upgrade() -> None:
    op.create_table(
        "authz_decision_log",
        sa.Column("decision_id", sa.String(32), primary_key=True),
        sa.Column("time", sa.String(24), nullable=False),
        sa.Column("request_id", sa.String(128)),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("principal", sa.String(_ID)),
        sa.Column("credential", sa.String(_NAME)),
        sa.Column("credential_id", sa.String(_ID)),
        sa.Column("route", sa.String(_ID)),
        sa.Column("action", sa.String(_ID)),
        sa.Column("resource_kind", sa.String(_ID)),
        sa.Column("resource_id", sa.String(_ID)),
        sa.Column("workspace", sa.String(_ID)),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(_NAME), nullable=False),
        sa.Column("policy_revision", sa.String(_NAME)),
        sa.Column("facts_revision", sa.BigInteger),
        sa.Column("latency_us", sa.Float, nullable=False),
    )
    op.create_index("authz_decision_log_time", "authz_decision_log", ["time"])
    op.create_index("authz_decision_log_principal", "authz_decision_log", ["principal", "time"])


def downgrade() -> None:
    op.drop_table("authz_decision_log")
