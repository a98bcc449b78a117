"""Organisations and the HTTP API's keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

A frozen copy of the tables, not an import of ``bulletin.store.api_keys``: a migration must keep meaning what it
meant when it was written. ``tests/bulletin/test_store_api_keys.py`` checks that they agree.

An organisation's ``id`` is the identifier used everywhere else (a recipient's ``org``, ``webhook_endpoints.org``).
A key is stored only as the SHA-256 of its text (``key_hash``) plus a short ``prefix`` to recognise it in lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "organisations",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org", sa.String(128), sa.ForeignKey("organisations.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("cluster_admin", sa.Boolean(), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("last_used_at", timestamp),
        sa.Column("revoked_at", timestamp),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        sa.CheckConstraint("role IN ('admin', 'member')", name="ck_api_keys_role"),
    )
    op.create_index("ix_api_keys_org", "api_keys", ["org"])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("organisations")
