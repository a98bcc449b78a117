"""Ledger benchmark: a lane's ledger writes per delivery, one by one (before) and batched (tasks/delivery/marks.py).

    .venv/bin/python -m bench.bench_ledger                  # 2,000 deliveries per case
    .venv/bin/python -m bench.bench_ledger --quick          # 300

Only the ledger: no query, render or upload, so the figures are what the ledger costs a delivery, apart from the
rest. Each case writes what one lane writes for N deliveries of one file to S3, on a fresh SQLite file on this
machine's disk (WAL, as the state store opens it), in this process:

- one by one: claim, storing intent (``mark_storing``), sent mark: three transactions per delivery (before);
- batched: the lane's recipients claimed ``--chunk`` at a time, with the kept sent marks, and one storing intent
  per file (after).

Each with ``synchronous=FULL`` (SQLite's default, and the state store's) and ``NORMAL`` (measured, not used: see
docs/delivery.md, "Power loss"). Reports wall and CPU milliseconds per delivery and the ratio to the first case.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bulletin.store import (
    ClaimRequest,
    SentMark,
    Store,
    claim,
    mark_sent,
    mark_storing,
    migrate,
    open_store,
    sent_mark,
    write_batch,
)

SHA = "ab" * 32
LEASE = 90.0
FILE: dict[str, Any] = {"sha256": SHA, "bytes": 10_000, "rows": 1_000, "token_jti": "jti", "secure_filters": {}}


def request(n: int) -> ClaimRequest:
    return ClaimRequest(
        run_key="bench@1", report_id="bench", run_id="benchrun0001", recipient=f"r-{n:05d}", format="xlsx", channel="s3"
    )


def one_by_one(store: Store, count: int, chunk: int) -> None:
    del chunk
    for n in range(count):
        now = datetime.now(UTC)
        held = claim(store, **vars(request(n)), lease_seconds=LEASE, now=now)
        uri = f"s3://bench/r-{n:05d}.xlsx"
        mark_storing(store, held, uri=uri, now=now, **FILE)
        mark_sent(store, held, uri=uri, now=now, **FILE)


def batched(store: Store, count: int, chunk: int) -> None:
    kept: list[SentMark] = []
    for start in range(0, count, chunk):
        numbers = range(start, min(count, start + chunk))
        claims = write_batch(
            store, sent=kept, claims=[request(n) for n in numbers], lease_seconds=LEASE, now=datetime.now(UTC)
        ).claims
        kept = []
        for n, held in zip(numbers, claims, strict=True):
            uri = f"s3://bench/r-{n:05d}.xlsx"
            mark_storing(store, held, uri=uri, now=datetime.now(UTC), **FILE)
            kept.append(sent_mark(held, uri=uri, **FILE))
    write_batch(store, sent=kept, lease_seconds=LEASE, now=datetime.now(UTC))


def measure(
    folder: Path, name: str, synchronous: str, work: Callable[[Store, int, int], None], args: argparse.Namespace
) -> tuple[float, float]:
    store = open_store(f"sqlite:///{folder / f'{name}-{synchronous}.db'}")

    @event.listens_for(store.engine, "connect")
    def _sync(dbapi_connection: object, _record: object) -> None:
        dbapi_connection.execute(f"PRAGMA synchronous = {synchronous}")  # type: ignore[attr-defined]

    store.engine.dispose()  # reconnect with the pragma
    migrate(store)
    cpu0, wall0 = _cpu(), time.perf_counter()
    work(store, args.deliveries, args.chunk)
    wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
    store.close()
    return wall * 1000 / args.deliveries, cpu * 1000 / args.deliveries


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--deliveries", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=2, help="recipients a lane claims at once (its AHEAD)")
    args = parser.parse_args()
    args.deliveries = args.deliveries or (300 if args.quick else 2_000)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ledger-", dir=Path(__file__).parent) as folder:
        for synchronous in ("FULL", "NORMAL"):
            for name, work in (("one by one", one_by_one), (f"batched ({args.chunk} claimed at once)", batched)):
                wall, cpu = measure(Path(folder), name.split()[0], synchronous, work, args)
                rows.append((name, synchronous, wall, cpu))
    base = rows[0][2]
    print(f"\n{args.deliveries:,} deliveries per case; SQLite file on this machine's disk\n")
    print("| writes | synchronous | wall ms / delivery | CPU ms / delivery | vs one by one, FULL |")
    print("|---|---|---:|---:|---:|")
    for name, synchronous, wall, cpu in rows:
        print(f"| {name} | {synchronous} | {wall:.2f} | {cpu:.2f} | {base / wall:.1f}x |")


if __name__ == "__main__":
    main()
