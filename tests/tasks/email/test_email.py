"""The email destination against real SMTP servers on loopback (tests/fixtures/smtp.py).

Every refusal is checked twice: the error names what is wrong, and the server saw no connection (or, where the
check needs one, no message). Pure checks come first, then messages, then the senders.
"""

from __future__ import annotations

import base64
import email
import hashlib
import io
import logging
import random
import re
import socket
import stat
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage, MIMEPart
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import SecretStr

from bulletin.email_templates import CONTEXT_NAMES, RECIPIENT_FIELDS
from bulletin.errors import ConfigError, DefinitionError, StorageError, TransientError
from bulletin.models import Recipient
from bulletin.settings import Settings
from tasks.email import (
    DownloadLink,
    EmailAttachment,
    OutboxSender,
    SmtpSender,
    build_message,
    make_sender,
    plan_attachments,
    render_bodies,
    render_chart_png,
)
from tasks.email.message import (
    CHART_CID,
    UnsafeEmailError,
    check_address,
    check_domain_allowed,
    check_header_value,
    message_size,
    safe_filename,
)
from tasks.email.send import EmailRejectedError, SendResult, is_loopback
from tasks.render.base import ChartData
from tests.fixtures.smtp import SMALL_SIZE_LIMIT, SMTP_PASSWORD, SMTP_USER, SmtpTestServer

NOW = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
SENDER = "Bulletin <bulletin@bulletin.test>"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CHART = ChartData("Sales by region", "Region", "Amount", ["North", "South", "East"], [120.0, 310.5, 75.0])
KEY_FIGURES = [("Rows", "1,234"), ("Total amount", "€ 98,765.40")]
LINE_BREAKS = ["\r", "\n", "\r\n", "\v", "\f", "\x1c", "\x85", "\u2028", "\u2029"]
SIGNED_URL = "https://bucket.test/reports/ana/weekly.pdf?X-Amz-Expires=3600&X-Amz-Signature=0123abcd"


def recipient(ref: str = "ana", email: str = "ana@example.com", name: str | None = "Ana Lima") -> Recipient:
    return Recipient(ref=ref, email=email, name=name)


def write_file(folder: Path, name: str, content_type: str, data: bytes) -> EmailAttachment:
    path = folder / name
    path.write_bytes(data)
    return EmailAttachment(name, content_type, path, len(data), hashlib.sha256(data).hexdigest())


def noise(size: int, seed: int = 7) -> bytes:
    """Incompressible bytes, so sizes mean what they say."""
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="module")
def chart_png() -> bytes:
    return render_chart_png(CHART)


@pytest.fixture
def files(tmp_path: Path) -> list[EmailAttachment]:
    return [
        write_file(tmp_path, "weekly.pdf", "application/pdf", b"%PDF-1.7\n" + noise(3000)),
        write_file(
            tmp_path, "weekly é.csv", "text/csv; charset=utf-8", "region,amount\nNorth,120\nSão Paulo,3\n".encode()
        ),
        write_file(tmp_path, "weekly.xlsx", XLSX, b"PK\x03\x04" + noise(2000, seed=8)),
    ]


def make_message(
    rcpt: Recipient,
    *,
    attachments: Sequence[EmailAttachment] = (),
    links: Sequence[DownloadLink] = (),
    chart_png: bytes | None = None,
    title: str = "Weekly sales",
    subject: str | None = None,
) -> EmailMessage:
    default_subject, text, html = render_bodies(
        title=title,
        description="Sales by region, last week.",
        recipient=rcpt,
        key_figures=KEY_FIGURES,
        files=[(a.filename, a.size, 3) for a in attachments],
        links=list(links),
        generated_at=NOW,
        chart_title=CHART.title if chart_png else None,
    )
    return build_message(
        sender=SENDER,
        recipient=rcpt,
        subject=default_subject if subject is None else subject,
        text_body=text,
        html_body=html,
        attachments=list(attachments),
        links=list(links),
        chart_png=chart_png,
        message_id_domain="bulletin.test",
        date=NOW,
    )


