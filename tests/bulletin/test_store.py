"""The state store and its delivery ledger, on a real SQLite file and (when configured) a real PostgreSQL.

Concurrency is tested for real: threads sharing one engine, and separate processes each with their own.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select, text

from bulletin.errors import ConfigError, StorageError, TransientError
from bulletin.models import Filter
from bulletin.store import (
    ClaimOutcome,
    ClaimResult,
    LedgerStatus,
    Store,
    adhoc_run_key,
    audit,
    check_run_key,
    claim,
    last_sent,
    list_deliveries,
    mark_failed,
    mark_sent,
    mark_skipped,
    migrate,
    open_store,
    scheduled_run_key,
)
from bulletin.store.base import metadata
from bulletin.store.db import VERSION_TABLE, _insert_or_nothing, insert_if_absent
from bulletin.store.ledger import _held_statement, deliveries

T0 = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
KEY: dict[str, Any] = {
    "run_key": "weekly@2026-11-02T07:00:00Z",
    "recipient": "alice",
    "format": "pdf",
    "channel": "email",
}
SCOPE = {"sales": [[Filter(field="region", op="=", value="EU")]]}
SHA = "ab" * 32


def _head() -> str:
    from alembic.script import ScriptDirectory

    from bulletin.store.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


HEAD = _head()


def take(store: Store, run_id: str = "run-1", now: datetime = T0, lease: float = 60, **key: str) -> ClaimResult:
    return claim(store, **{**KEY, **key}, report_id="weekly", run_id=run_id, lease_seconds=lease, now=now)


def send(store: Store, result: ClaimResult, now: datetime = T0, sha256: str = SHA) -> None:
    mark_sent(
        store,
        result,
        sha256=sha256,
        uri="s3://b/k.pdf",
        bytes=10,
        rows=2,
        token_jti="jti-1",
        secure_filters=SCOPE,
        now=now,
    )


# --- migrations and schema ------------------------------------------------------------------------------------------


def test_migrate_twice_is_idempotent(store: Store) -> None:
    migrate(store)
    migrate(store)
    with store.read() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [HEAD]
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 0


def test_migration_matches_the_table_definition(store: Store) -> None:
    with store.read() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
        indexes = {ix["name"] for ix in inspect(conn).get_indexes("deliveries")}
    assert {"ix_deliveries_report_id", "ix_deliveries_recipient_sent_at", "ix_deliveries_status"} <= indexes


def test_concurrent_migrations_in_threads(store_url: str) -> None:
    def open_and_migrate(_: int) -> str:
        with open_store(store_url) as opened:
            migrate(opened)
            with opened.read() as conn:
                return str(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one())

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(open_and_migrate, range(4))) == [HEAD] * 4


def test_unique_constraint_holds(store: Store) -> None:
    row = {
        **KEY,
        "report_id": "weekly",
        "run_id": "r",
        "status": "sent",
        "attempts": 1,
        "created_at": T0,
        "updated_at": T0,
    }
    with store.write() as conn:
        conn.execute(insert(deliveries).values(row))
    with pytest.raises(StorageError, match="state store"), store.write() as conn:
        conn.execute(insert(deliveries).values({**row, "run_id": "other"}))
    with pytest.raises(StorageError), store.write() as conn:
        conn.execute(insert(deliveries).values({**row, "run_key": "k2", "status": "bogus"}))


def test_insert_if_absent_returns_the_typed_row_once(store: Store) -> None:
    row = {**KEY, "report_id": "weekly", "run_id": "r", "status": "pending", "attempts": 1}
    row |= {"secure_filters": {"sales": [[{"field": "region", "op": "=", "value": "EU"}]]}, "created_at": T0}
    with store.write() as conn:
        first = insert_if_absent(conn, deliveries, {**row, "updated_at": T0}, unique=tuple(KEY))
        again = insert_if_absent(conn, deliveries, {**row, "updated_at": T0, "run_id": "r2"}, unique=tuple(KEY))
    assert first is not None and again is None
    assert (first["run_id"], first["created_at"], first["secure_filters"]) == ("r", T0, row["secure_filters"])
    assert first["created_at"].tzinfo is not None, "read back through the column's type"


def test_the_ledgers_hot_statements_are_cacheable(store: Store) -> None:
    """SQLAlchemy compiles a statement without a cache key on every call (ON CONFLICT constructs have none)."""
    columns = ("run_key", "recipient", "format", "channel", "status", "created_at", "updated_at")
    claim_insert = _insert_or_nothing(store.engine.dialect, deliveries, columns, tuple(KEY))
    assert claim_insert._generate_cache_key() is not None
    assert _held_statement(("status", "updated_at"), True)._generate_cache_key() is not None


def test_sqlite_store_creates_its_folder_and_serialises_writers(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "bulletin.db"
    with open_store(f"sqlite:///{path}") as store:
        migrate(store)
        with store.read() as conn:
            pragmas = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "busy_timeout")]
            assert pragmas == ["wal", 30_000]
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            with store.write() as conn:
                conn.execute(select(1))  # the write transaction holds the write lock from its first statement
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()


def test_connection_failures_are_transient_and_hide_the_password() -> None:
    with pytest.raises(TransientError) as caught:
        open_store("postgresql://bulletin:s3cret-pw@127.0.0.1:1/bulletin?connect_timeout=2")
    assert "s3cret" not in str(caught.value)
    assert "bulletin:***@127.0.0.1:1" in str(caught.value)


@pytest.mark.parametrize("url", ["not a url", "nosuchdb://user:s3cret-pw@host/db", "mysql://user:s3cret-pw@host/db"])
def test_unusable_urls_are_config_errors_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    assert "s3cret" not in str(caught.value)


# --- claims --------------------------------------------------------------------------------------------------------


def test_claim_then_sent_then_already_sent(store: Store) -> None:
    first = take(store)
    assert first.outcome is ClaimOutcome.CLAIMED
    assert (first.row.status, first.row.attempts, first.row.claimed_by) == (LedgerStatus.PENDING, 1, "run-1")
    assert first.row.lease_expires_at == T0 + timedelta(seconds=60)
    send(store, first, now=T0 + timedelta(seconds=5))

    again = take(store, run_id="run-2", now=T0 + timedelta(hours=1))
    assert again.outcome is ClaimOutcome.ALREADY_SENT
    assert (again.row.sha256, again.row.uri, again.row.attempts) == (SHA, "s3://b/k.pdf", 1)
    assert again.row.sent_at == T0 + timedelta(seconds=5)
    assert again.row.lease_expires_at is None
    json.loads(again.model_dump_json())  # what `bulletin deliveries list --json` prints


def test_failed_delivery_is_reclaimed_with_one_more_attempt(store: Store) -> None:
    first = take(store)
    failed = mark_failed(store, first, error="SMTP 451 try later", now=T0)
    assert (failed.status, failed.last_error) == (LedgerStatus.FAILED, "SMTP 451 try later")

    retry = take(store, run_id="run-2", now=T0 + timedelta(seconds=1))
    assert retry.outcome is ClaimOutcome.CLAIMED
    assert (retry.row.attempts, retry.row.claimed_by, retry.row.run_id) == (2, "run-2", "run-2")
    send(store, retry)
    assert take(store, run_id="run-3").outcome is ClaimOutcome.ALREADY_SENT


def test_live_lease_is_in_progress_and_expired_lease_is_reclaimed(store: Store) -> None:
    crashed = take(store, lease=30)
    assert take(store, run_id="run-2", now=T0 + timedelta(seconds=29)).outcome is ClaimOutcome.IN_PROGRESS

    taken_over = take(store, run_id="run-2", now=T0 + timedelta(seconds=31))
    assert taken_over.outcome is ClaimOutcome.CLAIMED
    assert taken_over.row.attempts == 2

    # The crashed claimer comes back: it can no longer finish the row, whatever it did meanwhile.
    with pytest.raises(StorageError, match="no longer held"):
        send(store, crashed)
    with pytest.raises(StorageError, match="no longer held"):
        mark_failed(store, crashed, error="late", now=T0)
    send(store, taken_over)
    assert take(store, run_id="run-3").row.claimed_by == "run-2"


def test_only_a_claim_can_be_finished(store: Store) -> None:
    send(store, take(store))
    with pytest.raises(StorageError, match="not claimed"):
        send(store, take(store, run_id="run-2"))


def test_secure_filters_must_be_filters(store: Store) -> None:
    result = take(store)
    with pytest.raises(ConfigError, match="secure_filters") as caught:
        mark_sent(
            store,
            result,
            sha256=SHA,
            uri="u",
            bytes=1,
            rows=1,
            token_jti="j",
            secure_filters={"sales": "eyJhbGciOiJFZERTQSJ9.secret"},  # type: ignore[dict-item]
            now=T0,
        )
    assert "eyJ" not in str(caught.value)
    assert caught.value.__cause__ is None
    with pytest.raises(ConfigError, match="sha256"):
        mark_sent(store, result, sha256="x", uri="u", bytes=1, rows=1, token_jti=None, secure_filters={}, now=T0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"recipient": "a/b"}, "recipient"),
        ({"run_key": "no spaces"}, "run_key"),
        ({"now": datetime(2026, 1, 1)}, "now"),
    ],
)
def test_claim_rejects_bad_arguments(store: Store, change: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {**KEY, "report_id": "weekly", "run_id": "r", "lease_seconds": 60, "now": T0}
    with pytest.raises(ConfigError) as caught:
        claim(store, **{**arguments, **change})
    assert caught.value.field == field


# --- skips ---------------------------------------------------------------------------------------------------------


def skip(store: Store, now: datetime = T0, **extra: Any) -> Any:
    return mark_skipped(store, **KEY, report_id="weekly", run_id="run-9", reason="no rows", now=now, **extra)


def test_skip_is_recorded_once_and_blocks_later_claims(store: Store) -> None:
    first = skip(store)
    assert (first.status, first.last_error, first.attempts) == (LedgerStatus.SKIPPED, "no rows", 0)
    assert skip(store, now=T0 + timedelta(minutes=1)).updated_at == first.updated_at
    assert take(store).outcome is ClaimOutcome.ALREADY_SKIPPED


def test_skip_never_overrides_a_send_or_another_live_claim(store: Store) -> None:
    live = take(store)
    assert skip(store).status is LedgerStatus.PENDING
    send(store, live)
    assert skip(store).status is LedgerStatus.SENT


def test_claimer_may_skip_its_own_claim_as_unchanged(store: Store) -> None:
    mine = take(store)
    skipped = skip(store, claim=mine, sha256=SHA)
    assert (skipped.status, skipped.sha256) == (LedgerStatus.SKIPPED, SHA)
    with pytest.raises(StorageError, match="not granted"):
        skip(store, claim=take(store, run_id="run-2"))
    with pytest.raises(ConfigError, match="claim given"):
        mark_skipped(
            store, **{**KEY, "recipient": "bob"}, report_id="weekly", run_id="r", reason="x", now=T0, claim=mine
        )


# --- concurrency ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [None, "failed"])
def test_eight_threads_claim_once(store: Store, existing: str | None) -> None:
    if existing == "failed":
        mark_failed(store, take(store, run_id="earlier"), error="boom", now=T0)
    start = threading.Barrier(8)

    def race(index: int) -> ClaimOutcome:
        start.wait(timeout=30)
        return take(store, run_id=f"thread-{index}", now=T0 + timedelta(seconds=1)).outcome

    with ThreadPoolExecutor(8) as pool:
        outcomes = Counter(pool.map(race, range(8)))
    assert outcomes == {ClaimOutcome.CLAIMED: 1, ClaimOutcome.IN_PROGRESS: 7}


def _migrate_and_claim_in_child(url: str, start: Any, results: Any, index: int) -> None:
    """Runs in a spawned process: its own interpreter, engine and connections."""
    with open_store(url) as store:
        migrate(store)  # the store is fresh: the processes also race to create the schema
        start.wait(timeout=60)
        results.put(take(store, run_id=f"process-{index}").outcome.value)


def test_separate_processes_migrate_and_claim_once(tmp_path: Path) -> None:
    """SQLite only: its locks are per file, so this is the race threads of one process cannot show."""
    url = f"sqlite:///{tmp_path / 'bulletin.db'}"
    # A fresh server process forks the children (nothing of the parent's engine or locks is inherited), and importing
    # the store once there keeps the test at about a second on two cores, rather than one import per child.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    start, results = context.Barrier(3), context.Queue()
    children = [context.Process(target=_migrate_and_claim_in_child, args=(url, start, results, i)) for i in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=90)
    assert [child.exitcode for child in children] == [0, 0, 0]
    assert Counter(results.get(timeout=5) for _ in children) == {"CLAIMED": 1, "IN_PROGRESS": 2}


# --- run keys ------------------------------------------------------------------------------------------------------


def test_scheduled_run_key_is_report_and_utc_slot() -> None:
    slot = datetime(2026, 11, 2, 2, 0, tzinfo=ZoneInfo("America/New_York"))
    assert scheduled_run_key("weekly-regional-sales", slot) == "weekly-regional-sales@2026-11-02T07:00:00Z"
    assert scheduled_run_key("weekly-regional-sales", slot.astimezone(UTC)) == scheduled_run_key(
        "weekly-regional-sales", slot
    )
    with pytest.raises(ConfigError, match="timezone-aware"):
        scheduled_run_key("weekly", datetime(2026, 11, 2, 7))
    with pytest.raises(ConfigError, match="report_id"):
        scheduled_run_key("../etc", T0)


def test_two_schedules_of_one_slot_with_their_own_parameters_are_two_runs() -> None:
    plain = scheduled_run_key("sales", T0)
    emea = scheduled_run_key("sales", T0, {"region": "EMEA", "as_of": "2026-11-01"})
    apac = scheduled_run_key("sales", T0, {"region": "APAC", "as_of": "2026-11-01"})
    assert len({plain, emea, apac}) == 3
    assert emea.startswith(plain + "+") and len(emea) == len(plain) + 11
    assert scheduled_run_key("sales", T0, {"as_of": "2026-11-01", "region": "EMEA"}) == emea  # order-free
    assert scheduled_run_key("sales", T0, {}) == plain


def test_adhoc_run_keys_are_fresh_and_valid() -> None:
    keys = {adhoc_run_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(check_run_key(key).startswith("adhoc-") and len(key) == 38 for key in keys)


@pytest.mark.parametrize("key", ["", "-leading", "has space", "semi;colon", "slash/es", "x" * 201, "é"])
def test_check_run_key_rejects(key: str) -> None:
    with pytest.raises(ConfigError, match="run key"):
        check_run_key(key)


def test_check_run_key_accepts_what_operators_type() -> None:
    for key in ("rerun-2026-11-02", "sales@2026-11-02T07:00:00Z", "ticket_123.b+1", "x" * 200):
        assert check_run_key(key) == key


# --- reading -------------------------------------------------------------------------------------------------------


def _populate(store: Store) -> None:
    """alice: sent twice (weekly), failed once (daily); bob: sent once, skipped once."""
    send(store, take(store, run_key="weekly@1"), now=T0)
    send(
        store, take(store, run_key="weekly@2", now=T0 + timedelta(days=7)), now=T0 + timedelta(days=7), sha256="cd" * 32
    )
    daily = claim(store, **{**KEY, "run_key": "daily@1"}, report_id="daily", run_id="r", lease_seconds=9, now=T0)
    mark_failed(store, daily, error="timeout", now=T0 + timedelta(days=1))
    send(
        store,
        take(store, run_key="weekly@1", recipient="bob", now=T0 + timedelta(hours=1)),
        now=T0 + timedelta(hours=1),
    )
    mark_skipped(
        store,
        **{**KEY, "run_key": "weekly@2", "recipient": "bob"},
        report_id="weekly",
        run_id="r",
        reason="no rows",
        now=T0 + timedelta(days=8),
    )


def test_list_filters_and_orders_newest_first(store: Store) -> None:
    _populate(store)
    everything = list_deliveries(store)
    assert [(r.run_key, r.recipient) for r in everything] == [
        ("weekly@2", "bob"),
        ("weekly@2", "alice"),
        ("daily@1", "alice"),
        ("weekly@1", "bob"),
        ("weekly@1", "alice"),
    ]
    assert {r.run_key for r in list_deliveries(store, report_id="daily")} == {"daily@1"}
    assert len(list_deliveries(store, recipient="alice")) == 3
    assert [r.recipient for r in list_deliveries(store, status="skipped")] == ["bob"]
    assert len(list_deliveries(store, status=LedgerStatus.SENT, recipient="alice", report_id="weekly")) == 2
    assert len(list_deliveries(store, limit=2)) == 2
    assert all(r.created_at.tzinfo is UTC and r.updated_at.tzinfo is UTC for r in everything)
    with pytest.raises(ConfigError, match="one of pending, sent, failed, skipped"):
        list_deliveries(store, status="delivered")


def test_audit_says_which_scope_went_to_whom_when_and_as_which_file(store: Store) -> None:
    _populate(store)
    entries = audit(store, "alice")
    assert [(e.run_key, e.when, e.sha256) for e in entries] == [
        ("weekly@2", T0 + timedelta(days=7), "cd" * 32),
        ("weekly@1", T0, SHA),
    ]
    first = entries[0]
    assert (first.report_id, first.format, first.channel, first.uri, first.token_jti) == (
        "weekly",
        "pdf",
        "email",
        "s3://b/k.pdf",
        "jti-1",
    )
    assert first.secure_filters == SCOPE
    assert json.loads(first.model_dump_json())["secure_filters"] == {
        "sales": [[{"field": "region", "op": "=", "value": "EU"}]]
    }
    assert [e.run_key for e in audit(store, "bob")] == ["weekly@1"]
    assert audit(store, "nobody") == []


def test_last_sent_is_the_newest_send_of_that_report_format_and_channel(store: Store) -> None:
    assert last_sent(store, report_id="weekly", recipient="alice", format="pdf", channel="email") is None
    _populate(store)
    newest = last_sent(store, report_id="weekly", recipient="alice", format="pdf", channel="email")
    assert newest is not None
    assert (newest.run_key, newest.sha256) == ("weekly@2", "cd" * 32)
    assert last_sent(store, report_id="daily", recipient="alice", format="pdf", channel="email") is None
    assert last_sent(store, report_id="weekly", recipient="alice", format="csv", channel="email") is None
