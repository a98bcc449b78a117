"""A sharded run's arithmetic: its audience cut into shards, and its manifest read back from the ledger. Pure.

A run of more than ``BULLETIN_SHARD_RECIPIENTS`` recipients delivers through shards, each its own flow run on any
worker of the pool (``tasks/delivery/sharding.py``). A shard's own process may die before it reports anything, so
the run's record is not what the shards say but what the ledger holds: every row of the run key, grouped per
recipient, as the in-process path would have reported it (``tasks/delivery/outcomes.py``). A file that went out
is in the manifest even if the shard that sent it was killed a moment later.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime

from bulletin.models import Artifact, Delivery, DeliveryStatus, Recipient, delivery_status
from bulletin.store import LedgerRow, LedgerStatus
from tasks.delivery.outcomes import artifact_from_row

#: What the manifest says of a recipient with no row at all once every attempt of its shard is over.
NEVER_REACHED = "not delivered: its shard ended before reaching this recipient"


def split_audience(audience: Sequence[Recipient], shard_size: int) -> list[list[Recipient]]:
    """The audience in ``ceil(N / shard_size)`` contiguous shards whose sizes differ by at most one."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    count = max(1, math.ceil(len(audience) / shard_size))
    base, extra = divmod(len(audience), count)
    shards, start = [], 0
    for index in range(count):
        size = base + (1 if index < extra else 0)
        shards.append(list(audience[start : start + size]))
        start += size
    return shards


def row_artifact(row: LedgerRow, run_id: str) -> Artifact:
    """The manifest entry of one ledger row, from run ``run_id``'s point of view."""
    if row.status is LedgerStatus.SENT:
        if row.run_id == run_id:
            return artifact_from_row(row, outcome="sent", note=None)
        return artifact_from_row(row, outcome="already_sent", note=f"sent earlier by run {row.run_id}; not sent again")
    if row.status is LedgerStatus.SKIPPED:
        return artifact_from_row(row, outcome="skipped", note=row.last_error)
    if row.status is LedgerStatus.FAILED:
        failed = artifact_from_row(row, outcome="failed", note=row.last_error or "failed")
        return failed.model_copy(update={"uri": ""})
    return artifact_from_row(row, outcome="in_progress", note=f"claimed by {row.claimed_by}; not finished")


def deliveries_from_ledger(rows: Iterable[LedgerRow], audience: Sequence[Recipient], run_id: str) -> list[Delivery]:
    """Every recipient's Delivery, in the audience's order, from the run key's ledger rows."""
    by_recipient: dict[str, list[LedgerRow]] = {}
    for row in rows:
        by_recipient.setdefault(row.recipient, []).append(row)
    return [_delivery(recipient, by_recipient.get(recipient.ref, []), run_id) for recipient in audience]


def _delivery(recipient: Recipient, rows: list[LedgerRow], run_id: str) -> Delivery:
    if not rows:
        return Delivery(recipient=recipient.ref, status=DeliveryStatus.FAILED, org=recipient.org, error=NEVER_REACHED)
    artifacts = [row_artifact(row, run_id) for row in rows]
    scoped = next((r for r in rows if r.status is LedgerStatus.SENT and r.run_id == run_id), None)
    scoped = scoped or next((r for r in rows if r.token_jti), None)
    errors = dict.fromkeys(
        f"{row.channel}: {row.last_error or 'failed'}" for row in rows if row.status is LedgerStatus.FAILED
    )
    return Delivery(
        recipient=recipient.ref,
        status=delivery_status(artifacts),
        org=recipient.org,
        token_id=scoped.token_jti if scoped else None,
        secure_filters=(scoped.secure_filters or {}) if scoped else {},
        artifacts=artifacts,
        error="; ".join(errors) or None,
    )


def unfinished(rows: Iterable[LedgerRow], shard: Sequence[Recipient]) -> list[str]:
    """The shard's recipients that another attempt of it should deliver: no row yet, or a claim never finished."""
    started: set[str] = set()
    pending: set[str] = set()
    for row in rows:
        started.add(row.recipient)
        if row.status is LedgerStatus.PENDING:
            pending.add(row.recipient)
    return [r.ref for r in shard if r.ref not in started or r.ref in pending]


def claims_lapse_at(rows: Iterable[LedgerRow], refs: Iterable[str]) -> datetime | None:
    """When the last unfinished claim on ``refs`` lapses (another attempt may take it then); None if none is held."""
    wanted = set(refs)
    leases = [
        row.lease_expires_at
        for row in rows
        if row.recipient in wanted and row.status is LedgerStatus.PENDING and row.lease_expires_at is not None
    ]
    return max(leases, default=None)