def deliver(sender: SmtpSender | OutboxSender, rcpt: Recipient, **kwargs: Any) -> SendResult:
    """Build and send in one call, so a refusal in either step is one statement under pytest.raises."""
    return sender.send(make_message(rcpt, **kwargs))


def plain_sender(server: SmtpTestServer, **kwargs: Any) -> SmtpSender:
    return SmtpSender(server.host, server.port, "none", None, None, 5.0, None, **kwargs)


def tls_sender(server: SmtpTestServer, security: Any, *, password: str = SMTP_PASSWORD, **kwargs: Any) -> SmtpSender:
    return SmtpSender(server.host, server.port, security, SMTP_USER, SecretStr(password), 5.0, server.ca_file, **kwargs)


def parse(content: bytes) -> EmailMessage:
    return email.message_from_bytes(content, policy=policy.default)


def payload(part: MIMEPart) -> bytes:
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def attachments_of(msg: EmailMessage) -> dict[str, EmailMessage]:
    return {str(part.get_filename()): part for part in msg.iter_attachments() if part.get_content_type() != "image/png"}


def bodies(msg: EmailMessage) -> tuple[str, str]:
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None
    assert html is not None
    return str(text.get_content()), str(html.get_content())


# --- pure checks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("addr", ["ana@example.com", "first.last+tag@mail.example.co.uk", "bulletin@localhost"])
def test_check_address_accepts_one_plain_address(addr: str) -> None:
    assert check_address(addr) == addr


@pytest.mark.parametrize(
    "addr",
    [
        "a@x.com, b@y.com",
        "a@x.com; b@y.com",
        "a@x.com b@y.com",
        "Ana <a@x.com>",
        "<a@x.com>",
        "(comment)a@x.com",
        '"a,b"@x.com',
        "a@x.com\r\nBcc: evil@x.com",
        *(f"a@x.com{br}" for br in LINE_BREAKS),
        "",
        "a",
        "@x.com",
        "a@",
        "a@x..com",
        "a@@x.com",
        "á@x.com",
        "a@[127.0.0.1]",
    ],
)
def test_check_address_refuses_anything_but_one_plain_address(addr: str) -> None:
    with pytest.raises(UnsafeEmailError):
        check_address(addr)


def test_check_domain_allowed_is_exact_and_case_insensitive() -> None:
    assert check_domain_allowed("ana@anywhere.test", []) == "ana@anywhere.test"
    assert check_domain_allowed("Ana@Example.COM", ["example.com"]) == "Ana@Example.COM"
    for addr in ["ana@evil.test", "ana@sub.example.com", "ana@example.com.evil.test"]:
        with pytest.raises(UnsafeEmailError, match="not in email_allowed_domains"):
            check_domain_allowed(addr, ["example.com"])


@pytest.mark.parametrize("br", [*LINE_BREAKS, "\x00", "\x7f"])
def test_check_header_value_refuses_every_line_break(br: str) -> None:
    with pytest.raises(UnsafeEmailError, match="control character"):
        check_header_value(f"Weekly{br}Bcc: evil@x.com")


def test_check_header_value_keeps_tabs_and_unicode() -> None:
    assert check_header_value("Ventes\thebdo — São Paulo") == "Ventes\thebdo — São Paulo"


@pytest.mark.parametrize("name", ["../weekly.pdf", "a/b.pdf", "a\\b.pdf", "x\r\n.pdf", "x\u2028.pdf", "", ".", ".."])
def test_safe_filename_refuses_paths_and_line_breaks(name: str) -> None:
    with pytest.raises(UnsafeEmailError):
        safe_filename(name)


