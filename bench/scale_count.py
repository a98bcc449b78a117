"""Counting a scale run from what it left behind, not from what it says about itself.

Two witnesses: the bucket folder (one file per recipient is expected: the scale report has one format and one
channel) and the delivery ledger (one ``sent`` row per recipient). ``tally`` is pure; ``bucket_files`` and
``ledger_rows`` read the two witnesses.

- delivered: recipients with a file AND a ``sent`` row;
- duplicates: copies beyond the first, by the worse witness (two files, or two ``sent`` rows, for one recipient),
  plus files for anyone outside the audience;
- missing: recipients without a file OR without a ``sent`` row (a ``sent`` row whose file is gone is not delivered);
- failed: recipients not delivered whose ledger row says ``failed`` (missing counts them too).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: What the local bucket's writer names its half-written files (tasks/storage/base.py): a kill can leave one.
UPLOAD_PREFIX = ".upload-"


@dataclass(frozen=True)
class Tally:
    delivered: int
    failed: int
    duplicates: int
    missing: int
    strays: int  # files or rows for recipients outside the audience (counted in duplicates too)


@dataclass(frozen=True)
class LedgerRow:
    recipient: str
    status: str
    run_id: str
    sent_at: float | None  # seconds since the epoch


def tally(recipients: Iterable[str], files: Mapping[str, int], rows: Iterable[LedgerRow]) -> Tally:
    """Delivered, failed, duplicates and missing over ``recipients`` from the bucket's files per recipient and the
    ledger's rows."""
    audience = set(recipients)
    sent = Counter(row.recipient for row in rows if row.status == "sent")
    failed_rows = {row.recipient for row in rows if row.status == "failed"}
    delivered = {r for r in audience if files.get(r, 0) >= 1 and sent.get(r, 0) >= 1}
    extra = sum(max(files.get(r, 0), sent.get(r, 0), 1) - 1 for r in audience)
    strays = sum(n for r, n in files.items() if r not in audience) + sum(
        n for r, n in sent.items() if r not in audience
    )
    return Tally(
        delivered=len(delivered),
        failed=len((failed_rows & audience) - delivered),
        duplicates=extra + strays,
        missing=len(audience - delivered),
        strays=strays,
    )


def bucket_files(bucket: Path, report_id: str) -> tuple[Counter[str], int]:
    """Files per recipient of ``report_id`` in the local bucket (keys ``<prefix>/<report>/<Y>/<M>/<D>/<recipient>/
    <file>``), and how many half-written upload files lie beside them (not counted as deliveries)."""
    files: Counter[str] = Counter()
    partial = 0
    for path in bucket.rglob("*"):
        parts = path.relative_to(bucket).parts
        if len(parts) < 6 or parts[-6] != report_id or not path.is_file():
            continue
        if path.name.startswith(UPLOAD_PREFIX):
            partial += 1
        else:
            files[parts[-2]] += 1
    return files, partial


def ledger_rows(state_url: str, report_id: str) -> list[LedgerRow]:
    """Every ledger row of ``report_id``, read with SQL (the demo's store holds this report's one run)."""
    from sqlalchemy import create_engine, select

    from bulletin.store.db import normalise_url
    from bulletin.store.ledger_schema import deliveries

    engine = create_engine(normalise_url(state_url))
    columns = (deliveries.c.recipient, deliveries.c.status, deliveries.c.run_id, deliveries.c.sent_at)
    try:
        with engine.connect() as conn:
            found = conn.execute(select(*columns).where(deliveries.c.report_id == report_id)).all()
    finally:
        engine.dispose()
    return [LedgerRow(r, s, run, at.timestamp() if at is not None else None) for r, s, run, at in found]


def sent_count(state_url: str, report_id: str) -> int:
    """How many deliveries of ``report_id`` the ledger has as sent: the progress a watcher sees."""
    from sqlalchemy import create_engine, func, select

    from bulletin.store.db import normalise_url
    from bulletin.store.ledger_schema import deliveries

    engine = create_engine(normalise_url(state_url))
    query = select(func.count()).where(deliveries.c.report_id == report_id, deliveries.c.status == "sent")
    try:
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()
