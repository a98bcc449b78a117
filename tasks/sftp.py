"""The SFTP destination: report drops on an SSH server, with the server's host key always verified.

Files go under ``<directory>/<key>``, their folders made as needed. Each is uploaded to a temporary name beside its
target (``.<name>.<random>.part``), its size checked, then renamed with plain SFTP ``RENAME``, never OpenSSH's
``posix-rename``: OpenSSH's server makes the new name with ``link(2)`` and only then unlinks the old one, so the
rename fails when the target exists and a file is never overwritten, even with two writers racing for one name. On
a conflict the file goes under ``conflict_key(key, n)``, as on S3 and in the local bucket. The temporary file is
removed whatever fails.

Host keys come from ``BULLETIN_SFTP_KNOWN_HOSTS_FILE`` only: an unknown or changed key is refused (``HostKeyError``,
naming the host and the fingerprint it showed), never added. Login is by private key only, from a file or a Prefect
Secret block holding the key's text; no agent, no ``~/.ssh``, no password. Refusals (host key, login, permission)
are ``ConfigError`` and permanent; a network failure or a timeout is a ``TransientError``, so a retry may help.

One SSH connection per destination, opened on first use and closed by ``close()``; if it has dropped, it is
reopened once and the operation started again (an upload from the start, under a new temporary name).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import io
import logging
import posixpath
import secrets
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self, TypeVar
from urllib.parse import quote, unquote, urlsplit

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bulletin.errors import BulletinError, ConfigError, HostKeyError, StorageError, TransientError
from bulletin.settings import Settings
from tasks.storage import StoredObject, UriLink, check_key, conflict_key, sha256_file, uri_of

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_TIMEOUT_SECONDS = 30.0
_MAX_CONFLICTS = 100
_CHUNK = 1 << 20
_KEY_CLASSES: tuple[tuple[type[Any], type[paramiko.PKey]], ...] = (
    (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
    (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey),
    (rsa.RSAPrivateKey, paramiko.RSAKey),
)
#: What paramiko raises when the connection, not the server's answer, failed (EOFError: the channel closed).
_LINK_ERRORS = (OSError, EOFError, paramiko.SSHException)


# --- pure helpers -------------------------------------------------------------------------------------------------


def key_fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64>``, as ``ssh-keygen -l`` and OpenSSH's own warnings print it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def load_private_key(text: str, *, source: str) -> paramiko.PKey:
    """An unencrypted ed25519, ECDSA or RSA private key, OpenSSH or PEM format. ``source`` names where it came from
    in the error (the key itself never appears in one)."""
    data = text.encode("utf-8")
    try:
        try:
            loaded: Any = serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None)
        key_class = next(ours for theirs, ours in _KEY_CLASSES if isinstance(loaded, theirs))
        return key_class.from_private_key(io.StringIO(text))
    except (ValueError, TypeError, UnsupportedAlgorithm, StopIteration, paramiko.SSHException) as exc:
        # TypeError: the key is encrypted (no passphrase setting exists, on purpose: use an unencrypted key file
        # readable by Bulletin only, or a Secret block).
        raise ConfigError(
            f"{source} does not hold an unencrypted ed25519, ECDSA or RSA private key (OpenSSH or PEM format)"
        ) from exc


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


# --- errors -------------------------------------------------------------------------------------------------------


class _RefuseUnknownHost(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, with an error that names the host and the key it showed."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        host, _, port = hostname.removeprefix("[").partition("]:")
        raise HostKeyError(
            f"the SSH server {hostname} is not in BULLETIN_SFTP_KNOWN_HOSTS_FILE ({self.known_hosts}); it shows "
            f"the {key.get_name()} host key {key_fingerprint(key)}: refused. Add its key only after checking that "
            "fingerprint with the server's administrator",
            host=host,
            port=int(port or 22),
            fingerprint=key_fingerprint(key),
        )


def _classify(exc: OSError, what: str) -> StorageError | ConfigError | TransientError:
    """An error answer of a live SFTP session: permission is for a person to fix; anything else may pass."""
    if exc.errno == errno.EACCES:
        return ConfigError(f"the SFTP server refused {what}: permission denied (check BULLETIN_SFTP_DIRECTORY)")
    if exc.errno == errno.ENOENT:
        return StorageError(f"the SFTP server found no such file for {what}")
    return TransientError(f"SFTP {what} failed ({exc.strerror or exc}); a retry may help")


# --- adapter ------------------------------------------------------------------------------------------------------


def _read_key_block(name: str) -> str:
    from prefect.blocks.system import Secret  # only this setting needs Prefect here
    from prefect.exceptions import PrefectException

    try:
        load: Any = Secret.load  # async-dispatched: `_sync` keeps it synchronous inside an event loop too
        value = load(name, _sync=True).get()
    except (ValueError, PrefectException) as exc:
        raise ConfigError(f"cannot load the Prefect Secret block {name!r} holding the SFTP private key") from exc
    except OSError as exc:
        raise TransientError(f"cannot reach Prefect to load the Secret block {name!r}") from exc
    if not isinstance(value, str):
        raise ConfigError(f"the Prefect Secret block {name!r} must hold the SFTP private key as text")
    return value


def _read_key_file(path: Path) -> str:
    try:
        return path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read BULLETIN_SFTP_PRIVATE_KEY_FILE {path}", field="sftp_private_key_file") from exc


class SftpDestination:
    """Stores files under one folder of an SSH server over SFTP, never overwriting one."""

    name = "sftp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        directory: str,
        known_hosts: Path,
        private_key: paramiko.PKey,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.directory = check_directory(directory)
        self.known_hosts = known_hosts
        self.timeout_seconds = timeout_seconds
        self._key = private_key
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._stale: set[str] = set()  # temporary files a dropped connection kept us from removing
        self._lock = threading.Lock()  # one SFTP session, one operation at a time

    @classmethod
    def from_settings(cls, settings: Settings) -> SftpDestination:
        """The destination ``settings`` describe (``bulletin.settings_checks`` has refused incomplete ones)."""
        host, username, directory = settings.sftp_host, settings.sftp_username, settings.sftp_directory
        known_hosts = settings.sftp_known_hosts_file
        if not host or not username or not directory or known_hosts is None:
            raise ConfigError("BULLETIN_SFTP_HOST, _USERNAME, _DIRECTORY and _KNOWN_HOSTS_FILE must all be set")
        if settings.sftp_private_key_file is not None:
            text, source = _read_key_file(settings.sftp_private_key_file), "BULLETIN_SFTP_PRIVATE_KEY_FILE"
        elif settings.sftp_private_key_block:
            text = _read_key_block(settings.sftp_private_key_block)
            source = f"the Prefect Secret block {settings.sftp_private_key_block!r}"
        else:
            raise ConfigError("set BULLETIN_SFTP_PRIVATE_KEY_FILE or BULLETIN_SFTP_PRIVATE_KEY_BLOCK")
        return cls(
            host=host,
            port=settings.sftp_port,
            username=username,
            directory=directory,
            known_hosts=known_hosts.expanduser(),
            private_key=load_private_key(text, source=source),
            timeout_seconds=settings.sftp_timeout_seconds,
        )

    # --- URIs, checked without a request ---

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def path_for(self, key: str) -> str:
        return posixpath.join(self.directory, check_key(key))

    def uri_for(self, key: str) -> str:
        return format_sftp_uri(self.username, self.host, self.port, self.path_for(key))

    def key_of(self, uri: str) -> str:
        """The key of an ``sftp://`` URI of this server, user and folder; StorageError for anything else."""
        try:
            parts = urlsplit(uri)
            port = parts.port or 22
        except ValueError as exc:
            raise StorageError("not an sftp:// URI of this destination") from exc
        same_place = (unquote(parts.username or ""), (parts.hostname or "").lower(), port) == (
            self.username,
            self.host.lower(),
            self.port,
        )
        path = unquote(parts.path)
        base = self.directory.rstrip("/") + "/"
        if parts.scheme != "sftp" or not same_place or parts.query or parts.fragment or not path.startswith(base):
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

        self._call(remove, f"deleting {uri}")

    def put(self, key: str, source: Path, *, content_type: str, metadata: dict[str, str]) -> StoredObject:
        """Upload ``source`` to ``<directory>/<key>`` (or ``...-<n>.ext`` if taken); ``StoredObject.key`` is the key
        relative to the folder."""
        del content_type, metadata  # a plain file has nowhere to keep them; S3 does
        check_key(key)
        size = source.stat().st_size
        digest = sha256_file(source)
        for attempt in range(_MAX_CONFLICTS + 1):
            candidate = key if attempt == 0 else conflict_key(key, attempt)
            path = self.path_for(candidate)
            uri = self.uri_for(candidate)
            if self._call(functools.partial(self._create, source=source, size=size, path=path), f"uploading {uri}"):
                logger.info("stored %s (%d bytes)", uri, size)
                return StoredObject(uri=uri, key=candidate, bytes=size, sha256=digest)
            logger.info("%s already exists; trying the next free name", uri)
        raise StorageError(f"file {key!r} and {_MAX_CONFLICTS} alternatives already exist on {self._where}")

    def _create(self, sftp: paramiko.SFTPClient, *, source: Path, size: int, path: str) -> bool:
        """Upload to a temporary name, check its size, rename it to ``path``; False if ``path`` exists."""
        folder, name = posixpath.split(path)
        self._make_folders(sftp, folder)
        temporary = posixpath.join(folder, f".{name}.{secrets.token_hex(8)}.part")
        renamed = False
        try:
            with sftp.open(temporary, "wbx") as remote, source.open("rb") as local:
                remote.set_pipelined(True)
                shutil.copyfileobj(local, remote, _CHUNK)
            landed = sftp.stat(temporary).st_size
            if landed != size:
                raise TransientError(f"the upload of {path} to {self._where} has {landed} bytes, not {size}")
            try:
                sftp.rename(temporary, path)  # plain RENAME: refuses an existing target (see the module docstring)
            except OSError:
                if self._alive() and self._exists(sftp, path):
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
            self._stale.discard(path)
        except FileNotFoundError:
            self._stale.discard(path)
        except _LINK_ERRORS:
            self._stale.add(path)  # the connection is gone: removed after reconnecting

    @staticmethod
    def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
        try:
            sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    @staticmethod
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

    # --- the connection ---

    def _call(self, action: Callable[[paramiko.SFTPClient], T], what: str) -> T:
        """``action`` on the session; if the connection has dropped, reconnect once and run it again."""
        with self._lock:
            for attempt in (1, 2):
                sftp = self._session()
                try:
                    return action(sftp)
                except _LINK_ERRORS as exc:
                    if self._alive():
                        if isinstance(exc, OSError):
                            raise _classify(exc, what) from exc
                        raise TransientError(f"SFTP {what} failed ({type(exc).__name__})") from exc
                    self._disconnect()
                    if attempt == 2:
                        raise TransientError(
                            f"the SFTP connection to {self._where} dropped while {what}; a retry may help"
                        ) from exc
                    logger.info("the SFTP connection to %s dropped; reconnecting once", self._where)
            raise AssertionError("unreachable")  # pragma: no cover

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def _session(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._alive():
            return self._sftp
        self._disconnect()
        self._client, self._sftp = self._connect()
        for path in list(self._stale):
            self._remove_temporary(self._sftp, path)
        return self._sftp

    def _connect(self) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        client = paramiko.SSHClient()
        try:
            client.get_host_keys().load(str(self.known_hosts))  # never the user's or the system's known_hosts
        except (OSError, UnicodeDecodeError, paramiko.SSHException) as exc:
            raise ConfigError(
                f"cannot read BULLETIN_SFTP_KNOWN_HOSTS_FILE {self.known_hosts}", field="sftp_known_hosts_file"
            ) from exc
        client.set_missing_host_key_policy(_RefuseUnknownHost(self.known_hosts))
        try:
            client.connect(
                self.host,
                self.port,
                username=self.username,
                pkey=self._key,
                timeout=self.timeout_seconds,
                banner_timeout=self.timeout_seconds,
                auth_timeout=self.timeout_seconds,
                channel_timeout=self.timeout_seconds,
                allow_agent=False,
                look_for_keys=False,
            )
            sftp = client.open_sftp()
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(self.timeout_seconds)
        except BaseException as exc:
            client.close()
            translated = self._connect_error(exc)
            if translated is None:
                raise  # HostKeyError from the policy, or something that is not ours to translate
            raise translated from exc
        logger.info("connected to SFTP %s@%s", self.username, self._where)
        return client, sftp

    def _connect_error(self, exc: BaseException) -> BulletinError | None:
        if isinstance(exc, paramiko.BadHostKeyException):
            seen = key_fingerprint(exc.key)
            return HostKeyError(
                f"the SSH server {self._where} shows the host key {seen}, not the one BULLETIN_SFTP_KNOWN_HOSTS_FILE "
                f"({self.known_hosts}) holds for it: refused (the server's key changed, or this is not the server)",
                host=self.host,
                port=self.port,
                fingerprint=seen,
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return ConfigError(
                f"the SSH server {self._where} refused the private key for user {self.username!r}: check "
                "BULLETIN_SFTP_USERNAME and that the key's public half is in that user's authorized_keys"
            )
        if isinstance(exc, _LINK_ERRORS):
            return TransientError(
                f"cannot connect to the SFTP server {self._where} ({type(exc).__name__}); a retry may help"
            )
        return None

    def _disconnect(self) -> None:
        client, self._client, self._sftp = self._client, None, None
        if client is not None:
            client.close()

    def close(self) -> None:
        """Close the SSH connection (the next request opens a new one)."""
        with self._lock:
            self._disconnect()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