def test_safe_filename_keeps_a_unicode_name() -> None:
    assert safe_filename("ventes é.csv") == "ventes é.csv"


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST.", "::ffff:127.0.0.1"]
)
def test_is_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["smtp.example.com", "10.0.0.1", "0.0.0.0", "127.0.0.1.nip.io", "::ffff:10.0.0.1"])
def test_plaintext_is_refused_for_a_host_that_is_not_loopback(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="only for a loopback host"):
        SmtpSender(host, 25, "none", None, None, 5.0, None)


# --- templates, chart and message ------------------------------------------------------------------------------


def test_render_chart_png_is_a_deterministic_png_drawn_at_twice_its_shown_size(chart_png: bytes) -> None:
    image = Image.open(io.BytesIO(chart_png))
    assert image.format == "PNG" and image.size[0] == 1200, "600 CSS pixels wide, drawn at 2x for sharp screens"
    assert render_chart_png(CHART) == chart_png
    empty = render_chart_png(ChartData("Nothing", "Region", "Amount", [], []), width=300)
    assert Image.open(io.BytesIO(empty)).size[0] == 600
    with pytest.raises(DefinitionError):
        render_chart_png(ChartData("Bad", "Region", "Amount", ["a", "b"], [1.0]))
    with pytest.raises(DefinitionError, match="out of range"):
        render_chart_png(CHART, width=5000)


def test_render_bodies_escapes_user_data_in_html_only() -> None:
    rcpt = recipient(name="<b>Ana</b>")
    subject, text, html = render_bodies(
        title="Sales <script>alert(1)</script>",
        description='Q&A "quoted"',
        recipient=rcpt,
        key_figures=[("<i>Rows</i>", "<img src=x onerror=alert(1)>")],
        files=[("weekly.pdf", 12_345, 1_234)],
        links=[],
        generated_at=NOW,
        chart_title="Sales <by> region",
        chart_rows=[("<b>North</b>", "1,200")],
    )
    assert subject == "Sales <script>alert(1)</script> (2026-11-02)"
    assert "<script>" not in html
    assert "<img src=x" not in html
    assert "<b>Ana" not in html
    assert "<i>" not in html
    assert "Sales &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Q&amp;A &#34;quoted&#34;" in html
    assert f'<img src="cid:{CHART_CID}" alt="Sales &lt;by&gt; region: &lt;b&gt;North&lt;/b&gt; 1,200"' in html
    assert '<td style="padding: 1px 16px 1px 0;">&lt;b&gt;North&lt;/b&gt;</td>' in html, "the bars as a table too"
    assert "Sales <script>alert(1)</script>" in text
    assert "<img src=x onerror=alert(1)>" in text
    assert "weekly.pdf (12.3 kB, 1,234 rows)" in text
    assert "Sales <by> region:\n  <b>North</b>: 1,200" in text, "the text body has the chart's numbers"


def test_render_bodies_uses_per_report_templates_in_a_sandbox() -> None:
    rcpt = recipient()
    subject, text, html = render_bodies(
        title="Weekly",
        description="",
        recipient=rcpt,
        key_figures=KEY_FIGURES,
        files=[],
        links=[],
        generated_at=NOW,
        subject_template="[{{ recipient.ref }}] {{ title }}",
        text_template="{% for label, value in key_figures %}{{ label }}={{ value }};{% endfor %}",
        html_template="<p>{{ recipient.name }}</p>",
    )
    assert (subject, text, html) == ("[ana] Weekly", "Rows=1,234;Total amount=€ 98,765.40;", "<p>Ana Lima</p>")
    for template in ["{{ ''.__class__.__mro__ }}", "{{ no_such_name }}", "{% if %}"]:
        with pytest.raises(DefinitionError, match="email html template"):
            render_bodies(
                title="x",
                description="",
                recipient=rcpt,
                key_figures=[],
                files=[],
                links=[],
                generated_at=NOW,
                html_template=template,
            )


