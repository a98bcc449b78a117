"""The S3 destination against moto's real HTTP server (SigV4, path-style), plus its pure helpers."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from bulletin.errors import ConfigError, DefinitionError, StorageError, TransientError
from tasks.storage import parse_duration
from tasks.storage.base import clamp_expiry
from tasks.storage.s3 import (
    MAX_EXPIRY_SECONDS,
    PresignedLink,
    S3Destination,
    classify_error,
    make_s3_client,
    presign_download,
)
from tasks.storage.s3_rules import content_disposition, format_s3_uri, join_key, parse_s3_uri, redact_url, sse_params
from tests.fixtures.s3 import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    S3TestBucket,
    aws_test_client,
    record_requests,
    s3_settings,
    write,
)

MIB = 1024 * 1024
KEY = "weekly/2026/11/02/rm-north/weekly-20261102T070005Z-abc123.csv"
META = {"report": "weekly", "recipient": "rm-north", "run": "abc123", "token-jti": "jti-1"}
NOW = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def read(bucket: S3TestBucket, key: str) -> bytes:
    return bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()  # type: ignore[no-any-return]


# --- pure helpers -------------------------------------------------------------------------------------------------


def test_uris_round_trip() -> None:
    assert format_s3_uri("my-bucket", "a/b.csv") == "s3://my-bucket/a/b.csv"
    assert parse_s3_uri("s3://my-bucket/a/b.csv") == ("my-bucket", "a/b.csv")


@pytest.mark.parametrize(
    "uri",
    ["https://b/a.csv", "s3://bucket", "s3:///a.csv", "s3://Bad_Bucket/a.csv", "s3://b/a.csv", "s3://bkt/../x.csv"],
)
def test_bad_uris_are_refused(uri: str) -> None:
    with pytest.raises(StorageError):
        parse_s3_uri(uri)


@pytest.mark.parametrize(
    ("seconds", "expected"), [(-5, 1), (0, 1), (1, 1), (3600, 3600), (604_800, 604_800), (10**9, 604_800)]
)
def test_clamp_expiry(seconds: int, expected: int) -> None:
    assert clamp_expiry(seconds) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("90m", 5400), ("24h", 86_400), ("7d", 604_800), ("45s", 45), (" 2H ", 7200), (600, 600)],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1.5h", "-1h", "0", "0d", "24 hours", "1w", "1h30m", True, "１h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(DefinitionError, match="duration"):
        parse_duration(text)


def test_sse_params() -> None:
    assert sse_params() == {"ServerSideEncryption": "AES256"}
    assert sse_params("aws:kms") == {"ServerSideEncryption": "aws:kms"}
    assert sse_params("aws:kms", "k-1") == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k-1"}
    with pytest.raises(ConfigError):
        sse_params("AES256", "k-1")
    with pytest.raises(ConfigError):
        sse_params("none")


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.csv", "attachment; filename=\"report.csv\"; filename*=UTF-8''report.csv"),
        ("Résumé 2026.pdf", "attachment; filename=\"Resume 2026.pdf\"; filename*=UTF-8''R%C3%A9sum%C3%A9%202026.pdf"),
        ("報告.xlsx", "attachment; filename=\"__.xlsx\"; filename*=UTF-8''%E5%A0%B1%E5%91%8A.xlsx"),
        ("a\"b\\c;d'.csv", "attachment; filename=\"a_b_c_d_.csv\"; filename*=UTF-8''a%22b%5Cc%3Bd%27.csv"),
    ],
)
def test_content_disposition(filename: str, expected: str) -> None:
    assert content_disposition(filename) == expected


@pytest.mark.parametrize("filename", ["", " ", "a\r\nSet-Cookie: x.csv", "a\nb.csv", "a\x00.csv", "a\u2028b.csv"])
def test_content_disposition_refuses_line_breaks(filename: str) -> None:
    with pytest.raises(StorageError):
        content_disposition(filename)


def test_redact_url() -> None:
    url = (
        "https://b.s3.amazonaws.com/k.csv?response-content-disposition=attachment&X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAX%2F20261102%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261102T070000Z"
        "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FwoGZXIvYXdzE&X-Amz-Signature=abc123def"
    )
    redacted = redact_url(url)
    for secret in ("AKIAX", "FwoGZXIvYXdzE", "abc123def"):
        assert secret not in redacted
    assert "X-Amz-Signature=REDACTED" in redacted
    assert "X-Amz-Expires=3600" in redacted
    assert "response-content-disposition=attachment" in redacted
    assert redact_url("https://x/k?AWSAccessKeyId=AKIA1&Signature=s1g&Expires=1") == (
        "https://x/k?AWSAccessKeyId=REDACTED&Signature=REDACTED&Expires=1"
    )
    link = PresignedLink(url=url, expires_at=NOW)
    assert "abc123def" not in repr(link)


def test_join_key() -> None:
    assert join_key("", "a/b.csv") == "a/b.csv"
    assert join_key("/org-1/", "a/b.csv") == "org-1/a/b.csv"
    with pytest.raises(StorageError):
        join_key("org/../up", "a/b.csv")


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("SlowDown", 503, TransientError),
        ("Throttling", 400, TransientError),
        ("InternalError", 500, TransientError),
        ("RequestTimeout", 400, TransientError),
        ("NoSuchBucket", 404, ConfigError),
        ("AccessDenied", 403, ConfigError),
        ("InvalidAccessKeyId", 403, ConfigError),
        ("PermanentRedirect", 301, ConfigError),
        ("KMS.NotFoundException", 400, ConfigError),
        ("InvalidArgument", 400, StorageError),
    ],
)
def test_classify_client_errors(code: str, status: int, kind: type[Exception]) -> None:
    exc = ClientError(
        {
            "Error": {"Code": code, "Message": "User: arn:aws:iam::123456789012:user/x is not authorized"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutObject",
    )
    error = classify_error(exc, uri="s3://b/k.csv")
    assert type(error) is kind
    assert "s3://b/k.csv" in str(error)
    if kind is ConfigError:
        assert "arn:aws" not in str(error)


def test_classify_connection_errors() -> None:
    for exc in (EndpointConnectionError(endpoint_url="http://x"), ReadTimeoutError(endpoint_url="http://x")):
        assert isinstance(classify_error(exc, uri="s3://b/k"), TransientError)


def test_destination_validates_its_configuration(s3_bucket: S3TestBucket) -> None:
    with pytest.raises(ConfigError):
        S3Destination(s3_bucket.client, "Not_A_Bucket")
    with pytest.raises(ConfigError):
        S3Destination(s3_bucket.client, s3_bucket.name, part_size=MIB)
    with pytest.raises(ConfigError):
        S3Destination(s3_bucket.client, s3_bucket.name, multipart_threshold=6 * 1024**3)
    with pytest.raises(StorageError):
        S3Destination(s3_bucket.client, s3_bucket.name, prefix="a/../b")
    with pytest.raises(ConfigError):
        S3Destination.from_settings(s3_settings(s3_bucket.endpoint, bucket=""), client=s3_bucket.client)


# --- against moto over HTTP ---------------------------------------------------------------------------------------


def test_put_stores_bytes_headers_metadata_and_encryption(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    data = b"region,total\nnorth,12\n"
    sent = record_requests(s3_bucket.client)
    stored = S3Destination(s3_bucket.client, s3_bucket.name, prefix="org-1").put(
        KEY, write(tmp_path / "r.csv", data), content_type="text/csv; charset=utf-8", metadata=META
    )
    full_key = f"org-1/{KEY}"
    digest = hashlib.sha256(data).hexdigest()
    assert stored.uri == f"s3://{s3_bucket.name}/{full_key}"
    assert (stored.key, stored.bytes, stored.sha256) == (full_key, len(data), digest)
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=full_key)
    assert head["ContentType"] == "text/csv; charset=utf-8"
    assert head["ContentDisposition"] == (
        'attachment; filename="weekly-20261102T070005Z-abc123.csv"; '
        "filename*=UTF-8''weekly-20261102T070005Z-abc123.csv"
    )
    assert head["Metadata"] == {**META, "sha256": digest}
    assert head["ServerSideEncryption"] == "AES256"
    assert read(s3_bucket, full_key) == data
    [put] = [r for r in sent if r.method == "PUT"]
    assert put.headers["If-None-Match"] == b"*"
    assert put.headers["Authorization"].startswith(b"AWS4-HMAC-SHA256 ")


def test_put_with_kms_key(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    key_id = aws_test_client("kms", s3_bucket.endpoint).create_key(Description="bulletin test")["KeyMetadata"]["KeyId"]
    sent = record_requests(s3_bucket.client)
    destination = S3Destination(s3_bucket.client, s3_bucket.name, sse="aws:kms", kms_key_id=key_id)
    stored = destination.put(KEY, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=META)
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=stored.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_id
    assert sent[0].headers["x-amz-server-side-encryption-aws-kms-key-id"] == key_id.encode()


def test_second_put_never_overwrites(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    destination = S3Destination(s3_bucket.client, s3_bucket.name)
    first = destination.put(KEY, write(tmp_path / "a.csv", b"first"), content_type="text/csv", metadata=META)
    second = destination.put(KEY, write(tmp_path / "b.csv", b"second"), content_type="text/csv", metadata=META)
    third = destination.put(KEY, write(tmp_path / "c.csv", b"third"), content_type="text/csv", metadata=META)
    assert first.key == KEY
    assert second.key == KEY.removesuffix(".csv") + "-1.csv"
    assert third.key == KEY.removesuffix(".csv") + "-2.csv"
    assert [read(s3_bucket, k) for k in (first.key, second.key, third.key)] == [b"first", b"second", b"third"]
    disposition = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=second.key)["ContentDisposition"]
    assert 'filename="weekly-20261102T070005Z-abc123-1.csv"' in disposition


def test_multipart_upload(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    data = os.urandom(11 * MIB + 123)
    sent = record_requests(s3_bucket.client)
    destination = S3Destination(s3_bucket.client, s3_bucket.name, multipart_threshold=5 * MIB, part_size=5 * MIB)
    stored = destination.put(KEY, write(tmp_path / "big.csv", data), content_type="text/csv", metadata=META)
    assert stored.bytes == len(data)
    assert hashlib.sha256(read(s3_bucket, KEY)).hexdigest() == stored.sha256 == hashlib.sha256(data).hexdigest()
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=KEY)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["sha256"] == stored.sha256
    assert head["ContentType"] == "text/csv"
    assert head["ContentDisposition"].startswith('attachment; filename="weekly-')
    assert sum(1 for r in sent if r.method == "PUT" and "partNumber=" in r.url) == 3
    [complete] = [r for r in sent if r.method == "POST" and "uploadId=" in r.url]
    assert complete.headers["If-None-Match"] == b"*"


def test_multipart_conflict_aborts_and_uses_a_new_key(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=KEY, Body=b"already here")
    destination = S3Destination(s3_bucket.client, s3_bucket.name, multipart_threshold=5 * MIB, part_size=5 * MIB)
    data = os.urandom(6 * MIB)
    stored = destination.put(KEY, write(tmp_path / "big.csv", data), content_type="text/csv", metadata=META)
    assert stored.key == KEY.removesuffix(".csv") + "-1.csv"
    assert read(s3_bucket, KEY) == b"already here"
    assert read(s3_bucket, stored.key) == data
    assert s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", []) == []


@pytest.mark.parametrize(
    "key", ["../etc/passwd.csv", "/abs.csv", "a//b.csv", "a\\b.csv", "a/\x00.csv", "a/b c.csv", "x" * 1025]
)
def test_unsafe_keys_are_refused_before_any_request(s3_bucket: S3TestBucket, tmp_path: Path, key: str) -> None:
    sent = record_requests(s3_bucket.client)
    with pytest.raises(StorageError):
        S3Destination(s3_bucket.client, s3_bucket.name).put(
            key, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=META
        )
    assert sent == []


@pytest.mark.parametrize(
    ("content_type", "metadata"),
    [
        ("text/csv\r\nX-Evil: 1", META),
        ("text/csv", {"report": "a\r\nb"}),
        ("text/csv", {"Bad Name": "x"}),
        ("text/csv", {"recipient": "Zoë"}),
        ("text/csv", {"big": "x" * 3000}),
    ],
)
def test_unsafe_headers_are_refused_before_any_request(
    s3_bucket: S3TestBucket, tmp_path: Path, content_type: str, metadata: dict[str, str]
) -> None:
    sent = record_requests(s3_bucket.client)
    with pytest.raises(StorageError):
        S3Destination(s3_bucket.client, s3_bucket.name).put(
            KEY, write(tmp_path / "r.csv", b"x"), content_type=content_type, metadata=metadata
        )
    assert sent == []


def test_presigned_download(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    data = "région,total\nnorth,12\n".encode()
    stored = S3Destination(s3_bucket.client, s3_bucket.name).put(
        KEY, write(tmp_path / "r.csv", data), content_type="text/csv", metadata=META
    )
    disposition = content_disposition("Région weekly.csv")
    link = presign_download(
        s3_bucket.client, stored.uri, expires_seconds=3600, content_disposition=disposition, clock=lambda: NOW
    )
    assert link.expires_at == NOW + timedelta(hours=1)
    assert link.url.startswith(f"{s3_bucket.endpoint}/{s3_bucket.name}/")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in link.url
    assert "X-Amz-Expires=3600" in link.url
    response = httpx.get(link.url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-disposition"] == disposition


def test_presigned_expiry_is_clamped_to_seven_days(s3_bucket: S3TestBucket) -> None:
    uri = format_s3_uri(s3_bucket.name, KEY)
    link = presign_download(s3_bucket.client, uri, expires_seconds=30 * 86_400, clock=lambda: NOW)
    assert link.expires_at == NOW + timedelta(days=7)
    assert f"X-Amz-Expires={MAX_EXPIRY_SECONDS}" in link.url


def test_presign_refuses_unsafe_uris_and_disposition(s3_bucket: S3TestBucket) -> None:
    with pytest.raises(StorageError):
        presign_download(s3_bucket.client, f"s3://{s3_bucket.name}/../x.csv", expires_seconds=60)
    with pytest.raises(StorageError):
        presign_download(
            s3_bucket.client, format_s3_uri(s3_bucket.name, KEY), expires_seconds=60, content_disposition="a\r\nb"
        )


def test_missing_bucket_is_a_clear_config_error(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    destination = S3Destination(s3_bucket.client, "bulletin-no-such-bucket")
    with pytest.raises(ConfigError) as caught:
        destination.put(KEY, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=META)
    message = str(caught.value)
    assert "bulletin-no-such-bucket" in message
    assert "does not exist" in message
    for leak in ("Traceback", FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, "Signature"):
        assert leak not in message


def test_unreachable_endpoint_is_transient(aws_fake_credentials: None, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = aws_test_client("s3", f"http://127.0.0.1:{port}", retries={"total_max_attempts": 1})
    with pytest.raises(TransientError) as caught:
        S3Destination(client, "some-bucket").put(
            KEY, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=META
        )
    assert FAKE_SECRET_ACCESS_KEY not in str(caught.value)


def test_client_from_settings(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    settings = s3_settings(s3_bucket.endpoint, s3_bucket.name, s3_prefix="org-1")
    client = make_s3_client(settings)
    assert client.meta.config.signature_version == "s3v4"
    assert client.meta.config.s3 == {"addressing_style": "path"}
    destination = S3Destination.from_settings(settings, client)
    stored = destination.put(KEY, write(tmp_path / "r.csv", b"abc"), content_type="text/csv", metadata=META)
    assert stored.key == f"org-1/{KEY}"
    link = presign_download(client, stored.uri, expires_seconds=settings.link_expiry_seconds)
    assert httpx.get(link.url).content == b"abc"


def test_credentials_block_needs_prefect_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prefect_aws", None)  # makes the import fail as if it were not installed
    settings = s3_settings("http://127.0.0.1:9", "b-1", s3_aws_credentials_block="prod-aws")
    with pytest.raises(ConfigError, match="pip install prefect-aws"):
        make_s3_client(settings)


def test_logs_carry_no_credentials_or_signatures(
    s3_bucket: S3TestBucket, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # capture everything, then judge by level
    client = make_s3_client(s3_settings(s3_bucket.endpoint, s3_bucket.name))
    destination = S3Destination(client, s3_bucket.name)
    stored = destination.put(KEY, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=META)
    destination.put(KEY, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=META)  # a conflict
    link = presign_download(client, stored.uri, expires_seconds=60)
    logging.getLogger("bulletin.test").info("link ready: %r", link)
    signature = link.url.rpartition("X-Amz-Signature=")[2]
    assert any(r.getMessage() == f"stored {stored.uri} (1 bytes)" for r in caplog.records)
    assert FAKE_SECRET_ACCESS_KEY not in caplog.text  # at any level, botocore's DEBUG included
    # botocore's DEBUG output does carry signatures (why it must stay off in production); INFO and up never do.
    for record in caplog.records:
        if record.levelno >= logging.INFO or record.name.startswith("tasks."):
            for leak in (FAKE_ACCESS_KEY_ID, signature):
                assert leak not in record.getMessage(), record.name


# --- the digest the render computed (issue 14: no second hash, S3 checks the body against it) ---------------------


def b64_of(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def test_put_uses_the_digest_given_as_metadata_and_checksum(
    s3_bucket: S3TestBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"region,total\nnorth,12\n"
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr("tasks.storage.s3.sha256_file", lambda path: pytest.fail(f"{path} was hashed again"))
    sent = record_requests(s3_bucket.client)
    stored = S3Destination(s3_bucket.client, s3_bucket.name).put(
        KEY, write(tmp_path / "r.csv", data), content_type="text/csv", metadata=META, sha256=digest
    )
    assert stored.sha256 == digest
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=KEY, ChecksumMode="ENABLED")
    assert head["Metadata"]["sha256"] == digest
    assert head["ChecksumSHA256"] == b64_of(digest)  # S3 keeps it and checked the body against it
    [put] = [r for r in sent if r.method == "PUT"]
    assert put.headers["x-amz-checksum-sha256"] == b64_of(digest).encode()
    assert b"x-amz-checksum-sha256" in put.headers["Authorization"]  # signed: it cannot be swapped on the way
    assert put.headers["X-Amz-Content-SHA256"] == digest.encode()  # over HTTP the signed payload hash is the body's
    assert "x-amz-checksum-crc32" not in put.headers and b"aws-chunked" not in put.headers.get("Content-Encoding", b"")
    assert put.headers["If-None-Match"] == b"*"


def test_put_without_a_digest_hashes_the_file(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    data = os.urandom(1000)
    digest = hashlib.sha256(data).hexdigest()
    stored = S3Destination(s3_bucket.client, s3_bucket.name).put(
        KEY, write(tmp_path / "r.csv", data), content_type="text/csv", metadata=META
    )
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=KEY, ChecksumMode="ENABLED")
    assert stored.sha256 == head["Metadata"]["sha256"] == digest
    assert head["ChecksumSHA256"] == b64_of(digest)


@pytest.mark.parametrize("digest", ["", "abc", "A" * 64, "g" * 64, "0" * 63, "0" * 64 + "\n"])
def test_a_malformed_digest_is_refused_before_any_request(s3_bucket: S3TestBucket, tmp_path: Path, digest: str) -> None:
    sent = record_requests(s3_bucket.client)
    with pytest.raises(StorageError, match="SHA-256"):
        S3Destination(s3_bucket.client, s3_bucket.name).put(
            KEY, write(tmp_path / "r.csv", b"x"), content_type="text/csv", metadata=META, sha256=digest
        )
    assert sent == []


def test_a_multipart_upload_checks_the_digest_given_before_any_request(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    """No server checks a multipart upload against a whole-file SHA-256, so the file is hashed and compared here."""
    data = os.urandom(6 * MIB)
    source = write(tmp_path / "big.csv", data)
    sent = record_requests(s3_bucket.client)
    destination = S3Destination(s3_bucket.client, s3_bucket.name, multipart_threshold=5 * MIB, part_size=5 * MIB)
    with pytest.raises(StorageError, match="changed"):
        destination.put(
            KEY, source, content_type="text/csv", metadata=META, sha256=hashlib.sha256(b"other").hexdigest()
        )
    assert sent == []
    digest = hashlib.sha256(data).hexdigest()
    stored = destination.put(KEY, source, content_type="text/csv", metadata=META, sha256=digest)
    assert stored.sha256 == s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=KEY)["Metadata"]["sha256"] == digest
    parts = [r for r in sent if r.method == "PUT" and "partNumber=" in r.url]
    assert len(parts) == 2 and all("x-amz-checksum-crc32" in r.headers for r in parts)  # CRC32 per part, as before


@pytest.mark.parametrize(("size", "in_memory"), [(100, True), (5000, False)])
def test_a_small_body_is_sent_from_memory_and_a_larger_one_streamed(
    s3_bucket: S3TestBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, in_memory: bool
) -> None:
    monkeypatch.setattr("tasks.storage.s3.IN_MEMORY_BYTES", 1000)
    data = os.urandom(size)
    sent = record_requests(s3_bucket.client)
    S3Destination(s3_bucket.client, s3_bucket.name).put(
        KEY, write(tmp_path / "r.csv", data), content_type="text/csv", metadata=META
    )
    [put] = [r for r in sent if r.method == "PUT"]
    assert isinstance(put.body, io.BytesIO if in_memory else io.BufferedReader)  # botocore wraps bytes in BytesIO
    assert read(s3_bucket, KEY) == data
    assert put.headers["x-amz-checksum-sha256"] == b64_of(hashlib.sha256(data).hexdigest()).encode()
