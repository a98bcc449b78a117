"""Where rendered files go: object keys (pure) and the destination interface, with the local bucket adapter.

Keys are built only from validated, server-generated segments::

    <prefix>/<report_id>/<YYYY>/<MM>/<DD>/<recipient_ref>/<report_id>-<timestamp>-<run_id>.<ext>

A destination never overwrites: it creates the object only if absent and, on a conflict, stores under a new key.
It also makes download links for what it stored and deletes it, so no caller needs to know which store it has:
``tasks.delivery.channels.make_destination`` is the one place that picks S3 or the local bucket folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

from bulletin.errors import DefinitionError, StorageError, TransientError
from bulletin.models import is_safe_key_segment

MAX_KEY_BYTES = 1024
_EXTENSION = re.compile(r"^[a-z0-9]{1,8}$")
_MAX_CONFLICT_SUFFIX = 100
#: The longest a download link may live: SigV4's limit for presigned URLs, and the rule for every store.
MAX_LINK_SECONDS = 7 * 24 * 3600
_DURATION = re.compile(r"^(\d{1,12})([smhd]?)$", re.ASCII)  # ASCII: int() would accept "１" too
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def check_segment(segment: str) -> str:
    """One path segment: letters, digits, ``.``, ``_``, ``-``; never ``..``, slashes, backslashes or controls."""
    if not is_safe_key_segment(segment):
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


def clamp_expiry(seconds: int) -> int:
    """A presigned link's lifetime, clamped to 1 second .. 7 days (SigV4 refuses anything longer)."""
    return max(1, min(int(seconds), MAX_LINK_SECONDS))


def parse_duration(text: str | int) -> int:
    """``"3600"``, ``"90m"``, ``"24h"``, ``"7d"`` (or a plain int) -> seconds. Raises DefinitionError."""
    if isinstance(text, bool):  # bool is an int, but True seconds is surely a mistake
        raise DefinitionError(f"invalid duration {text!r}")
    match = _DURATION.match(str(text).strip().lower())
    if match is None:
        raise DefinitionError(
            f"invalid duration {text!r}: use whole seconds or a whole number with a unit s, m, h or d "
            "(for example 3600, 90m, 24h, 7d)"
        )
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    if seconds <= 0:
        raise DefinitionError(f"invalid duration {text!r}: it must be longer than zero")
    return seconds


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


class Link(Protocol):
    """A download link (``tasks.storage.s3.PresignedLink`` fits) and when it stops working (None: it does not
    expire)."""

    @property
    def url(self) -> str: ...

    @property
    def expires_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class UriLink:
    """A link made by the local bucket. Its repr leaves out the query string, which may carry a signed token."""

    url: str
    expires_at: datetime | None

    def __repr__(self) -> str:
        shown = self.url.partition("?")[0]
        return f"UriLink(url={shown!r}, expires_at={self.expires_at.isoformat() if self.expires_at else None!r})"


class Destination(Protocol):
    """Stores one file under a key, never overwriting; links to what it stored; deletes it.

    ``link`` and ``delete`` take a ``StoredObject`` or the URI a manifest or the ledger recorded, and raise
    StorageError for a URI that is not in this store (or not safe), before any request.
    """

    name: str

    def put(
        self, key: str, source: Path, *, content_type: str, metadata: dict[str, str], sha256: str | None = None
    ) -> StoredObject:
        """``sha256``: the file's digest if the caller has it; a store whose server can check it uses it rather than
        hashing the file again (S3), the others hash the file themselves."""
        ...

    def link(self, stored_or_uri: StoredObject | str, filename: str | None, expires_seconds: int) -> Link:
        """A download link valid for ``expires_seconds`` (clamped to ``MAX_LINK_SECONDS``); ``filename`` is the
        name it is offered under (None: the object's own name)."""
        ...

    def delete(self, uri: str) -> None:
        """Delete the object; one already gone is not an error."""
        ...

    def holds(self, uri: str) -> bool:
        """Whether ``uri`` names an object of this store (a safe one), checked without a request."""
        ...


@runtime_checkable
class ObjectFinder(Protocol):
    """A destination that can say, before storing, where a key will go, and later whether a file got there.

    A run that takes over the delivery of a run that died asks it whether the dead run's file is already stored
    (tasks/delivery/channels.py), so it is recorded as sent rather than stored twice. S3 and the local bucket can
    (S3 keeps the sha256 in the object's metadata; the local bucket hashes the file); SFTP does not say.
    """

    def uri_for(self, key: str) -> str:
        """The URI ``put(key, ...)`` stores under when the key is free."""
        ...

    def find(self, uri: str, sha256: str) -> bool:
        """Whether this store holds an object at ``uri`` whose content has ``sha256``."""
        ...


#: How files of a local bucket are reached from elsewhere, when something serves the folder (the API's
#: ``/v1/files`` route): ``(key, filename, expires_seconds)`` -> the link.
LocalLinks = Callable[[str, str, int], Link]


def uri_of(stored_or_uri: StoredObject | str) -> str:
    return stored_or_uri.uri if isinstance(stored_or_uri, StoredObject) else stored_or_uri


class LocalBucket:
    """A folder acting as a bucket: the embedded default.

    Objects are created with a hard link from a temporary file in the same folder: ``os.link`` fails if the name
    exists, so creation is atomic and never overwrites, even with two writers racing for one key.

    Its links are the files' own ``file://`` URIs (the folder has no web server of its own), unless ``links`` says
    how something else serves it.
    """

    name = "local"

    def __init__(self, root: Path, *, links: LocalLinks | None = None) -> None:
        self.root = root
        self.links = links

    def path_for(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def key_of(self, uri: str) -> str:
        """The object key of a ``file://`` URI inside this bucket; StorageError if it points anywhere else."""
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise StorageError("not a local bucket file")
        path = Path(unquote(parsed.path)).resolve()
        root = self.root.resolve()
        if not path.is_relative_to(root):
            raise StorageError("the file is outside the local bucket")
        return check_key(path.relative_to(root).as_posix())

    def link(self, stored_or_uri: StoredObject | str, filename: str | None, expires_seconds: int) -> Link:
        key = self.key_of(uri_of(stored_or_uri))
        if self.links is None:
            return UriLink(url=self.path_for(key).as_uri(), expires_at=None)
        return self.links(key, filename or key.rpartition("/")[2], clamp_expiry(expires_seconds))

    def delete(self, uri: str) -> None:
        self.path_for(self.key_of(uri)).unlink(missing_ok=True)

    def holds(self, uri: str) -> bool:
        try:
            self.key_of(uri)
        except StorageError:
            return False
        return True

    def uri_for(self, key: str) -> str:
        return self.path_for(key).as_uri()

    def find(self, uri: str, sha256: str) -> bool:
        """The file at ``uri`` exists and hashes to ``sha256`` (a folder keeps no metadata: the file is read)."""
        path = self.path_for(self.key_of(uri))
        try:
            return path.is_file() and sha256_file(path) == sha256
        except OSError as exc:
            raise TransientError(f"cannot read the local bucket at {self.root}: {exc.strerror}") from exc

    def put(
        self, key: str, source: Path, *, content_type: str, metadata: dict[str, str], sha256: str | None = None
    ) -> StoredObject:
        del content_type, metadata, sha256  # a folder keeps no metadata, and nothing here checks a digest given
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