def test_templates_have_every_name_validate_promises_and_the_recipients_attributes() -> None:
    # `bulletin reports validate` refuses names outside CONTEXT_NAMES and RECIPIENT_FIELDS plus the audience's
    # attributes (bulletin.email_templates): every one of them must render.
    rcpt = Recipient(ref="ana", email="ana@example.com", name="Ana", org="acme", attributes={"region": "APAC"})
    names = sorted(CONTEXT_NAMES - {"recipient"}) + [f"recipient.{f}" for f in sorted(RECIPIENT_FIELDS)]
    template = " ".join(f"{{{{ {name} }}}}" for name in [*names, "recipient.region"])
    _, text, _ = render_bodies(
        title="Weekly",
        description="d",
        recipient=rcpt,
        key_figures=[],
        files=[],
        links=[],
        generated_at=NOW,
        text_template=template,
    )
    assert text.endswith("ana@example.com Ana acme ana APAC")


def test_build_message_is_deterministic(files: list[EmailAttachment], chart_png: bytes) -> None:
    first = make_message(recipient(), attachments=files, chart_png=chart_png)
    again = make_message(recipient(), attachments=files, chart_png=chart_png)
    other = make_message(recipient("bo", "bo@example.com", "Bo"), attachments=files, chart_png=chart_png)
    assert first.as_bytes() == again.as_bytes()
    assert re.fullmatch(r"<[0-9a-f]{32}@bulletin\.test>", str(first["Message-ID"]))
    assert first["Message-ID"] != other["Message-ID"]


def test_build_message_refuses_an_attachment_changed_since_rendering(files: list[EmailAttachment]) -> None:
    files[0].path.write_bytes(b"%PDF-1.7 something else")
    with pytest.raises(StorageError, match="changed after it was rendered"):
        make_message(recipient(), attachments=files)


def test_plan_attachments_measures_the_encoded_message(files: list[EmailAttachment], tmp_path: Path) -> None:
    big = [write_file(tmp_path, "big.pdf", "application/pdf", noise(40_000))]

    def build(attachments: list[EmailAttachment]) -> EmailMessage:
        return make_message(recipient(), attachments=attachments)

    encoded = message_size(build(big))
    assert big[0].size < 50_000 < encoded  # the raw file fits the cap; the message that carries it does not
    assert not plan_attachments(big, cap_bytes=50_000, server_size=None, build=build)
    assert plan_attachments(big, cap_bytes=encoded, server_size=None, build=build)
    assert not plan_attachments(big, cap_bytes=10_000_000, server_size=encoded - 1, build=build)
    assert plan_attachments(big, cap_bytes=encoded, server_size=0, build=build)  # SIZE 0: the server sets no limit
    assert plan_attachments([], cap_bytes=10_000, server_size=1, build=build)


def test_plan_attachments_does_not_read_files_that_cannot_fit(tmp_path: Path) -> None:
    huge = [EmailAttachment("huge.csv", "text/csv", tmp_path / "absent.csv", 10**9, "0" * 64)]

    def build(attachments: list[EmailAttachment]) -> EmailMessage:
        raise AssertionError("a file whose base64 alone is over the cap must not be read")

    assert not plan_attachments(huge, cap_bytes=10_000_000, server_size=None, build=build)


# --- sending over SMTP ------------------------------------------------------------------------------------------


def test_one_message_per_recipient_over_one_connection(smtp_server: SmtpTestServer, chart_png: bytes) -> None:
    people = [recipient(f"r{i}", f"person{i}@example.com", f"Person {i}") for i in range(3)]
    with plain_sender(smtp_server) as sender:
        results = [deliver(sender, rcpt, chart_png=chart_png) for rcpt in people]
    received = smtp_server.messages
    assert len(received) == 3
    assert smtp_server.connections == 1
    for rcpt, got, result in zip(people, received, results, strict=True):
        msg = parse(got.content)
        assert got.rcpt_tos == [rcpt.email]  # exactly one RCPT TO
        assert got.mail_from == "bulletin@bulletin.test"
        assert msg.get_all("To") is not None
        assert len(msg.get_all("To") or []) == 1
        assert getaddresses([str(msg["To"])]) == [(rcpt.name, rcpt.email)]
        assert all(msg[h] is None for h in ["Cc", "Bcc", "Resent-To"])
        assert result.message_id == msg["Message-ID"]
        assert result.bytes == len(got.content)
        assert not result.refused


