"""Webhooks out: events (``events``), signatures (``signing``, pure), one attempt through the SSRF guard
(``send``, ``ssrf``), a pass over due messages (``dispatch``) and what the flows call (``publish``).

This ``__init__`` lists what other packages use. Modules that import Prefect, boto3 or paramiko are
imported from their own module, so importing this package stays cheap.
"""

from __future__ import annotations

from tasks.webhooks.dispatch import Result, dispatch_due
from tasks.webhooks.events import REPORT_DELIVERED, ping_event, report_events
from tasks.webhooks.send import MAX_TIMEOUT_SECONDS, USER_AGENT, AttemptResult, send_attempt
from tasks.webhooks.signing import dbt_signature, generate_secret, sign, standard_headers, verify_standard
from tasks.webhooks.ssrf import check_url_at_registration

__all__ = [
    "MAX_TIMEOUT_SECONDS",
    "REPORT_DELIVERED",
    "USER_AGENT",
    "AttemptResult",
    "Result",
    "check_url_at_registration",
    "dbt_signature",
    "dispatch_due",
    "generate_secret",
    "ping_event",
    "report_events",
    "send_attempt",
    "sign",
    "standard_headers",
    "verify_standard",
]
