"""One recipient's delivery attempt as the ledger and the manifest see it.

Every (format, channel) this attempt claimed ends in the ledger as sent, skipped or failed, and in the manifest as
an ``Artifact`` saying so; what it did not claim (sent or skipped before, being sent elsewhere, turned off by a
preference) is reported from the ledger's row. ``Attempt`` keeps both in step, so channels and the pipeline
(tasks/delivery/deliver.py) say only what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bulletin.clock import Clock
from bulletin.errors import BulletinError, ClaimLostError, TransientError
from bulletin.models import Artifact, Delivery, DeliveryStatus, Recipient, delivery_status
from bulletin.store import (
    ClaimOutcome,
    ClaimResult,
    LedgerRow,
    LedgerStatus,
    Store,
    mark_failed,
    mark_found,
    mark_sent,
    mark_storing,
    sent_mark,
)
from tasks.delivery.channels import Receipt, RenderedFile
from tasks.delivery.leases import LeaseKeeper
from tasks.delivery.marks import LaneLedger

Pair = tuple[str, str]  # (format, channel)


@dataclass
class Attempt:
    """The claims this attempt holds (``todo``); per (format, channel) the manifest entry, filled in as each one is
    decided; what failed, and whether a retry may help (some failure was a TransientError). ``token_id`` and
    ``scope`` are the minted token's, once there is one: each file sent is recorded with them. ``keeper`` renews
    the claims while the attempt works, and says which were taken over by another run (``drop_lost``). ``ledger``:
    the lane's batched writes, which keep back the sent mark of a file whose storing intent is on its row
    (``announced``; tasks/delivery/marks.py says why that is safe). ``noted``: the storing intents the lane already
    wrote with its chunk's (tasks/delivery/intents.py), by pair: (uri, sha256)."""

    store: Store
    clock: Clock
    todo: dict[Pair, ClaimResult]
    artifacts: dict[Pair, Artifact]
    finished: set[Pair] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    transient: bool = False
    token_id: str | None = None
    scope: dict[str, Any] = field(default_factory=dict)
    keeper: LeaseKeeper | None = None
    ledger: LaneLedger | None = None
    announced: dict[Pair, str] = field(default_factory=dict)
    noted: dict[Pair, tuple[str, str]] = field(default_factory=dict)

    def add(self, pair: Pair, artifact: Artifact) -> None:
        self.artifacts[pair] = artifact

    def pending(self) -> list[Pair]:
        """The claimed pairs not yet decided, in claim order."""
        return [pair for pair in self.todo if pair not in self.finished]

    def sent(self, pair: Pair, file: RenderedFile, uri: str, note: str | None = None) -> None:
        try:
            if self.ledger is not None and self.announced.get(pair) == uri:  # stored where the row says
                self.ledger.keep(sent_mark(self.todo[pair], **self._file_values(file, uri)))
            else:
                mark_sent(self.store, self.todo[pair], **self._file_values(file, uri), now=self.clock())
        except ClaimLostError:
            self._lost(pair, file)
            return
        self.finished.add(pair)
        self.add(pair, artifact(file, pair[1], uri=uri, outcome="sent", note=note))

    def storing(self, pair: Pair, file: RenderedFile, uri: str) -> bool:
        """Write where ``file`` is about to be stored on the claimed row; False (and the pair lost) if taken over.
        Nothing to write when the lane wrote this very intent with its chunk's (``noted``: uri and sha256)."""
        if self.noted.get(pair) == (uri, file.sha256):
            self.announced[pair] = uri
            return True
        noted = mark_storing(self.store, self.todo[pair], **self._file_values(file, uri), now=self.clock())
        if noted:
            self.announced[pair] = uri
        else:
            self._lost(pair, file)
        return noted

    def _file_values(self, file: RenderedFile, uri: str) -> dict[str, Any]:
        """What the ledger records of a file sent, or about to be stored, by this attempt."""
        return {
            "sha256": file.sha256,
            "uri": uri,
            "bytes": file.bytes,
            "rows": file.rows,
            "token_jti": self.token_id,
            "secure_filters": self.scope,
        }

    def stored_before(self, pair: Pair) -> tuple[str, str] | None:
        """Where an earlier attempt that did not finish this delivery (it died, or failed) said it stored a file."""
        row = self.todo[pair].row
        if row.attempts > 1 and row.uri and row.sha256:
            return row.uri, row.sha256
        return None

    def found(self, pair: Pair, file: RenderedFile) -> None:
        """The earlier attempt's file is in the store: the ledger records it as sent, with that file's details."""
        try:
            row = mark_found(self.store, self.todo[pair], now=self.clock())
        except ClaimLostError:
            self._lost(pair, file)
            return
        self.finished.add(pair)
        note = "found in the store: an earlier attempt stored it and stopped before recording it; not stored again"
        self.add(pair, artifact_from_row(row, outcome="sent", note=note))

    def receipt(self, channel: str) -> Receipt:
        """What channel ``channel`` says it sent, recorded as sent on it."""
        return _Receipt(self, channel)

    def skipped(self, pair: Pair, file: RenderedFile, row: LedgerRow, reason: str) -> None:
        """The ledger recorded ``pair`` as skipped (``row``): so does the manifest."""
        self.finished.add(pair)
        self.add(pair, artifact(file, pair[1], uri=row.uri or "", outcome="skipped", note=reason))

    def fail(self, pairs: list[Pair], exc: BulletinError, files: dict[str, RenderedFile], channel: str | None) -> None:
        """Record ``pairs`` as failed with ``exc``: in the ledger (a retry with the run key tries them again) and in
        the manifest, with the rendered file's checksum and size when there is one, so the reader sees what did not
        go. ``channel``: the one channel that failed, named in the recipient's error; None when every file failed."""
        text = error_text(exc)
        for pair in pairs:
            try:
                mark_failed(self.store, self.todo[pair], error=text, now=self.clock())
            except ClaimLostError:
                self._lost(pair, files.get(pair[0]))
                continue
            self.finished.add(pair)
            self.add(pair, _failed_artifact(pair, files.get(pair[0]), text))
        if pairs:
            self.errors.append(f"{channel}: {text}" if channel else text)
            self.transient = self.transient or isinstance(exc, TransientError)

    def abandon(self, exc: BaseException) -> None:
        """An unexpected error: the ledger says the undecided pairs failed (a retry tries them), then it is raised."""
        for pair in self.pending():
            try:
                mark_failed(self.store, self.todo[pair], error=error_text(exc), now=self.clock())
            except ClaimLostError:
                self._lost(pair, None)

    def drop_lost(self) -> None:
        """Send nothing more for the pairs whose claim another run took over (the keeper's renewal found it)."""
        keeper = self.keeper
        if keeper is None:
            return
        for pair in self.pending():
            if keeper.lost(self.todo[pair]):
                self._lost(pair, None)

    def _lost(self, pair: Pair, file: RenderedFile | None) -> None:
        """``pair``'s claim lapsed and another run holds it now: that run records and reports its outcome."""
        self.finished.add(pair)
        self.add(pair, _lost_artifact(pair, file))

    def delivery(self, recipient: Recipient) -> Delivery:
        artifacts = list(self.artifacts.values())
        return Delivery(
            recipient=recipient.ref,
            status=delivery_status(artifacts),
            org=recipient.org,
            token_id=self.token_id,
            secure_filters=self.scope,
            artifacts=artifacts,
            error="; ".join(self.errors) or None,
        )