def test_attachments_arrive_intact_with_their_types(
    smtp_server: SmtpTestServer, files: list[EmailAttachment], chart_png: bytes
) -> None:
    with plain_sender(smtp_server) as sender:
        deliver(sender, recipient(), attachments=files, chart_png=chart_png)
    (got,) = smtp_server.messages
    parts = attachments_of(parse(got.content))
    assert set(parts) == {f.filename for f in files}
    for f in files:
        part = parts[f.filename]
        assert hashlib.sha256(payload(part)).hexdigest() == f.sha256
        assert part.get_content_disposition() == "attachment"
    assert parts["weekly.pdf"].get_content_type() == "application/pdf"
    assert parts["weekly é.csv"].get_content_type() == "text/csv"
    assert parts["weekly é.csv"].get_param("charset") == "utf-8"
    assert parts["weekly.xlsx"].get_content_type() == XLSX


def test_html_shows_key_figures_and_the_inline_chart(smtp_server: SmtpTestServer, chart_png: bytes) -> None:
    with plain_sender(smtp_server) as sender:
        deliver(sender, recipient(), chart_png=chart_png)
    msg = parse(smtp_server.messages[0].content)
    text, html = bodies(msg)
    for label, value in KEY_FIGURES:
        assert label in html
        assert value in html
        assert label in text
        assert value in text
    assert f'src="cid:{CHART_CID}"' in html
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    images = [p for p in related.iter_parts() if p.get_content_type() == "image/png"]
    assert len(images) == 1
    assert images[0]["Content-ID"] == f"<{CHART_CID}>"
    assert images[0].get_content_disposition() == "inline"
    assert payload(images[0]) == chart_png


def test_links_replace_attachments_over_our_cap(smtp_server: SmtpTestServer, tmp_path: Path) -> None:
    big = [write_file(tmp_path, "weekly.pdf", "application/pdf", noise(40_000))]
    rcpt = recipient()

    def build(attachments: list[EmailAttachment]) -> EmailMessage:
        return make_message(rcpt, attachments=attachments)

    assert not plan_attachments(big, cap_bytes=50_000, server_size=None, build=build)
    link = DownloadLink("weekly.pdf", SIGNED_URL, NOW + timedelta(hours=1), big[0].size)
    with plain_sender(smtp_server) as sender:
        deliver(sender, rcpt, links=[link])
    msg = parse(smtp_server.messages[0].content)
    text, html = bodies(msg)
    assert attachments_of(msg) == {}
    assert SIGNED_URL in text
    assert SIGNED_URL.replace("&", "&amp;") in html
    assert "2026-11-02 08:00 UTC" in text  # when the link stops working


def test_links_are_added_when_a_custom_template_forgets_them() -> None:
    rcpt = recipient()
    link = DownloadLink("weekly.pdf", SIGNED_URL, None, 1)
    msg = build_message(
        sender=SENDER,
        recipient=rcpt,
        subject="Weekly",
        text_body="See the files.\n",
        html_body="<html><body><p>See the files.</p></body></html>",
        attachments=[],
        links=[link],
        chart_png=None,
        message_id_domain="bulletin.test",
        date=NOW,
    )
    text, html = bodies(msg)
    assert SIGNED_URL in text
    assert f'href="{SIGNED_URL.replace("&", "&amp;")}"' in html
    assert html.rstrip().endswith("</ul></body></html>")


