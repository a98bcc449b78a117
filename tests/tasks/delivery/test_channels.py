"""tasks/delivery/channels.py: the S3 adapter, and boto3 with it, is imported only when the destination is S3; a file
goes to S3 with the digest its render computed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bulletin.settings import Settings
from tasks.delivery.channels import BucketChannel, KeyParts, RenderedFile, choose_destination
from tasks.storage.s3 import S3Destination
from tests.fixtures.s3 import S3TestBucket


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


def test_a_bucket_channel_stores_with_the_digest_of_the_render(
    s3_bucket: S3TestBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The render hashed the file already: the store does not hash it again, and the object carries that digest."""
    data = b"region,total\nnorth,12\n"
    path = tmp_path / "weekly.csv"
    path.write_bytes(data)
    file = RenderedFile(format="csv", path=path, rows=1, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    parts = KeyParts("", "weekly", "rm-north", None, "run-1", datetime(2026, 11, 2, 7, tzinfo=UTC))
    monkeypatch.setattr("tasks.storage.s3.sha256_file", lambda path: pytest.fail(f"{path} was hashed again"))
    channel = BucketChannel("s3", S3Destination(s3_bucket.client, s3_bucket.name), link_seconds=60)
    stored = channel.store(parts, file, {"report": "weekly"})
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=stored.key, ChecksumMode="ENABLED")
    assert stored.sha256 == head["Metadata"]["sha256"] == file.sha256
    assert head["Metadata"]["report"] == "weekly"
    assert (
        hashlib.sha256(s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=stored.key)["Body"].read()).hexdigest()
        == file.sha256
    )