@dataclass(frozen=True)
class _Receipt:
    attempt: Attempt
    channel: str

    def sent(self, file: RenderedFile, uri: str, note: str | None = None) -> None:
        self.attempt.sent((file.format, self.channel), file, uri, note)

    def storing(self, file: RenderedFile, uri: str) -> bool:
        return self.attempt.storing((file.format, self.channel), file, uri)

    def stored_before(self, file: RenderedFile) -> tuple[str, str] | None:
        return self.attempt.stored_before((file.format, self.channel))

    def found(self, file: RenderedFile, uri: str) -> None:
        del uri  # the ledger row already holds it
        self.attempt.found((file.format, self.channel), file)


def earlier(c: ClaimResult, run_id: str) -> Artifact:
    """The manifest entry for a delivery this attempt does not make: sent or skipped before, or being sent
    elsewhere. What an earlier attempt of this same run sent (a retry after the email failed, say) is this run's
    ``sent``: the run's manifest is the one place that says so."""
    row = c.row
    if c.outcome is ClaimOutcome.ALREADY_SENT and row.run_id == run_id:
        return artifact_from_row(row, outcome="sent", note=None)
    outcome = {
        ClaimOutcome.ALREADY_SENT: "already_sent",
        ClaimOutcome.ALREADY_SKIPPED: "skipped",
        ClaimOutcome.IN_PROGRESS: "in_progress",
    }[c.outcome]
    note = {
        "already_sent": f"sent earlier under run key {row.run_key}; not sent again",
        "skipped": row.last_error,
        "in_progress": f"another run ({row.claimed_by}) is delivering this now",
    }[outcome]
    return artifact_from_row(row, outcome=outcome, note=note)


