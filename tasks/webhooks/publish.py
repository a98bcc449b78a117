"""Webhooks out, as the flows use them: publish a run's events, and send what is due.

- ``publish_run_events`` is called by deliver-report once a run's deliveries are over: it enqueues the webhook events
  for every subscribed endpoint, and makes the first attempt at once (bounded in time) so receivers hear without
  waiting for the dispatcher. It never raises: the report is already delivered, and whatever was not sent now stays
  due for the deliver-webhooks flow.
- ``emit_run_events`` emits the run's Prefect events; deliver-report calls it once the flow run has its final state
  (``tasks.delivery.fanout.once_final``), so the 1,000 events of a 1,000-recipient run do not hold up its end.
- ``dispatch_due`` (``tasks.webhooks.dispatch``) is one pass over due messages; ``tasks.webhooks.events`` builds the
  events. Both are re-exported here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from prefect.events import emit_event

from bulletin.clock import Clock, utc_now
from bulletin.errors import BulletinError
from bulletin.models import Artifact, Manifest
from bulletin.settings import Settings
from bulletin.store.db import Store
from bulletin.store.webhooks import enabled_endpoints, enqueue_events
from tasks.storage import Destination
from tasks.webhooks.dispatch import DispatchSummary, dispatch_due
from tasks.webhooks.events import (
    DownloadLink,
    LinkMaker,
    prefect_events,
    report_events,
)
from tasks.webhooks.send import next_attempt_delay

logger = logging.getLogger(__name__)

#: How long the first attempts may keep a finished run waiting before the rest is left to the dispatcher.
FIRST_ATTEMPT_SECONDS = 10.0
#: At most this many messages get their first attempt inside the run; the dispatcher sends the others.
FIRST_ATTEMPT_MAX = 1_000


def publish_run_events(
    settings: Settings,
    store: Store,
    manifest: Manifest,
    *,
    links: LinkMaker | None = None,
    now: Clock = utc_now,
    rng: random.Random | None = None,
    first_attempt: bool = True,
) -> list[str]:
    """Enqueue the run's webhook events and attempt them once now; the message ids.

    ``links`` turns a delivered file into its presigned download link (``file_links(settings)``). A dry run publishes
    nothing. Never raises: failures are logged, and unsent messages stay due for the deliver-webhooks flow.
    """
    if manifest.dry_run:
        return []
    ids: list[str] = []
    try:
        endpoints = enabled_endpoints(store)
        if endpoints:  # else nothing to queue: no link is made, nothing is written

            def wanted(event_type: str, org: str | None) -> bool:
                return any(e.hears(event_type, org) for e in endpoints)

            delay = next_attempt_delay(1, settings.webhook_retry_schedule, rng or random.SystemRandom()) or 0.0
            # Per-recipient events carry that recipient's organisation; a run's totals none.
            events = [(t, data, data.get("org")) for t, data in report_events(manifest, links=links, wanted=wanted)]
            ids = enqueue_events(store, events, now=now(), delay_seconds=delay)
    except BulletinError as error:
        logger.error("webhook events of run %s were not all queued: %s", manifest.run_id, error)
    if ids and first_attempt:
        send_now(settings, store, ids[:FIRST_ATTEMPT_MAX], now=now, rng=rng)
    return ids


def emit_run_events(manifest: Manifest, *, emit: Callable[..., Any] = emit_event) -> int:
    """Emit the run's Prefect events (``tasks.webhooks.events.prefect_events``); how many went to Prefect's events
    client. None for a dry run. Never raises: an observability event must not fail a finished run."""
    if manifest.dry_run:
        return 0
    emitted = 0
    for event in prefect_events(manifest):
        try:
            emit(**event)
        except Exception as error:  # noqa: BLE001 - the edge: an observability event must not fail a finished run
            logger.warning("could not emit the Prefect event %s: %s", event["event"], type(error).__name__)
        else:
            emitted += 1
    return emitted


def send_now(
    settings: Settings,
    store: Store,
    message_ids: list[str],
    *,
    now: Clock = utc_now,
    rng: random.Random | None = None,
    deadline_seconds: float = FIRST_ATTEMPT_SECONDS,
) -> DispatchSummary:
    """One attempt at each of ``message_ids`` that is due, started within ``deadline_seconds``. Never raises."""
    try:
        summary = dispatch_due(
            store,
            settings,
            now=now,
            rng=rng or random.SystemRandom(),
            limit=max(1, min(len(message_ids), 10_000)),
            message_ids=message_ids,
            deadline_seconds=deadline_seconds,
        )
    except Exception as error:  # noqa: BLE001 - the edge: every message stays due and the dispatcher retries it
        logger.warning("first webhook attempts skipped (%s): the dispatcher will send them", type(error).__name__)
        return DispatchSummary()
    logger.info("webhooks sent now: %s", summary.as_dict())
    return summary


def file_links(settings: Settings) -> LinkMaker | None:
    """Download links for delivered files that a channel keeps in a store whose links open anywhere (S3's presigned
    ones; the local bucket's file:// URIs do not, so then there are none). Which channels keep files, and where, is
    the channel registry's (``tasks.delivery.registry.file_store``).

    A link that cannot be made is left out of the event (logged), rather than holding the event back.
    """
    from tasks.delivery.registry import CHANNELS, file_store  # boto3 only when a run's events are published

    choices = {name.value: c for name in CHANNELS if (c := file_store(name, settings)) and c.shares_links}
    if not choices:
        return None
    made: dict[str, Destination | None] = {}  # built on the first link: a run whose events nobody hears builds none

    def destination(channel: str) -> Destination | None:
        if channel not in made:
            try:
                made[channel] = choices[channel].build()
            except BulletinError as error:  # said once; then no event carries a link to this store
                logger.warning("webhook events will carry no download links to %s: %s", channel, error)
                made[channel] = None
        return made[channel]

    def link(artifact: Artifact) -> DownloadLink | None:
        if artifact.channel not in choices or not artifact.uri or (store := destination(artifact.channel)) is None:
            return None
        try:
            return store.link(artifact.uri, None, settings.link_expiry_seconds)
        except BulletinError as error:
            logger.warning("no download link for a %s file in the webhook event: %s", artifact.format, error)
            return None

    return link
