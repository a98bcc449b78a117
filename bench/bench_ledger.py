"""Ledger benchmark: a lane's ledger writes per delivery, one by one (before) and batched (tasks/delivery/marks.py).

    .venv/bin/python -m bench.bench_ledger                  # 2,000 deliveries per case
    .venv/bin/python -m bench.bench_ledger --quick          # 300

Only the ledger: no query, render or upload, so the figures are what the ledger costs a delivery, apart from the
rest. Each case writes what one lane writes for N deliveries of one file to S3, on a fresh SQLite file on this
machine's disk (WAL, as the state store opens it), in this process:

- one by one: claim, storing intent (``mark_storing``), sent mark: three transactions per delivery, each with its
  fsync (before);
- batched: the lane's recipients claimed ``--chunk`` at a time, with the kept sent marks, and one storing intent
  per file; every commit with its fsync;
- batched, as the lanes write now: the claims and kept marks committed without fsync (``durable=False``), and each
  chunk's storing intents in one commit with its fsync (``LaneLedger.announce``);
- and, measured but not used (docs/delivery.md, "Power loss"), every commit without fsync (``synchronous=NORMAL``
  throughout), one by one and batched.

Reports transactions and fsync'd commits per delivery (exact), wall and CPU milliseconds per delivery (the best of
``--rounds`` interleaved rounds: on a shared machine the load moves) and the wall ratio to the first case.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

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
    storing_intent,
    write_batch,
)

SHA = "ab" * 32
LEASE = 90.0
Work = Callable[[Store, int, int], None]
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


def batched(store: Store, count: int, chunk: int, *, durable: bool = True) -> None:
    kept: list[SentMark] = []
    for start in range(0, count, chunk):
        numbers = range(start, min(count, start + chunk))
        asked = [request(n) for n in numbers]
        claims = write_batch(
            store, sent=kept, claims=asked, lease_seconds=LEASE, now=datetime.now(UTC), durable=durable
        ).claims
        kept = []
        for n, held in zip(numbers, claims, strict=True):
            uri = f"s3://bench/r-{n:05d}.xlsx"
            mark_storing(store, held, uri=uri, now=datetime.now(UTC), **FILE)
            kept.append(sent_mark(held, uri=uri, **FILE))
    write_batch(store, sent=kept, lease_seconds=LEASE, now=datetime.now(UTC), durable=durable)


def batched_as_lanes(store: Store, count: int, chunk: int) -> None:
    """What a lane writes (tasks/delivery/marks.py): the chunk's claims with the kept marks, without fsync; the
    chunk's storing intents in one fsync'd commit (``LaneLedger.announce``); the marks kept for the next claim."""
    kept: list[SentMark] = []
    for start in range(0, count, chunk):
        numbers = range(start, min(count, start + chunk))
        asked = [request(n) for n in numbers]
        now = datetime.now(UTC)
        claims = write_batch(store, sent=kept, claims=asked, lease_seconds=LEASE, now=now, durable=False).claims
        intents = [
            storing_intent(held, uri=f"s3://bench/r-{n:05d}.xlsx", **FILE)
            for n, held in zip(numbers, claims, strict=True)
        ]
        write_batch(store, intents=intents, lease_seconds=LEASE, now=datetime.now(UTC))
        kept = intents  # a sent mark carries the same claim and file values as its intent
    write_batch(store, sent=kept, lease_seconds=LEASE, now=datetime.now(UTC), durable=False)


@dataclass(frozen=True)
class CountingStore(Store):
    """Counts write transactions, and those committed with an fsync; ``lazy``: none with one (``NORMAL`` throughout,
    measured, not used)."""

    lazy: bool = False
    commits: list[int] = field(default_factory=lambda: [0, 0])  # [transactions, fsync'd]

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Connection]:
        durable = durable and not self.lazy
        self.commits[0] += 1
        self.commits[1] += durable
        with super().write(durable=durable) as conn:
            yield conn


def measure(folder: Path, name: str, work: Work, lazy: bool, deliveries: int, chunk: int) -> list[float]:
    """Wall and CPU ms per delivery, transactions and fsync'd commits per delivery."""
    opened = open_store(f"sqlite:///{folder / f'{name}.db'}")
    store = CountingStore(opened.engine, opened.sessions, opened.safe_url, lazy=lazy)
    migrate(store)
    store.commits[:] = [0, 0]
    cpu0, wall0 = _cpu(), time.perf_counter()
    work(store, deliveries, chunk)
    wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
    store.close()
    return [wall * 1000 / deliveries, cpu * 1000 / deliveries, *(n / deliveries for n in store.commits)]


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--deliveries", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=2, help="recipients a lane claims at once (its AHEAD)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each case keeps its best")
    args = parser.parse_args()
    args.deliveries = args.deliveries or (300 if args.quick else 2_000)
    batched_name = f"batched ({args.chunk} claimed at once)"
    cases: list[tuple[str, str, Work, bool]] = [
        ("one by one", "every commit", one_by_one, False),
        (batched_name, "every commit", batched, False),
        (batched_name, "storing intents only (the lanes now)", batched_as_lanes, False),
        ("one by one", "none (synchronous=NORMAL; not used)", one_by_one, True),
        (batched_name, "none (synchronous=NORMAL; not used)", batched, True),
    ]
    # Rounds, the cases interleaved: on a shared machine the load moves; each case keeps its best round.
    best: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ledger-", dir=Path(__file__).parent) as folder:
        for round_no in range(args.rounds):
            for number, (_name, _fsync, work, lazy) in enumerate(cases):
                got = measure(Path(folder), f"case{number}-{round_no}", work, lazy, args.deliveries, args.chunk)
                best[number] = (
                    got if number not in best else [min(a, b) for a, b in zip(best[number], got, strict=True)]
                )
    base = best[0][0]
    print(f"\n{args.deliveries:,} deliveries per case, best of {args.rounds} interleaved rounds; SQLite file on disk\n")
    print(
        "| writes | fsync at commit | transactions / delivery | fsyncs / delivery | wall ms | CPU ms | vs the first |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for number, (name, fsync, _work, _lazy) in enumerate(cases):
        wall, cpu, commits, synced = best[number]
        print(f"| {name} | {fsync} | {commits:.2f} | {synced:.2f} | {wall:.2f} | {cpu:.2f} | {base / wall:.1f}x |")


if __name__ == "__main__":
    main()