def test_links_when_the_server_size_is_below_our_cap(smtp_small_size_server: SmtpTestServer, tmp_path: Path) -> None:
    server = smtp_small_size_server
    files = [write_file(tmp_path, "weekly.pdf", "application/pdf", noise(16_000))]
    rcpt = recipient()

    def build(attachments: list[EmailAttachment]) -> EmailMessage:
        return make_message(rcpt, attachments=attachments)

    with plain_sender(server) as sender:
        assert sender.server_max_size() == SMALL_SIZE_LIMIT
        assert files[0].size < SMALL_SIZE_LIMIT < message_size(build(files))
        with pytest.raises(EmailRejectedError, match="over the SMTP server"):
            sender.send(build(files))  # refused by us before MAIL FROM: the server saw no message
        assert server.messages == []
        assert not plan_attachments(files, cap_bytes=10_000_000, server_size=sender.server_max_size(), build=build)
        deliver(sender, rcpt, links=[DownloadLink("weekly.pdf", SIGNED_URL, None, files[0].size)])
    assert len(server.messages) == 1


@pytest.mark.parametrize("where", ["subject", "title", "name"])
def test_header_injection_is_refused_before_connecting(smtp_server: SmtpTestServer, where: str) -> None:
    evil = "Weekly\r\nBcc: evil@x.com"
    kwargs: dict[str, Any] = {"subject": evil} if where == "subject" else {"title": evil} if where == "title" else {}
    rcpt = recipient(name=evil) if where == "name" else recipient()
    with plain_sender(smtp_server) as sender, pytest.raises(UnsafeEmailError, match="control character"):
        deliver(sender, rcpt, **kwargs)
    assert smtp_server.connections == 0
    assert smtp_server.messages == []


def test_an_attachment_name_with_a_line_break_is_refused(smtp_server: SmtpTestServer, tmp_path: Path) -> None:
    bad = write_file(tmp_path, "weekly.pdf", "application/pdf", b"%PDF")
    bad = EmailAttachment("weekly\r\nBcc: evil@x.com.pdf", bad.content_type, bad.path, bad.size, bad.sha256)
    with plain_sender(smtp_server) as sender, pytest.raises(UnsafeEmailError):
        deliver(sender, recipient(), attachments=[bad])
    assert smtp_server.connections == 0


def test_a_recipient_list_is_refused_before_connecting(smtp_server: SmtpTestServer) -> None:
    # model_construct skips validation: a recipient from a source that did not use the model's own check.
    listed = Recipient.model_construct(ref="two", email="a@x.com, b@y.com", name=None, org=None, attributes={})
    with plain_sender(smtp_server) as sender, pytest.raises(UnsafeEmailError, match="not a single plain email"):
        deliver(sender, listed)
    assert smtp_server.connections == 0
    assert smtp_server.messages == []


@pytest.mark.parametrize("header", [("To", "a@x.com, b@y.com"), ("Cc", "b@y.com"), ("Bcc", "b@y.com")])
def test_a_message_with_two_recipients_is_never_sent(smtp_server: SmtpTestServer, header: tuple[str, str]) -> None:
    msg = make_message(recipient())
    if header[0] == "To":
        del msg["To"]
    msg[header[0]] = header[1]
    with plain_sender(smtp_server) as sender, pytest.raises(UnsafeEmailError):
        sender.send(msg)
    assert smtp_server.connections == 0


def test_a_disallowed_domain_is_refused_before_connecting(smtp_server: SmtpTestServer) -> None:
    with plain_sender(smtp_server, allowed_domains=["example.com"]) as sender:
        with pytest.raises(UnsafeEmailError, match=r"'evil\.test' is not in email_allowed_domains"):
            deliver(sender, recipient(email="ana@evil.test"))
        assert smtp_server.connections == 0
        deliver(sender, recipient(email="ana@EXAMPLE.com"))
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ana@EXAMPLE.com"]]


def test_a_permanent_refusal_is_not_retryable_and_a_temporary_one_is(smtp_server: SmtpTestServer) -> None:
    with plain_sender(smtp_server) as sender:
        with pytest.raises(EmailRejectedError, match="550") as rejected:
            deliver(sender, recipient(email="nobody@example.com"))
        with pytest.raises(TransientError, match="451") as deferred:
            deliver(sender, recipient(email="later@example.com"))
        deliver(sender, recipient())  # the sender recovers for the next recipient
    assert not rejected.value.retryable
    assert rejected.value.code == 550
    assert isinstance(rejected.value, StorageError)
    assert deferred.value.retryable
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ana@example.com"]]


