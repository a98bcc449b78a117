"""Real delivery through the flow: S3 on moto (HTTP + SigV4), email over aiosmtpd, and the ledger that makes
re-runs, duplicate runs and concurrent runs send each file once."""

from __future__ import annotations

import email
import hashlib
import threading
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import httpx
import pytest
import yaml

from bulletin.demo_data import DEMO_END_DATE
from bulletin.edge.cli.delivery import run_report
from bulletin.models import DeliveryStatus, RunStatus
from bulletin.settings import PROJECT_ROOT, Settings
from bulletin.store import list_deliveries, open_store

pytestmark = pytest.mark.usefixtures("prefect_api")
AS_OF = {"as_of": DEMO_END_DATE.isoformat()}


def write_report(folder: Path, name: str, **changes: object) -> None:
    data = yaml.safe_load((PROJECT_ROOT / f"deployments/reports/{name}.yaml").read_text())
    data.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))


RECIPIENTS = [
    {
        "ref": f"am-{i}",
        "email": f"am{i}@{'example.com' if i % 2 else 'example.org'}",
        "attributes": {"account_id": f"ACC-000{i}"},
    }
    for i in range(1, 5)
]


@pytest.fixture
def reports_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "reports"
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(folder))
    return folder


def use_real_services(monkeypatch: pytest.MonkeyPatch, bucket: str, endpoint: str, smtp_server) -> None:
    """Point Bulletin at the moto S3 server and the loopback SMTP server: no other change."""
    monkeypatch.setenv("BULLETIN_S3_BUCKET", bucket)
    monkeypatch.setenv("BULLETIN_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("BULLETIN_S3_REGION", "us-east-1")
    monkeypatch.setenv("BULLETIN_SMTP_HOST", smtp_server.host)
    monkeypatch.setenv("BULLETIN_SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("BULLETIN_SMTP_SECURITY", "none")


def outbox(home: Path) -> list[Path]:
    return sorted((home / "outbox").glob("*.eml")) if (home / "outbox").exists() else []


def test_failed_half_is_retried_with_the_same_key(
    bulletin_env: Path, reports_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_report(reports_dir, "daily-account-orders", channels=["s3", "email"], audience={"recipients": RECIPIENTS})
    monkeypatch.setenv("BULLETIN_EMAIL_ALLOWED_DOMAINS", "example.com")
    first = run_report("daily-account-orders", parameters=AS_OF, run_key="retry-me")
    assert first.status is RunStatus.PARTIAL
    partial = {d.recipient: d for d in first.deliveries if d.status is DeliveryStatus.PARTIAL}
    assert set(partial) == {"am-2", "am-4"}, "example.org is not an allowed domain; their bucket copy went"
    for delivery in partial.values():
        assert {a.channel: a.outcome for a in delivery.artifacts} == {"s3": "sent", "email": "failed"}
    assert len(outbox(bulletin_env)) == 2
    bucket_files = sorted((bulletin_env / "bucket").rglob("*.csv"))

    monkeypatch.setenv("BULLETIN_EMAIL_ALLOWED_DOMAINS", "example.com,example.org")
    second = run_report("daily-account-orders", parameters=AS_OF, run_key="retry-me")
    assert second.status is RunStatus.COMPLETED
    by_ref = {d.recipient: d for d in second.deliveries}
    for ref in ("am-1", "am-3"):
        assert {a.outcome for a in by_ref[ref].artifacts} == {"already_sent"}
    for ref in ("am-2", "am-4"):
        outcomes = {a.channel: a.outcome for a in by_ref[ref].artifacts}
        # The bucket copy went out on the first run; only the email failed, so only the email is sent now.
        assert outcomes == {"s3": "already_sent", "email": "sent"}
    assert len(outbox(bulletin_env)) == 4, "each recipient got exactly one email over both runs"
    assert sorted((bulletin_env / "bucket").rglob("*.csv")) == bucket_files, "no file was stored twice"
    with open_store(Settings().database) as store:
        rows = list_deliveries(store, report_id="daily-account-orders", recipient="am-2")
    email_row = next(r for r in rows if r.channel == "email")
    assert (email_row.status.value, email_row.attempts) == ("sent", 2)


def test_duplicate_run_for_one_key_sends_nothing_twice(bulletin_env: Path) -> None:
    first = run_report("daily-account-orders", parameters=AS_OF, run_key="daily-account-orders@slot-1")
    files = sorted((bulletin_env / "bucket").rglob("*.csv"))
    assert first.status is RunStatus.COMPLETED and files
    again = run_report("daily-account-orders", parameters=AS_OF, run_key="daily-account-orders@slot-1")
    assert again.status is RunStatus.COMPLETED
    assert {a.outcome for d in again.deliveries for a in d.artifacts} == {"already_sent"}
    assert sorted((bulletin_env / "bucket").rglob("*.csv")) == files


def test_two_concurrent_runs_send_once(bulletin_env: Path) -> None:
    results = []

    def go() -> None:
        results.append(run_report("daily-account-orders", parameters=AS_OF, run_key="concurrent-key"))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    files = list((bulletin_env / "bucket").rglob("*.csv"))
    recipients = {d.recipient for d in results[0].deliveries}
    assert len(files) == len(recipients), "each recipient's file was stored exactly once"
    sent = [a for m in results for d in m.deliveries for a in d.artifacts if a.outcome == "sent"]
    assert len(sent) == len(recipients)


def test_skip_if_empty_and_send_only_if_changed(bulletin_env: Path, reports_dir: Path) -> None:
    write_report(
        reports_dir,
        "daily-account-orders",
        audience={"recipients": RECIPIENTS[:2]},
        skip_if_empty=True,
        send_only_if_changed=True,
    )
    empty = run_report("daily-account-orders", parameters={"as_of": "1999-01-01"})
    assert empty.status is RunStatus.COMPLETED
    assert {d.status for d in empty.deliveries} == {DeliveryStatus.SKIPPED}
    assert all("skip_if_empty" in (a.note or "") for d in empty.deliveries for a in d.artifacts)
    assert not (bulletin_env / "bucket").exists()

    first = run_report("daily-account-orders", parameters=AS_OF)
    assert {d.status for d in first.deliveries} == {DeliveryStatus.DELIVERED}
    same = run_report("daily-account-orders", parameters=AS_OF)
    assert {d.status for d in same.deliveries} == {DeliveryStatus.SKIPPED}
    assert all("unchanged" in (a.note or "") for d in same.deliveries for a in d.artifacts)
    assert len(list((bulletin_env / "bucket").rglob("*.csv"))) == 2


def test_row_limit_says_so_in_the_file(bulletin_env: Path, reports_dir: Path) -> None:
    write_report(reports_dir, "daily-account-orders", audience={"recipients": RECIPIENTS[:1]}, limit=2)
    manifest = run_report("daily-account-orders", parameters=AS_OF)
    (artifact,) = manifest.deliveries[0].artifacts
    assert artifact.rows == 2
    text = Path(artifact.uri.removeprefix("file://")).read_text()
    assert "# truncated: first 2 rows shown" in text


def test_s3_and_smtp_for_real(
    bulletin_env: Path, reports_dir: Path, monkeypatch: pytest.MonkeyPatch, s3_bucket, smtp_server
) -> None:
    client, bucket, endpoint = s3_bucket
    use_real_services(monkeypatch, bucket, endpoint, smtp_server)
    recipients = [
        {"ref": "rm-a", "email": "a@example.com", "org": "acme", "attributes": {"region": "APAC"}},
        {"ref": "rm-b", "email": "b@example.com", "org": "globex", "attributes": {"region": "LATAM"}},
    ]
    write_report(reports_dir, "weekly-regional-sales", audience={"recipients": recipients})
    manifest = run_report("weekly-regional-sales", parameters=AS_OF)
    assert manifest.status is RunStatus.COMPLETED, manifest

    messages = smtp_server.messages
    assert sorted(m.rcpt_tos[0] for m in messages) == ["a@example.com", "b@example.com"]
    assert all(len(m.rcpt_tos) == 1 for m in messages)
    for delivery in manifest.deliveries:
        s3_files = [a for a in delivery.artifacts if a.channel == "s3"]
        assert {a.format for a in s3_files} == {"pdf", "xlsx"}
        for artifact in s3_files:
            assert artifact.uri.startswith(f"s3://{bucket}/reports/")
            key = artifact.uri.removeprefix(f"s3://{bucket}/")
            head = client.head_object(Bucket=bucket, Key=key)
            assert head["ServerSideEncryption"] == "AES256"
            assert head["Metadata"]["sha256"] == artifact.sha256
            assert head["Metadata"]["recipient"] == delivery.recipient
            assert f"/{'acme' if delivery.recipient == 'rm-a' else 'globex'}/" in key, "a prefix per organisation"
        message = next(
            email.message_from_bytes(m.content, policy=default_policy)
            for m in messages
            if m.rcpt_tos[0].startswith(delivery.recipient[-1])
        )
        assert isinstance(message, EmailMessage)
        attached = {
            part.get_filename(): hashlib.sha256(part.get_content()).hexdigest() for part in message.iter_attachments()
        }
        expected = {a.sha256 for a in delivery.artifacts if a.channel == "email"}
        assert set(attached.values()) >= expected
        html = message.get_body(preferencelist=("html",)).get_content()
        assert "cid:" in html and "Rows" in html
    assert "X-Amz-Signature" not in manifest.model_dump_json(), "manifests never carry presigned links"


def test_over_the_cap_email_carries_presigned_links(
    bulletin_env: Path, reports_dir: Path, monkeypatch: pytest.MonkeyPatch, s3_bucket, smtp_server
) -> None:
    _, bucket, endpoint = s3_bucket
    use_real_services(monkeypatch, bucket, endpoint, smtp_server)
    monkeypatch.setenv("BULLETIN_EMAIL_MAX_BYTES", "20000")
    recipients = [{"ref": "rm-a", "email": "a@example.com", "attributes": {"region": "APAC"}}]
    write_report(reports_dir, "weekly-regional-sales", audience={"recipients": recipients}, channels=["email"])
    manifest = run_report("weekly-regional-sales", parameters=AS_OF)
    assert manifest.status is RunStatus.COMPLETED
    notes = {a.note for a in manifest.deliveries[0].artifacts}
    assert notes == {"over the size cap: sent as download links"}
    (received,) = smtp_server.messages
    message = email.message_from_bytes(received.content, policy=default_policy)
    assert not list(message.iter_attachments())
    text = message.get_body(preferencelist=("plain",)).get_content()
    links = [line.strip() for line in text.split() if line.startswith("http")]
    assert len(links) == 2 and all("X-Amz-Algorithm=AWS4-HMAC-SHA256" in link for link in links)
    for link in links:
        body = httpx.get(link).content
        assert hashlib.sha256(body).hexdigest() in {a.sha256 for a in manifest.deliveries[0].artifacts}
    assert "X-Amz-Signature" not in manifest.model_dump_json()


def test_per_report_email_templates(bulletin_env: Path, reports_dir: Path) -> None:
    write_report(
        reports_dir,
        "daily-account-orders",
        channels=["email"],
        audience={"recipients": RECIPIENTS[:1]},
        email={"subject": "Orders for {{ recipient.ref }}: {{ title }}", "text": "Hello {{ recipient.email }}."},
    )
    manifest = run_report("daily-account-orders", parameters=AS_OF)
    assert manifest.status is RunStatus.COMPLETED
    (eml,) = outbox(bulletin_env)
    message = email.message_from_bytes(eml.read_bytes(), policy=default_policy)
    assert message["Subject"] == "Orders for am-1: Daily account orders"
    assert message["To"] == "am1@example.com"
    assert "Hello am1@example.com." in message.get_body(preferencelist=("plain",)).get_content()
    (attachment,) = message.iter_attachments()
    assert attachment.get_content_type() == "text/csv"
    (artifact,) = manifest.deliveries[0].artifacts
    assert hashlib.sha256(attachment.get_payload(decode=True)).hexdigest() == artifact.sha256


def test_a_run_states_the_period_its_filters_cover(bulletin_env: Path, reports_dir: Path) -> None:
    # The daily report declares no period: the run reads it from its own order_date filter, and the email is filed
    # under the day it covers, not under the day it was sent.
    write_report(reports_dir, "daily-account-orders", channels=["email"], audience={"recipients": RECIPIENTS[:1]})
    assert run_report("daily-account-orders", parameters={"as_of": "2026-10-31"}).status is not RunStatus.FAILED
    (eml,) = outbox(bulletin_env)
    message = email.message_from_bytes(eml.read_bytes(), policy=default_policy)
    assert message["Subject"] == "Daily account orders, 31 Oct 2026"
    assert "Period: 31 Oct 2026" in message.get_body(preferencelist=("plain",)).get_content()


def test_a_recipient_with_no_rows_is_told_so_in_a_sentence_not_an_empty_table(
    bulletin_env: Path, reports_dir: Path
) -> None:
    import pypdf
    from python_calamine import CalamineWorkbook

    nobody = {"ref": "am-0", "email": "am0@example.com", "attributes": {"account_id": "ACC-NONE"}}
    write_report(
        reports_dir,
        "daily-account-orders",
        channels=["s3", "email"],
        formats=["pdf", "xlsx"],
        audience={"recipients": [nobody]},
        chart={"category": "product", "measure": "amount", "agg": "sum"},
    )
    manifest = run_report("daily-account-orders", parameters={"as_of": "2026-10-31"})
    assert manifest.status is RunStatus.COMPLETED, "no rows is not a failure: the recipient is told so"
    sentence = "No orders for ACC-NONE (31 Oct 2026)."  # the dataset is "Orders"
    assert {a.format: a.rows for a in manifest.deliveries[0].artifacts if a.channel == "s3"} == {"pdf": 0, "xlsx": 0}
    (pdf,) = (bulletin_env / "bucket").rglob("*.pdf")
    (page,) = pypdf.PdfReader(pdf).pages
    text = page.extract_text()
    assert sentence in text and "Customer" not in text, "the sentence takes the empty table's place"
    assert "sum of" not in text.lower(), "no empty chart frame"
    (xlsx,) = (bulletin_env / "bucket").rglob("*.xlsx")
    summary = {r[0]: r[1] for r in CalamineWorkbook.from_path(str(xlsx)).get_sheet_by_name("Summary").to_python()}
    assert summary["Note"] == sentence and summary["Rows"] == 0
    (eml,) = outbox(bulletin_env)
    message = email.message_from_bytes(eml.read_bytes(), policy=default_policy)
    assert sentence in message.get_body(preferencelist=("plain",)).get_content()
    assert sentence in message.get_body(preferencelist=("html",)).get_content()

    # skip_if_empty keeps its meaning: nothing is sent, the ledger says why.
    write_report(reports_dir, "daily-account-orders", audience={"recipients": [nobody]}, skip_if_empty=True)
    skipped = run_report("daily-account-orders", parameters={"as_of": "2026-10-30"})
    assert {a.outcome for a in skipped.deliveries[0].artifacts} == {"skipped"}
