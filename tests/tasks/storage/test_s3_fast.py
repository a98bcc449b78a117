"""A file's single PutObject through obstore (tasks/storage/s3_fast.py), against moto over HTTP and a loopback
receiver that records what each client sends: the same key, headers, checks and credentials as boto3's, boto3 where
it declines, and boto3's errors when it fails."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bulletin.errors import ConfigError, TransientError
from tasks.storage.s3 import S3Destination
from tasks.storage.s3_clients import forget_s3_clients, shared_s3
from tasks.storage.s3_fast import FastPut, declines, make_fast_put
from tasks.storage.s3_rules import sse_params
from tests.fixtures.prefect_server import free_port
from tests.fixtures.s3 import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    S3TestBucket,
    aws_test_client,
    record_requests,
    s3_settings,
    write,
)

KEY = "weekly/2026/11/02/rm-north/weekly-20261102T070005Z-abc123.xlsx"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
META = {"report": "weekly", "recipient": "rm-north", "run": "abc123", "token-jti": "jti-1"}


@pytest.fixture(autouse=True)
def fresh_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    forget_s3_clients()
    yield
    forget_s3_clients()


def b64_of(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


# --- through obstore, against moto ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sse", ["AES256", "aws:kms"])
def test_a_put_through_obstore_stores_what_boto3_would(s3_bucket: S3TestBucket, tmp_path: Path, sse: str) -> None:
    kms = None
    if sse == "aws:kms":
        kms = aws_test_client("kms", s3_bucket.endpoint).create_key(Description="t")["KeyMetadata"]["KeyId"]
    settings = s3_settings(s3_bucket.endpoint, s3_bucket.name, s3_prefix="org-1", s3_sse=sse, s3_kms_key_id=kms)
    destination = S3Destination.from_settings(settings)
    assert isinstance(destination.fast, FastPut)
    sent = record_requests(destination.client, "PutObject")
    data = os.urandom(30_000)
    digest = hashlib.sha256(data).hexdigest()
    stored = destination.put(KEY, write(tmp_path / "r.xlsx", data), content_type=XLSX, metadata=META, sha256=digest)
    assert sent == []  # boto3 sent nothing: obstore did
    full_key = f"org-1/{KEY}"
    assert (stored.key, stored.bytes, stored.sha256) == (full_key, len(data), digest)
    [listed] = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    assert listed["Key"] == full_key  # exactly our key
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=full_key, ChecksumMode="ENABLED")
    assert head["ContentType"] == XLSX
    assert head["ContentDisposition"] == (
        'attachment; filename="weekly-20261102T070005Z-abc123.xlsx"; '
        "filename*=UTF-8''weekly-20261102T070005Z-abc123.xlsx"
    )
    assert head["Metadata"] == {**META, "sha256": digest}
    assert head["ServerSideEncryption"] == sse
    assert head.get("SSEKMSKeyId") == kms
    # moto keeps a checksum only when the request also names it in x-amz-sdk-checksum-algorithm, an SDK hint S3
    # ignores when the checksum itself is sent; obstore does not send it (see the on-the-wire test below).
    body = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=full_key)["Body"].read()
    assert body == data


def test_a_taken_key_through_obstore_goes_to_the_next_free_key(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    destination = S3Destination.from_settings(s3_settings(s3_bucket.endpoint, s3_bucket.name))
    sent = record_requests(destination.client, "PutObject")
    keys = [
        destination.put(KEY, write(tmp_path / f"{n}.xlsx", n.encode()), content_type=XLSX, metadata=META).key
        for n in ("first", "second", "third")
    ]
    stem = KEY.removesuffix(".xlsx")
    assert keys == [KEY, f"{stem}-1.xlsx", f"{stem}-2.xlsx"]
    assert sent == []
    bodies = [s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=k)["Body"].read() for k in keys]
    assert bodies == [b"first", b"second", b"third"]


def test_every_key_character_we_allow_is_kept_exactly(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    destination = S3Destination.from_settings(s3_settings(s3_bucket.endpoint, s3_bucket.name))
    sent = record_requests(destination.client, "PutObject")
    key = "Az09._-x/a.b_c-D/0-report_v1.2.csv"
    stored = destination.put(key, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=META)
    assert stored.key == key and sent == []
    [listed] = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    assert listed["Key"] == key


# --- where it declines: boto3 sends -----------------------------------------------------------------------------------


def test_a_file_changed_since_its_render_goes_through_boto3(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    """object_store would hash the body it sends; boto3 sends the render's digest, which S3 checks the body against."""
    destination = S3Destination.from_settings(s3_settings(s3_bucket.endpoint, s3_bucket.name))
    sent = record_requests(destination.client, "PutObject")
    rendered = hashlib.sha256(b"as rendered").hexdigest()
    destination.put(KEY, write(tmp_path / "r.xlsx", b"changed"), content_type=XLSX, metadata=META, sha256=rendered)
    [put] = sent
    assert put.headers["x-amz-checksum-sha256"] == b64_of(rendered).encode()


