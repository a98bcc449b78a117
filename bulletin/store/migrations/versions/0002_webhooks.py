"""Outbound webhooks (endpoints, messages, attempts) and the inbound receivers' replay receipts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

A frozen copy of the tables, not an import of ``bulletin.store.webhook_schema`` or ``bulletin.store.inbound``: a
migration must keep meaning what it meant when it was written. ``tests/bulletin/test_store_webhooks.py`` checks that
they agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text()),
        sa.Column("previous_secret_expires_at", timestamp),
        sa.Column("style", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text()),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("org", sa.String(128)),
        sa.Column("failing_since", timestamp),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.CheckConstraint("style IN ('standard', 'dbt')", name="ck_webhook_endpoints_style"),
    )
    op.create_index("ix_webhook_endpoints_org", "webhook_endpoints", ["org"])
    op.create_table(
        "webhook_messages",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "endpoint_id", sa.String(40), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", timestamp),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("claimed_by", sa.String(40)),
        sa.Column("lease_expires_at", timestamp),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.Column("delivered_at", timestamp),
        sa.CheckConstraint(
            "status IN ('pending', 'delivering', 'delivered', 'failed')", name="ck_webhook_messages_status"
        ),
    )
    op.create_index("ix_webhook_messages_status_next", "webhook_messages", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_messages_endpoint", "webhook_messages", ["endpoint_id", "created_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column(
            "message_id", sa.String(40), sa.ForeignKey("webhook_messages.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "endpoint_id", sa.String(40), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempted_at", timestamp, nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.CheckConstraint("outcome IN ('success', 'retry', 'gone', 'failed')", name="ck_webhook_attempts_outcome"),
    )
    op.create_index("ix_webhook_attempts_message", "webhook_attempts", ["message_id", "attempted_at"])
    op.create_index("ix_webhook_attempts_endpoint", "webhook_attempts", ["endpoint_id", "attempted_at"])
    op.create_table(
        "inbound_receipts",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("message_id", sa.String(256), nullable=False),
        sa.Column("received_at", timestamp, nullable=False),
        sa.UniqueConstraint("source", "message_id", name="uq_inbound_receipts_message"),
    )
    op.create_index("ix_inbound_receipts_received_at", "inbound_receipts", ["received_at"])


def downgrade() -> None:
    op.drop_table("inbound_receipts")
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_messages")
    op.drop_table("webhook_endpoints")
