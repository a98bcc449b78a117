"""Combinations of settings that can never work, refused when the settings are read instead of at run time.

Each field alone is checked by its type and bounds in ``bulletin.settings``; what is here spans fields (a password
with no user to log in as, a plaintext SMTP server that is not on this machine, S3 options with no bucket) or parses
a value its consumer would only reject mid-run (a CIDR, a JSON keyset). Without these, such a setting fails every
recipient of every run, or silently does nothing (files go to the local folder although S3 options are set).

The checks are pure and cheap (no network; a ``stat`` for a CA, known_hosts or private key file), so every process
that reads settings (the CLI, ``bulletin serve``, a flow run, the API) refuses the same things with the same one-line
``ConfigError``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from email.utils import getaddresses
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from pydantic import SecretStr

from bulletin.errors import ConfigError
from bulletin.models import is_bucket_name, is_safe_key_segment

#: The bounds tasks.webhooks.send enforces on each send (kept equal to its MAX_ATTEMPTS and MAX_DELAY_SECONDS).
RETRY_MAX_ATTEMPTS = 30
RETRY_MAX_DELAY_SECONDS = 7 * 86_400
#: bulletin.edge.api.file_links.SECRET_MIN_BYTES.
FILE_LINK_SECRET_MIN = 32
#: The base of links in emails: scheme, host, optional port and path; nothing a header or a link could trip on.
PUBLIC_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%-]+)*$")
_UNSAFE_PREFIX = "must be a safe key prefix (segments of A-Z a-z 0-9 . _ -), not"
_SMTP_ONLY = ("smtp_port", "smtp_username", "smtp_password", "smtp_password_block", "smtp_ca_file")
_S3_ONLY = ("s3_endpoint_url", "s3_region", "s3_prefix", "s3_kms_key_id", "s3_aws_credentials_block")
_SFTP_ONLY = (
    "sftp_username",
    "sftp_private_key_file",
    "sftp_private_key_block",
    "sftp_known_hosts_file",
    "sftp_directory",
)


class CheckedSettings(Protocol):
    """The settings the checks read: ``bulletin.settings.Settings`` has each of them (mypy checks it where
    ``Settings`` calls ``check_settings``). Named here, not imported, because that class's validator calls these
    checks: the settings module imports this one, never the other way round. A new check that reads another field
    adds it here."""

    @property
    def smtp_host(self) -> str | None: ...

    @property
    def smtp_port(self) -> int | None: ...

    @property
    def smtp_security(self) -> Literal["starttls", "ssl", "none"]: ...

    @property
    def smtp_username(self) -> str | None: ...

    @property
    def smtp_password(self) -> SecretStr | None: ...

    @property
    def smtp_password_block(self) -> str | None: ...

    @property
    def smtp_from(self) -> str: ...

    @property
    def smtp_ca_file(self) -> Path | None: ...

    @property
    def email_allowed_domains(self) -> Sequence[str]: ...

    @property
    def storage_prefix(self) -> str: ...

    @property
    def s3_bucket(self) -> str | None: ...

    @property
    def s3_endpoint_url(self) -> str | None: ...

    @property
    def s3_region(self) -> str | None: ...

    @property
    def s3_prefix(self) -> str: ...

    @property
    def s3_sse(self) -> Literal["AES256", "aws:kms"]: ...

    @property
    def s3_kms_key_id(self) -> str | None: ...

    @property
    def s3_aws_credentials_block(self) -> str | None: ...

    @property
    def sftp_host(self) -> str | None: ...

    @property
    def sftp_port(self) -> int: ...

    @property
    def sftp_username(self) -> str | None: ...

    @property
    def sftp_private_key_file(self) -> Path | None: ...

    @property
    def sftp_private_key_block(self) -> str | None: ...

    @property
    def sftp_known_hosts_file(self) -> Path | None: ...

    @property
    def sftp_directory(self) -> str | None: ...

    @property
    def token_issuer(self) -> str: ...

    @property
    def token_audience(self) -> str: ...

    @property
    def signing_keys(self) -> SecretStr | None: ...

    @property
    def file_link_secret(self) -> SecretStr | None: ...

    @property
    def unsubscribe_secret(self) -> SecretStr | None: ...

    @property
    def public_url(self) -> str | None: ...

    @property
    def webhook_allowed_networks(self) -> Sequence[str]: ...

    @property
    def webhook_retry_schedule(self) -> Sequence[float]: ...


def env_name(field: str) -> str:
    """The environment variable a field is read from."""
    return f"BULLETIN_{field.upper()}"


def check_settings(settings: CheckedSettings) -> None:
    """Raise ``ConfigError`` naming the first setting that cannot work as configured."""
    for field, problem in _problems(settings):
        joint = "" if problem.startswith("=") else " "  # "BULLETIN_SMTP_SECURITY=none sends..."
        raise ConfigError(f"{env_name(field)}{joint}{problem}", field=field)


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal; no DNS (what resolves to 127.0.0.1 today may not tomorrow)."""
    name = host.strip().rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _problems(s: CheckedSettings) -> Iterator[tuple[str, str]]:
    yield from _smtp_problems(s)
    yield from _email_problems(s)
    yield from _s3_problems(s)
    yield from _sftp_problems(s)
    yield from _key_problems(s)
    yield from _webhook_problems(s)


