"""The one I/O seam of email: send a built message over SMTP, or write it to the outbox folder.

Both senders take a finished ``EmailMessage`` and derive the envelope from its one ``To`` address
(``envelope_of``), so a sender can never address two people. Errors say whether a retry can help::

    TransientError        connection refused or dropped, timeout, 4xx reply          (retried by the flow)
    EmailRejectedError    5xx reply: the server refuses this message for good         (StorageError: not retried)
    ConfigError           no STARTTLS offered, certificate not trusted, login refused, plaintext off loopback
    UnsafeEmailError      the message itself is unsafe (Cc/Bcc, two addresses)        (DefinitionError)

No message here contains the SMTP password: it is read from its ``SecretStr`` only to log in, and smtplib's
debug output (which would print the AUTH exchange) stays off.
"""

from __future__ import annotations

import hashlib
import os
import smtplib
import ssl
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Literal, ParamSpec, Self, TypeVar

from pydantic import SecretStr

from bulletin.errors import BulletinError, ConfigError, StorageError, TransientError
from bulletin.models import IDENTIFIER_RE
from bulletin.settings import Settings
from bulletin.settings_checks import is_loopback_host
from tasks.email.message import EMAIL_POLICY, check_domain_allowed, envelope_of
from tasks.secrets import read_secret_block

Security = Literal["starttls", "ssl", "none"]
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "ssl": 465, "none": 25}
_MAX_REPLY_CHARS = 200
_MAX_OUTBOX_SUFFIX = 100
_P = ParamSpec("_P")
_T = TypeVar("_T")


class EmailRejectedError(StorageError):
    """The SMTP server permanently refused the message or its recipient (a 5xx reply). Retrying cannot help.

    A StorageError because, like a refused object write, the destination said no for good; not a DefinitionError,
    because the report may be fine and the cause is on the server's side (unknown mailbox, policy, size).
    """

    def __init__(self, message: str, *, code: int | None = None, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code


@dataclass(frozen=True)
class SendResult:
    """What one send did. ``refused`` maps refused recipients to the server's (code, reply); empty on success."""

    message_id: str
    bytes: int
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    location: str | None = None  # the .eml file for the outbox; None for SMTP


#: ``localhost`` or a loopback IP literal, no DNS lookup; the one rule the settings check uses too.
is_loopback = is_loopback_host


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())[:_MAX_REPLY_CHARS]


