"""RFC 8058 one-click unsubscribe in the message: the two headers (one line, never encoded-words), the link in both
footers (also when a custom template leaves it out), none of it without a link, and an unsafe link refused. Sent
through a real SMTP server (aiosmtpd on loopback) and read back from what it received."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bulletin.models import Recipient
from tasks.email import build_message, render_bodies
from tasks.email.message import UnsafeEmailError
from tasks.email.send import SmtpSender
from tests.fixtures.smtp import SmtpTestServer
from tests.tasks.email.test_email import bodies, parse

NOW = datetime(2026, 12, 10, 6, 30, tzinfo=UTC)
ANN = Recipient(ref="rm-ann", email="ann@example.com", name="Ann", org="acme")
URL = "https://bulletin.example.com/v1/unsubscribe/" + "eyJrIjoic2V0dGluZyJ9" * 30 + ".Zm9vYmFy_-"


def message(url: str | None, *, text_template: str | None = None, html_template: str | None = None):  # type: ignore[no-untyped-def]
    subject, text, html = render_bodies(
        title="Weekly sales",
        description="",
        recipient=ANN,
        key_figures=[],
        files=[],
        links=[],
        generated_at=NOW,
        text_template=text_template,
        html_template=html_template,
        unsubscribe_url=url,
    )
    return build_message(
        sender="Bulletin <bulletin@bulletin.test>",
        recipient=ANN,
        subject=subject,
        text_body=text,
        html_body=html,
        attachments=[],
        links=[],
        chart_png=None,
        message_id_domain="bulletin.test",
        date=NOW,
        unsubscribe_url=url,
    )


def test_the_received_message_offers_one_click_unsubscribe(smtp_server: SmtpTestServer) -> None:
    SmtpSender(smtp_server.host, smtp_server.port, "none", None, None, 5.0, None).send(message(URL))
    (received,) = smtp_server.messages
    assert f"List-Unsubscribe: <{URL}>\r\n".encode() in received.content, "one line, the URL as written"
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in received.content
    assert max(len(line) for line in received.content.split(b"\r\n")) <= 998
    parsed = parse(received.content)
    assert parsed["List-Unsubscribe"] == f"<{URL}>"
    text, html = bodies(parsed)
    assert f"unsubscribe: {URL}" in text
    assert f'<a href="{URL}">Unsubscribe from this report</a>' in html


def test_without_a_link_there_is_no_header_and_no_footer() -> None:
    msg = message(None)
    assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None
    text, html = bodies(msg)
    assert "nsubscribe" not in text and "nsubscribe" not in html


def test_a_custom_template_without_the_link_still_gets_it() -> None:
    msg = message(URL, text_template="Hi {{ recipient.name }}\n", html_template="<html><body><p>Hi</p></body></html>")
    text, html = bodies(msg)
    assert URL in text
    assert html.index(URL) < html.index("</body>")


@pytest.mark.parametrize(
    "bad",
    [
        "javascript:alert(1)",
        "https://x.test/a b",
        "https://x.test/a>b",
        "https://x.test/\r\nBcc: x@y",
        "https://x.test/" + "a" * 1000,
    ],
)
def test_an_unsafe_link_is_refused(bad: str) -> None:
    with pytest.raises(UnsafeEmailError, match="unsafe unsubscribe link"):
        message(bad, text_template="x", html_template="<p>x</p>")
