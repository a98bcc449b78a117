"""The email destination: the body templates here, and the public API of the whole capability.

One report email is made in four pure steps and sent in one adapter::

    render_bodies(...)        subject, text and HTML from Jinja2 templates (HTML autoescaped)
    render_chart_png(chart)   the inline chart                                      (tasks.email.chart_png)
    plan_attachments(...)     attachments if the encoded message fits, else links   (tasks.email.message)
    build_message(...)        one MIME message for one recipient                    (tasks.email.message)
    make_sender(settings)     SmtpSender or OutboxSender: .send(msg)                (tasks.email.send)

Templates may be overridden per report (``subject_template``, ``text_template``, ``html_template``). They run in
Jinja2's sandbox (``bulletin.email_templates``), because a report definition is data that users write, not code.
``recipient`` holds the recipient's attributes besides its ref, name, email and org.
"""

from __future__ import annotations

from datetime import datetime

from jinja2 import TemplateError

from bulletin.clock import require_aware
from bulletin.email_templates import TemplateKind, compile_template
from bulletin.errors import DefinitionError
from bulletin.models import Recipient
from tasks.email.message import (
    CHART_CID,
    DownloadLink,
    check_header_value,
)

#: The period the data covers when the report states one ("Weekly regional sales, 25 – 31 Oct 2026"); the send
#: date only when it does not: a reader files the email under the days it is about.
DEFAULT_SUBJECT_TEMPLATE = "{{ title }}{% if period %}, {{ period }}{% else %} ({{ generated_date }}){% endif %}"

DEFAULT_TEXT_TEMPLATE = """\
Hello {{ recipient.name or recipient.email }},

{{ title }}
{% if period %}
Period: {{ period }}
{% endif %}
{% if description %}
{{ description }}
{% endif %}
Generated {{ generated }}.
{% if no_rows %}

{{ no_rows }}
{% endif %}
{% if key_figures %}

Key figures:
{% for label, value in key_figures %}
  {{ label }}: {{ value }}
{% endfor %}
{% endif %}
{% if chart_title %}

{{ chart_title }}:
{% for label, value in chart_rows %}
  {{ label }}: {{ value }}
{% endfor %}
{% endif %}
{% if links %}

The files were too large to attach; download them here:
{% for link in links %}
  - {{ link.filename }} ({{ link.size }}
  {%- if link.expires %}, link valid until {{ link.expires }}{% endif %}): {{ link.url }}
{% endfor %}
{% elif files %}

Attached:
{% for file in files %}
  - {{ file.name }} ({{ file.size }}, {{ file.rows }} rows)
{% endfor %}
{% endif %}

Sent by Bulletin
{% if unsubscribe_url %}
To stop receiving this report, unsubscribe: {{ unsubscribe_url }}
{% endif %}
"""

