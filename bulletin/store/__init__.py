"""The state store: the delivery ledger in SQLite (default) or any SQLAlchemy database, migrated by Alembic.

Open it once at the edge with ``open_store(settings.database)``, call ``migrate`` and pass the ``Store`` down.
"""

from bulletin.store import (
    api_keys,  # noqa: F401 - registers the organisation and API key tables
    channel_preferences,  # noqa: F401 - registers the communication-channel preference tables
    jobs,  # noqa: F401 - registers the on-demand report jobs table
    recipient_preferences,  # noqa: F401 - registers each person's channel preferences
    scheduled_events,  # noqa: F401 - registers the scheduled-event tables
    webhooks,  # noqa: F401 - registers the webhook tables on the shared metadata
)
from bulletin.store.db import Store, migrate, open_store
from bulletin.store.delivery_keys import adhoc_run_key, check_run_key, scheduled_run_key
from bulletin.store.ledger import (
    claim,
    mark_failed,
    mark_found,
    mark_sent,
    mark_skipped,
    mark_storing,
    renew,
)
from bulletin.store.ledger_batch import Batch, ClaimRequest, SentMark, sent_mark, storing_intent, write_batch
from bulletin.store.ledger_queries import audit, last_sent, list_deliveries, run_rows
from bulletin.store.ledger_schema import AuditEntry, ClaimOutcome, ClaimResult, LedgerRow, LedgerStatus

__all__ = [
    "AuditEntry",
    "Batch",
    "ClaimOutcome",
    "ClaimRequest",
    "ClaimResult",
    "LedgerRow",
    "LedgerStatus",
    "SentMark",
    "Store",
    "adhoc_run_key",
    "audit",
    "check_run_key",
    "claim",
    "last_sent",
    "list_deliveries",
    "mark_failed",
    "mark_found",
    "mark_sent",
    "mark_skipped",
    "mark_storing",
    "migrate",
    "open_store",
    "renew",
    "run_rows",
    "scheduled_run_key",
    "sent_mark",
    "storing_intent",
    "write_batch",
]
