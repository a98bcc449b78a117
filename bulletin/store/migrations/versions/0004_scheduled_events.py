"""One-off scheduled webhook events (Hasura-style): events, their invocation logs, each organisation's secret.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

A frozen copy of the tables, not an import of ``bulletin.store.scheduled_event_schema``: a migration must keep
meaning what it meant when it was written. ``tests/bulletin/test_store_scheduled_events.py`` checks that they agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "scheduled_events",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org", sa.String(128), nullable=False),
        sa.Column("webhook", sa.Text(), nullable=False),
        sa.Column("schedule_at", timestamp, nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("num_retries", sa.Integer(), nullable=False),
        sa.Column("retry_interval_seconds", sa.Integer(), nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("tolerance_seconds", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("due_at", timestamp, nullable=False),
        sa.Column("next_retry_at", timestamp),
        sa.Column("last_error", sa.Text()),
        sa.Column("claimed_by", sa.String(40)),
        sa.Column("lease_expires_at", timestamp),
        sa.Column("flow_run_id", sa.String(40)),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.Column("processed_at", timestamp),
        sa.CheckConstraint(
            "status IN ('scheduled', 'delivered', 'error', 'dead', 'cancelled')", name="ck_scheduled_events_status"
        ),
    )
    op.create_index("ix_scheduled_events_status_due", "scheduled_events", ["status", "due_at"])
    op.create_index("ix_scheduled_events_org_created", "scheduled_events", ["org", "created_at", "id"])
    op.create_table(
        "scheduled_event_invocations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(40), sa.ForeignKey("scheduled_events.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempted_at", timestamp, nullable=False),
        sa.Column("request_headers", sa.JSON(), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("response_body", sa.Text()),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
    )
    op.create_index("ix_scheduled_event_invocations_event", "scheduled_event_invocations", ["event_id", "id"])
    op.create_table(
        "scheduled_event_secrets",
        sa.Column("org", sa.String(128), primary_key=True),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text()),
        sa.Column("previous_secret_expires_at", timestamp),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scheduled_event_secrets")
    op.drop_table("scheduled_event_invocations")
    op.drop_table("scheduled_events")
