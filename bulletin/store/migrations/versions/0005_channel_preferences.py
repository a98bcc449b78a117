"""Communication-channel preferences (ThoughtSpot-style): the cluster's per event type, and each organisation's.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08

A frozen copy of the tables, not an import of ``bulletin.store.channel_preferences``: a migration must keep meaning
what it meant when it was written. ``tests/bulletin/test_channel_preferences.py`` checks that they agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_CHECK = "event_type IN ('REPORT_SCHEDULE', 'REPORT_JOB')"


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "cluster_channel_preferences",
        sa.Column("event_type", sa.String(32), primary_key=True),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.Column("updated_by", sa.String(40)),
        sa.CheckConstraint(EVENT_CHECK, name="ck_cluster_channel_preferences_event_type"),
    )
    op.create_table(
        "org_channel_preferences",
        sa.Column("org", sa.String(128), sa.ForeignKey("organisations.id"), primary_key=True),
        sa.Column("event_type", sa.String(32), primary_key=True),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.Column("updated_by", sa.String(40)),
        sa.CheckConstraint(EVENT_CHECK, name="ck_org_channel_preferences_event_type"),
    )


def downgrade() -> None:
    op.drop_table("org_channel_preferences")
    op.drop_table("cluster_channel_preferences")
