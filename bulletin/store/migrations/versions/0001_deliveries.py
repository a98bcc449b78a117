"""The delivery ledger: one row per (run key, recipient, format, channel).

Revision ID: 0001
Revises:
Create Date: 2026-11-23

A frozen copy of the table, not an import of ``bulletin.store.ledger_schema``: a migration must keep meaning what it
meant when it was written. ``tests/bulletin/test_store.py`` checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("run_key", sa.String(200), nullable=False),
        sa.Column("report_id", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("recipient", sa.String(128), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("sha256", sa.String(64)),
        sa.Column("uri", sa.Text()),
        sa.Column("bytes", sa.BigInteger()),
        sa.Column("rows", sa.BigInteger()),
        sa.Column("token_jti", sa.String(128)),
        sa.Column("secure_filters", sa.JSON()),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("lease_expires_at", timestamp),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.Column("sent_at", timestamp),
        sa.UniqueConstraint("run_key", "recipient", "format", "channel", name="uq_deliveries_delivery"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'skipped')", name="ck_deliveries_status"),
    )
    op.create_index("ix_deliveries_report_id", "deliveries", ["report_id"])
    op.create_index("ix_deliveries_recipient_sent_at", "deliveries", ["recipient", "sent_at"])
    op.create_index("ix_deliveries_status", "deliveries", ["status"])


def downgrade() -> None:
    op.drop_table("deliveries")
