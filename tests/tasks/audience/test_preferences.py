"""Each recipient's channels from its organisation's preference (tasks.audience.preferences), and deliver_recipient
using them: real services (the demo warehouse, the state store on SQLite, the local bucket and the outbox), no Prefect
needed."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bulletin.demo_data import DEMO_END_DATE
from bulletin.models import ChannelName, Delivery, DeliveryStatus, Recipient
from bulletin.reports import get_report, resolve_parameters
from bulletin.settings import Settings
from bulletin.store import LedgerStatus, Store, list_deliveries, migrate
from bulletin.store import channel_preferences as cp
from bulletin.store.api_keys import create_key
from bulletin.store.channel_preferences import Channel, EventType, Operation, OrgChange, RunPreferences
from tasks.audience import recipient_channels
from tasks.delivery import DeliveryPlan
from tasks.delivery.deliver import deliver_recipient
from tasks.delivery.services import DeliveryServices, open_services
from tasks.tokens import generate_key

SCHEDULE, JOB = EventType.REPORT_SCHEDULE, EventType.REPORT_JOB
EMAIL, WEBHOOK, S3 = Channel.EMAIL, Channel.WEBHOOK, Channel.S3
KEYSET = generate_key(None, now=datetime(2026, 1, 1, tzinfo=UTC))


# --- the pure rule ---------------------------------------------------------------------------------------------------


def prefs(cluster: tuple[Channel, ...] | None = None, **orgs: tuple[Channel, ...]) -> RunPreferences:
    return RunPreferences(
        event_type=SCHEDULE,
        cluster={SCHEDULE: cluster} if cluster is not None else {},
        orgs={org: {SCHEDULE: channels} for org, channels in orgs.items()},
    )


def test_no_preference_keeps_the_reports_channels() -> None:
    for preferences in (None, prefs(), prefs(acme=(S3,))):
        chosen = recipient_channels(["s3", "email"], preferences, "globex")
        assert (chosen.channels, chosen.off, chosen.reason) == (["s3", "email"], [], None)


def test_the_organisation_wins_and_the_report_is_the_upper_bound() -> None:
    preferences = prefs((EMAIL,), acme=(S3, EMAIL))
    assert recipient_channels(["s3"], preferences, "acme").channels == ["s3"], "EMAIL is not added to an s3 report"
    globex = recipient_channels(["s3", "email"], preferences, "globex")
    assert (globex.channels, globex.off) == (["email"], ["s3"])
    assert globex.reason == "s3 turned off by the cluster preference for REPORT_SCHEDULE (channels: EMAIL)"
    assert recipient_channels(["s3", "email"], preferences, None).channels == ["email"], "no org: the cluster's"


def test_webhook_keeps_no_file_channel() -> None:
    chosen = recipient_channels(["email", "s3"], prefs(acme=(WEBHOOK,)), "acme")
    assert (chosen.channels, chosen.off) == ([], ["email", "s3"])
    assert chosen.reason == (
        "email, s3 turned off by the organisation acme preference for REPORT_SCHEDULE (channels: WEBHOOK)"
    )
    assert recipient_channels(["email", "s3"], prefs(acme=(WEBHOOK, S3)), "acme").channels == ["s3"]


def test_every_file_channel_has_its_preference_and_sftp_is_kept_by_its_own() -> None:
    """A preference can name every file channel: without SFTP in the API's list, any preference an organisation
    set would turn its sftp drops off with no way to keep them."""
    assert {c.file_channel for c in Channel} - {None} == set(ChannelName)
    chosen = recipient_channels(["s3", "sftp"], prefs(acme=(Channel.SFTP,)), "acme")
    assert (chosen.channels, chosen.off) == (["sftp"], ["s3"])


def test_the_runs_preferences_travel_to_worker_processes() -> None:
    preferences = prefs((EMAIL,), acme=(WEBHOOK, S3))
    assert pickle.loads(pickle.dumps(preferences)) == preferences


# --- deliver_recipient with the run's preferences --------------------------------------------------------------------


@dataclass
class Run:
    services: DeliveryServices
    plan: DeliveryPlan
    settings: Settings

    @property
    def store(self) -> Store:
        assert self.services.store is not None
        return self.services.store

    def deliver(
        self,
        recipient: Recipient,
        event_type: EventType = SCHEDULE,
        run_key: str = "prefs-1",
        run_id: str | None = None,
    ) -> Delivery:
        """As the flow will: the run's preferences loaded once, carried by the plan. ``run_id``: another run's."""
        preferences = cp.load_run_preferences(self.store, event_type)
        plan = replace(self.plan, run_key=run_key, channel_preferences=preferences, run_id=run_id or self.plan.run_id)
        return deliver_recipient(plan, self.services, recipient)

    def outbox(self) -> list[Path]:
        return sorted(self.settings.outbox_path.glob("*.eml")) if self.settings.outbox_path.exists() else []

    def bucket(self, ref: str) -> list[Path]:
        return sorted(p for p in self.settings.bucket_path.rglob("*.csv") if f"/{ref}/" in p.as_posix())


@pytest.fixture
def run(tmp_path: Path, demo_warehouse: Path) -> Iterator[Run]:
    settings = Settings(home=tmp_path / "home", warehouse_url=str(demo_warehouse))
    report = get_report(settings.reports_dir, "daily-account-orders").model_copy(update={"channels": ["s3", "email"]})
    plan = DeliveryPlan(
        report=report,
        params=resolve_parameters(report, {"as_of": DEMO_END_DATE.isoformat()}, DEMO_END_DATE),
        formats=["csv"],
        channels=list(report.channels),
        run_id="prefsrun0001",
        run_key="prefs-1",
        started_at=datetime.now(UTC),
        dry_run=False,
        storage_prefix=settings.storage_prefix,
        token_issuer=settings.token_issuer,
        token_audience=settings.token_audience,
        token_ttl_minutes=settings.token_ttl_minutes,
        batch_rows=settings.query_batch_rows,
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    with ExitStack() as stack:
        services = open_services(settings, stack, workdir=workdir, dry_run=False, keyset=KEYSET)
        assert services.store is not None
        migrate(services.store)
        for org in ("acme", "globex"):
            create_key(services.store, org=org, role="admin", now=datetime.now(UTC))
        yield Run(services, plan, settings)


def recipient(ref: str, org: str | None, account: str = "ACC-0001") -> Recipient:
    return Recipient(ref=ref, email=f"{ref}@example.com", org=org, attributes={"account_id": account})


def configure(store: Store, cluster: dict[EventType, tuple[Channel, ...]] | None = None, **orgs: list[Channel]) -> None:
    changes = [OrgChange(org, Operation.REPLACE, {SCHEDULE: tuple(c)}) for org, c in orgs.items()]
    cp.configure(store, cluster=cluster, orgs=changes, only_org=None, updated_by=None, now=datetime.now(UTC))


def outcomes(delivery: Delivery) -> dict[str, str]:
    return {a.channel: a.outcome for a in delivery.artifacts}


def test_each_recipient_gets_its_organisations_channels(run: Run) -> None:
    configure(run.store, cluster={SCHEDULE: (EMAIL,)}, acme=[S3, WEBHOOK])
    acme = run.deliver(recipient("ana", "acme"))
    assert acme.status is DeliveryStatus.DELIVERED
    assert outcomes(acme) == {"s3": "sent", "email": "skipped"}, "acme's own preference wins over the cluster's"
    skipped = next(a for a in acme.artifacts if a.channel == "email")
    assert skipped.note and "organisation acme preference for REPORT_SCHEDULE" in skipped.note
    assert len(run.bucket("ana")) == 1 and run.outbox() == []

    globex = run.deliver(recipient("gus", "globex", "ACC-0002"))
    assert outcomes(globex) == {"email": "sent", "s3": "skipped"}, "globex has none of its own: the cluster's"
    nobody = run.deliver(recipient("nia", None, "ACC-0003"))
    assert outcomes(nobody) == {"email": "sent", "s3": "skipped"}
    assert len(run.outbox()) == 2 and run.bucket("gus") == run.bucket("nia") == []

    job = run.deliver(recipient("ana", "acme"), event_type=JOB, run_key="prefs-job")
    assert outcomes(job) == {"s3": "sent", "email": "sent"}, "no REPORT_JOB preference: the report's channels"


def test_a_recipient_with_every_channel_off_is_skipped_with_the_reason(run: Run) -> None:
    configure(run.store, acme=[WEBHOOK])
    delivery = run.deliver(recipient("ana", "acme"))
    assert delivery.status is DeliveryStatus.SKIPPED and delivery.token_id is None, "nothing was even queried"
    assert outcomes(delivery) == {"s3": "skipped", "email": "skipped"}
    reason = "s3, email turned off by the organisation acme preference for REPORT_SCHEDULE (channels: WEBHOOK)"
    assert {a.note for a in delivery.artifacts} == {reason}
    rows = list_deliveries(run.store, report_id="daily-account-orders", recipient="ana")
    assert {(r.channel, r.status, r.last_error) for r in rows} == {
        ("s3", LedgerStatus.SKIPPED, reason),
        ("email", LedgerStatus.SKIPPED, reason),
    }
    assert run.outbox() == [] and run.bucket("ana") == []


def test_what_a_run_key_already_sent_stays_sent(run: Run) -> None:
    first = run.deliver(recipient("ana", "acme"))
    assert outcomes(first) == {"s3": "sent", "email": "sent"}
    configure(run.store, acme=[S3])
    again = run.deliver(recipient("ana", "acme"), run_id="prefs-second-run")  # another run with the same key
    assert outcomes(again) == {"s3": "already_sent", "email": "already_sent"}
    rows = list_deliveries(run.store, report_id="daily-account-orders", recipient="ana")
    assert {r.status for r in rows} == {LedgerStatus.SENT}
    assert len(run.outbox()) == 1 and len(run.bucket("ana")) == 1


# --- a person's own levels -------------------------------------------------------------------------------------------

#: (cluster, organisation, recipient, recipient-for-this-report) -> the channels of an [email, s3] report and the
#: reason for the ones turned off. None: that level says nothing.
LEVELS = [
    (None, None, None, None, ["email", "s3"], None),
    ((EMAIL,), None, None, None, ["email"], "cluster"),
    ((EMAIL,), (S3,), None, None, ["s3"], "organisation"),
    ((EMAIL,), (S3,), (EMAIL, S3), None, ["email", "s3"], None),
    ((EMAIL,), (S3,), (EMAIL, S3), (S3,), ["s3"], "unsubscribed"),
    (None, None, (S3,), None, ["s3"], "unsubscribed"),
    (None, None, (), None, [], "unsubscribed"),
    (None, (), None, (EMAIL,), ["email"], "unsubscribed"),
    ((), None, None, None, [], "cluster"),
]


@pytest.mark.parametrize(("cluster", "org", "person", "for_report", "channels", "why"), LEVELS)
def test_the_most_specific_level_wins(
    cluster: tuple[Channel, ...] | None,
    org: tuple[Channel, ...] | None,
    person: tuple[Channel, ...] | None,
    for_report: tuple[Channel, ...] | None,
    channels: list[str],
    why: str | None,
) -> None:
    preferences = RunPreferences(
        event_type=SCHEDULE,
        cluster={SCHEDULE: cluster} if cluster is not None else {},
        orgs={"acme": {SCHEDULE: org}} if org is not None else {},
        recipients={("acme", "ann"): person} if person is not None else {},
        recipient_report={("acme", "ann"): for_report} if for_report is not None else {},
    )
    chosen = recipient_channels(["email", "s3"], preferences, "acme", "ann")
    assert chosen.channels == channels
    assert chosen.off == [c for c in ["email", "s3"] if c not in channels]
    if why in (None, "unsubscribed"):
        assert chosen.reason == why
    else:
        assert chosen.reason is not None and why in chosen.reason
    other = recipient_channels(["email", "s3"], preferences, "acme", "bob")
    assert other.reason != "unsubscribed", "ann's own levels are hers alone"
