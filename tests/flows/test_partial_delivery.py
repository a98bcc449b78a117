"""Per-channel truth, for real: S3 on moto and SMTP over aiosmtpd. When a recipient's S3 copy is stored and their
email is refused, every place that shows the delivery says PARTIAL and lists what went where: the manifest,
``bulletin run --json``, the run table, the Prefect artifacts, the webhook and Prefect events; the ledger agrees;
and a re-run with the same run key sends only the email."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bulletin import progress
from bulletin.edge.cli import main
from bulletin.edge.cli.delivery import _print, run_report
from bulletin.models import DeliveryStatus, Manifest, RunStatus
from bulletin.settings import Settings
from bulletin.store import list_deliveries, migrate, open_store
from bulletin.store.webhooks import add_endpoint
from tests.fixtures.webhook_receiver import Receiver, running_receiver
from tests.flows.test_delivery_channels import AS_OF, use_real_services, write_report

pytestmark = pytest.mark.usefixtures("prefect_api")
REPORT = "weekly-regional-sales"
RECIPIENT = {"ref": "rm-a", "email": "a@example.com", "org": "acme", "attributes": {"region": "APAC"}}
REFUSED = "554 5.7.1 Message refused by policy"


@pytest.fixture
def reports_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "reports"
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(folder))
    return folder


@pytest.fixture
def receiver() -> Any:
    with running_receiver() as server:
        yield server


def subscribe(receiver: Receiver) -> None:
    with open_store(Settings().database) as store:
        migrate(store)
        _, secret = add_endpoint(
            store,
            url=receiver.url("/hook"),
            event_types=["report.delivered", "report.failed", "run.completed"],
            now=datetime.now(UTC),
        )
    receiver.verify_with("/hook", secret)


def prefect_artifacts(run_id: str) -> dict[str, Any]:
    """The run's table and markdown artifacts, read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> list[Any]:
        async with get_client() as client:
            keys = [f"deliveries-{REPORT}", f"summary-{REPORT}"]
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))

    return {a.key: a.data for a in asyncio.run(read()) if run_id in (a.description or "")}


