"""Counting a scale run from the bucket and the ledger (bench/scale_count.py): the part of ``make scale-demo`` that
decides its verdict; and its one line when PostgreSQL is missing (bench/scale_cluster.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.scale_cluster import INSTALL_HINT, MissingPostgres, postgres_bin
from bench.scale_count import LedgerRow, Tally, bucket_files, tally

AUDIENCE = ["r-1", "r-2", "r-3"]


def sent(recipient: str, run_id: str = "run-a") -> LedgerRow:
    return LedgerRow(recipient, "sent", run_id, 0.0)


def test_one_file_and_one_sent_row_each_is_all_delivered() -> None:
    files = Counter({"r-1": 1, "r-2": 1, "r-3": 1})
    assert tally(AUDIENCE, files, [sent(r) for r in AUDIENCE]) == Tally(3, 0, 0, 0, 0)


def test_a_second_file_for_one_recipient_is_a_duplicate() -> None:
    files = Counter({"r-1": 2, "r-2": 1, "r-3": 1})
    assert tally(AUDIENCE, files, [sent(r) for r in AUDIENCE]).duplicates == 1


def test_a_second_sent_row_for_one_recipient_is_a_duplicate() -> None:
    files = Counter({"r-1": 1, "r-2": 1, "r-3": 1})
    rows = [sent(r) for r in AUDIENCE] + [sent("r-2", "run-b")]
    assert tally(AUDIENCE, files, rows).duplicates == 1


def test_a_sent_row_without_its_file_or_a_file_without_a_row_is_missing() -> None:
    files = Counter({"r-1": 1, "r-3": 1})
    counted = tally(AUDIENCE, files, [sent("r-1"), sent("r-2")])
    assert (counted.delivered, counted.missing, counted.duplicates) == (1, 2, 0)


def test_a_failed_delivery_is_failed_and_missing() -> None:
    files = Counter({"r-1": 1, "r-2": 1})
    rows = [sent("r-1"), sent("r-2"), LedgerRow("r-3", "failed", "run-a", None)]
    assert tally(AUDIENCE, files, rows) == Tally(delivered=2, failed=1, duplicates=0, missing=1, strays=0)


def test_a_file_for_someone_outside_the_audience_counts_as_a_duplicate() -> None:
    files = Counter({"r-1": 1, "r-2": 1, "r-3": 1, "r-9": 1})
    counted = tally(AUDIENCE, files, [sent(r) for r in AUDIENCE])
    assert (counted.strays, counted.duplicates) == (1, 1)


def test_the_bucket_is_counted_per_recipient_folder_without_half_written_uploads(tmp_path: Path) -> None:
    day = tmp_path / "reports" / "scale-demo" / "2026" / "12" / "06"
    for recipient, names in {"r-1": ["a.csv"], "r-2": ["a.csv", "b.csv", ".upload-x1"]}.items():
        (day / recipient).mkdir(parents=True)
        for name in names:
            (day / recipient / name).write_text("x")
    (tmp_path / "reports" / "other" / "2026" / "12" / "06" / "r-3").mkdir(parents=True)
    (tmp_path / "reports" / "other" / "2026" / "12" / "06" / "r-3" / "a.csv").write_text("x")
    assert bucket_files(tmp_path, "scale-demo") == (Counter({"r-1": 1, "r-2": 2}), 1)


def test_without_postgresql_the_hint_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(MissingPostgres) as raised:
        postgres_bin(tmp_path)
    assert str(raised.value) == INSTALL_HINT and "apt-get install postgresql" in INSTALL_HINT
