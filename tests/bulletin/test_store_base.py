"""What every table module of the store shares: the metadata, the UTC column type and the two helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select
from sqlalchemy.exc import StatementError

import bulletin.store  # noqa: F401 - registers every table on the shared metadata
from bulletin.errors import ConfigError
from bulletin.store.base import UTCDateTime, aware, metadata, truncate_utf8


def test_every_table_is_on_the_one_metadata() -> None:
    assert {
        "deliveries",
        "webhook_endpoints",
        "webhook_messages",
        "webhook_attempts",
        "scheduled_events",
        "scheduled_event_invocations",
        "scheduled_event_secrets",
        "jobs",
        "inbound_receipts",
    } <= set(metadata.tables)


def test_aware_gives_utc_and_refuses_a_naive_time() -> None:
    eastern = datetime(2026, 7, 1, 9, 0, tzinfo=timezone(timedelta(hours=-4)))
    assert aware(eastern) == eastern
    assert aware(eastern).tzinfo is UTC
    with pytest.raises(ConfigError, match=r"^timestamps given to the state store must be timezone-aware$"):
        aware(datetime(2026, 7, 1, 9, 0))
    with pytest.raises(ConfigError, match=r"^slot must be timezone-aware$") as caught:
        aware(datetime(2026, 7, 1, 9, 0), "slot", field="slot")
    assert caught.value.field == "slot"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("plain", 3, "pla"), ("ééé", 5, "éé"), ("東京", 4, "東"), ("😀x", 3, ""), ("short", 100, "short"), ("", 0, "")],
)
def test_truncate_utf8_never_splits_a_character(text: str, limit: int, expected: str) -> None:
    cut = truncate_utf8(text, limit)
    assert cut == expected
    assert len(cut.encode("utf-8")) <= limit


def test_utc_timestamps_round_trip_on_sqlite_and_naive_ones_are_refused(tmp_path: Path) -> None:
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime()))
    engine = create_engine(f"sqlite:///{tmp_path / 'base.db'}")
    try:
        table.metadata.create_all(engine)
        when = datetime(2026, 7, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
        with engine.begin() as conn:
            conn.execute(insert(table).values(id=1, at=when))
            stored = conn.execute(select(table.c.at)).scalar_one()
        assert stored == when
        assert stored.tzinfo is UTC
        with pytest.raises(StatementError) as caught, engine.begin() as conn:
            conn.execute(insert(table).values(id=2, at=datetime(2026, 7, 1, 9, 0)))
        assert isinstance(caught.value.orig, ConfigError)
        assert str(caught.value.orig) == "timestamps given to the state store must be timezone-aware"
    finally:
        engine.dispose()
