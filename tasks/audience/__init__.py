"""Who a report goes to (``recipients``) and by which channels each recipient wants it (``preferences``).

This ``__init__`` lists what other packages use. Modules that import Prefect, boto3 or paramiko are
imported from their own module, so importing this package stays cheap.
"""

from __future__ import annotations

from tasks.audience.preferences import recipient_channels
from tasks.audience.recipients import find_recipients, resolve_audience, scope_for_recipient, select_recipients

__all__ = ["find_recipients", "recipient_channels", "resolve_audience", "scope_for_recipient", "select_recipients"]