DEFAULT_HTML_TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ title }}</title></head>
<body style="font-family: Arial, Helvetica, sans-serif; color: #333333; max-width: 640px;">
<p>Hello {{ recipient.name or recipient.email }},</p>
<h1 style="font-size: 20px; margin-bottom: 4px;">{{ title }}</h1>
{% if period %}
<p style="font-size: 16px; margin-top: 0;">{{ period }}</p>
{% endif %}
{% if description %}
<p>{{ description }}</p>
{% endif %}
<p style="color: #666666; font-size: 12px;">Generated {{ generated }}.</p>
{% if no_rows %}
<p style="font-size: 16px;">{{ no_rows }}</p>
{% endif %}
{% if key_figures %}
<table role="presentation" style="border-collapse: collapse; margin: 12px 0;">
{% for label, value in key_figures %}
<tr><th align="left" style="padding: 4px 16px 4px 0;">{{ label }}</th>
<td align="right" style="padding: 4px 0;">{{ value }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% if chart_title %}
<p><img src="cid:{{ chart_cid }}" alt="{{ chart_alt }}" width="600" style="max-width: 100%; height: auto;"></p>
{% if chart_rows %}
<table role="presentation" style="border-collapse: collapse; font-size: 12px; color: #666666; margin: 0 0 12px 0;">
{% for label, value in chart_rows %}
<tr><td style="padding: 1px 16px 1px 0;">{{ label }}</td><td align="right" style="padding: 1px 0;">{{ value }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% endif %}
{% if links %}
<p>The files were too large to attach; download them here:</p>
<ul>
{% for link in links %}
<li><a href="{{ link.url }}">{{ link.filename }}</a> ({{ link.size }}
{%- if link.expires %}, link valid until {{ link.expires }}{% endif %})</li>
{% endfor %}
</ul>
{% elif files %}
<p>Attached:</p>
<ul>
{% for file in files %}
<li>{{ file.name }} ({{ file.size }}, {{ file.rows }} rows)</li>
{% endfor %}
</ul>
{% endif %}
<p style="color: #666666; font-size: 12px;">Bulletin</p>
{% if unsubscribe_url %}
<p style="color: #666666; font-size: 12px;"><a href="{{ unsubscribe_url }}">Unsubscribe from this report</a></p>
{% endif %}
</body>
</html>
"""


def _render(kind: TemplateKind, source: str, context: dict[str, object]) -> str:
    try:
        return compile_template(kind, source).render(context)
    except TemplateError as exc:  # syntax errors, undefined names, sandbox refusals
        raise DefinitionError(f"email {kind} template: {exc}", field=f"{kind}_template") from exc


def human_size(size: int) -> str:
    """Decimal units, as mail clients show attachment sizes: ``950 bytes``, ``12.3 kB``, ``4.0 MB``."""
    if size < 1000:
        return f"{size} bytes"
    value, unit = float(size), "bytes"
    for unit in ("kB", "MB", "GB", "TB"):  # noqa: B007 - the unit the loop stops at is the answer
        value /= 1000
        if value < 1000:
            break
    return f"{value:.1f} {unit}"


def _when(moment: datetime) -> str:
    require_aware(moment, "email dates", field="generated_at", error=DefinitionError)
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname() or moment.strftime('%z')}"


def _link(link: DownloadLink) -> dict[str, object]:
    expires = _when(link.expires_at) if link.expires_at else None
    return {"filename": link.filename, "url": link.url, "size": human_size(link.size), "expires": expires}


def render_bodies(
    *,
    title: str,
    description: str,
    recipient: Recipient,
    key_figures: list[tuple[str, str]],
    files: list[tuple[str, int, int]],
    links: list[DownloadLink],
    generated_at: datetime,
    generated: str | None = None,
    period: str | None = None,
    no_rows: str | None = None,
    chart_title: str | None = None,
    chart_rows: list[tuple[str, str]] | None = None,
    subject_template: str | None = None,
    text_template: str | None = None,
    html_template: str | None = None,
    unsubscribe_url: str | None = None,
) -> tuple[str, str, str]:
    """The default subject, the text body and the HTML body of one report email.

    ``files`` are (file name, bytes, rows) of what is attached; ``links`` replace them when the files go by link.
    With ``chart_title`` the HTML shows the inline chart (``cid:`` ``CHART_CID``); ``chart_rows`` are its bars'
    (label, value), written under it and in its alt text for a reader whose client blocks images, and in the text
    body instead of it.
    ``generated``: the generation time as the reader's locale writes it (else ``generated_at`` in ISO form).
    ``period`` (the days the data covers) leads the default subject; ``no_rows`` is the sentence of a report whose
    files have no rows, said in both bodies instead of leaving the reader to open an empty file.
    ``unsubscribe_url``: the one-click unsubscribe link, shown in both footers (``build_message`` adds it to a
    custom template that leaves it out).
    The subject is one line: a title or template that yields a line break is refused (``UnsafeEmailError``).
    """
    context: dict[str, object] = {
        "title": title,
        "description": description,
        "recipient": {
            **recipient.attributes,
            "ref": recipient.ref,
            "name": recipient.name,
            "email": recipient.email,
            "org": recipient.org,
        },
        "key_figures": [(str(label), str(value)) for label, value in key_figures],
        "files": [{"name": name, "size": human_size(size), "rows": f"{rows:,}"} for name, size, rows in files],
        "links": [_link(link) for link in links],
        "generated": generated or _when(generated_at),
        "generated_date": f"{generated_at:%Y-%m-%d}",
        "period": period,
        "no_rows": no_rows,
        "chart_title": chart_title,
        "chart_rows": list(chart_rows or []),
        "chart_alt": f"{chart_title}: " + "; ".join(f"{c} {v}" for c, v in chart_rows or []) if chart_title else "",
        "chart_cid": CHART_CID,
        "unsubscribe_url": unsubscribe_url,
    }
    subject = _render("subject", subject_template or DEFAULT_SUBJECT_TEMPLATE, context).strip()
    text = _render("text", text_template or DEFAULT_TEXT_TEMPLATE, context)
    html = _render("html", html_template or DEFAULT_HTML_TEMPLATE, context)
    return check_header_value(subject), text, html
