"""A lane's chunk announces where its files go in one ledger transaction, before the first of them is stored.

Why: a file stored in S3 or the local bucket is first announced on its claimed ledger row (its storing intent:
where it goes, its sha256, size, rows, token id and scope), so that a run taking the delivery over after a crash finds
it rather than storing it twice (docs/delivery.md, "What a crash costs"). That intent must be durable before the
upload, so each cost an fsync'd commit of its own: the lane's one remaining transaction per delivery. A lane renders
its whole chunk before sending any of it (tasks/delivery/chunk.py), so every intent of the chunk is known before the
first upload: ``announce_chunk`` writes them together (``LaneLedger.announce``), and each file's ``storing`` finds its
own already on its row (``Attempt.noted``) and writes nothing.

What a crash costs is unchanged. A row announced but whose file was never stored (the lane died before reaching
it) is taken over like any other: its new claimer asks the store for the announced file, does not find it, and
stores its own; S3 and the local bucket create objects whole, so a file is there entirely or not at all.

Left to the file's own ``storing``, as before: a file that a report rule may skip (an empty file under
``skip_if_empty``, any file under ``send_only_if_changed``: the skipped row must not say a file went somewhere), a
row an earlier attempt announced (its file is looked for first), a store that cannot be asked (SFTP), and every file
when the chunk's transaction fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bulletin.errors import BulletinError
from bulletin.models import Recipient
from bulletin.store import SentMark, storing_intent
from tasks.delivery.channels import BucketChannel, RenderedFile
from tasks.delivery.deliver import key_parts
from tasks.delivery.marks import LaneLedger
from tasks.delivery.outcomes import Attempt, Pair
from tasks.delivery.plan import DeliveryPlan
from tasks.delivery.produce import Produced
from tasks.delivery.registry import OpenChannels


@dataclass(frozen=True)
class _Intent:
    attempt: Attempt
    pair: Pair
    file: RenderedFile
    uri: str
    mark: SentMark


def announce_chunk(
    plan: DeliveryPlan,
    channels: OpenChannels,
    audience: list[Recipient],
    claimed: Sequence[tuple[int, Attempt | None]],
    rendered: Mapping[int, Produced | BulletinError],
    ledger: LaneLedger | None,
) -> int:
    """Write the storing intents of the chunk's rendered files in one transaction; how many were written. Each
    written is recorded on its attempt (``noted``), so that its file's ``storing`` writes nothing. Fewer than two:
    nothing is written here (the file's own ``storing`` costs the same)."""
    if ledger is None or plan.report.send_only_if_changed:
        return 0
    intents = [
        intent
        for index, attempt in claimed
        if attempt is not None and isinstance(produced := rendered.get(index), Produced)
        for intent in _intents(plan, channels, audience[index], attempt, produced)
    ]
    if len(intents) < 2:
        return 0
    try:
        noted = ledger.announce([i.mark for i in intents])
    except BulletinError:
        return 0  # each file writes its own intent before it is stored, as a single delivery does
    for intent, written in zip(intents, noted, strict=True):
        if written:
            intent.attempt.noted[intent.pair] = (intent.uri, intent.file.sha256)
    return sum(noted)


def _intents(
    plan: DeliveryPlan, channels: OpenChannels, recipient: Recipient, attempt: Attempt, produced: Produced
) -> list[_Intent]:
    parts = key_parts(plan, recipient)
    found: list[_Intent] = []
    for pair, claim in attempt.todo.items():
        fmt, name = pair
        file = produced.files.get(fmt)
        if file is None or (plan.report.skip_if_empty and file.rows == 0) or attempt.stored_before(pair):
            continue
        try:
            channel = channels.get(name)
        except BulletinError:
            continue  # the send records it
        uri = channel.intended_uri(parts, file) if isinstance(channel, BucketChannel) else None
        if uri is None:
            continue
        mark = storing_intent(
            claim,
            sha256=file.sha256,
            uri=uri,
            bytes=file.bytes,
            rows=file.rows,
            token_jti=produced.jti,
            secure_filters=produced.claims.secure_filters,
        )
        found.append(_Intent(attempt, pair, file, uri, mark))
    return found
