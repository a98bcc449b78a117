"""A recipient's status follows from its files' outcomes, and the run's from its recipients'."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bulletin.models import Artifact, Delivery, DeliveryStatus, Manifest, RunStatus, delivery_status, run_status


def file(channel: str, outcome: str) -> Artifact:
    return Artifact.model_validate(
        {"format": "pdf", "channel": channel, "uri": "", "sha256": "", "bytes": 0, "rows": 0, "outcome": outcome}
    )


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([("s3", "sent"), ("email", "sent")], DeliveryStatus.DELIVERED),
        ([("s3", "already_sent"), ("email", "sent")], DeliveryStatus.DELIVERED),
        ([("s3", "sent"), ("email", "failed")], DeliveryStatus.PARTIAL),
        ([("s3", "already_sent"), ("email", "failed")], DeliveryStatus.PARTIAL),
        ([("s3", "failed"), ("email", "failed")], DeliveryStatus.FAILED),
        ([("s3", "skipped"), ("email", "failed")], DeliveryStatus.FAILED),
        ([("s3", "in_progress"), ("email", "failed")], DeliveryStatus.FAILED),
        ([("s3", "skipped"), ("email", "sent")], DeliveryStatus.DELIVERED),
        ([("s3", "skipped"), ("email", "in_progress")], DeliveryStatus.SKIPPED),
        ([("dry-run", "rendered")], DeliveryStatus.DELIVERED),
        ([], DeliveryStatus.SKIPPED),
    ],
)
def test_a_recipients_status_follows_from_its_files(outcomes: list[tuple[str, str]], expected: DeliveryStatus) -> None:
    assert delivery_status([file(channel, outcome) for channel, outcome in outcomes]) is expected


def recipients(*statuses: DeliveryStatus) -> list[Delivery]:
    return [Delivery(recipient=f"r{i}", status=status) for i, status in enumerate(statuses)]


D, P, S, F = DeliveryStatus.DELIVERED, DeliveryStatus.PARTIAL, DeliveryStatus.SKIPPED, DeliveryStatus.FAILED


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((D, D), RunStatus.COMPLETED),
        ((D, S), RunStatus.COMPLETED),
        ((S,), RunStatus.COMPLETED),
        ((D, P), RunStatus.PARTIAL),
        ((P,), RunStatus.PARTIAL),  # every recipient got part of its files: not a failed run
        ((P, P), RunStatus.PARTIAL),
        ((P, F), RunStatus.PARTIAL),
        ((D, F), RunStatus.PARTIAL),
        ((S, F), RunStatus.PARTIAL),
        ((F, F), RunStatus.FAILED),
        ((), RunStatus.FAILED),
    ],
)
def test_the_runs_status_follows_from_its_recipients(statuses: tuple[DeliveryStatus, ...], expected: RunStatus) -> None:
    assert run_status(recipients(*statuses)) is expected


def test_the_manifest_counts_partial_recipients_apart() -> None:
    now = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    deliveries = recipients(D, P, P, S, F)
    manifest = Manifest(
        report_id="weekly",
        run_id="run1",
        started_at=now,
        finished_at=now,
        status=run_status(deliveries),
        deliveries=deliveries,
    )
    assert (manifest.delivered, manifest.partial, manifest.skipped, manifest.failed) == (1, 2, 1, 1)
    assert manifest.tally == "1 delivered, 2 partial, 1 skipped, 1 failed"
    assert manifest.status is RunStatus.PARTIAL
