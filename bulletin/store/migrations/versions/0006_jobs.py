"""On-demand report jobs (QuickSight-style): who asked for which report, with what, run by which flow run.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09

A frozen copy of the table, not an import of ``bulletin.store.jobs``: a migration must keep meaning what it meant
when it was written. ``tests/bulletin/test_store.py`` checks them against the whole metadata.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("org", sa.String(128), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("report_id", sa.String(128), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("flow_run_id", sa.String(40)),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
        sa.Column("error", sa.Text()),
        sa.UniqueConstraint("org", "job_id", name="uq_jobs_org_job_id"),
    )
    op.create_index("ix_jobs_org_created", "jobs", ["org", "created_at", "job_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_org_created", table_name="jobs")
    op.drop_table("jobs")
