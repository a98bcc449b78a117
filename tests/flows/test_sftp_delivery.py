"""The sftp channel end to end: a report with ``channels: [s3, sftp]`` delivers to moto's S3 and to a real OpenSSH
server on loopback (tests/fixtures/sshd.py); a wrong host key fails the sftp channel only, and says so truthfully in
the manifest and the ledger, and a re-run with the same key, once the host key is right, sends only the sftp files."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from bulletin.edge.cli.delivery import run_report
from bulletin.models import DeliveryStatus, RunStatus
from bulletin.settings import Settings
from bulletin.store import list_deliveries, open_store
from bulletin.store.ledger_queries import audit
from tests.fixtures.sshd import SshdServer
from tests.flows.test_delivery_channels import AS_OF, write_report

pytestmark = [
    pytest.mark.usefixtures("prefect_api"),
]
REPORT = "weekly-regional-sales"
RECIPIENT = {"ref": "rm-a", "email": "a@example.com", "org": "acme", "attributes": {"region": "APAC"}}


@pytest.fixture
def reports_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "reports"
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(folder))
    return folder


def use_s3_and_sftp(
    monkeypatch: pytest.MonkeyPatch, s3_bucket: Any, server: SshdServer, drop: Path, known_hosts: Path
) -> None:
    """Point Bulletin at moto's S3 and the loopback sshd: settings only, no other change."""
    _, bucket, endpoint = s3_bucket
    monkeypatch.setenv("BULLETIN_S3_BUCKET", bucket)
    monkeypatch.setenv("BULLETIN_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("BULLETIN_S3_REGION", "us-east-1")
    monkeypatch.setenv("BULLETIN_SFTP_HOST", server.host)
    monkeypatch.setenv("BULLETIN_SFTP_PORT", str(server.port))
    monkeypatch.setenv("BULLETIN_SFTP_USERNAME", server.username)
    monkeypatch.setenv("BULLETIN_SFTP_PRIVATE_KEY_FILE", str(server.private_key))
    monkeypatch.setenv("BULLETIN_SFTP_KNOWN_HOSTS_FILE", str(known_hosts))
    monkeypatch.setenv("BULLETIN_SFTP_DIRECTORY", str(drop))


def local_path(uri: str, server: SshdServer) -> Path:
    """Where an ``sftp://`` URI of the loopback server is on this machine (the server runs here)."""
    parts = urlsplit(uri)
    assert (parts.scheme, parts.hostname, parts.port, parts.username) == (
        "sftp",
        server.host,
        server.port,
        server.username,
    )
    return Path(unquote(parts.path))


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_report_with_s3_and_sftp_delivers_to_both_with_sha256_ledger_and_audit(
    bulletin_env: Path,
    reports_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3_bucket: Any,
    sshd_server: SshdServer,
    tmp_path: Path,
) -> None:
    client, bucket, _ = s3_bucket
    drop = tmp_path / "drop"
    use_s3_and_sftp(monkeypatch, s3_bucket, sshd_server, drop, sshd_server.known_hosts)
    write_report(reports_dir, REPORT, channels=["s3", "sftp"], audience={"recipients": [RECIPIENT]})

    manifest = run_report(REPORT, parameters=AS_OF, run_key="sftp-both-1")

    assert manifest.status is RunStatus.COMPLETED
    (delivery,) = manifest.deliveries
    assert delivery.status is DeliveryStatus.DELIVERED and delivery.error is None
    by_pair = {(a.channel, a.format): a for a in delivery.artifacts}
    assert {pair: a.outcome for pair, a in by_pair.items()} == {
        ("s3", "pdf"): "sent",
        ("s3", "xlsx"): "sent",
        ("sftp", "pdf"): "sent",
        ("sftp", "xlsx"): "sent",
    }
    for (channel, _fmt), artifact in by_pair.items():
        if channel == "s3":
            client.head_object(Bucket=bucket, Key=artifact.uri.removeprefix(f"s3://{bucket}/"))
            continue
        path = local_path(artifact.uri, sshd_server)
        assert path.is_relative_to(drop) and {"acme", REPORT, "rm-a"} <= set(path.parts), "per org/report/recipient"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == artifact.sha256
        assert artifact.bytes == path.stat().st_size
    assert not [p for p in files_in(drop) if p.name.startswith(".")], "no temporary file left behind"

    with open_store(Settings().database) as store:
        ledger = {(r.channel, r.format): r for r in list_deliveries(store, report_id=REPORT, recipient="rm-a")}
        entries = [e for e in audit(store, "rm-a") if e.channel == "sftp"]
    assert ledger[("sftp", "pdf")].status.value == "sent"
    assert ledger[("sftp", "pdf")].sha256 == by_pair[("sftp", "pdf")].sha256
    assert ledger[("sftp", "pdf")].uri == by_pair[("sftp", "pdf")].uri
    assert {e.format for e in entries} == {"pdf", "xlsx"} and all(e.token_jti for e in entries), "audit rows"

    # Exactly once: the same run key again stores nothing more on either channel.
    stored_s3 = client.list_objects_v2(Bucket=bucket)["KeyCount"]
    stored_sftp = files_in(drop)
    again = run_report(REPORT, parameters=AS_OF, run_key="sftp-both-1")
    assert {a.outcome for a in again.deliveries[0].artifacts} == {"already_sent"}
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == stored_s3
    assert files_in(drop) == stored_sftp


def test_a_wrong_host_key_fails_the_sftp_channel_only_and_a_rerun_sends_only_sftp(
    bulletin_env: Path,
    reports_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3_bucket: Any,
    sshd_server: SshdServer,
    tmp_path: Path,
) -> None:
    client, bucket, _ = s3_bucket
    drop = tmp_path / "drop"
    use_s3_and_sftp(monkeypatch, s3_bucket, sshd_server, drop, sshd_server.wrong_known_hosts)
    write_report(reports_dir, REPORT, channels=["s3", "sftp"], audience={"recipients": [RECIPIENT]})

    manifest = run_report(REPORT, parameters=AS_OF, run_key="sftp-hostkey-1")

    assert manifest.status is RunStatus.PARTIAL, "the S3 copies went: PARTIAL, not FAILED"
    (delivery,) = manifest.deliveries
    assert delivery.status is DeliveryStatus.PARTIAL
    outcomes = {(a.channel, a.format): a.outcome for a in delivery.artifacts}
    assert outcomes == {
        ("s3", "pdf"): "sent",
        ("s3", "xlsx"): "sent",
        ("sftp", "pdf"): "failed",
        ("sftp", "xlsx"): "failed",
    }
    for artifact in delivery.artifacts:
        if artifact.channel == "sftp":
            note = artifact.note or ""
            assert "127.0.0.1" in note and sshd_server.host_key_fingerprint in note, "names the host and its key"
            assert artifact.uri == "" and artifact.sha256
    assert (delivery.error or "").startswith("sftp: ")
    assert files_in(drop) == [], "nothing written to a server whose key is wrong"
    with open_store(Settings().database) as store:
        ledger = {(r.channel, r.format): r for r in list_deliveries(store, report_id=REPORT, recipient="rm-a")}
    assert {k: r.status.value for k, r in ledger.items()} == {
        ("s3", "pdf"): "sent",
        ("s3", "xlsx"): "sent",
        ("sftp", "pdf"): "failed",
        ("sftp", "xlsx"): "failed",
    }
    assert ledger[("sftp", "pdf")].attempts == 1, "a host key refusal is permanent: not retried"
    stored_s3 = client.list_objects_v2(Bucket=bucket)["KeyCount"]

    # The operator puts the right host key in place: the same run key sends only the sftp files.
    monkeypatch.setenv("BULLETIN_SFTP_KNOWN_HOSTS_FILE", str(sshd_server.known_hosts))
    again = run_report(REPORT, parameters=AS_OF, run_key="sftp-hostkey-1")
    assert again.status is RunStatus.COMPLETED
    assert {(a.channel, a.format): a.outcome for a in again.deliveries[0].artifacts} == {
        ("s3", "pdf"): "already_sent",
        ("s3", "xlsx"): "already_sent",
        ("sftp", "pdf"): "sent",
        ("sftp", "xlsx"): "sent",
    }
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == stored_s3, "nothing stored twice on S3"
    assert len(files_in(drop)) == 2
