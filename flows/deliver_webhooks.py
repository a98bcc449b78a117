"""The deliver-webhooks flow: one pass over due webhook messages (first attempts left over, and retries).

The API starts a run of its deployment when a message is due (``bulletin.edge.api.housekeeping``; no schedule, so no
run while there is nothing to send); ``bulletin webhooks dispatch`` runs it once. Each run is one
batch of at most ``limit`` messages, sent ``BULLETIN_WEBHOOK_CONCURRENCY`` at a time, off any report's critical path:
deliver-report only enqueues (and tries each message once, briefly) through
``tasks.webhooks.publish.publish_run_events``.
"""

from __future__ import annotations

import random
from typing import Any

from prefect import flow, get_run_logger

from bulletin.clock import utc_now
from bulletin.settings import Settings
from bulletin.store import migrate, open_store
from tasks.webhooks import dispatch_due


@flow(name="deliver-webhooks", log_prints=False, persist_result=False)
def deliver_webhooks(limit: int = 500) -> dict[str, Any]:
    """Attempt each due webhook message once (at most ``limit``); returns the counts by result."""
    settings = Settings()
    with open_store(settings.database) as store:
        migrate(store)
        summary = dispatch_due(store, settings, now=utc_now, rng=random.SystemRandom(), limit=limit)
    counts = summary.as_dict()
    get_run_logger().info(
        "webhooks: %d attempted, %d delivered, %d retrying, %d failed",
        counts["attempted"],
        counts["delivered"],
        counts["retrying"],
        counts["failed"],
    )
    return counts
