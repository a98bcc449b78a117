"""tasks/delivery/channels.py: the S3 adapter, and boto3 with it, is imported only when the destination is S3."""

from __future__ import annotations

import subprocess
import sys

from bulletin.settings import Settings
from tasks.delivery.channels import choose_destination


def test_importing_the_flow_imports_no_s3_client() -> None:
    code = "import sys, flows.deliver_report; print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_an_s3_destination_is_still_built_when_a_bucket_is_configured() -> None:
    settings = Settings(s3_bucket="reports", s3_endpoint_url="http://127.0.0.1:9", s3_region="us-east-1")
    choice = choose_destination(settings)
    assert choice.where == "s3://reports"
    assert type(choice.build()).__name__ == "S3Destination"
