"""A sharded run's arithmetic and its manifest read back from a real ledger (SQLite), whatever its shards did.

The flow runs themselves, on real workers, are tested in tests/flows/test_workers_sharded.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bulletin.models import DeliveryStatus, Recipient
from bulletin.store import (
    ClaimResult,
    Store,
    claim,
    mark_failed,
    mark_sent,
    mark_skipped,
    migrate,
    open_store,
    run_rows,
)
from tasks.delivery.shards import (
    NEVER_REACHED,
    claims_lapse_at,
    deliveries_from_ledger,
    split_audience,
    unfinished,
)

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
RUN, OTHER_RUN, KEY = "run-2", "run-1", "adhoc-run"
SHA = "a" * 64
SCOPE = {"orders": [[{"field": "account_id", "op": "=", "value": "ACC-0001"}]]}


def people(count: int) -> list[Recipient]:
    return [Recipient(ref=f"r{n:02d}", email=f"r{n:02d}@example.com", org="acme") for n in range(count)]


@pytest.mark.parametrize(
    ("count", "size", "sizes"),
    [(10, 4, [4, 3, 3]), (12, 4, [4, 4, 4]), (3, 10, [3]), (0, 5, [0]), (10_000, 2_000, [2_000] * 5)],
)
def test_an_audience_is_cut_into_contiguous_shards_whose_sizes_differ_by_one_at_most(
    count: int, size: int, sizes: list[int]
) -> None:
    audience = people(count) if count < 100 else [Recipient(ref=f"r{n}", email="x@example.com") for n in range(count)]
    shards = split_audience(audience, size)
    assert [len(s) for s in shards] == sizes
    assert [r for shard in shards for r in shard] == audience
    with pytest.raises(ValueError, match="at least 1"):
        split_audience(audience, 0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        migrate(opened)
        yield opened


def _claim(store: Store, ref: str, channel: str = "s3", *, run_id: str = RUN, at: datetime = NOW) -> ClaimResult:
    return claim(
        store,
        run_key=KEY,
        report_id="r",
        run_id=run_id,
        recipient=ref,
        format="csv",
        channel=channel,
        lease_seconds=60,
        now=at,
    )


def _sent(store: Store, ref: str, channel: str = "s3", *, run_id: str = RUN) -> None:
    c = _claim(store, ref, channel, run_id=run_id)
    mark_sent(
        store,
        c,
        sha256=SHA,
        uri=f"file:///bucket/{ref}.csv",
        bytes=10,
        rows=2,
        token_jti=f"jti-{ref}",
        secure_filters=SCOPE,  # type: ignore[arg-type]
        now=NOW,
    )


def test_the_manifest_says_per_recipient_what_the_ledger_holds_whichever_shard_wrote_it(store: Store) -> None:
    r = people(6)
    _sent(store, r[0].ref)  # sent by this run (some shard of it)
    _sent(store, r[1].ref, run_id=OTHER_RUN)  # sent by an earlier run of the same key
    _sent(store, r[2].ref)
    mark_failed(store, _claim(store, r[2].ref, "email"), error="550 mailbox unavailable", now=NOW)
    mark_skipped(
        store,
        run_key=KEY,
        report_id="r",
        run_id=RUN,
        recipient=r[3].ref,
        format="csv",
        channel="s3",
        reason="no rows: skip_if_empty",
        now=NOW,
    )
    _claim(store, r[4].ref)  # claimed by a shard that died: still pending
    # r[5]: its shard never reached it

    deliveries = deliveries_from_ledger(run_rows(store, KEY), r, RUN)

    assert [d.recipient for d in deliveries] == [p.ref for p in r]
    by = {d.recipient: d for d in deliveries}
    assert by["r00"].status is DeliveryStatus.DELIVERED and by["r00"].artifacts[0].outcome == "sent"
    assert by["r00"].token_id == "jti-r00" and by["r00"].secure_filters["orders"][0][0].value == "ACC-0001"
    assert by["r00"].artifacts[0].uri == "file:///bucket/r00.csv" and by["r00"].artifacts[0].sha256 == SHA
    assert by["r01"].artifacts[0].outcome == "already_sent" and OTHER_RUN in (by["r01"].artifacts[0].note or "")
    assert by["r02"].status is DeliveryStatus.PARTIAL
    assert {a.channel: a.outcome for a in by["r02"].artifacts} == {"s3": "sent", "email": "failed"}
    assert by["r02"].error == "email: 550 mailbox unavailable"
    assert [a.uri for a in by["r02"].artifacts if a.outcome == "failed"] == [""]
    assert by["r03"].status is DeliveryStatus.SKIPPED and by["r03"].artifacts[0].note == "no rows: skip_if_empty"
    assert by["r04"].artifacts[0].outcome == "in_progress"
    assert by["r05"].status is DeliveryStatus.FAILED and by["r05"].error == NEVER_REACHED
    assert all(d.org == "acme" for d in deliveries)


def test_a_shard_is_unfinished_while_a_recipient_has_no_row_or_a_claim_left_pending(store: Store) -> None:
    r = people(4)
    _sent(store, r[0].ref)
    _claim(store, r[1].ref)
    mark_failed(store, _claim(store, r[2].ref), error="boom", now=NOW)
    rows = run_rows(store, KEY)

    # A failed row is finished: the shard decided it; a retry of the whole run key may try it again.
    assert unfinished(rows, r) == ["r01", "r03"]
    assert unfinished(rows, r[:1]) == []
    assert claims_lapse_at(rows, ["r01", "r03"]) == NOW + timedelta(seconds=60)
    assert claims_lapse_at(rows, ["r00", "r02"]) is None
