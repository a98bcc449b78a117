"""A run honours each person's own preference: the recipient whose email is off for this report is recorded as
skipped (``unsubscribed``) in the ledger, the manifest and the audit, and their message never reaches the SMTP
server; their S3 copy and the other recipient's email still go. Real services: the flow on the session Prefect API,
aiosmtpd on loopback, the state store on SQLite."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.policy import default as default_policy
from pathlib import Path

import pytest

from bulletin.edge.api import create_app
from bulletin.edge.cli.delivery import run_report
from bulletin.models import DeliveryStatus, RunStatus
from bulletin.settings import Settings
from bulletin.store import audit, list_deliveries, migrate, open_store
from bulletin.store.channel_preferences import Channel
from bulletin.store.recipient_preferences import set_preference
from bulletin.unsubscribe import verify_token
from tasks.email.unsubscribe import unsubscribe_keys
from tasks.tokens import load_keyset
from tests.api.conftest import AppClient
from tests.flows.test_delivery_channels import AS_OF, write_report

pytestmark = pytest.mark.usefixtures("prefect_api")
PUBLIC_URL = "https://bulletin.example.com"

RECIPIENTS = [
    {"ref": "rm-ann", "email": "ann@example.com", "org": "acme", "attributes": {"region": "APAC"}},
    {"ref": "rm-bob", "email": "bob@example.com", "org": "acme", "attributes": {"region": "LATAM"}},
]


@pytest.fixture
def smtp_report(bulletin_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_server) -> Path:
    """weekly-regional-sales for ann and bob of acme, by email (aiosmtpd) and to the local bucket, PDF only."""
    reports = tmp_path / "reports"
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(reports))
    monkeypatch.setenv("BULLETIN_SMTP_HOST", smtp_server.host)
    monkeypatch.setenv("BULLETIN_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("BULLETIN_SMTP_SECURITY", "none")
    monkeypatch.setenv("BULLETIN_PUBLIC_URL", PUBLIC_URL)
    (tmp_path / "triggers").mkdir()
    monkeypatch.setenv("BULLETIN_TRIGGERS_DIR", str(tmp_path / "triggers"))  # the API's own, none: no targets
    write_report(reports, "weekly-regional-sales", audience={"recipients": RECIPIENTS}, formats=["pdf"])
    return reports


def test_an_unsubscribed_persons_email_is_skipped_and_never_sent(smtp_report: Path, smtp_server) -> None:
    with open_store(Settings().database) as store:
        migrate(store)
        set_preference(
            store,
            org="acme",
            recipient="rm-ann",
            report_id="weekly-regional-sales",
            channels=[Channel.S3, Channel.WEBHOOK],
            updated_by="test",
            now=datetime.now(UTC),
        )
    manifest = run_report("weekly-regional-sales", parameters=AS_OF)
    assert manifest.status is RunStatus.COMPLETED, manifest
    assert [m.rcpt_tos for m in smtp_server.messages] == [["bob@example.com"]], "ann's mail never reaches SMTP"
    bobs = email.message_from_bytes(smtp_server.messages[0].content, policy=default_policy)
    assert bobs["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = bobs["List-Unsubscribe"].strip("<>")
    assert link.startswith(f"{PUBLIC_URL}/v1/unsubscribe/")
    settings = Settings()
    keys = unsubscribe_keys(settings, load_keyset(settings))
    grant = verify_token(keys, link.rsplit("/", 1)[1], now=datetime.now(UTC))
    assert (grant.org, grant.recipient, grant.report_id) == ("acme", "rm-bob", "weekly-regional-sales")
    ann = next(d for d in manifest.deliveries if d.recipient == "rm-ann")
    assert ann.status is DeliveryStatus.DELIVERED
    outcomes = {a.channel: (a.outcome, a.note) for a in ann.artifacts}
    assert outcomes["email"] == ("skipped", "unsubscribed")
    assert outcomes["s3"][0] == "sent", "her other channels follow their levels"
    with open_store(Settings().database) as store:
        (row,) = list_deliveries(store, recipient="rm-ann", status="skipped")
        assert (row.channel, row.last_error) == ("email", "unsubscribed")
        entries = audit(store, "rm-ann")
    assert {(e.channel, e.status.value, e.reason) for e in entries} == {
        ("email", "skipped", "unsubscribed"),
        ("s3", "sent", None),
    }


def test_the_link_in_an_email_unsubscribes_from_the_next_run(smtp_report: Path, smtp_server) -> None:
    run_report("weekly-regional-sales", parameters=AS_OF)
    received = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    bobs = email.message_from_bytes(received["bob@example.com"].content, policy=default_policy)
    link = bobs["List-Unsubscribe"].strip("<>").removeprefix(PUBLIC_URL)
    client = AppClient(create_app(Settings()))
    try:
        assert client.get(link).status_code == 200, "the confirmation page"
        assert client.post(link, content=b"List-Unsubscribe=One-Click").status_code == 200
    finally:
        client.close()
    smtp_server.handler.reset()
    manifest = run_report("weekly-regional-sales", parameters=AS_OF)
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ann@example.com"]], "bob's mail no longer goes"
    bob = next(d for d in manifest.deliveries if d.recipient == "rm-bob")
    assert {a.channel: (a.outcome, a.note) for a in bob.artifacts}["email"] == ("skipped", "unsubscribed")