def test_a_dropped_connection_is_reopened(smtp_server: SmtpTestServer) -> None:
    with plain_sender(smtp_server) as sender:
        deliver(sender, recipient())
        assert sender._smtp is not None
        assert sender._smtp.sock is not None
        sender._smtp.sock.shutdown(socket.SHUT_RDWR)  # as if the server had timed the idle connection out
        deliver(sender, recipient("bo", "bo@example.com", "Bo"))
    assert len(smtp_server.messages) == 2
    assert smtp_server.connections == 2


def test_a_closed_port_is_a_transient_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    sender = SmtpSender("127.0.0.1", port, "none", None, None, 2.0, None)
    with pytest.raises(TransientError, match="ConnectionRefusedError"):
        deliver(sender, recipient())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_starttls_verifies_the_certificate_against_the_given_ca(
    smtp_starttls_server: SmtpTestServer, host: str
) -> None:
    server = smtp_starttls_server
    with SmtpSender(host, server.port, "starttls", SMTP_USER, SecretStr(SMTP_PASSWORD), 5.0, server.ca_file) as sender:
        deliver(sender, recipient())
    assert len(server.messages) == 1


def test_starttls_fails_without_the_ca(smtp_starttls_server: SmtpTestServer) -> None:
    server = smtp_starttls_server
    sender = SmtpSender(server.host, server.port, "starttls", None, None, 5.0, None)
    with pytest.raises(ConfigError, match="certificate verification failed") as info:
        deliver(sender, recipient())
    assert not info.value.retryable
    assert server.messages == []


def test_starttls_fails_closed_when_the_server_does_not_offer_it(smtp_no_starttls_server: SmtpTestServer) -> None:
    server = smtp_no_starttls_server
    sender = SmtpSender(server.host, server.port, "starttls", None, None, 5.0, server.ca_file)
    with pytest.raises(ConfigError, match="does not offer STARTTLS; refusing to send in plaintext"):
        deliver(sender, recipient())
    assert server.messages == []


def test_an_unreadable_ca_file_is_a_config_error(smtp_starttls_server: SmtpTestServer, tmp_path: Path) -> None:
    server = smtp_starttls_server
    sender = SmtpSender(server.host, server.port, "starttls", None, None, 5.0, tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="cannot load smtp_ca_file"):
        deliver(sender, recipient())
    assert server.messages == []


def test_implicit_tls_verifies_the_certificate_too(smtp_ssl_server: SmtpTestServer) -> None:
    server = smtp_ssl_server
    # No login: aiosmtpd offers AUTH only after STARTTLS, not on an implicit-TLS port.
    with pytest.raises(ConfigError, match="certificate verification failed"):
        deliver(SmtpSender(server.host, server.port, "ssl", None, None, 5.0, None), recipient())
    with SmtpSender(server.host, server.port, "ssl", None, None, 5.0, server.ca_file) as sender:
        deliver(sender, recipient())
    assert len(server.messages) == 1


