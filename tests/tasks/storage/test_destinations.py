"""The storage seam: S3 (moto over HTTP) and the local bucket answer put, link and delete alike, and settings pick
one of them in one place (``tasks.delivery.channels.choose_destination``)."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bulletin.errors import ConfigError, StorageError
from bulletin.settings import Settings
from tasks.delivery.channels import choose_destination, make_destination
from tasks.storage import MAX_LINK_SECONDS, LocalBucket, StoredObject, UriLink
from tasks.storage.s3 import S3Destination
from tests.fixtures.s3 import S3TestBucket, s3_settings

KEY = "weekly/2026/11/02/rm-north/weekly-20261102T070005Z-abc123.csv"
META = {"report": "weekly", "recipient": "rm-north"}
NOW = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def put(destination: S3Destination | LocalBucket, tmp_path: Path, data: bytes = b"a,b\r\n1,2\r\n") -> StoredObject:
    source = tmp_path / "r.csv"
    source.write_bytes(data)
    return destination.put(KEY, source, content_type="text/csv", metadata=META)


# --- the one choice ------------------------------------------------------------------------------------------------


def test_settings_pick_s3_or_the_local_folder_in_one_place(tmp_path: Path) -> None:
    local = Settings(home=tmp_path)
    made = make_destination(local)
    assert isinstance(made, LocalBucket) and made.root == local.bucket_path
    assert not choose_destination(local).shares_links, "file:// URIs open only on this host"
    assert choose_destination(local).where == str(local.bucket_path)
    assert choose_destination(local, local_links=lambda k, f, s: UriLink(url=k, expires_at=None)).shares_links
    remote = Settings(home=tmp_path, s3_bucket="bulletin-choice", s3_endpoint_url="http://127.0.0.1:9")
    assert choose_destination(remote).shares_links and choose_destination(remote).where == "s3://bulletin-choice"
    assert isinstance(make_destination(remote), S3Destination)


def test_choosing_builds_nothing_until_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A credentials block needs prefect-aws: without it the client cannot be built, and that shows only on build.
    monkeypatch.setitem(sys.modules, "prefect_aws", None)
    settings = Settings(home=tmp_path, s3_bucket="bulletin-choice", s3_aws_credentials_block="prod-aws")
    choice = choose_destination(settings)
    with pytest.raises(ConfigError, match="pip install prefect-aws"):
        choice.build()


# --- S3 ------------------------------------------------------------------------------------------------------------


def test_s3_links_are_presigned_clamped_and_open_the_file(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    destination = make_destination(s3_settings(s3_bucket.endpoint, s3_bucket.name), clock=lambda: NOW)
    stored = put(destination, tmp_path)
    link = destination.link(stored, "r.csv", 600)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in link.url and "X-Amz-Expires=600" in link.url
    assert link.expires_at == NOW + timedelta(seconds=600)
    assert httpx.get(link.url).content == b"a,b\r\n1,2\r\n"
    longest = destination.link(stored.uri, None, 30 * 86_400)  # a recorded URI works as well as the object
    assert f"X-Amz-Expires={MAX_LINK_SECONDS}" in longest.url
    assert longest.expires_at == NOW + timedelta(seconds=MAX_LINK_SECONDS)
    for foreign in ((tmp_path / "x.csv").as_uri(), f"s3://{s3_bucket.name}/../x.csv", "<message-id@bulletin>"):
        assert not destination.holds(foreign)
        with pytest.raises(StorageError):
            destination.link(foreign, None, 60)
    assert destination.holds(stored.uri)


def test_s3_delete_removes_the_object_and_refuses_unsafe_uris(s3_bucket: S3TestBucket, tmp_path: Path) -> None:
    destination = make_destination(s3_settings(s3_bucket.endpoint, s3_bucket.name))
    stored = put(destination, tmp_path)
    destination.delete(stored.uri)
    listed = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.name).get("Contents", [])
    assert listed == []
    destination.delete(stored.uri)  # already gone: not an error
    for unsafe in (f"s3://{s3_bucket.name}/../x.csv", "s3://../etc", (tmp_path / "r.csv").as_uri()):
        with pytest.raises(StorageError):
            destination.delete(unsafe)
    assert (tmp_path / "r.csv").exists()


def test_s3_links_are_never_logged(s3_bucket: S3TestBucket, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    destination = make_destination(s3_settings(s3_bucket.endpoint, s3_bucket.name))
    link = destination.link(put(destination, tmp_path), None, 60)
    logging.getLogger("bulletin.test").info("link ready: %r", link)
    signature = link.url.rpartition("X-Amz-Signature=")[2]
    assert signature and signature not in caplog.text


# --- the local bucket ------------------------------------------------------------------------------------------------


def test_local_links_are_the_files_own_uris(tmp_path: Path) -> None:
    destination = make_destination(Settings(home=tmp_path))
    stored = put(destination, tmp_path)
    link = destination.link(stored, "r.csv", 600)
    assert link.url == stored.uri and link.expires_at is None
    assert destination.link(stored.uri, None, 600).url == stored.uri
    outside = tmp_path / "x.csv"
    outside.write_bytes(b"not in the bucket")
    for foreign in (outside.as_uri(), (tmp_path / "bucket" / ".." / "x.csv").as_uri(), "s3://b/k.csv", "<id@x>"):
        assert not destination.holds(foreign)
        with pytest.raises(StorageError):
            destination.link(foreign, None, 60)
    assert destination.holds(stored.uri)


def test_local_links_come_from_whatever_serves_the_folder(tmp_path: Path) -> None:
    asked: list[tuple[str, str, int]] = []

    def served(key: str, filename: str, seconds: int) -> UriLink:
        asked.append((key, filename, seconds))
        return UriLink(url=f"https://files.example/{filename}?token=secret-token", expires_at=NOW)

    destination = make_destination(Settings(home=tmp_path), local_links=served)
    stored = put(destination, tmp_path)
    link = destination.link(stored.uri, None, 30 * 86_400)
    assert asked == [(KEY, KEY.rpartition("/")[2], MAX_LINK_SECONDS)], "the key, its own name, a clamped lifetime"
    assert destination.link(stored, "orders.csv", 60).url.startswith("https://files.example/orders.csv?")
    assert "secret-token" not in repr(link)


def test_local_delete_removes_only_files_of_the_bucket(tmp_path: Path) -> None:
    destination = make_destination(Settings(home=tmp_path))
    stored = put(destination, tmp_path)
    destination.delete(stored.uri)
    assert not (destination.root / KEY).exists()
    destination.delete(stored.uri)  # already gone: not an error
    outside = tmp_path / "keep.csv"
    outside.write_bytes(b"keep")
    for foreign in (outside.as_uri(), (destination.root / ".." / "keep.csv").as_uri(), "s3://b/keep.csv"):
        with pytest.raises(StorageError):
            destination.delete(foreign)
    assert outside.read_bytes() == b"keep"
