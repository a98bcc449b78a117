"""Inbound replay protection: each (source, message id) is accepted once.

The inbound receivers (Standard Webhooks, dbt Cloud, GitHub, signed JWT bodies) call ``record_inbound`` after a
signature verifies; a replayed id is acknowledged and starts nothing. Atomic through the unique key: of concurrent
deliveries of one id exactly one is told it is new. When that one then fails to start its run, ``forget_inbound``
gives the id back, so the sender's retry starts it (a concurrent copy was told "duplicate" meanwhile: the sender
retries the one that failed).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, UniqueConstraint, delete

from bulletin.errors import ConfigError
from bulletin.store.base import UTCDateTime, aware, metadata
from bulletin.store.db import Store, insert_if_absent

SOURCE_MAX = 128
MESSAGE_ID_MAX = 256

inbound_receipts = Table(
    "inbound_receipts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(SOURCE_MAX), nullable=False),
    Column("message_id", String(MESSAGE_ID_MAX), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    UniqueConstraint("source", "message_id", name="uq_inbound_receipts_message"),
    Index("ix_inbound_receipts_received_at", "received_at"),
)


def record_inbound(store: Store, *, source: str, message_id: str, now: datetime) -> bool:
    """Remember an inbound message id: True the first time, False for a replay (atomic, by the unique key)."""
    if not 0 < len(source) <= SOURCE_MAX or not 0 < len(message_id) <= MESSAGE_ID_MAX:
        raise ConfigError(f"an inbound source must be 1-{SOURCE_MAX} characters and a message id 1-{MESSAGE_ID_MAX}")
    values = {"source": source, "message_id": message_id, "received_at": aware(now)}
    with store.write() as conn:
        return insert_if_absent(conn, inbound_receipts, values, unique=("source", "message_id")) is not None


def forget_inbound(store: Store, *, source: str, message_id: str) -> None:
    """Give back an id recorded by ``record_inbound`` whose run could not be started, so the sender's retry of that
    message is new again rather than acknowledged as a duplicate of a run that never was."""
    with store.write() as conn:
        conn.execute(
            delete(inbound_receipts).where(
                inbound_receipts.c.source == source, inbound_receipts.c.message_id == message_id
            )
        )


def prune_inbound(store: Store, *, older_than: datetime) -> int:
    """Forget inbound ids received before ``older_than`` (past the replay window); returns how many."""
    with store.write() as conn:
        result = conn.execute(delete(inbound_receipts).where(inbound_receipts.c.received_at < aware(older_than)))
        return int(result.rowcount)
