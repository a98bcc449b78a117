"""The deliver-report flow reads the communication-channel preferences once per run: an organisation that turned
email off for on-demand runs (REPORT_JOB) gets its files in the bucket only, another organisation keeps both."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bulletin.demo_data import DEMO_END_DATE
from bulletin.edge.cli.delivery import run_report
from bulletin.models import DeliveryStatus
from bulletin.settings import Settings
from bulletin.store import migrate, open_store
from bulletin.store.api_keys import create_key
from bulletin.store.channel_preferences import Channel, EventType, Operation, OrgChange, configure

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_an_organisations_preference_chooses_its_recipients_channels(bulletin_env: Path) -> None:
    now = datetime.now(UTC)
    with open_store(Settings().database) as store:
        migrate(store)
        create_key(store, org="acme", role="admin", now=now)  # an organisation exists once it has a key
        change = OrgChange("acme", Operation.REPLACE, {EventType.REPORT_JOB: (Channel.S3,)})
        configure(store, orgs=[change], only_org=None, updated_by=None, now=now)
    manifest = run_report(
        "weekly-regional-sales",
        recipients=["rm-emea-north", "rm-apac-2"],  # acme and globex (bulletin/demo_data.py)
        formats=["pdf"],
        parameters={"as_of": DEMO_END_DATE.isoformat()},
    )
    by_ref = {d.recipient: d for d in manifest.deliveries}
    acme, globex = by_ref["rm-emea-north"], by_ref["rm-apac-2"]
    assert acme.org == "acme" and globex.org != "acme"
    assert acme.status is DeliveryStatus.DELIVERED and globex.status is DeliveryStatus.DELIVERED
    outcomes = {a.channel: a.outcome for a in acme.artifacts}
    assert outcomes["s3"] == "sent" and outcomes["email"] != "sent"
    assert {a.channel: a.outcome for a in globex.artifacts} == {"s3": "sent", "email": "sent"}
