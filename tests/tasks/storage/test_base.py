from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bulletin.errors import StorageError
from tasks.storage import LocalBucket, build_key, check_key, sha256_file

WHEN = datetime(2026, 11, 2, 7, 0, 5, tzinfo=UTC)


def key(**overrides: str) -> str:
    args = {
        "prefix": "reports",
        "report_id": "weekly",
        "recipient_ref": "rm-north",
        "run_id": "abc123",
        "extension": "pdf",
    }
    args.update(overrides)
    return build_key(when=WHEN, **args)


def test_key_layout() -> None:
    assert key() == "reports/weekly/2026/11/02/rm-north/weekly-20261102T070005Z-abc123.pdf"


def test_key_uses_utc_for_aware_times() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 11, 2, 2, 0, 5, tzinfo=ZoneInfo("America/New_York"))
    assert "2026/11/02" in build_key(
        prefix="p", report_id="r", recipient_ref="x", run_id="1", extension="csv", when=local
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("recipient_ref", "../etc"),
        ("recipient_ref", ".."),
        ("recipient_ref", "a/b"),
        ("recipient_ref", "a\\b"),
        ("recipient_ref", "a\nb"),
        ("recipient_ref", "a\x00b"),
        ("recipient_ref", ""),
        ("report_id", "/abs"),
        ("run_id", "x y"),
        ("extension", "pdf/../x"),
        ("prefix", "ok/../up"),
    ],
)
def test_unsafe_segments_are_refused(field: str, value: str) -> None:
    with pytest.raises(StorageError):
        key(**{field: value})


def test_key_length_is_capped() -> None:
    with pytest.raises(StorageError, match="1024"):
        check_key("/".join(["a" * 200] * 6))
    with pytest.raises(StorageError):
        check_key("/leading")


def test_local_bucket_never_overwrites(tmp_path: Path) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    first, second = tmp_path / "one.pdf", tmp_path / "two.pdf"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    a = bucket.put(key(), first, content_type="application/pdf", metadata={})
    b = bucket.put(key(), second, content_type="application/pdf", metadata={})
    assert a.key != b.key
    assert b.key.endswith("-1.pdf")
    assert bucket.path_for(a.key).read_bytes() == b"first"
    assert bucket.path_for(b.key).read_bytes() == b"second"
    assert a.sha256 == sha256_file(first)
    assert a.uri.startswith("file://")
    assert not list((tmp_path / "bucket").rglob(".upload-*"))


def test_concurrent_writers_each_get_their_own_key(tmp_path: Path) -> None:
    bucket = LocalBucket(tmp_path / "bucket")
    sources = []
    for i in range(8):
        src = tmp_path / f"{i}.csv"
        src.write_bytes(f"payload {i}".encode())
        sources.append(src)
    results: list[str] = []
    lock = threading.Lock()

    def put(src: Path) -> None:
        stored = bucket.put(key(extension="csv"), src, content_type="text/csv", metadata={})
        with lock:
            results.append(stored.key)

    threads = [threading.Thread(target=put, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 8
    contents = sorted(bucket.path_for(k).read_bytes() for k in results)
    assert contents == sorted(s.read_bytes() for s in sources)
