"""The SFTP destination: report drops in a folder of an SSH server (the connection, host keys verified:
tasks.storage.ssh).

Files go under ``<directory>/<key>``, their folders made as needed. Each is uploaded to a temporary name beside its
target (``.<name>.<random>.part``), its size checked, then renamed with plain SFTP ``RENAME``, never OpenSSH's
``posix-rename``: OpenSSH's server makes the new name with ``link(2)`` and only then unlinks the old one, so the
rename fails when the target exists and a file is never overwritten, even with two writers racing for one name. On
a conflict the file goes under ``conflict_key(key, n)``, as on S3 and in the local bucket. The temporary file is
removed whatever fails (if the connection dropped, as soon as it is back).

A file's link is its ``sftp://user@host:port/path`` URI: SFTP has no presigned links, so it does not expire.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import posixpath
import secrets
import shutil
import stat
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote, unquote, urlsplit

import paramiko

from bulletin.errors import ConfigError, StorageError, TransientError
from bulletin.settings import Settings
from tasks.storage.base import StoredObject, UriLink, check_key, conflict_key, sha256_file, uri_of
from tasks.storage.ssh import LINK_ERRORS, SshConnection, read_private_key

logger = logging.getLogger(__name__)

_MAX_CONFLICTS = 100
_CHUNK = 1 << 20


def check_directory(directory: str) -> str:
    """An absolute folder on the server, without ``..`` or ``.`` segments or control characters; no trailing ``/``."""
    parts = directory.split("/")
    if not directory.startswith("/") or any(p in (".", "..") for p in parts) or not directory.isprintable():
        raise ConfigError(
            f"BULLETIN_SFTP_DIRECTORY must be an absolute folder without '..', not {directory[:80]!r}",
            field="sftp_directory",
        )
    return directory.rstrip("/") or "/"


def format_sftp_uri(username: str, host: str, port: int, path: str) -> str:
    """``sftp://user@host:port/path`` (an IPv6 host in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"sftp://{quote(username, safe='')}@{shown}:{port}{quote(path, safe='/')}"


