"""Report email: bodies from templates (``bodies``), one MIME message per recipient (``message``, pure), and
sending it over SMTP or into the outbox folder (``send``).

This ``__init__`` lists what other packages use. Modules that import Prefect, boto3 or paramiko are
imported from their own module, so importing this package stays cheap.
"""

from __future__ import annotations

from tasks.email.bodies import render_bodies
from tasks.email.chart_png import render_chart_png
from tasks.email.message import DownloadLink, EmailAttachment, build_message, plan_attachments
from tasks.email.send import OutboxSender, SmtpSender, make_sender

__all__ = [
    "DownloadLink",
    "EmailAttachment",
    "OutboxSender",
    "SmtpSender",
    "build_message",
    "make_sender",
    "plan_attachments",
    "render_bodies",
    "render_chart_png",
]