def _smtp_problems(s: CheckedSettings) -> Iterator[tuple[str, str]]:
    if not s.smtp_host:
        for field in _SMTP_ONLY:
            if getattr(s, field) is not None:
                yield field, "is set but BULLETIN_SMTP_HOST is not: emails go to the outbox folder, so it is unused"
        return
    host = s.smtp_host
    if "://" in host or "/" in host or any(c.isspace() for c in host):
        yield "smtp_host", f"must be a host name or IP address, not {host[:80]!r}"
    if s.smtp_security == "none" and not is_loopback_host(host):
        yield (
            "smtp_security",
            f"=none sends in plaintext and is allowed only for a loopback BULLETIN_SMTP_HOST "
            f"(localhost, 127.0.0.1, ::1), not {host[:80]!r}: use starttls or ssl",
        )
    has_password = s.smtp_password is not None or bool(s.smtp_password_block)
    if s.smtp_username and not has_password:
        yield "smtp_username", "is set but no SMTP password is (BULLETIN_SMTP_PASSWORD or _PASSWORD_BLOCK)"
    if has_password and not s.smtp_username:
        field = "smtp_password" if s.smtp_password is not None else "smtp_password_block"
        yield field, "is set but BULLETIN_SMTP_USERNAME is not, so there is no login to use it for"
    if s.smtp_ca_file is not None:
        if s.smtp_security == "none":
            yield "smtp_ca_file", "is set but BULLETIN_SMTP_SECURITY=none never uses TLS"
        elif not s.smtp_ca_file.expanduser().is_file():
            yield "smtp_ca_file", f"names {s.smtp_ca_file}, which is not a file"


def _email_problems(s: CheckedSettings) -> Iterator[tuple[str, str]]:
    sender = s.smtp_from
    pairs = getaddresses([sender])
    if any(c in sender for c in "\r\n") or len(pairs) != 1 or "@" not in pairs[0][1]:
        yield "smtp_from", f"must be exactly one mailbox, e.g. 'Reports <reports@example.com>', not {sender[:80]!r}"
    for domain in s.email_allowed_domains:
        if "@" in domain or not domain or any(c.isspace() for c in domain):
            yield "email_allowed_domains", f"must list domains without '@' (example.com), not {domain[:80]!r}"