class SftpDestination:
    """Stores files under one folder of an SSH server over SFTP, never overwriting one."""

    name = "sftp"

    def __init__(self, connection: SshConnection, directory: str) -> None:
        self.connection = connection
        self.directory = check_directory(directory)
        self._stale: set[str] = set()  # temporary files a dropped connection kept us from removing

    @classmethod
    def from_settings(cls, settings: Settings) -> SftpDestination:
        """The destination ``settings`` describe (``bulletin.settings_checks`` has refused incomplete ones)."""
        host, username, directory = settings.sftp_host, settings.sftp_username, settings.sftp_directory
        known_hosts = settings.sftp_known_hosts_file
        if not host or not username or not directory or known_hosts is None:
            raise ConfigError("BULLETIN_SFTP_HOST, _USERNAME, _DIRECTORY and _KNOWN_HOSTS_FILE must all be set")
        connection = SshConnection(
            host=host,
            port=settings.sftp_port,
            username=username,
            known_hosts=known_hosts.expanduser(),
            private_key=read_private_key(settings.sftp_private_key_file, settings.sftp_private_key_block),
            timeout_seconds=settings.sftp_timeout_seconds,
        )
        return cls(connection, directory)

    # --- URIs, checked without a request ---

    def path_for(self, key: str) -> str:
        return posixpath.join(self.directory, check_key(key))

    def uri_for(self, key: str) -> str:
        c = self.connection
        return format_sftp_uri(c.username, c.host, c.port, self.path_for(key))

    def key_of(self, uri: str) -> str:
        """The key of an ``sftp://`` URI of this server, user and folder; StorageError for anything else."""
        c = self.connection
        try:
            parts = urlsplit(uri)
            port = parts.port or 22
        except ValueError as exc:
            raise StorageError("not an sftp:// URI of this destination") from exc
        place = (unquote(parts.username or ""), (parts.hostname or "").lower(), port)
        path = unquote(parts.path)
        base = self.directory.rstrip("/") + "/"
        if (
            parts.scheme != "sftp"
            or place != (c.username, c.host.lower(), c.port)
            or parts.query
            or parts.fragment
            or not path.startswith(base)
        ):
            raise StorageError("not an sftp:// URI of this destination")
        return check_key(path.removeprefix(base))

    def holds(self, uri: str) -> bool:
        try:
            self.key_of(uri)
        except StorageError:
            return False
        return True

    def link(self, stored_or_uri: StoredObject | str, filename: str | None, expires_seconds: int) -> UriLink:
        """The file's own ``sftp://`` URI: SFTP has no presigned links, so it does not expire (the reader needs an
        account on the server)."""
        del filename, expires_seconds
        return UriLink(url=self.uri_for(self.key_of(uri_of(stored_or_uri))), expires_at=None)

    # --- requests ---

    def delete(self, uri: str) -> None:
        """Remove the file; one already gone is not an error."""
        path = self.path_for(self.key_of(uri))

        def remove(sftp: paramiko.SFTPClient) -> None:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(path)

        self.connection.call(remove, f"deleting {uri}")

    def put(
        self, key: str, source: Path, *, content_type: str, metadata: dict[str, str], sha256: str | None = None
    ) -> StoredObject:
        """Upload ``source`` to ``<directory>/<key>`` (or ``...-<n>.ext`` if taken); ``StoredObject.key`` is the key
        relative to the folder."""
        del content_type, metadata, sha256  # a plain file keeps no metadata, and no server checks a digest given
        check_key(key)
        size = source.stat().st_size
        digest = sha256_file(source)
        for attempt in range(_MAX_CONFLICTS + 1):
            candidate = key if attempt == 0 else conflict_key(key, attempt)
            path, uri = self.path_for(candidate), self.uri_for(candidate)
            upload = functools.partial(self._create, source=source, size=size, path=path)
            if self.connection.call(upload, f"uploading {uri}"):
                logger.info("stored %s (%d bytes)", uri, size)
                return StoredObject(uri=uri, key=candidate, bytes=size, sha256=digest)
            logger.info("%s already exists; trying the next free name", uri)
        raise StorageError(f"file {key!r} and {_MAX_CONFLICTS} alternatives already exist on {self.connection.where}")

    def _create(self, sftp: paramiko.SFTPClient, *, source: Path, size: int, path: str) -> bool:
        """Upload to a temporary name, check its size, rename it to ``path``; False if ``path`` exists."""
        for stale in list(self._stale):
            self._remove_temporary(sftp, stale)
        folder, name = posixpath.split(path)
        _make_folders(sftp, folder)
        temporary = posixpath.join(folder, f".{name}.{secrets.token_hex(8)}.part")
        renamed = False
        try:
            with sftp.open(temporary, "wbx") as remote, source.open("rb") as local:
                remote.set_pipelined(True)
                shutil.copyfileobj(local, remote, _CHUNK)
            landed = sftp.stat(temporary).st_size
            if landed != size:
                raise TransientError(f"the upload of {path} to {self.connection.where} has {landed} bytes, not {size}")
            try:
                sftp.rename(temporary, path)  # plain RENAME: refuses an existing target (see the module docstring)
            except OSError:
                if self.connection.alive() and _exists(sftp, path):
                    return False
                raise
            renamed = True
            return True
        finally:
            if not renamed:
                self._remove_temporary(sftp, temporary)

    def _remove_temporary(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.remove(path)
        except FileNotFoundError:
            pass
        except LINK_ERRORS:
            self._stale.add(path)  # the connection is gone: removed before the next upload
            return
        self._stale.discard(path)

    def close(self) -> None:
        """Close the SSH connection (the next request opens a new one)."""
        self.connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True


def _make_folders(sftp: paramiko.SFTPClient, folder: str) -> None:
    """``mkdir -p``: from the deepest folder that exists down to ``folder``."""
    missing: list[str] = []
    current = folder
    while current not in ("/", ""):
        try:
            mode = sftp.stat(current).st_mode
        except FileNotFoundError:
            missing.append(current)
            current = posixpath.dirname(current)
            continue
        if mode is None or not stat.S_ISDIR(mode):
            raise StorageError(f"{current} on the SFTP server is not a folder")
        break
    for path in reversed(missing):
        try:
            sftp.mkdir(path)
        except OSError:
            mode = sftp.stat(path).st_mode  # made by another writer meanwhile? Then all is well.
            if mode is None or not stat.S_ISDIR(mode):
                raise
