"""``bulletin run`` against an SMTP server or an S3 endpoint that refuses connections (a closed loopback port): the
terminal shows one line per failed recipient and the summary, never a traceback; the Prefect run logs keep the
details. The CLI runs as a subprocess, the way a person runs it, against the session's Prefect API."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.settings import PREFECT_API_URL

from bulletin.demo_data import DEMO_END_DATE
from tests.fixtures.prefect_server import free_port

pytestmark = pytest.mark.usefixtures("prefect_api")
BULLETIN = str(Path(sys.executable).with_name("bulletin"))


def run_cli(*args: str, **env: str) -> tuple[int, str]:
    result = subprocess.run(
        [BULLETIN, "run", *args, "--param", f"as_of={DEMO_END_DATE}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "COLUMNS": "160", **env},
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


def run_logs(output: str) -> str:
    """The Prefect run logs (what the UI shows) of the flow run the output names."""
    (flow_run_id,) = re.findall(r"run ([0-9a-f-]{36})", output)

    async def read() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
            )
            return [log.message for log in logs]

    return "\n".join(asyncio.run(read()))


def assert_one_line_each(output: str, refs: list[str]) -> None:
    assert "Traceback" not in output, output
    lines = output.splitlines()
    for ref in refs:
        # Table rows only, besides Prefect's one line per finished task (the same for a recipient that failed).
        others = [line for line in lines if ref in line and not line.startswith("│")]
        assert not [line for line in others if f"Task run 'deliver {ref}' - Finished in state" not in line], output
        assert sum(f"│ {ref} " in line for line in lines) == 1, output  # one row names it


def test_smtp_refused_is_one_line_per_recipient_and_the_details_are_in_the_run_logs(bulletin_env: Path) -> None:
    refs = ["rm-amer-east", "rm-latam"]
    code, output = run_cli(
        "weekly-regional-sales",
        *[arg for ref in refs for arg in ("--recipient", ref)],
        BULLETIN_SMTP_HOST="127.0.0.1",
        BULLETIN_SMTP_PORT=str(free_port()),
        BULLETIN_SMTP_SECURITY="none",
    )
    assert code == 1, output
    assert_one_line_each(output, refs)
    assert "ConnectionRefusedError" in output  # the table wraps the reason, so one unbroken word of it
    # Each recipient's S3 copy went into the local bucket: the email alone failed, so they are partial.
    assert "weekly-regional-sales: PARTIAL (0 delivered, 2 partial, 0 skipped, 0 failed)" in output
    # Sent at the first attempt, before the email's retries: this run's own copy, not one "sent earlier".
    assert output.count("s3 (sent): pdf xlsx") == 2 and "already sent" not in output, output

    logs = run_logs(output)  # each failed attempt and its reason, which the terminal leaves out
    assert "Retry 2/2" in logs and "ConnectionRefusedError" in logs
    assert "Retry 2/2" not in output


def test_s3_unreachable_is_one_line_per_recipient(bulletin_env: Path) -> None:
    refs = ["am-acc-0001", "am-acc-0013"]
    code, output = run_cli(
        "daily-account-orders",
        *[arg for ref in refs for arg in ("--recipient", ref)],
        BULLETIN_S3_BUCKET="reports",
        BULLETIN_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        BULLETIN_S3_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    assert code == 1, output
    assert_one_line_each(output, refs)
    assert "cannot reach S3" in output
    assert "daily-account-orders: FAILED (0 delivered, 0 partial, 0 skipped, 2 failed)" in output
