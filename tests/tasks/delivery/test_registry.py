"""The channel seam: a channel is a class plus one registry entry (tasks.delivery.registry.CHANNELS), and delivery
calls it like any other without a line of tasks/delivery/deliver.py knowing it; a report naming a channel the registry
cannot deliver on is refused before any work. Real services: the demo warehouse, the state store on SQLite, the
local bucket; no Prefect needed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bulletin.demo_data import DEMO_END_DATE
from bulletin.errors import DefinitionError, TransientError
from bulletin.models import ChannelName, DeliveryStatus, Recipient
from bulletin.reports import get_report, resolve_parameters
from bulletin.requests import check_request
from bulletin.settings import Settings
from bulletin.store import LedgerStatus, list_deliveries
from tasks.delivery import DeliveryPlan
from tasks.delivery.channels import Channel, Parcel, Receipt
from tasks.delivery.deliver import deliver_recipient
from tasks.delivery.registry import CHANNELS, ChannelKind, Shared, channel_problem, destination_kind
from tasks.delivery.services import DeliveryServices
from tasks.storage import LocalBucket
from tasks.tokens import generate_key

KEYSET = generate_key(None, now=datetime(2026, 1, 1, tzinfo=UTC))
ANA = Recipient(ref="ana", email="ana@example.com", attributes={"account_id": "ACC-0001"})


class Pigeon:
    """A throwaway channel: carries each file to a loft folder, or refuses when told to."""

    name = ChannelName.SFTP.value  # a name of the vocabulary that no module registers on this branch

    def __init__(self, loft: Path, *, refuse: bool = False) -> None:
        self.loft = loft
        self.refuse = refuse
        self.closed = 0

    def send(self, parcel: Parcel, receipt: Receipt) -> None:
        if self.refuse:
            raise TransientError("the pigeon would not fly")
        for file in parcel.files:
            target = self.loft / f"{parcel.recipient.ref}-{file.filename}"
            target.write_bytes(file.path.read_bytes())
            receipt.sent(file, target.as_uri(), "by pigeon")

    def close(self) -> None:
        self.closed += 1


def register(monkeypatch: pytest.MonkeyPatch, channel: Channel, *, needs: tuple[str, ...] = ()) -> None:
    def open_pigeon(settings: Settings, shared: Shared) -> Channel:
        return channel

    kind = ChannelKind(name=ChannelName.SFTP, open=open_pigeon, needs=needs)
    monkeypatch.setitem(CHANNELS, ChannelName.SFTP, kind)


@pytest.fixture
def settings(tmp_path: Path, demo_warehouse: Path) -> Settings:
    return Settings(home=tmp_path / "home", warehouse_url=str(demo_warehouse))


def plan_for(settings: Settings, channels: list[str]) -> DeliveryPlan:
    report = get_report(settings.reports_dir, "daily-account-orders").model_copy(update={"channels": channels})
    return DeliveryPlan(
        report=report,
        params=resolve_parameters(report, {"as_of": DEMO_END_DATE.isoformat()}, DEMO_END_DATE),
        formats=["csv"],
        channels=channels,
        run_id="seamrun00001",
        run_key="seam-1",
        started_at=datetime.now(UTC),
        dry_run=False,
        storage_prefix=settings.storage_prefix,
        token_issuer=settings.token_issuer,
        token_audience=settings.token_audience,
        token_ttl_minutes=settings.token_ttl_minutes,
        batch_rows=settings.query_batch_rows,
    )


def test_a_channel_registered_in_one_entry_is_delivered_through_like_any_other(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices, tmp_path: Path
) -> None:
    loft = tmp_path / "loft"
    loft.mkdir()
    pigeon = Pigeon(loft)
    register(monkeypatch, pigeon)
    delivery = deliver_recipient(plan_for(settings, ["s3", "sftp"]), services, ANA)
    assert delivery.status is DeliveryStatus.DELIVERED
    sent = {a.channel: a for a in delivery.artifacts}
    assert set(sent) == {"s3", "sftp"} and all(a.outcome == "sent" for a in sent.values())
    (carried,) = loft.iterdir()
    assert sent["sftp"].uri == carried.as_uri() and sent["sftp"].note == "by pigeon"
    assert sent["sftp"].sha256 == sent["s3"].sha256, "the same rendered file on both channels"
    assert pigeon.closed == 1, "opened for the recipient and closed after it"
    assert services.store is not None
    rows = {r.channel: r for r in list_deliveries(services.store, recipient="ana")}
    assert rows["sftp"].status is LedgerStatus.SENT and rows["sftp"].uri == carried.as_uri()
    again = deliver_recipient(plan_for(settings, ["s3", "sftp"]), services, ANA)
    assert [a.outcome for a in again.artifacts] == ["sent", "sent"] and len(list(loft.iterdir())) == 1


def test_a_registered_channel_that_fails_fails_only_its_own_files(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices, tmp_path: Path
) -> None:
    register(monkeypatch, Pigeon(tmp_path, refuse=True))
    delivery = deliver_recipient(plan_for(settings, ["sftp", "s3"]), services, ANA)
    assert delivery.status is DeliveryStatus.PARTIAL
    outcomes = {a.channel: (a.outcome, a.note) for a in delivery.artifacts}
    assert outcomes == {"s3": ("sent", None), "sftp": ("failed", "the pigeon would not fly")}
    assert delivery.error == "sftp: the pigeon would not fly"


def test_a_destination_is_a_channel_in_one_registration(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices, tmp_path: Path
) -> None:
    # The very form that registers SFTP: a bucket-style channel over a Destination built from settings.
    drop = tmp_path / "drop"
    kind = destination_kind(ChannelName.SFTP, lambda s: LocalBucket(drop), needs=("warehouse_url",))
    monkeypatch.setitem(CHANNELS, ChannelName.SFTP, kind)
    delivery = deliver_recipient(plan_for(settings, ["s3", "sftp"]), services, ANA)
    assert delivery.status is DeliveryStatus.DELIVERED
    (stored,) = [a for a in delivery.artifacts if a.channel == "sftp"]
    (dropped,) = drop.rglob("*.csv")
    assert stored.uri == dropped.as_uri() and "/ana/" in dropped.as_posix()


def test_a_report_naming_a_channel_the_server_cannot_deliver_on_is_refused_at_the_door(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = Settings(smtp_host=None)
    report = check_request(settings, "weekly-regional-sales", channels=channel_problem)
    report_with_sftp = report.model_copy(update={"channels": [ChannelName.S3, ChannelName.SFTP]})
    monkeypatch.setattr("bulletin.requests.get_report", lambda folder, report_id: report_with_sftp)

    monkeypatch.delitem(CHANNELS, ChannelName.SFTP, raising=False)
    with pytest.raises(DefinitionError, match=r"channels.1: 'sftp' is not a channel this server can deliver on"):
        check_request(settings, "weekly-regional-sales", channels=channel_problem)

    register(monkeypatch, Pigeon(tmp_path), needs=("smtp_host",))
    with pytest.raises(DefinitionError, match=r"'sftp' is not configured on this server: set BULLETIN_SMTP_HOST"):
        check_request(
            settings.model_copy(update={"smtp_host": None}), "weekly-regional-sales", channels=channel_problem
        )
    configured = settings.model_copy(update={"smtp_host": "mail.example.com"})
    assert check_request(configured, "weekly-regional-sales", channels=channel_problem) is report_with_sftp


def test_a_registration_must_name_real_settings() -> None:
    with pytest.raises(ValueError, match="'sftp_hots' is not a setting"):
        destination_kind(ChannelName.SFTP, lambda s: LocalBucket(Path()), needs=("sftp_hots",))


def test_a_recipients_files_are_deleted_once_its_channels_have_had_them(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, services: DeliveryServices, tmp_path: Path
) -> None:
    # Sent on one channel and refused by the other: either way nothing reads the files again (a retry renders anew),
    # so the run's work folder does not keep every recipient's files until the run ends.
    register(monkeypatch, Pigeon(tmp_path, refuse=True))
    delivery = deliver_recipient(plan_for(settings, ["s3", "sftp"]), services, ANA)
    assert delivery.status is DeliveryStatus.PARTIAL
    assert list(services.workdir.iterdir()) == []