def turned_off(row: LedgerRow) -> Artifact:
    """The manifest entry for a channel the recipient's organisation turned off, from the row the ledger kept when
    asked to skip it: skipped with the reason; what this run key already sent, or is sending elsewhere right now,
    stays as it is and is reported so."""
    if row.status is LedgerStatus.SENT:
        return artifact_from_row(row, outcome="already_sent", note=f"sent earlier under run key {row.run_key}")
    if row.status is LedgerStatus.SKIPPED:
        return artifact_from_row(row, outcome="skipped", note=row.last_error)
    return artifact_from_row(row, outcome="in_progress", note=f"another run ({row.claimed_by}) is delivering this now")


def artifact(file: RenderedFile, channel: str, *, uri: str, outcome: str, note: str | None) -> Artifact:
    return Artifact.model_validate(
        {
            "format": file.format,
            "channel": channel,
            "uri": uri,
            "sha256": file.sha256,
            "bytes": file.bytes,
            "rows": file.rows,
            "outcome": outcome,
            "note": note,
        }
    )


def artifact_from_row(row: LedgerRow, *, outcome: str, note: str | None) -> Artifact:
    return Artifact.model_validate(
        {
            "format": row.format,
            "channel": row.channel,
            "uri": row.uri or "",
            "sha256": row.sha256 or "",
            "bytes": row.bytes or 0,
            "rows": row.rows or 0,
            "outcome": outcome,
            "note": note,
        }
    )


def _lost_artifact(pair: Pair, file: RenderedFile | None) -> Artifact:
    return Artifact.model_validate(
        {
            "format": pair[0],
            "channel": pair[1],
            "uri": "",
            "sha256": file.sha256 if file else "",
            "bytes": file.bytes if file else 0,
            "rows": file.rows if file else 0,
            "outcome": "in_progress",
            "note": "this run's claim lapsed and another run took the delivery over; it is that run's to send",
        }
    )


def _failed_artifact(pair: Pair, file: RenderedFile | None, text: str) -> Artifact:
    return Artifact.model_validate(
        {
            "format": pair[0],
            "channel": pair[1],
            "uri": "",
            "sha256": file.sha256 if file else "",
            "bytes": file.bytes if file else 0,
            "rows": file.rows if file else 0,
            "outcome": "failed",
            "note": text,
        }
    )


def error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BulletinError) else f"internal error ({type(exc).__name__})"


def failed_delivery(recipient: Recipient, error: BaseException) -> Delivery:
    return Delivery(recipient=recipient.ref, status=DeliveryStatus.FAILED, org=recipient.org, error=error_text(error))
