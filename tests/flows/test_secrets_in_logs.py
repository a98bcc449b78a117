"""security.md, Secrets: a full delivery (S3 on moto, SMTP with STARTTLS and a password, presigned links, signing
keys from the environment) with every log captured; no secret, token or link signature may appear anywhere."""

from __future__ import annotations

import asyncio
import email
import json
import logging
from datetime import UTC, datetime
from email.policy import default as default_policy
from pathlib import Path

import pytest
import yaml

from bulletin.demo_data import DEMO_END_DATE
from bulletin.edge.cli.delivery import run_report
from bulletin.models import RunStatus
from bulletin.settings import PROJECT_ROOT, Settings
from bulletin.store import list_deliveries, open_store
from tasks.tokens import generate_key
from tasks.tokens.keys import keyset_to_json
from tests.fixtures.smtp import SMTP_PASSWORD, SMTP_USER

pytestmark = pytest.mark.usefixtures("prefect_api")


def read_run_logs(since: datetime) -> str:
    """What the Prefect UI shows for the runs since ``since``: the logs sent to the API by every run logger."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp
    from prefect.logging.handlers import APILogHandler

    async def read() -> list:
        await APILogHandler.aflush()
        async with get_client() as client:
            return await client.read_logs(log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=since)))

    return "\n".join(log.message for log in asyncio.run(read()))


def test_no_secret_reaches_logs_manifests_or_the_ledger(
    bulletin_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    s3_bucket,
    smtp_starttls_server,
) -> None:
    keyset_json = keyset_to_json(generate_key(None, now=datetime.now(UTC)))
    pem_line = next(line for line in keyset_json.split("\\n") if line and "-----" not in line and len(line) > 40)
    _, bucket, endpoint = s3_bucket
    env = {
        "BULLETIN_SIGNING_KEYS": keyset_json,
        "BULLETIN_S3_BUCKET": bucket,
        "BULLETIN_S3_ENDPOINT_URL": endpoint,
        "BULLETIN_S3_REGION": "us-east-1",
        "BULLETIN_SMTP_HOST": "localhost",
        "BULLETIN_SMTP_PORT": str(smtp_starttls_server.port),
        "BULLETIN_SMTP_SECURITY": "starttls",
        "BULLETIN_SMTP_CA_FILE": str(smtp_starttls_server.ca_file),
        "BULLETIN_SMTP_USERNAME": SMTP_USER,
        "BULLETIN_SMTP_PASSWORD": SMTP_PASSWORD,
        "BULLETIN_EMAIL_MAX_BYTES": "20000",  # over the cap: the email carries presigned links
        "BULLETIN_PUBLIC_URL": "https://bulletin.example.com",  # and a one-click unsubscribe token
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reports = tmp_path / "reports"
    reports.mkdir()
    data = yaml.safe_load((PROJECT_ROOT / "deployments/reports/weekly-regional-sales.yaml").read_text())
    data["audience"] = {"recipients": [{"ref": "rm-a", "email": "a@example.com", "attributes": {"region": "APAC"}}]}
    (reports / "weekly-regional-sales.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(reports))

    caplog.set_level(logging.DEBUG, logger="bulletin")
    caplog.set_level(logging.INFO)
    started = datetime.now(UTC)
    manifest = run_report("weekly-regional-sales", parameters={"as_of": DEMO_END_DATE.isoformat()})
    assert manifest.status is RunStatus.COMPLETED, manifest
    run_logs = read_run_logs(since=started)
    (received,) = smtp_starttls_server.messages
    assert b"X-Amz-Signature" in received.content, "the links went to the recipient, and only there"
    unsubscribe = email.message_from_bytes(received.content, policy=default_policy)["List-Unsubscribe"]
    unsubscribe_token = unsubscribe.strip("<>").rsplit("/", 1)[1]

    with open_store(Settings().database) as store:
        ledger = json.dumps([json.loads(r.model_dump_json()) for r in list_deliveries(store)])
    out, err = capfd.readouterr()
    places = {
        "process logs": "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        "flow run logs in the Prefect API": run_logs,
        "stdout+stderr": out + err,
        "manifest": manifest.model_dump_json(),
        "saved manifest": "".join(p.read_text() for p in (bulletin_env / "manifests").rglob("*.json")),
        "ledger": ledger,
    }
    assert "Delivering weekly-regional-sales" in run_logs, "the run's own log was read: the check is not vacuous"
    for where, text in places.items():
        secrets = (SMTP_PASSWORD, pem_line, "X-Amz-Signature", "X-Amz-Credential", "eyJhbGciOi", "eyJ0eXAiOi")
        for secret in (*secrets, unsubscribe_token):
            assert secret not in text, f"{secret[:12]}... leaked into the {where}"
