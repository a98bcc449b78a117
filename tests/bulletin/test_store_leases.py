"""Ledger leases: a live claimer renews its short lease; a dead one's rows come back when the lease runs out.

On a real SQLite file and (when configured) a real PostgreSQL. The crash of a real process killed with SIGKILL, with
its renewer, is in tests/tasks/delivery/test_leases.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bulletin.errors import ClaimLostError, ConfigError, StorageError
from bulletin.store import (
    ClaimOutcome,
    ClaimResult,
    LedgerStatus,
    Store,
    claim,
    mark_found,
    mark_sent,
    mark_storing,
    renew,
)

T0 = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
KEY: dict[str, Any] = {"run_key": "weekly@2026-11-02T07:00:00Z", "format": "pdf", "channel": "s3"}
SHA = "ab" * 32


def take(store: Store, run_id: str, now: datetime, *, recipient: str = "alice", lease: float = 60) -> ClaimResult:
    return claim(store, **KEY, recipient=recipient, report_id="weekly", run_id=run_id, lease_seconds=lease, now=now)


def send(store: Store, held: ClaimResult, now: datetime) -> None:
    mark_sent(store, held, sha256=SHA, uri="s3://b/k.pdf", bytes=1, rows=1, token_jti=None, secure_filters={}, now=now)


def test_a_renewed_lease_outlives_its_first_expiry(store: Store) -> None:
    held = take(store, "run-1", T0)
    assert renew(store, held, lease_seconds=60, now=T0 + timedelta(seconds=50))
    # Past the first lease (60 s) but inside the renewed one (110 s): still this claim's.
    assert take(store, "run-2", T0 + timedelta(seconds=100)).outcome is ClaimOutcome.IN_PROGRESS
    send(store, held, T0 + timedelta(seconds=105))
    assert take(store, "run-2", T0 + timedelta(seconds=200)).outcome is ClaimOutcome.ALREADY_SENT


def test_a_claim_taken_over_cannot_renew_nor_finish(store: Store) -> None:
    held = take(store, "run-1", T0)
    newer = take(store, "run-2", T0 + timedelta(seconds=61))
    assert newer.outcome is ClaimOutcome.CLAIMED
    assert not renew(store, held, lease_seconds=60, now=T0 + timedelta(seconds=62))
    with pytest.raises(ClaimLostError, match="no longer held"):
        send(store, held, T0 + timedelta(seconds=63))
    # The renewal attempt changed nothing of the newer claim's row.
    assert take(store, "run-3", T0 + timedelta(seconds=120)).outcome is ClaimOutcome.IN_PROGRESS
    assert take(store, "run-3", T0 + timedelta(seconds=122)).row.attempts == 3


def test_a_lapsed_lease_nobody_took_is_still_renewable(store: Store) -> None:
    held = take(store, "run-1", T0)
    assert renew(store, held, lease_seconds=60, now=T0 + timedelta(seconds=90))
    assert take(store, "run-2", T0 + timedelta(seconds=120)).outcome is ClaimOutcome.IN_PROGRESS


def test_renewing_a_row_this_claim_finished_changes_nothing(store: Store) -> None:
    held = take(store, "run-1", T0)
    send(store, held, T0 + timedelta(seconds=1))
    assert renew(store, held, lease_seconds=60, now=T0 + timedelta(seconds=2))
    assert take(store, "run-2", T0 + timedelta(seconds=3)).row.lease_expires_at is None


def test_renew_rejects_what_is_not_a_claim_and_bad_leases(store: Store) -> None:
    held = take(store, "run-1", T0)
    with pytest.raises(StorageError, match="not claimed"):
        renew(store, take(store, "run-2", T0), lease_seconds=60, now=T0)
    with pytest.raises(ConfigError, match="lease_seconds"):
        renew(store, held, lease_seconds=0, now=T0)


def note_storing(store: Store, held: ClaimResult, now: datetime, uri: str = "s3://b/dead.pdf") -> bool:
    return mark_storing(
        store, held, sha256=SHA, uri=uri, bytes=7, rows=3, token_jti="jti-dead", secure_filters={}, now=now
    )


def test_the_takeover_claim_carries_the_file_the_dead_claim_was_storing(store: Store) -> None:
    dead = take(store, "run-1", T0)
    assert note_storing(store, dead, T0 + timedelta(seconds=1))
    taken = take(store, "run-2", T0 + timedelta(seconds=61))
    assert (taken.outcome, taken.row.status) == (ClaimOutcome.CLAIMED, LedgerStatus.PENDING)
    assert (taken.row.uri, taken.row.sha256, taken.row.token_jti) == ("s3://b/dead.pdf", SHA, "jti-dead")
    found = mark_found(store, taken, now=T0 + timedelta(seconds=62))
    assert (found.status, found.claimed_by, found.uri, found.bytes, found.rows) == (
        LedgerStatus.SENT,
        "run-2",
        "s3://b/dead.pdf",
        7,
        3,
    )
    # The dead claimer can write nothing more on the row.
    assert not note_storing(store, dead, T0 + timedelta(seconds=63), uri="s3://b/other.pdf")
    assert take(store, "run-3", T0 + timedelta(seconds=64)).row.uri == "s3://b/dead.pdf"


def test_nothing_found_without_a_recorded_file(store: Store) -> None:
    with pytest.raises(StorageError, match="no stored file"):
        mark_found(store, take(store, "run-1", T0), now=T0)
