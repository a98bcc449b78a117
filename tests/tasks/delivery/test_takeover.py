"""A run that dies after storing a file but before the ledger says so: the run that takes the delivery over when the
lease runs out finds the file (same sha256) and records it as sent, rather than storing a second copy. On the local
bucket and on S3 (moto on loopback); the state store on SQLite; the demo warehouse."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulletin.models import DeliveryStatus
from bulletin.settings import Settings
from bulletin.store import LedgerStatus, list_deliveries
from tasks.delivery import outcomes
from tasks.delivery.deliver import deliver_recipient
from tasks.delivery.services import DeliveryServices
from tests.fixtures.s3 import S3TestBucket, s3_settings
from tests.tasks.delivery.test_registry import ANA, plan_for

LEASE = 60.0


class Killed(BaseException):
    """Stands for SIGKILL between the store and the ledger: no ``except Exception`` below records anything."""


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, demo_warehouse: Path) -> Settings:
    home: dict[str, Any] = {"home": tmp_path / "home", "warehouse_url": str(demo_warehouse)}
    if request.param == "local":
        return Settings(**home)
    bucket: S3TestBucket = request.getfixturevalue("s3_bucket")
    return s3_settings(bucket.endpoint, bucket.name, **home)


def stored_files(settings: Settings, request: pytest.FixtureRequest) -> list[str]:
    if settings.s3_bucket is None:
        return sorted(p.name for p in settings.bucket_path.rglob("*") if p.is_file())
    bucket: S3TestBucket = request.getfixturevalue("s3_bucket")
    return sorted(o["Key"] for o in bucket.client.list_objects_v2(Bucket=bucket.name).get("Contents", []))


def test_a_file_stored_before_the_kill_is_found_not_stored_again(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices, request: pytest.FixtureRequest
) -> None:
    store = services.store
    assert store is not None

    def die(*args: Any, **kwargs: Any) -> None:
        raise Killed

    first = replace(plan_for(settings, ["s3"]), lease_seconds=LEASE)
    with monkeypatch.context() as patched:
        patched.setattr(outcomes, "mark_sent", die)
        with pytest.raises(Killed):
            deliver_recipient(first, services, ANA)
    (dead,) = stored_files(settings, request)
    (row,) = list_deliveries(store, recipient="ana")
    assert row.status is LedgerStatus.PENDING and row.uri is not None and row.sha256 is not None

    # Another run, with its own id and start (so its own object key), once the dead run's lease has run out.
    later = datetime.now(UTC) + timedelta(seconds=LEASE + 1)
    rerun = replace(first, run_id="rerun0000002", started_at=later)
    delivery = deliver_recipient(rerun, replace(services, clock=lambda: later), ANA)
    assert delivery.status is DeliveryStatus.DELIVERED
    (artifact,) = delivery.artifacts
    assert artifact.outcome == "sent" and "found in the store" in (artifact.note or "")
    assert artifact.uri == row.uri and artifact.sha256 == row.sha256
    assert stored_files(settings, request) == [dead], "one object: the dead run's, not a second copy"
    (sent,) = list_deliveries(store, recipient="ana")
    assert (sent.status, sent.attempts, sent.claimed_by, sent.uri) == (LedgerStatus.SENT, 2, "rerun0000002", row.uri)


def test_a_file_that_never_reached_the_store_is_stored_by_the_takeover(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices, request: pytest.FixtureRequest
) -> None:
    store = services.store
    assert store is not None

    def die(*args: Any, **kwargs: Any) -> None:
        raise Killed

    first = replace(plan_for(settings, ["s3"]), lease_seconds=LEASE)
    with monkeypatch.context() as patched:  # killed after the ledger noted the target, before the upload
        patched.setattr(type(services.channels.open().get("s3")), "store", die)
        with pytest.raises(Killed):
            deliver_recipient(first, services, ANA)
    assert stored_files(settings, request) == []
    later = datetime.now(UTC) + timedelta(seconds=LEASE + 1)
    rerun = replace(first, run_id="rerun0000002", started_at=later)
    delivery = deliver_recipient(rerun, replace(services, clock=lambda: later), ANA)
    (artifact,) = delivery.artifacts
    assert artifact.outcome == "sent" and artifact.note is None
    (stored,) = stored_files(settings, request)
    assert "rerun0000002" in stored