class _Sender:
    """What both senders share: used as a context manager, which closes the sender on the way out."""

    def close(self) -> None:
        """Let go of what the sender holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SmtpSender(_Sender):
    """SMTP with verified TLS. One connection sends many messages; use it as a context manager.

    ``starttls`` requires the server to offer STARTTLS and never falls back to plaintext; ``ssl`` speaks TLS from
    the first byte; ``none`` is plaintext and allowed only for a loopback host (a local relay or a test server).
    Not thread-safe: one sender per task.
    """

    def __init__(
        self,
        host: str,
        port: int | None,
        security: Security,
        username: str | None,
        password: SecretStr | None,
        timeout: float,
        ca_file: Path | None,
        local_hostname: str | None = None,
        *,
        allowed_domains: Sequence[str] = (),
    ) -> None:
        if security not in DEFAULT_PORTS:
            raise ConfigError(f"unknown smtp_security {security!r}: use starttls, ssl or none", field="smtp_security")
        if security == "none" and not is_loopback(host):
            raise ConfigError(
                f"smtp_security=none sends in plaintext and is allowed only for a loopback host, not {host!r}",
                field="smtp_security",
            )
        if username and password is None:
            raise ConfigError("smtp_username is set but no SMTP password is configured", field="smtp_password")
        self.host = host
        self.port = port or DEFAULT_PORTS[security]
        self.security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        self.ca_file = ca_file
        self.local_hostname = local_hostname
        self.allowed_domains = list(allowed_domains)
        self._smtp: smtplib.SMTP | None = None
        self._max_size: int | None = None

    def __repr__(self) -> str:
        return f"SmtpSender({self.host}:{self.port}, security={self.security}, username={self.username!r})"

    @property
    def _where(self) -> str:
        return f"SMTP server {self.host}:{self.port}"

    @cached_property
    def _tls_context(self) -> ssl.SSLContext:
        # The system's CAs plus the configured bundle ("extra"), with hostname checks and TLS 1.2 at least.
        # Built once per sender: loading the system CA store costs more than a TLS handshake.
        context = ssl.create_default_context()
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load smtp_ca_file {self.ca_file}: {exc}", field="smtp_ca_file") from exc
        return context

    def _open(self) -> smtplib.SMTP:
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                self.host, self.port, self.local_hostname, timeout=self.timeout, context=self._tls_context
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, self.local_hostname, timeout=self.timeout)
        smtp.set_debuglevel(0)  # level 1+ prints the AUTH exchange, i.e. the password, to stderr
        try:
            smtp.ehlo()
            if self.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ConfigError(
                        f"{self._where} does not offer STARTTLS; refusing to send in plaintext "
                        "(use smtp_security=ssl if it expects TLS from the first byte)",
                        field="smtp_security",
                    )
                smtp.starttls(context=self._tls_context)
                smtp.ehlo()  # the capabilities said before TLS are void (RFC 3207)
            if self.username:
                self._login(smtp)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _login(self, smtp: smtplib.SMTP) -> None:
        if self._password is None or not self.username:
            raise ConfigError("SMTP login needs both smtp_username and a password", field="smtp_password")
        try:
            smtp.login(self.username, self._password.get_secret_value())
        except smtplib.SMTPAuthenticationError as exc:
            # The reply is left out: some servers echo the (base64) credentials back in it.
            text = f"{self._where} refused the login for {self.username!r} (reply code {exc.smtp_code})"
            if 400 <= exc.smtp_code < 500:  # 454: temporary authentication failure
                raise TransientError(text) from None
            raise ConfigError(text, field="smtp_password") from None
        except smtplib.SMTPNotSupportedError:
            raise ConfigError(f"{self._where} offers no AUTH; unset smtp_username", field="smtp_username") from None
        except smtplib.SMTPException as exc:
            if type(exc) is smtplib.SMTPException:  # "No suitable authentication method found."
                raise ConfigError(f"{self._where}: {exc}", field="smtp_username") from None
            raise  # a dropped connection: _call makes it a TransientError

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None:
            # A server may drop an idle connection; NOOP finds out before a message is half sent.
            try:
                if self._smtp.noop()[0] == 250:
                    return self._smtp
            except (smtplib.SMTPException, OSError):
                pass
            self.close()
        smtp = self._call(self._open)
        size = smtp.esmtp_features.get("size", "")
        self._max_size = int(size) if size.isdigit() and int(size) > 0 else None
        self._smtp = smtp
        return smtp

    def _call(self, action: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run one smtplib step, turning its exceptions into the error tree."""
        try:
            return action(*args, **kwargs)
        except BulletinError:
            raise
        except smtplib.SMTPConnectError as exc:  # a 4xx/5xx greeting: the server is busy or closed to us now
            raise TransientError(f"{self._where} refused the connection: {exc.smtp_code}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()), (0, b""))
            raise self._reply_error("refused the recipient", code, reply) from exc
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, bad greeting...
            raise self._reply_error("refused the message", exc.smtp_code, exc.smtp_error) from exc
        except ssl.SSLCertVerificationError as exc:
            raise ConfigError(
                f"{self._where}: TLS certificate verification failed ({exc.verify_message}); "
                "give its CA in smtp_ca_file if it is a private CA",
                field="smtp_ca_file",
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, timeouts, refused connections, TLS errors
            raise TransientError(f"{self._where} failed: {type(exc).__name__}: {exc}") from exc

    def _reply_error(self, what: str, code: int, reply: bytes | str) -> BulletinError:
        text = f"{self._where} {what}: {code} {_reply_text(reply)}"
        # Only a 5xx is final; anything else (4xx, or a code smtplib made up) may pass on a later try.
        return EmailRejectedError(text, code=code) if 500 <= code < 600 else TransientError(text)

    def server_max_size(self) -> int | None:
        """The SIZE the server advertised on this connection's EHLO, or None when it gave none (or 0)."""
        self._connection()
        return self._max_size

    def send(self, msg: EmailMessage) -> SendResult:
        """Send one message to the one address in its To header (the only envelope recipient)."""
        sender, recipient = envelope_of(msg)
        check_domain_allowed(recipient, self.allowed_domains)  # here too, so no caller can forget it
        data = msg.as_bytes(policy=EMAIL_POLICY)
        smtp = self._connection()
        if self._max_size is not None and len(data) > self._max_size:
            raise EmailRejectedError(f"message of {len(data)} bytes is over the {self._where} SIZE {self._max_size}")
        try:
            refused = self._call(smtp.sendmail, sender, [recipient], data)
        except BulletinError:
            self.close()  # the transaction state is unknown: the next message starts on a fresh connection
            raise
        return SendResult(
            message_id=str(msg["Message-ID"]),
            bytes=len(data),
            refused={addr: (code, _reply_text(reply)) for addr, (code, reply) in refused.items()},
        )

    def close(self) -> None:
        """Say QUIT and drop the connection; a connection that is already gone is fine."""
        smtp, self._smtp, self._max_size = self._smtp, None, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


class OutboxSender(_Sender):
    """The embedded default: each message becomes one ``.eml`` file in a folder, readable by any mail client.

    Files are named ``<UTC date>-<recipient ref>-<short hash>.eml`` and created with a hard link from a temporary
    file, so a file is complete when it appears and an existing one is never overwritten.
    """

    def __init__(self, folder: Path, *, allowed_domains: Sequence[str] = ()) -> None:
        self.folder = folder
        self.allowed_domains = list(allowed_domains)

    def __repr__(self) -> str:
        return f"OutboxSender({self.folder})"

    def server_max_size(self) -> int | None:
        """Always None: a folder has no size limit of its own (the configured cap still applies)."""
        return None

    def file_name(self, msg: EmailMessage, data: bytes) -> str:
        """``<UTC timestamp>-<recipient ref>-<short hash>.eml`` from the message's Date and recipient header."""
        try:
            when = parsedate_to_datetime(str(msg["Date"])).astimezone(UTC)
        except (TypeError, ValueError):
            when = datetime.now(UTC)
        ref = str(msg.get("X-Bulletin-Recipient", ""))
        ref = ref if IDENTIFIER_RE.match(ref) else "recipient"
        return f"{when:%Y%m%dT%H%M%SZ}-{ref}-{hashlib.sha256(data).hexdigest()[:12]}.eml"

    def send(self, msg: EmailMessage) -> SendResult:
        # The same checks as over SMTP: the outbox must not show a message that SMTP would refuse.
        check_domain_allowed(envelope_of(msg)[1], self.allowed_domains)
        data = msg.as_bytes(policy=EMAIL_POLICY)
        name = self.file_name(msg, data)
        stem = name.removesuffix(".eml")
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            for attempt in range(_MAX_OUTBOX_SUFFIX + 1):
                target = self.folder / (name if attempt == 0 else f"{stem}-{attempt}.eml")
                if self._create(target, data):
                    return SendResult(message_id=str(msg["Message-ID"]), bytes=len(data), location=str(target))
        except OSError as exc:
            raise TransientError(f"cannot write to the outbox {self.folder}: {exc.strerror}") from exc
        raise StorageError(f"outbox file {name} and {_MAX_OUTBOX_SUFFIX} alternatives already exist")

    def _create(self, target: Path, data: bytes) -> bool:
        fd, tmp_name = tempfile.mkstemp(dir=self.folder, prefix=".eml-")  # mode 0600: reports are private
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp_name, target)  # fails if the name exists: never overwrite
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp_name)

    def close(self) -> None:
        """Nothing to close; here so both senders are used the same way."""


def _read_password_block(name: str) -> SecretStr:
    value = read_secret_block(name, holding="the SMTP password")
    if not isinstance(value, str):
        raise ConfigError(f"the Prefect Secret block {name!r} must hold the SMTP password as a string")
    return SecretStr(value)


def make_sender(settings: Settings) -> SmtpSender | OutboxSender:
    """SMTP when ``smtp_host`` is set, else the outbox folder. The password: ``smtp_password``, else the block."""
    if not settings.smtp_host:
        return OutboxSender(settings.outbox_path, allowed_domains=settings.email_allowed_domains)
    password = settings.smtp_password
    if password is None and settings.smtp_password_block:
        password = _read_password_block(settings.smtp_password_block)
    return SmtpSender(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_security,
        settings.smtp_username,
        password,
        settings.smtp_timeout_seconds,
        settings.smtp_ca_file,
        allowed_domains=settings.email_allowed_domains,
    )