def test_the_password_never_appears_in_errors_or_logs(
    smtp_starttls_server: SmtpTestServer, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "hunter2-do-not-print-9f1c"
    caplog.set_level(logging.DEBUG)
    sender = tls_sender(smtp_starttls_server, "starttls", password=secret)
    with pytest.raises(ConfigError, match="refused the login for 'bulletin'") as refused:
        deliver(sender, recipient())
    offline = SmtpSender("127.0.0.1", 9, "none", SMTP_USER, SecretStr(secret), 1.0, None)
    with pytest.raises(TransientError) as unreachable:
        deliver(offline, recipient())
    shown = " ".join(
        [str(refused.value), repr(refused.value), str(unreachable.value), repr(sender), repr(offline), caplog.text]
    )
    shown += "".join(capsys.readouterr())
    shown += "".join(traceback.format_exception(refused.value) + traceback.format_exception(unreachable.value))
    plain_blob = base64.b64encode(f"\0{SMTP_USER}\0{secret}".encode()).decode()
    for form in [secret, base64.b64encode(secret.encode()).decode(), plain_blob]:
        assert form not in shown
    assert smtp_starttls_server.messages == []


# --- the outbox -------------------------------------------------------------------------------------------------


def test_the_outbox_writes_eml_files_and_never_overwrites(
    tmp_path: Path, files: list[EmailAttachment], chart_png: bytes
) -> None:
    outbox = OutboxSender(tmp_path / "outbox")
    msg = make_message(recipient(), attachments=files, chart_png=chart_png)
    first, second = outbox.send(msg), outbox.send(msg)
    assert first.location
    assert second.location
    assert first.location != second.location
    path = Path(first.location)
    assert re.fullmatch(r"20261102T070000Z-ana-[0-9a-f]{12}\.eml", path.name)
    assert Path(second.location).name == path.name.replace(".eml", "-1.eml")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    parsed = parse(path.read_bytes())
    assert parsed["To"] == "Ana Lima <ana@example.com>"
    assert parsed["Message-ID"] == first.message_id
    got = attachments_of(parsed)
    assert {name: hashlib.sha256(payload(p)).hexdigest() for name, p in got.items()} == {
        f.filename: f.sha256 for f in files
    }
    assert outbox.server_max_size() is None
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, Path(second.location).name])


def test_the_outbox_applies_the_same_refusals(tmp_path: Path) -> None:
    outbox = OutboxSender(tmp_path / "outbox", allowed_domains=["example.com"])
    with pytest.raises(UnsafeEmailError):
        deliver(outbox, recipient(email="ana@evil.test"))
    assert not (tmp_path / "outbox").exists()


def test_make_sender_picks_the_outbox_or_smtp(tmp_path: Path) -> None:
    outbox = make_sender(Settings(outbox_dir=tmp_path / "out", email_allowed_domains=["example.com"]))
    assert isinstance(outbox, OutboxSender)
    assert outbox.folder == (tmp_path / "out").resolve()
    assert outbox.allowed_domains == ["example.com"]
    smtp = make_sender(
        Settings(smtp_host="smtp.example.com", smtp_username="u", smtp_password=SecretStr("p"), smtp_security="ssl")
    )
    assert isinstance(smtp, SmtpSender)
    assert smtp.port == 465
    assert smtp._smtp is None
    with pytest.raises(ConfigError, match="loopback"):
        make_sender(Settings(smtp_host="smtp.example.com", smtp_security="none"))
    with pytest.raises(ConfigError, match="no SMTP password"):
        make_sender(Settings(smtp_host="smtp.example.com", smtp_username="u"))


def test_the_period_leads_the_subject_and_both_bodies_and_templates_get_it() -> None:
    rcpt = Recipient(ref="ana", email="ana@example.com", name="Ana")
    common: dict[str, Any] = {
        "title": "Weekly regional sales",
        "description": "",
        "recipient": rcpt,
        "key_figures": [],
        "files": [],
        "links": [],
        "generated_at": NOW,
    }
    subject, text, html = render_bodies(**common, period="25 – 31 Oct 2026")
    assert subject == "Weekly regional sales, 25 – 31 Oct 2026", "the days covered, not the send date"
    assert "Period: 25 – 31 Oct 2026" in text and ">25 – 31 Oct 2026</p>" in html
    assert f"Generated {NOW:%Y-%m-%d}" in text, "the generation time stays, below"
    assert render_bodies(**common)[0] == f"Weekly regional sales ({NOW:%Y-%m-%d})", "no period: the date, as before"
    own = render_bodies(**common, period="31 Oct 2026", subject_template="{{ title }} for {{ period }}")
    assert own[0] == "Weekly regional sales for 31 Oct 2026"
