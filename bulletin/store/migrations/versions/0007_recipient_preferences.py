"""Each person's channel preferences: for every report (``report_id`` ``*``) and for one report.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10

A frozen copy of the table, not an import of ``bulletin.store.recipient_preferences``: a migration must keep meaning
what it meant when it was written. ``tests/bulletin/test_recipient_preferences.py`` checks that they agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recipient_channel_preferences",
        sa.Column("org", sa.String(128), primary_key=True),
        sa.Column("recipient", sa.String(128), primary_key=True),
        sa.Column("report_id", sa.String(128), primary_key=True),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(40)),
    )


def downgrade() -> None:
    op.drop_table("recipient_channel_preferences")
