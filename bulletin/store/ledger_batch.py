"""Many ledger writes in one transaction: a lane's next claims, the storing intents of a chunk's files, and the sent
marks it has kept back.

Each claim, intent or mark is decided exactly as ``bulletin.store.ledger.claim``, ``mark_storing`` and ``mark_sent``
decide it, row by row
(the same insert-or-compare-and-set, the same guard on ``claimed_by`` and ``attempts``), only committed together:
one fsync for several recipients instead of one each. What batching changes is *when* a row is written, never
whether: a claim is still made before anything of its delivery is rendered, and a sent mark still follows the send.

A mark whose claim was taken over meanwhile does not stop the others: it comes back as its ClaimLostError, in its
place, and the rest commit. Why a sent mark may wait at all, and for how long, is ``tasks.delivery.marks``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bulletin.errors import ClaimLostError, StorageError
from bulletin.models import FilterGroups
from bulletin.store.base import aware
from bulletin.store.db import Store
from bulletin.store.delivery_keys import DeliveryKey, check_identifier, check_run_id
from bulletin.store.ledger import check_lease, claim_in, file_values, finish_in, storing_in
from bulletin.store.ledger_schema import ClaimResult, LedgerRow, LedgerStatus


@dataclass(frozen=True)
class ClaimRequest:
    """One row to claim: ``claim``'s arguments but the lease and the clock, which a batch shares."""

    run_key: str
    report_id: str
    run_id: str
    recipient: str
    format: str
    channel: str


@dataclass(frozen=True)
class SentMark:
    """A send to record: the claim that made it and the file's checked values (``sent_mark``)."""

    claim: ClaimResult
    values: dict[str, Any]


@dataclass(frozen=True)
class Batch:
    """What one ``write_batch`` did: the claims in request order, each mark's row or ClaimLostError, and whether each
    storing intent was written (False: its claim was taken over, nothing written)."""

    claims: list[ClaimResult]
    marked: list[LedgerRow | ClaimLostError]
    noted: list[bool] = field(default_factory=list)


def sent_mark(
    claim: ClaimResult,
    *,
    sha256: str,
    uri: str,
    bytes: int,
    rows: int,
    token_jti: str | None,
    secure_filters: Mapping[str, FilterGroups],
) -> SentMark:
    """A sent mark for a later ``write_batch``, checked now (a bad value fails here, not in someone else's batch)."""
    if not claim.claimed:
        raise StorageError(f"cannot finish a delivery that was not claimed ({claim.outcome.value})")
    values = file_values(sha256=sha256, uri=uri, bytes=bytes, rows=rows, token_jti=token_jti, filters=secure_filters)
    return SentMark(claim=claim, values=values)


#: A storing intent for a later ``write_batch(intents=...)``: ``mark_storing``'s values, checked now exactly as a sent
#: mark's are (the same claim and file values; only what the batch writes with them differs).
storing_intent = sent_mark


def write_batch(
    store: Store,
    *,
    sent: Sequence[SentMark] = (),
    intents: Sequence[SentMark] = (),
    claims: Sequence[ClaimRequest] = (),
    lease_seconds: float,
    now: datetime,
    durable: bool = True,
) -> Batch:
    """Record ``sent`` as sent, then write the storing ``intents`` (``storing_intent``), then claim ``claims``, in one
    write transaction; nothing at all when all are empty.

    All or nothing on a database error (the transaction rolls back: the marks can be written again, the claims
    were not made). Every argument is checked before the transaction starts. ``durable=False``: committed without
    SQLite's fsync (``Store.write``), for claims and for marks of files whose storing intent is durable on their
    row: a power loss that rolls them back costs no second copy (docs/delivery.md, "Power loss").
    """
    now = aware(now, "now", field="now")
    check_lease(lease_seconds)
    keys = [_key(request) for request in claims]
    if not sent and not intents and not claims:
        return Batch(claims=[], marked=[])
    with store.write(durable=durable) as conn:
        marked = [
            finish_in(conn, m.claim, now=now, status=LedgerStatus.SENT, last_error=None, sent_at=now, **m.values)
            for m in sent
        ]
        noted = [storing_in(conn, i.claim, now=now, **i.values) for i in intents]
        made = [
            claim_in(conn, key, report_id=r.report_id, run_id=r.run_id, lease_seconds=lease_seconds, now=now)
            for key, r in zip(keys, claims, strict=True)
        ]
    return Batch(claims=made, marked=marked, noted=noted)


def _key(request: ClaimRequest) -> DeliveryKey:
    key = DeliveryKey.build(
        run_key=request.run_key, recipient=request.recipient, format=request.format, channel=request.channel
    )
    check_identifier(request.report_id, "report_id")
    check_run_id(request.run_id)
    return key
