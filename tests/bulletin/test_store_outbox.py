"""The outbox mechanism both outboxes use (claim with a lease, record with a compare-and-set), on a real SQLite
store with a table of its own."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    insert,
    or_,
    select,
)

from bulletin.errors import ConfigError
from bulletin.store import Store, open_store
from bulletin.store.base import UTCDateTime
from bulletin.store.outbox import check_lease, log_attempt, settle, take_lease

T0 = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
_meta = MetaData()
rows = Table(
    "outbox_rows",
    _meta,
    Column("id", String(40), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("tries", Integer, nullable=False),
    Column("claimed_by", String(40)),
    Column("lease_expires_at", UTCDateTime()),
    Column("updated_at", UTCDateTime(), nullable=False),
)
log = Table(
    "outbox_log",
    _meta,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("row_id", String(40), nullable=False),
    Column("response_body", Text),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'outbox.db'}") as opened:
        _meta.create_all(opened.engine)
        with opened.write() as conn:
            conn.execute(insert(rows).values(id="r1", status="pending", tries=0, updated_at=T0))
        yield opened


def _claimable(now: datetime) -> ColumnElement[bool]:
    """The shape both outboxes use: pending, never claimed or under a lapsed lease."""
    return and_(rows.c.status == "pending", or_(rows.c.claimed_by.is_(None), rows.c.lease_expires_at < now))


def _claim(store: Store, now: datetime, lease: float = 30.0) -> str | None:
    with store.write() as conn:
        return take_lease(conn, rows, "r1", claimable=_claimable(now), lease_seconds=lease, now=now)


def _row(store: Store) -> dict[str, object]:
    with store.read() as conn:
        return dict(conn.execute(select(rows)).mappings().one())


@pytest.mark.parametrize("lease", [0, -1, 3600.5])
def test_a_lease_out_of_bounds_is_refused(lease: float) -> None:
    with pytest.raises(ConfigError, match="lease_seconds") as caught:
        check_lease(lease, 3600)
    assert caught.value.field == "lease_seconds"
    check_lease(3600, 3600)


def test_of_many_concurrent_claimers_exactly_one_holds_the_lease(store: Store) -> None:
    tokens: list[str | None] = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        tokens.append(_claim(store, T0))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [t for t in tokens if t is not None]
    assert len(won) == 1
    row = _row(store)
    assert row["claimed_by"] == won[0]
    assert row["lease_expires_at"] == T0 + timedelta(seconds=30)
    assert row["updated_at"] == T0


def test_a_lapsed_lease_is_taken_over_and_the_old_holder_cannot_settle(store: Store) -> None:
    first = _claim(store, T0)
    assert first is not None
    assert _claim(store, T0 + timedelta(seconds=29)) is None
    second = _claim(store, T0 + timedelta(seconds=31))
    assert second is not None and second != first
    later = T0 + timedelta(seconds=40)
    with store.write() as conn:
        assert not settle(conn, rows, "r1", token=first, held="pending", now=later, status="done")
    assert _row(store)["status"] == "pending"
    with store.write() as conn:
        assert not settle(conn, rows, "r1", token=second, held="sending", now=later, status="done")
        assert settle(conn, rows, "r1", token=second, held="pending", now=later, status="done", tries=rows.c.tries + 1)
    assert _row(store) == {
        "id": "r1",
        "status": "done",
        "tries": 1,
        "claimed_by": None,
        "lease_expires_at": None,
        "updated_at": later,
    }


def test_an_attempt_is_logged_cut_to_its_limits(store: Store) -> None:
    with store.write() as conn:
        found = log_attempt(
            conn,
            log,
            response_body="éé€",
            response_max=5,
            error="x" * 50,
            error_max=10,
            duration_ms=-3,
            row_id="r1",
        )
        empty = log_attempt(
            conn, log, response_body=None, response_max=5, error=None, error_max=10, duration_ms=12, row_id="r1"
        )
    assert dict(found) == {"id": 1, "row_id": "r1", "response_body": "éé", "error": "x" * 10, "duration_ms": 0}
    assert dict(empty) == {"id": 2, "row_id": "r1", "response_body": None, "error": None, "duration_ms": 12}