def prefect_recipient_event(run_id: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(
        event=EventNameFilter(prefix=["bulletin.report."]),
        resource=EventResourceFilter(id=[f"bulletin.report.{REPORT}"]),
    )
    deadline = time.monotonic() + 30
    while True:
        with get_client(sync_client=True) as client:
            events = [e for e in client.read_events(filter=wanted, limit=50).events if e.payload["run_id"] == run_id]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_s3_stored_and_email_refused_is_partial_everywhere_and_a_rerun_sends_only_the_email(
    bulletin_env: Path,
    reports_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    s3_bucket: Any,
    smtp_server: Any,
    receiver: Receiver,
) -> None:
    client, bucket, endpoint = s3_bucket
    use_real_services(monkeypatch, bucket, endpoint, smtp_server)
    monkeypatch.setenv("BULLETIN_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    write_report(reports_dir, REPORT, channels=["s3", "email"], audience={"recipients": [RECIPIENT]})
    subscribe(receiver)
    smtp_server.handler.refuse_data = REFUSED
    heard: list[tuple[str, str]] = []

    with progress.listening(lambda report_id, event, detail: heard.append((event, detail))):
        code = main(["run", REPORT, "--param", f"as_of={AS_OF['as_of']}", "--run-key", "partial-1", "--json"])
    out = capsys.readouterr().out
    assert code == 1, out

    # The manifest, as `bulletin run --json` prints it (and as saved).
    manifest = Manifest.model_validate_json(out)
    assert manifest.status is RunStatus.PARTIAL, "the only recipient got part of its files: PARTIAL, not FAILED"
    (delivery,) = manifest.deliveries
    assert delivery.status is DeliveryStatus.PARTIAL
    outcomes = {(a.channel, a.format): a.outcome for a in delivery.artifacts}
    assert outcomes == {
        ("s3", "pdf"): "sent",
        ("s3", "xlsx"): "sent",
        ("email", "pdf"): "failed",
        ("email", "xlsx"): "failed",
    }
    for artifact in delivery.artifacts:
        if artifact.channel == "s3":
            client.head_object(Bucket=bucket, Key=artifact.uri.removeprefix(f"s3://{bucket}/"))
        else:
            assert "refused the message" in (artifact.note or "") and "554" in (artifact.note or "")
            assert artifact.uri == "" and artifact.sha256, "the rendered file that did not go, by its checksum"
    assert (delivery.error or "").startswith("email: ")
    saved = Settings().manifests_dir / REPORT / f"{manifest.run_id}.json"
    assert Manifest.model_validate_json(saved.read_text()) == manifest
    assert ("PARTIAL", "rm-a") in heard, "the progress bar hears the recipient's status"

    # The run table and its summary line.
    _print([manifest], as_json=False)
    table = capsys.readouterr().out
    assert "partial" in table and "s3 (sent): pdf xlsx" in table and "email (failed): pdf xlsx" in table
    assert "1 delivered" not in table and "0 delivered, 1 partial, 0 skipped, 0 failed" in table

    # The Prefect artifacts: a row per file per channel with its outcome, and the tally.
    published = prefect_artifacts(manifest.run_id)
    rows = json.loads(published[f"deliveries-{REPORT}"])
    assert {(r["channel"], r["format"], r["outcome"], r["status"]) for r in rows} == {
        ("s3", "pdf", "sent", "PARTIAL"),
        ("s3", "xlsx", "sent", "PARTIAL"),
        ("email", "pdf", "failed", "PARTIAL"),
        ("email", "xlsx", "failed", "PARTIAL"),
    }
    assert all("554" in r["error"] for r in rows if r["outcome"] == "failed")
    assert "0 delivered, 1 partial" in published[f"summary-{REPORT}"]

    # The webhook event: report.delivered with status PARTIAL, the sent files and the failed ones, and the error.
    bodies = [json.loads(r.body) for r in receiver.received("/hook")]
    assert all(r.verified_by == (0,) for r in receiver.received("/hook"))
    by_type = {b["type"]: b["data"] for b in bodies}
    assert set(by_type) == {"report.delivered", "run.completed"}, "a partial recipient is not a report.failed"
    event = by_type["report.delivered"]
    assert event["status"] == "PARTIAL" and "554" in event["error"]
    files = {(f["channel"], f["format"]): f for f in event["files"]}
    assert {k: f["outcome"] for k, f in files.items()} == outcomes
    assert files[("s3", "pdf")]["download_url"].startswith(endpoint), "a sent S3 file has its link"
    assert files[("email", "pdf")]["download_url"] is None
    assert by_type["run.completed"]["status"] == "PARTIAL"
    assert by_type["run.completed"]["counts"] == {
        "recipients": 1,
        "delivered": 0,
        "partial": 1,
        "skipped": 0,
        "failed": 0,
    }

    # The Prefect event: bulletin.report.delivered, status PARTIAL, each file's channel and outcome.
    (prefect_event,) = prefect_recipient_event(manifest.run_id)
    assert prefect_event.event == "bulletin.report.delivered"
    assert prefect_event.payload["status"] == "PARTIAL"
    got = {(f["channel"], f["format"]): f["outcome"] for f in prefect_event.payload["files"]}
    assert got == outcomes

    # The ledger agrees with the manifest.
    with open_store(Settings().database) as store:
        ledger = {(r.channel, r.format): r for r in list_deliveries(store, report_id=REPORT, recipient="rm-a")}
    assert {k: r.status.value for k, r in ledger.items()} == {
        ("s3", "pdf"): "sent",
        ("s3", "xlsx"): "sent",
        ("email", "pdf"): "failed",
        ("email", "xlsx"): "failed",
    }
    stored = client.list_objects_v2(Bucket=bucket)["KeyCount"]
    assert not smtp_server.messages

    # SMTP fixed: the same run key sends only the email.
    smtp_server.handler.refuse_data = None
    again = run_report(REPORT, parameters=AS_OF, run_key="partial-1")
    assert again.status is RunStatus.COMPLETED
    (second,) = again.deliveries
    assert second.status is DeliveryStatus.DELIVERED and second.error is None
    assert {(a.channel, a.format): a.outcome for a in second.artifacts} == {
        ("s3", "pdf"): "already_sent",
        ("s3", "xlsx"): "already_sent",
        ("email", "pdf"): "sent",
        ("email", "xlsx"): "sent",
    }
    assert len(smtp_server.messages) == 1
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == stored, "nothing stored twice"


def test_a_deferred_email_is_retried_alone_and_the_last_attempt_still_reports_the_s3_copy(
    bulletin_env: Path, reports_dir: Path, monkeypatch: pytest.MonkeyPatch, s3_bucket: Any, smtp_server: Any
) -> None:
    """SMTP says "try later" (451) every time: Prefect retries the recipient's task (after 2 s and 10 s), each retry
    re-attempts only the email, and the last attempt reports the S3 copy it had stored at the first."""
    client, bucket, endpoint = s3_bucket
    use_real_services(monkeypatch, bucket, endpoint, smtp_server)
    later = {**RECIPIENT, "email": "later@example.com"}
    write_report(reports_dir, REPORT, channels=["s3", "email"], formats=["xlsx"], audience={"recipients": [later]})
    manifest = run_report(REPORT, parameters=AS_OF, run_key="deferred-1")
    assert manifest.status is RunStatus.PARTIAL
    (delivery,) = manifest.deliveries
    assert delivery.status is DeliveryStatus.PARTIAL
    by_channel = {a.channel: a for a in delivery.artifacts}
    # Stored at the first attempt (this run's, so "sent"); the ledger's attempts below show it was not sent again.
    assert by_channel["s3"].outcome == "sent"
    assert by_channel["email"].outcome == "failed" and "451" in (by_channel["email"].note or "")
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    with open_store(Settings().database) as store:
        ledger = {r.channel: r for r in list_deliveries(store, report_id=REPORT, recipient="rm-a")}
    assert (ledger["s3"].status.value, ledger["s3"].attempts) == ("sent", 1)
    assert (ledger["email"].status.value, ledger["email"].attempts) == ("failed", 3)