@pytest.mark.parametrize("name", ["content-type", "ContentType", "cache-control", "storage-class", "storageclass"])
def test_metadata_named_like_a_header_goes_through_boto3(s3_bucket: S3TestBucket, tmp_path: Path, name: str) -> None:
    """object_store takes these names as the object's headers; boto3 sends them as x-amz-meta-*."""
    destination = S3Destination.from_settings(s3_settings(s3_bucket.endpoint, s3_bucket.name))
    sent = record_requests(destination.client, "PutObject")
    metadata = {**META, name.lower(): "x"}
    destination.put(KEY, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=metadata)
    assert len(sent) == 1
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=KEY)
    assert head["ContentType"] == "text/csv" and head["Metadata"][name.lower()] == "x"


def test_where_the_fast_path_is_off(s3_bucket: S3TestBucket, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = s3_bucket.endpoint
    session, _ = shared_s3(s3_settings(endpoint, s3_bucket.name))
    assert declines(s3_settings(endpoint, s3_bucket.name), session) is None
    assert declines(s3_settings(endpoint, s3_bucket.name, s3_fast_put=False), session) == "BULLETIN_S3_FAST_PUT is off"
    assert "AWS itself" in str(declines(s3_settings(endpoint, s3_bucket.name, s3_endpoint_url=None), session))
    https = s3_settings("https://minio.example.com", s3_bucket.name)
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/private-ca.pem")
    assert declines(https, session) == "a CA bundle is configured for an https endpoint"
    assert declines(s3_settings(endpoint, s3_bucket.name), session) is None  # plain http: no certificates at all
    monkeypatch.delenv("AWS_CA_BUNDLE")
    assert declines(https, session) is None
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert declines(s3_settings(endpoint, s3_bucket.name), session) is None  # NO_PROXY alone sets no proxy
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.com:3128")
    assert declines(s3_settings(endpoint, s3_bucket.name), session) is None  # NO_PROXY exempts the endpoint
    assert declines(https, session) == "a proxy is configured"
    monkeypatch.delenv("NO_PROXY")
    assert declines(s3_settings(endpoint, s3_bucket.name), session) == "a proxy is configured"
    forget_s3_clients()
    assert S3Destination.from_settings(s3_settings(endpoint, s3_bucket.name)).fast is None


def test_a_forked_process_puts_through_boto3(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    """obstore's Rust threads do not survive a fork: a child of a process that used it declines, before any call."""
    destination = S3Destination.from_settings(s3_settings(s3_bucket.endpoint, s3_bucket.name))
    assert destination.fast is not None
    destination.put(KEY, write(tmp_path / "r.csv", b"parent"), content_type="text/csv", metadata=META)
    args = {"Bucket": s3_bucket.name, "Key": "child.csv", "ContentType": "text/csv", "Metadata": {}}
    args["ContentDisposition"] = "attachment"
    pid = os.fork()
    if pid == 0:  # the child: only the decision, then out at once
        os._exit(0 if destination.fast.put(args, b"x", hashlib.sha256(b"x").hexdigest()) == "declined" else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_without_credentials_boto3_says_so(
    s3_bucket: S3TestBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with caplog.at_level(logging.INFO, logger="tasks.storage"):
        destination = S3Destination.from_settings(s3_settings(s3_bucket.endpoint, s3_bucket.name))
    assert destination.fast is None
    assert "S3 PutObjects go through boto3: obstore cannot be set up (ValueError)" in caplog.messages
    with pytest.raises(ConfigError, match="no usable AWS credentials"):
        destination.put(KEY, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=META)


def test_a_destination_over_a_given_client_uses_boto3_only(s3_bucket: S3TestBucket) -> None:
    settings = s3_settings(s3_bucket.endpoint, s3_bucket.name)
    assert S3Destination.from_settings(settings, s3_bucket.client).fast is None


# --- when it fails: boto3 sends, and reports --------------------------------------------------------------------------


def unreachable_fast_put(s3_bucket: S3TestBucket) -> FastPut:
    """A fast path whose store points at a closed port: every attempt fails before anything is stored."""
    dead = s3_settings(f"http://127.0.0.1:{free_port()}", s3_bucket.name)
    session, _ = shared_s3(dead)
    fast = make_fast_put(dead, session, s3_bucket.name, sse_params())
    assert fast is not None
    return fast


def test_a_failed_put_through_obstore_goes_through_boto3(
    s3_bucket: S3TestBucket, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    destination = S3Destination(s3_bucket.client, s3_bucket.name, fast=unreachable_fast_put(s3_bucket))
    sent = record_requests(s3_bucket.client, "PutObject")
    with caplog.at_level(logging.WARNING, logger="tasks.storage"):
        stored = destination.put(KEY, write(tmp_path / "r.csv", b"data"), content_type="text/csv", metadata=META)
    assert stored.key == KEY and len(sent) == 1
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning == f"PutObject of s3://{s3_bucket.name}/{KEY} failed through obstore (GenericError); boto3 stored it"
    assert FAKE_SECRET_ACCESS_KEY not in caplog.text and FAKE_ACCESS_KEY_ID not in caplog.text


def test_an_answer_lost_after_obstore_stored_the_file_is_not_a_second_file(
    s3_bucket: S3TestBucket, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The key holds an object with this file's digest: the failed attempt stored it. It is not sent again."""
    data = b"region,total\nnorth,12\n"
    digest = hashlib.sha256(data).hexdigest()
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=KEY, Body=data, Metadata={**META, "sha256": digest})
    destination = S3Destination(s3_bucket.client, s3_bucket.name, fast=unreachable_fast_put(s3_bucket))
    with caplog.at_level(logging.WARNING, logger="tasks.storage"):
        stored = destination.put(KEY, write(tmp_path / "r.csv", data), content_type="text/csv", metadata=META)
    assert stored.key == KEY
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert (
        warning == f"PutObject of s3://{s3_bucket.name}/{KEY} failed through obstore (GenericError) but stored the file"
    )
    assert [o["Key"] for o in s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]] == [KEY]
    other = destination.put(KEY, write(tmp_path / "o.csv", b"other"), content_type="text/csv", metadata=META)
    assert other.key == KEY.removesuffix(".xlsx") + "-1.xlsx"  # another file under the key is still a conflict


def test_a_missing_bucket_is_boto3s_clear_config_error(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    destination = S3Destination.from_settings(s3_settings(s3_bucket.endpoint, "bulletin-no-such-bucket"))
    assert destination.fast is not None
    with pytest.raises(ConfigError, match="does not exist"):
        destination.put(KEY, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=META)


def test_an_unreachable_endpoint_is_transient(
    aws_fake_credentials: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Both clients fail: the endpoint is at fault, and boto3's error says so once, with no warning about obstore."""
    settings = s3_settings(f"http://127.0.0.1:{free_port()}", "some-bucket")
    session, _ = shared_s3(settings)
    client = aws_test_client("s3", str(settings.s3_endpoint_url), retries={"total_max_attempts": 1})
    destination = S3Destination(
        client, "some-bucket", fast=make_fast_put(settings, session, "some-bucket", sse_params())
    )
    with pytest.raises(TransientError) as caught, caplog.at_level(logging.WARNING, logger="tasks.storage"):
        destination.put(KEY, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=META)
    assert FAKE_SECRET_ACCESS_KEY not in str(caught.value)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# --- on the wire: the same request as boto3's -------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("ETag", '"e"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


SAME = (
    "if-none-match",
    "content-type",
    "content-disposition",
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-checksum-sha256",
    "x-amz-meta-report",
    "x-amz-meta-recipient",
    "x-amz-meta-run",
    "x-amz-meta-token-jti",
    "x-amz-meta-sha256",
)


@pytest.mark.parametrize("region", ["us-east-1", None])
def test_obstore_sends_the_request_boto3_sends(
    recorder: tuple[str, list[tuple[str, dict[str, str], bytes]]],
    aws_fake_credentials: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    region: str | None,
) -> None:
    """Without BULLETIN_S3_REGION both sign for the region boto3 resolves (here the environment's)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    endpoint, seen = recorder
    settings = s3_settings(
        endpoint, "reports-bucket", s3_sse="aws:kms", s3_kms_key_id="alias/reports", s3_region=region
    )
    data = os.urandom(5000)
    digest = hashlib.sha256(data).hexdigest()
    fast = S3Destination.from_settings(settings)
    assert fast.fast is not None
    slow = S3Destination.from_settings(settings, fast.client)
    for destination in (fast, slow):
        destination.put(KEY, write(tmp_path / "r.xlsx", data), content_type=XLSX, metadata=META, sha256=digest)
    (path_1, ours, body_1), (path_2, boto3s, body_2) = seen
    assert path_1 == path_2 == f"/reports-bucket/{KEY}"
    assert body_1 == body_2 == data
    assert {h: ours.get(h) for h in SAME} == {h: boto3s.get(h) for h in SAME}
    assert ours["x-amz-checksum-sha256"] == b64_of(digest) and ours["if-none-match"] == "*"
    assert ours["x-amz-content-sha256"] == boto3s["x-amz-content-sha256"] == digest  # the signed payload's hash

    def signed(headers: dict[str, str]) -> tuple[str, set[str]]:
        credential, _, rest = headers["authorization"].partition("Credential=")[2].partition(", SignedHeaders=")
        return credential, set(rest.partition(",")[0].split(";"))

    (our_credential, our_signed), (their_credential, their_signed) = signed(ours), signed(boto3s)
    assert our_credential == their_credential  # the same access key, day, region and service
    scope = f"/{region or 'eu-central-1'}/s3/aws4_request"
    assert our_credential.startswith(f"{FAKE_ACCESS_KEY_ID}/") and our_credential.endswith(scope)
    # Every header either sends is signed by both; boto3 adds only its SDK hint naming the checksum's algorithm.
    assert their_signed - our_signed == {"x-amz-sdk-checksum-algorithm"}
    assert our_signed <= their_signed and set(SAME) - {"if-none-match"} <= our_signed | {"content-type"}
