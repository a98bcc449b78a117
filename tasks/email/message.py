"""Report emails as pure functions: address and header checks, and the MIME message itself (the inline chart is
tasks/email/chart_png.py).

Nothing here opens a socket. ``build_message`` turns checked inputs into one ``EmailMessage`` for one recipient;
``plan_attachments`` measures that message to decide between attachments and download links. Sending is the job
of ``tasks.email.send``; the bodies come from the templates in ``tasks.email``.

Every header value is refused, not cleaned, when it holds a line break: a cleaned value would still deliver a
message nobody asked for, and a refusal is recorded against the recipient.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from pathlib import Path

from markupsafe import escape

from bulletin.clock import require_aware
from bulletin.errors import DefinitionError, StorageError
from bulletin.models import Recipient

#: SMTP line endings, and 7-bit transfer encodings so no relay needs 8BITMIME: non-ASCII text goes out as
#: quoted-printable or base64, whichever is shorter.
#: ``refold_source="none"``: a header set raw (``List-Unsubscribe``: one long URL with nowhere to fold) goes out as
#: one line (under RFC 5322's 998) rather than as encoded-words no mail client reads as a URL. Headers set the usual
#: way are folded as before.
EMAIL_POLICY = policy.SMTP.clone(cte_type="7bit", refold_source="none")
#: The Content-ID of the inline chart; the HTML body shows it as ``<img src="cid:chart@bulletin">``.
CHART_CID = "chart@bulletin"
#: The headers that could add a second recipient. A message carrying any of them is never sent.
FORBIDDEN_HEADERS = ("Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc")

# Every character str.splitlines() breaks on (\r \n \v \f \x1c-\x1e \x85 \u2028 \u2029), the other C0 controls
# and DEL: in a header each either starts a new header (CR/LF) or is a trick some client renders as one. A tab is
# plain whitespace in a header and stays allowed.
_CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# A conservative dot-atom address: no quoted local parts, comments, display names, lists or IP literals.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS_RE = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})*$")
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_CONTENT_TYPE_RE = re.compile(r"^([a-z0-9][a-z0-9.+-]*)/([a-z0-9][a-z0-9.+-]*)((?:;\s*[a-z0-9-]+=[A-Za-z0-9._-]+)*)$")
_LINK_SCHEMES = ("https://", "http://", "file://")
#: "List-Unsubscribe: <" + URL + ">" stays under RFC 5322's 998 characters per line.
UNSUBSCRIBE_URL_MAX = 970


class UnsafeEmailError(DefinitionError):
    """An address, header value, filename or link was refused before anything was sent. Retrying cannot help."""


@dataclass(frozen=True)
class EmailAttachment:
    """A rendered file to attach. ``sha256`` and ``size`` are checked against the file when the message is built."""

    filename: str
    content_type: str  # e.g. "application/pdf", "text/csv; charset=utf-8"
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class DownloadLink:
    """A stored file offered by link when attaching it would make the message too large."""

    filename: str
    url: str  # may be presigned: it goes in the body, never in a log or an error
    expires_at: datetime | None
    size: int


# --- checks ---------------------------------------------------------------------------------------------------


def _describe(char: str) -> str:
    return f"U+{ord(char):04X}"


def check_header_value(text: str) -> str:
    """Return ``text`` unchanged, or refuse it when it holds a line break or another control character (tab is
    allowed)."""
    found = _CONTROL_RE.search(text)
    if found is not None:
        raise UnsafeEmailError(f"header value refused: it contains the control character {_describe(found.group())}")
    return text


def check_address(addr: str) -> str:
    """Return ``addr`` when it is exactly one plain address (``user@example.com``); refuse anything else.

    Refused: line breaks and controls, lists (``,`` ``;``), display names and comments (``<>`` ``()``), quoted
    local parts, whitespace, non-ASCII. The stdlib parsers must agree that it is one address and nothing more.
    """
    check_header_value(addr)
    if not _ADDRESS_RE.match(addr) or len(addr) > 254:
        raise UnsafeEmailError(f"not a single plain email address: {addr!r}", field="email")
    try:
        parsed = Address(addr_spec=addr)
    except ValueError as exc:  # HeaderParseError is a ValueError
        raise UnsafeEmailError(f"not a single plain email address: {addr!r}", field="email") from exc
    if getaddresses([addr]) != [("", addr)] or parsed.addr_spec != addr:
        raise UnsafeEmailError(f"not a single plain email address: {addr!r}", field="email")
    return addr


def check_sender(sender: str) -> Address:
    """The From mailbox: one address with an optional display name, e.g. ``Bulletin <bulletin@example.com>``."""
    check_header_value(sender)
    pairs = getaddresses([sender])
    if len(pairs) != 1 or not pairs[0][1]:
        raise UnsafeEmailError(f"the sender must be exactly one mailbox: {sender!r}", field="smtp_from")
    name, addr = pairs[0]
    return Address(display_name=check_header_value(name), addr_spec=check_address(addr))


def check_domain_allowed(addr: str, allowed: list[str]) -> str:
    """Return ``addr`` when its domain is in ``allowed`` (exact, case-insensitive); an empty list allows any."""
    if not allowed:
        return addr
    domain = addr.rpartition("@")[2].lower()
    if domain not in {d.strip().lower() for d in allowed}:
        raise UnsafeEmailError(f"recipient domain {domain!r} is not in email_allowed_domains", field="email")
    return addr


def safe_filename(name: str) -> str:
    """Return ``name`` when it is a bare file name; refuse line breaks, controls, path separators and dot names."""
    check_header_value(name)
    if not name or name in {".", ".."} or "/" in name or "\\" in name or len(name.encode("utf-8")) > 255:
        raise UnsafeEmailError(f"unsafe attachment file name {name!r}", field="filename")
    return name


def check_link(link: DownloadLink) -> DownloadLink:
    """A link must be one line of an http(s) or file URL; the URL itself is never echoed (it may be signed)."""
    safe_filename(link.filename)
    if _CONTROL_RE.search(link.url) or " " in link.url or not link.url.startswith(_LINK_SCHEMES):
        raise UnsafeEmailError(f"unsafe download link for {link.filename!r}", field="links")
    return link


def _split_content_type(content_type: str) -> tuple[str, str, dict[str, str]]:
    match = _CONTENT_TYPE_RE.match(check_header_value(content_type).strip().lower())
    if not match:
        raise UnsafeEmailError(f"unsupported attachment content type {content_type!r}", field="content_type")
    params = dict(p.strip().split("=", 1) for p in match.group(3).split(";") if p.strip())
    return match.group(1), match.group(2), params


def envelope_of(msg: EmailMessage) -> tuple[str, str]:
    """The SMTP envelope (sender, recipient) of a built message, re-checked: one From, one To, no Cc or Bcc.

    Both senders call this, so a message built by anything else still cannot reach two people.
    """
    for name in FORBIDDEN_HEADERS:
        if msg.get(name) is not None:
            raise UnsafeEmailError(f"the message has a {name} header; one recipient per message only")
    froms, tos = msg.get_all("From") or [], msg.get_all("To") or []
    if len(froms) != 1 or len(tos) != 1:
        raise UnsafeEmailError("the message must have exactly one From and one To header")
    senders, recipients = getaddresses([str(froms[0])]), getaddresses([str(tos[0])])
    if len(senders) != 1 or len(recipients) != 1:
        raise UnsafeEmailError("the message's From and To must each hold exactly one address")
    return check_address(senders[0][1]), check_address(recipients[0][1])


# --- the message ------------------------------------------------------------------------------------------------


def _read_attachment(attachment: EmailAttachment) -> bytes:
    try:
        data = attachment.path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read attachment {attachment.filename!r}: {exc.strerror}") from exc
    if len(data) != attachment.size or hashlib.sha256(data).hexdigest() != attachment.sha256:
        raise StorageError(f"attachment {attachment.filename!r} changed after it was rendered")
    return data


def _links_text(links: Iterable[DownloadLink]) -> str:
    lines = [f"- {link.filename}: {link.url}" for link in links]
    return "\n\nDownload links:\n" + "\n".join(lines) + "\n"


def _links_html(links: Iterable[DownloadLink]) -> str:
    items = "".join(f'<li><a href="{escape(link.url)}">{escape(link.filename)}</a></li>' for link in links)
    return f"<p>Download links:</p><ul>{items}</ul>"


def _with_links(text_body: str, html_body: str, links: list[DownloadLink]) -> tuple[str, str]:
    """Append the links a (custom) template left out, so a file is never silently missing from the email."""
    missing_text = [link for link in links if link.url not in text_body]
    missing_html = [link for link in links if str(escape(link.url)) not in html_body]
    if missing_text:
        text_body += _links_text(missing_text)
    if missing_html:
        closing = html_body.rfind("</body>")
        at = closing if closing >= 0 else len(html_body)
        html_body = html_body[:at] + _links_html(missing_html) + html_body[at:]
    return text_body, html_body


def check_unsubscribe_url(url: str) -> str:
    """The one-click link must be one http(s) URL that fits on one header line with nothing to break it out of
    ``<...>``; refused otherwise (never echoed: it carries a token)."""
    if (
        _CONTROL_RE.search(url)
        or not url.startswith(("https://", "http://"))
        or any(c in url for c in ' <>,"\t')
        or len(url) > UNSUBSCRIBE_URL_MAX
    ):
        raise UnsafeEmailError("unsafe unsubscribe link", field="public_url")
    return url


def _with_unsubscribe(text_body: str, html_body: str, url: str) -> tuple[str, str]:
    """Append the unsubscribe link to a (custom) body that left it out: every email offers a way out."""
    if url not in text_body:
        text_body += f"\n\nTo stop receiving this report, unsubscribe: {url}\n"
    if str(escape(url)) not in html_body:
        closing = html_body.rfind("</body>")
        at = closing if closing >= 0 else len(html_body)
        html_body = html_body[:at] + f'<p><a href="{escape(url)}">Unsubscribe from this report</a></p>' + html_body[at:]
    return text_body, html_body


def _fingerprint(parts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    return digest.hexdigest()


def _checked_heads(
    sender: str, recipient: Recipient, subject: str, message_id_domain: str, date: datetime
) -> tuple[Address, Address, str]:
    """From, To and Subject, each checked (``check_sender``, ``check_address``, ``check_header_value``)."""
    to_address = Address(
        display_name=check_header_value(recipient.name or ""), addr_spec=check_address(recipient.email)
    )
    if not _DOMAIN_RE.match(message_id_domain):
        raise UnsafeEmailError(f"unsafe Message-ID domain {message_id_domain!r}", field="message_id_domain")
    require_aware(date, "the message date", field="date", error=DefinitionError)
    return check_sender(sender), to_address, check_header_value(subject.strip())


def build_message(
    *,
    sender: str,
    recipient: Recipient,
    subject: str,
    text_body: str,
    html_body: str,
    attachments: list[EmailAttachment],
    links: list[DownloadLink],
    chart_png: bytes | None,
    message_id_domain: str,
    date: datetime,
    unsubscribe_url: str | None = None,
) -> EmailMessage:
    """One message for one recipient: text and HTML alternatives, the chart inline, files attached or linked.

    ``html_body`` must already be escaped (``render_bodies`` does it). Deterministic: the same inputs give the
    same bytes, because the Message-ID and the MIME boundaries derive from a hash of the inputs, so a retried
    send carries the same Message-ID and the receiving side can tell it is a repeat.
    """
    from_address, to_address, subject = _checked_heads(sender, recipient, subject, message_id_domain, date)
    types, names = (
        [_split_content_type(a.content_type) for a in attachments],
        [safe_filename(a.filename) for a in attachments],
    )
    links = [check_link(link) for link in links]
    text_body, html_body = _with_links(text_body, html_body, links)
    if unsubscribe_url is not None:
        text_body, html_body = _with_unsubscribe(text_body, html_body, check_unsubscribe_url(unsubscribe_url))
    fingerprint = _fingerprint(
        [
            str(from_address),
            recipient.ref,
            str(to_address),
            subject,
            text_body,
            html_body,
            message_id_domain,
            date.isoformat(),
            hashlib.sha256(chart_png or b"").hexdigest(),
            *(f"{a.filename}|{a.content_type}|{a.size}|{a.sha256}" for a in attachments),
            *(f"{link.filename}|{link.url}|{link.expires_at}|{link.size}" for link in links),
            *([unsubscribe_url] if unsubscribe_url else []),
        ]
    )

    msg = EmailMessage(policy=EMAIL_POLICY)
    msg["From"] = from_address
    msg["To"] = to_address
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = f"<{fingerprint[:32]}@{message_id_domain}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: out-of-office robots must not answer
    msg["X-Bulletin-Recipient"] = recipient.ref  # names the outbox file; lets a bounce be traced to a recipient
    _add_unsubscribe(msg, unsubscribe_url)
    _add_parts(msg, text_body, html_body, chart_png, zip(attachments, names, types, strict=True))
    # Boundaries starting "=_" cannot occur in quoted-printable or base64 text, and the hash makes them unique.
    for i, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        part.set_boundary(f"=_bulletin.{i}.{fingerprint[32:56]}")
    return msg


def _add_unsubscribe(msg: EmailMessage, url: str | None) -> None:
    """RFC 8058 one-click: the mail client POSTs ``List-Unsubscribe=One-Click`` to the URL. Set raw, so the one
    long URL stays on one line (``EMAIL_POLICY``)."""
    if url is not None:
        msg.set_raw("List-Unsubscribe", f"<{url}>")
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"


def _add_parts(
    msg: EmailMessage,
    text_body: str,
    html_body: str,
    chart_png: bytes | None,
    files: Iterable[tuple[EmailAttachment, str, tuple[str, str, dict[str, str]]]],
) -> None:
    """The text and HTML alternatives, the chart inline in the HTML part, then each file under its safe name."""
    msg.set_content(text_body, subtype="plain", charset="utf-8")
    msg.add_alternative(html_body, subtype="html", charset="utf-8")
    if chart_png is not None:
        html_part = next(p for p in msg.iter_parts() if p.get_content_type() == "text/html")
        html_part.add_related(
            chart_png, "image", "png", cid=f"<{CHART_CID}>", disposition="inline", filename="chart.png"
        )
    for attachment, name, (maintype, subtype, params) in files:
        data = _read_attachment(attachment)
        msg.add_attachment(data, maintype, subtype, filename=name, params=params)


def message_size(msg: EmailMessage) -> int:
    """The bytes a server receives (before dot-stuffing): what SMTP SIZE and our cap are compared with."""
    return len(msg.as_bytes(policy=EMAIL_POLICY))


def effective_cap(cap_bytes: int, server_size: int | None) -> int:
    """Our cap, lowered to the server's SIZE when it advertises one (SIZE 0 means no limit, RFC 1870)."""
    return min(cap_bytes, server_size) if server_size else cap_bytes


def plan_attachments(
    attachments: list[EmailAttachment],
    *,
    cap_bytes: int,
    server_size: int | None,
    build: Callable[[list[EmailAttachment]], EmailMessage],
) -> bool:
    """True when the message with ``attachments`` fits under min(cap, server SIZE); False means send links.

    ``build`` makes the real message with the given attachments, and its encoded size is measured: base64 adds a
    third plus line breaks, and headers and the other parts add more, so estimating from file sizes would pass
    messages the server then refuses. Files whose base64 alone is over the cap are rejected without being read.
    """
    if not attachments:
        return True
    cap = effective_cap(cap_bytes, server_size)
    if sum(4 * -(-a.size // 3) for a in attachments) > cap:
        return False
    return message_size(build(attachments)) <= cap