def _s3_problems(s: CheckedSettings) -> Iterator[tuple[str, str]]:
    if not _safe_prefix(s.storage_prefix):
        yield "storage_prefix", f"{_UNSAFE_PREFIX} {s.storage_prefix[:80]!r}"
    if not s.s3_bucket:
        for field in _S3_ONLY:
            if getattr(s, field):
                yield field, "is set but BULLETIN_S3_BUCKET is not, so files go to the local bucket folder instead"
        if s.s3_sse != "AES256":
            yield "s3_sse", "is set but BULLETIN_S3_BUCKET is not, so files go to the local bucket folder instead"
        return
    if not is_bucket_name(s.s3_bucket):
        yield "s3_bucket", f"must be a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-'), not {s.s3_bucket[:80]!r}"
    if s.s3_endpoint_url:
        parts = urlsplit(s.s3_endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            yield "s3_endpoint_url", f"must be an http(s):// URL, not {s.s3_endpoint_url[:80]!r}"
    if s.s3_kms_key_id and s.s3_sse != "aws:kms":
        yield "s3_kms_key_id", "is set but BULLETIN_S3_SSE is AES256: set BULLETIN_S3_SSE=aws:kms"
    if s.s3_prefix and not _safe_prefix(s.s3_prefix.strip("/")):
        yield "s3_prefix", f"{_UNSAFE_PREFIX} {s.s3_prefix[:80]!r}"


def _sftp_problems(s: CheckedSettings) -> Iterator[tuple[str, str]]:
    if not s.sftp_host:
        for field in _SFTP_ONLY:
            if getattr(s, field) is not None:
                yield field, "is set but BULLETIN_SFTP_HOST is not, so the sftp channel has no server to use it for"
        if s.sftp_port != 22:
            yield "sftp_port", "is set but BULLETIN_SFTP_HOST is not, so the sftp channel has no server to use it for"
        return
    if not _is_host(s.sftp_host):
        yield "sftp_host", f"must be a host name or IP address, not {s.sftp_host[:80]!r}"
    if not s.sftp_username:
        yield "sftp_username", "must be set when BULLETIN_SFTP_HOST is: the SSH login to deliver as"
    if s.sftp_known_hosts_file is None:
        yield (
            "sftp_known_hosts_file",
            "must be set when BULLETIN_SFTP_HOST is: the server's host key is always verified, never accepted unseen",
        )
    elif not _readable_file(s.sftp_known_hosts_file):
        yield "sftp_known_hosts_file", f"names {s.sftp_known_hosts_file}, which is not a readable file"
    if s.sftp_private_key_file is not None and s.sftp_private_key_block:
        yield "sftp_private_key_block", "and BULLETIN_SFTP_PRIVATE_KEY_FILE are both set: set only one of them"
    elif s.sftp_private_key_file is None and not s.sftp_private_key_block:
        yield "sftp_private_key_file", "or BULLETIN_SFTP_PRIVATE_KEY_BLOCK must be set when BULLETIN_SFTP_HOST is"
    elif s.sftp_private_key_file is not None and not _readable_file(s.sftp_private_key_file):
        yield "sftp_private_key_file", f"names {s.sftp_private_key_file}, which is not a readable file"
    directory = s.sftp_directory
    if directory is None:
        yield "sftp_directory", "must be set when BULLETIN_SFTP_HOST is: the absolute folder files go under"
    elif not directory.startswith("/") or ".." in directory.split("/") or not directory.isprintable():
        yield "sftp_directory", f"must be an absolute folder without '..', not {directory[:80]!r}"


def _is_host(host: str) -> bool:
    return (
        bool(host) and "://" not in host and "/" not in host and "@" not in host and not any(c.isspace() for c in host)
    )


def _readable_file(path: Path) -> bool:
    resolved = path.expanduser()
    return resolved.is_file() and os.access(resolved, os.R_OK)


def _safe_prefix(prefix: str) -> bool:
    return bool(prefix) and all(is_safe_key_segment(part) for part in prefix.split("/"))


def _key_problems(s: CheckedSettings) -> Iterator[tuple[str, str]]:
    for field in ("token_issuer", "token_audience"):
        if not getattr(s, field).strip():
            yield field, "must not be empty"
    if s.signing_keys is not None:
        try:
            keyset = json.loads(s.signing_keys.get_secret_value())
        except ValueError:
            keyset = None
        if not isinstance(keyset, dict):
            # Never echo it: it holds private keys.
            yield "signing_keys", "is not a JSON keyset (what `bulletin keys generate` writes)"
    if s.file_link_secret is not None and len(s.file_link_secret.get_secret_value()) < FILE_LINK_SECRET_MIN:
        yield "file_link_secret", f"must be at least {FILE_LINK_SECRET_MIN} characters"
    if s.unsubscribe_secret is not None and len(s.unsubscribe_secret.get_secret_value()) < FILE_LINK_SECRET_MIN:
        yield "unsubscribe_secret", f"must be at least {FILE_LINK_SECRET_MIN} characters"
    if s.public_url is not None and (len(s.public_url) > 200 or not PUBLIC_URL_RE.match(s.public_url)):
        yield "public_url", "must be an http(s) URL with no query, fragment or trailing slash, at most 200 characters"


def _webhook_problems(s: CheckedSettings) -> Iterator[tuple[str, str]]:
    for cidr in s.webhook_allowed_networks:
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            yield "webhook_allowed_networks", f"must list networks such as 127.0.0.0/8 or ::1/128, not {cidr[:80]!r}"
    schedule = s.webhook_retry_schedule
    if not 1 <= len(schedule) <= RETRY_MAX_ATTEMPTS:
        yield "webhook_retry_schedule", f"must list 1-{RETRY_MAX_ATTEMPTS} delays in seconds, comma-separated"
    elif not all(math.isfinite(d) and 0 <= d <= RETRY_MAX_DELAY_SECONDS for d in schedule):
        yield "webhook_retry_schedule", f"must list delays of 0-{RETRY_MAX_DELAY_SECONDS} seconds each"
