"""Where rendered files go: object keys (pure) and the destination interface, with the local bucket adapter.

Keys are built only from validated, server-generated segments::

    <prefix>/<report_id>/<YYYY>/<MM>/<DD>/<recipient_ref>/<report_id>-<timestamp>-<run_id>.<ext>

A destination never overwrites: it creates the object only if absent and, on a conflict, stores under a new key.
S3 and email plug in as further ``Destination`` implementations.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from bulletin.errors import StorageError, TransientError

MAX_KEY_BYTES = 1024
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_EXTENSION = re.compile(r"^[a-z0-9]{1,8}$")
_MAX_CONFLICT_SUFFIX = 100


def check_segment(segment: str) -> str:
    """One path segment: letters, digits, ``.``, ``_``, ``-``; never ``..``, slashes, backslashes or controls."""
    if not _SEGMENT.match(segment) or ".." in segment:
        raise StorageError(f"unsafe object key segment {segment!r}")
    return segment


PREFIX_MAX_BYTES = 256


def check_prefix(prefix: str) -> str:
    """A folder inside a bucket: safe segments joined by ``/``, no leading or trailing ``/``, at most 256 bytes."""
    if len(prefix.encode("utf-8")) > PREFIX_MAX_BYTES or prefix.startswith("/") or prefix.endswith("/"):
        raise StorageError(f"unsafe key prefix {prefix[:PREFIX_MAX_BYTES]!r}")
    for segment in prefix.split("/"):
        check_segment(segment)
    return prefix


def check_key(key: str) -> str:
    """A whole key: relative, at most 1024 bytes, every segment safe."""
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise StorageError(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/") or "\\" in key:
        raise StorageError(f"unsafe object key {key!r}")
    for segment in key.split("/"):
        check_segment(segment)
    return key


def build_key(
    *,
    prefix: str,
    report_id: str,
    recipient_ref: str,
    run_id: str,
    extension: str,
    when: datetime,
) -> str:
    """The object key of one file. ``when`` is the run's start; it is written in UTC."""
    if not _EXTENSION.match(extension):
        raise StorageError(f"unsafe file extension {extension!r}")
    stamp = when.astimezone(UTC)
    prefix_segments = [check_segment(s) for s in prefix.strip("/").split("/") if s] if prefix else []
    name = f"{check_segment(report_id)}-{stamp:%Y%m%dT%H%M%SZ}-{check_segment(run_id)}.{extension}"
    segments = [
        *prefix_segments,
        report_id,
        f"{stamp:%Y}",
        f"{stamp:%m}",
        f"{stamp:%d}",
        check_segment(recipient_ref),
        name,
    ]
    return check_key("/".join(segments))


def conflict_key(key: str, attempt: int) -> str:
    """The key to try after ``key`` already exists: ``name-<attempt>.ext``."""
    stem, dot, ext = key.rpartition(".")
    return check_key(f"{stem}-{attempt}{dot}{ext}" if dot else f"{key}-{attempt}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredObject:
    uri: str
    key: str
    bytes: int
    sha256: str


class Destination(Protocol):
    """Stores one file under a key, never overwriting; returns where it went."""

    name: str

    def put(self, key: str, source: Path, *, content_type: str, metadata: dict[str, str]) -> StoredObject: ...


class LocalBucket:
    """A folder acting as a bucket: the embedded default.

    Objects are created with a hard link from a temporary file in the same folder: ``os.link`` fails if the name
    exists, so creation is atomic and never overwrites, even with two writers racing for one key.
    """

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, source: Path, *, content_type: str, metadata: dict[str, str]) -> StoredObject:
        del content_type, metadata  # a plain folder has nowhere to keep them; S3 does
        size = source.stat().st_size
        digest = sha256_file(source)
        for attempt in range(_MAX_CONFLICT_SUFFIX + 1):
            candidate = key if attempt == 0 else conflict_key(key, attempt)
            target = self.path_for(candidate)
            try:
                if self._create(source, target):
                    return StoredObject(uri=target.as_uri(), key=candidate, bytes=size, sha256=digest)
            except OSError as exc:
                raise TransientError(f"cannot write to the local bucket at {self.root}: {exc.strerror}") from exc
        raise StorageError(f"object key {key!r} and {_MAX_CONFLICT_SUFFIX} alternatives already exist")

    @staticmethod
    def _create(source: Path, target: Path) -> bool:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
