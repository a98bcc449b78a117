"""One SSH connection with an SFTP session, the server's host key always verified: what the SFTP store runs on.

Host keys come from the known_hosts file given (``BULLETIN_SFTP_KNOWN_HOSTS_FILE``) and only from it, never the
user's or the system's: an unknown or changed key is refused with ``HostKeyError``, naming the host and the SHA256
fingerprint the server showed, and never added. Login is by private key only, read from a file or a Prefect Secret
block holding the key's text; no agent, no ``~/.ssh``, no password. Refusals (host key, login, permission) are
``ConfigError`` and permanent; a network failure or a timeout is a ``TransientError``, so a retry may help.

The connection opens on first use and stays open until ``close()``; if it has dropped, ``call`` reopens it once and
runs the operation again from the start.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bulletin.errors import BulletinError, ConfigError, HostKeyError, StorageError, TransientError
from tasks.secrets import read_secret_block

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_TIMEOUT_SECONDS = 30.0
_KEY_CLASSES: tuple[tuple[type[Any], type[paramiko.PKey]], ...] = (
    (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
    (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey),
    (rsa.RSAPrivateKey, paramiko.RSAKey),
)
#: What paramiko raises when the connection, or the server's answer, failed (EOFError: the channel closed).
LINK_ERRORS = (OSError, EOFError, paramiko.SSHException)


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
        # TypeError: the key is encrypted. There is no passphrase setting, on purpose: keep an unencrypted key
        # readable by Bulletin only, or in a Secret block.
        raise ConfigError(
            f"{source} does not hold an unencrypted ed25519, ECDSA or RSA private key (OpenSSH or PEM format)"
        ) from exc


def read_private_key(file: Path | None, block: str | None) -> paramiko.PKey:
    """The key in ``file``, else the text of the Prefect Secret block ``block``."""
    if file is not None:
        try:
            text = file.expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read BULLETIN_SFTP_PRIVATE_KEY_FILE {file}", field="sftp_private_key_file"
            ) from exc
        return load_private_key(text, source="BULLETIN_SFTP_PRIVATE_KEY_FILE")
    if block:
        return load_private_key(_read_key_block(block), source=f"the Prefect Secret block {block!r}")
    raise ConfigError("set BULLETIN_SFTP_PRIVATE_KEY_FILE or BULLETIN_SFTP_PRIVATE_KEY_BLOCK")


def _read_key_block(name: str) -> str:
    value = read_secret_block(name, holding="the SFTP private key")
    if not isinstance(value, str):
        raise ConfigError(f"the Prefect Secret block {name!r} must hold the SFTP private key as text")
    return value


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


def classify_answer(exc: OSError, what: str) -> BulletinError:
    """An error answer of a live SFTP session: permission is for a person to fix; anything else may pass."""
    if exc.errno == errno.EACCES:
        return ConfigError(f"the SFTP server refused {what}: permission denied (check BULLETIN_SFTP_DIRECTORY)")
    if exc.errno == errno.ENOENT:
        return StorageError(f"the SFTP server found no such file for {what}")
    return TransientError(f"SFTP {what} failed ({exc.strerror or exc}); a retry may help")


class SshConnection:
    """A lazily opened SSH connection and its SFTP session; one operation at a time."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        known_hosts: Path,
        private_key: paramiko.PKey,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.known_hosts = known_hosts
        self.timeout_seconds = timeout_seconds
        self._key = private_key
        self.client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def call(self, action: Callable[[paramiko.SFTPClient], T], what: str) -> T:
        """``action`` on the session, its failures translated; if the connection has dropped, reconnect once and
        run it again."""
        with self._lock:
            for attempt in (1, 2):
                sftp = self._session()
                try:
                    return action(sftp)
                except LINK_ERRORS as exc:
                    if self.alive():
                        if isinstance(exc, OSError):
                            raise classify_answer(exc, what) from exc
                        raise TransientError(f"SFTP {what} failed ({type(exc).__name__})") from exc
                    self._disconnect()
                    if attempt == 2:
                        raise TransientError(
                            f"the SFTP connection to {self.where} dropped while {what}; a retry may help"
                        ) from exc
                    logger.info("the SFTP connection to %s dropped; reconnecting once", self.where)
            raise AssertionError("unreachable")  # pragma: no cover

    def alive(self) -> bool:
        transport = self.client.get_transport() if self.client is not None else None
        return transport is not None and transport.is_active()

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        with self._lock:
            self._disconnect()

    def _session(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self.alive():
            return self._sftp
        self._disconnect()
        self.client, self._sftp = self._connect()
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
        seconds = self.timeout_seconds
        try:
            client.connect(
                self.host,
                self.port,
                self.username,
                pkey=self._key,
                allow_agent=False,
                look_for_keys=False,
                timeout=seconds,
                banner_timeout=seconds,
                auth_timeout=seconds,
                channel_timeout=seconds,
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
        logger.info("connected to SFTP %s@%s", self.username, self.where)
        return client, sftp

    def _connect_error(self, exc: BaseException) -> BulletinError | None:
        if isinstance(exc, paramiko.BadHostKeyException):
            seen = key_fingerprint(exc.key)
            return HostKeyError(
                f"the SSH server {self.where} shows the host key {seen}, not the one BULLETIN_SFTP_KNOWN_HOSTS_FILE "
                f"({self.known_hosts}) holds for it: refused (the server's key changed, or this is not the server)",
                host=self.host,
                port=self.port,
                fingerprint=seen,
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return ConfigError(
                f"the SSH server {self.where} refused the private key for user {self.username!r}: check "
                "BULLETIN_SFTP_USERNAME and that the key's public half is in that user's authorized_keys"
            )
        if isinstance(exc, LINK_ERRORS):
            return TransientError(
                f"cannot connect to the SFTP server {self.where} ({type(exc).__name__}); a retry may help"
            )
        return None

    def _disconnect(self) -> None:
        client, self.client, self._sftp = self.client, None, None
        if client is not None:
            client.close()
