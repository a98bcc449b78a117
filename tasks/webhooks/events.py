"""What Bulletin tells its webhook subscribers and Prefect: events built from a run's manifest. Pure, no I/O.

Webhook events (the ``data`` of ``{"type", "timestamp", "data"}``; ``bulletin.store.webhooks.event_body`` wraps it):

- ``report.delivered``, one per recipient delivered or partly delivered: the report, run and recipient, and per file
  its format, channel, uri, sha256, bytes, rows, outcome, and a presigned ``download_url`` with ``expires_at`` when
  ``links`` gives one. A recipient some of whose files failed (``status: PARTIAL``) hears it here, not in
  ``report.failed``: it has files to fetch. Its failed files have ``outcome: failed``, and ``error`` says why;
- ``report.failed``, one per recipient that got nothing, with the error;
- ``run.completed``, once per run, with counts;
- ``ping`` (``bulletin webhooks test``) and ``endpoint.disabled`` (to the other endpoints): addressed, not
  subscribed to.

A manifest with links, never the file: no file contents, no data token (only fields named here are copied, so a
token or a scope can never ride along), never a secret. Prefect events (``prefect_events``) carry ids and counts
only: they are shown in the Prefect UI, where a presigned link must not appear.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from bulletin.models import HELD_OUTCOMES, Artifact, Delivery, DeliveryStatus, Manifest

REPORT_DELIVERED = "report.delivered"
REPORT_FAILED = "report.failed"
RUN_COMPLETED = "run.completed"
ENDPOINT_DISABLED = "endpoint.disabled"
PING = "ping"
ERROR_MAX = 500
#: Recipients that have files to fetch: announced as ``report.delivered``, a PARTIAL one with its ``error``.
_DELIVERED = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.PARTIAL})


class DownloadLink(Protocol):
    """A presigned link (``tasks.storage.s3.PresignedLink`` fits): the URL and when it stops working."""

    @property
    def url(self) -> str: ...

    @property
    def expires_at(self) -> datetime | None: ...


#: Given a delivered file, its download link (or just a URL), or None when there is none to give.
LinkMaker = Callable[[Artifact], "str | DownloadLink | None"]
Event = tuple[str, dict[str, Any]]
#: Whether any endpoint hears an event of this type about this organisation (None: a run's totals).
Wanted = Callable[[str, "str | None"], bool]


def report_events(manifest: Manifest, *, links: LinkMaker | None = None, wanted: Wanted | None = None) -> list[Event]:
    """``report.delivered`` per delivered or partly delivered recipient, ``report.failed`` per failed one, then
    ``run.completed``.

    Skipped recipients (no rows, unchanged, in progress elsewhere) get no per-recipient event; they are counted.
    ``wanted(event_type, org)`` leaves out, before any link is made, the events nobody subscribes to.
    """
    events: list[Event] = []
    for delivery in manifest.deliveries:
        if delivery.status is DeliveryStatus.SKIPPED:
            continue
        event_type = REPORT_DELIVERED if delivery.status in _DELIVERED else REPORT_FAILED
        if wanted is not None and not wanted(event_type, delivery.org):
            continue
        data = _delivery_data(manifest, delivery, links if event_type == REPORT_DELIVERED else None)
        if delivery.status is not DeliveryStatus.DELIVERED:
            data["error"] = (delivery.error or "unknown error")[:ERROR_MAX]
        events.append((event_type, data))
    if wanted is None or wanted(RUN_COMPLETED, None):
        events.append((RUN_COMPLETED, run_data(manifest)))
    return events


def run_data(manifest: Manifest) -> dict[str, Any]:
    return {
        **_run_fields(manifest),
        "status": manifest.status.value,
        "started_at": _iso(manifest.started_at),
        "finished_at": _iso(manifest.finished_at),
        "counts": {
            "recipients": len(manifest.deliveries),
            "delivered": manifest.delivered,
            "partial": manifest.partial,
            "skipped": manifest.skipped,
            "failed": manifest.failed,
        },
    }


def ping_event(endpoint_id: str) -> Event:
    return PING, {"endpoint_id": endpoint_id, "message": "Bulletin webhook test"}


def endpoint_disabled_event(
    *, endpoint_id: str, description: str, reason: str, failing_since: datetime | None, disabled_at: datetime
) -> Event:
    """The notice sent to the other endpoints. Not the URL: a subscriber's URL may carry its own credentials."""
    return ENDPOINT_DISABLED, {
        "endpoint_id": endpoint_id,
        "description": description,
        "reason": reason[:ERROR_MAX],
        "failing_since": None if failing_since is None else _iso(failing_since),
        "disabled_at": _iso(disabled_at),
    }


def prefect_events(manifest: Manifest) -> list[dict[str, Any]]:
    """Keyword arguments for ``prefect.events.emit_event``: one per delivered, partly delivered or failed
    recipient, one per run. A PARTIAL recipient's is ``bulletin.report.delivered``, as its webhook event.

    The report is the resource and the recipient a related resource, so automations can match on either. Each file
    is named by format, channel, outcome and rows (no uri: the event is for automations, the manifest has the rest).
    """
    report = {
        "prefect.resource.id": f"bulletin.report.{manifest.report_id}",
        "prefect.resource.name": manifest.report_id,
    }
    run = {"prefect.resource.id": f"bulletin.run.{manifest.run_id}", "prefect.resource.role": "run"}
    events: list[dict[str, Any]] = []
    for delivery in manifest.deliveries:
        if delivery.status is DeliveryStatus.SKIPPED:
            continue
        name = "delivered" if delivery.status in _DELIVERED else "failed"
        recipient = {
            "prefect.resource.id": f"bulletin.recipient.{delivery.recipient}",
            "prefect.resource.role": "recipient",
            "prefect.resource.name": delivery.recipient,
        }
        payload = {
            **_run_fields(manifest),
            "recipient": delivery.recipient,
            "status": delivery.status.value,
            "formats": sorted({a.format for a in delivery.artifacts}),
            "files": [
                {"format": a.format, "channel": a.channel, "outcome": a.outcome, "rows": a.rows}
                for a in delivery.artifacts
            ],
        }
        if delivery.error:
            payload["error"] = delivery.error[:ERROR_MAX]
        events.append(
            {"event": f"bulletin.report.{name}", "resource": report, "related": [recipient, run], "payload": payload}
        )
    summary = run_data(manifest)
    # The run's status as a label, so a deployment trigger can match fresh runs only (bulletin/deployments.py).
    ended = {**run, "bulletin.run.status": manifest.status.value}
    events.append({"event": "bulletin.run.completed", "resource": report, "related": [ended], "payload": summary})
    return events


def _run_fields(manifest: Manifest) -> dict[str, Any]:
    return {"report_id": manifest.report_id, "run_id": manifest.run_id, "run_key": manifest.run_key}


def _delivery_data(manifest: Manifest, delivery: Delivery, links: LinkMaker | None) -> dict[str, Any]:
    return {
        **_run_fields(manifest),
        "recipient": delivery.recipient,
        "org": delivery.org,
        "status": delivery.status.value,
        "files": [_file(artifact, links) for artifact in delivery.artifacts],
    }


def _file(artifact: Artifact, links: LinkMaker | None) -> dict[str, Any]:
    link = links(artifact) if links is not None and artifact.outcome in HELD_OUTCOMES else None
    url, expires = (link, None) if isinstance(link, str) or link is None else (link.url, link.expires_at)
    return {
        "format": artifact.format,
        "channel": artifact.channel,
        "uri": artifact.uri,
        "sha256": artifact.sha256,
        "bytes": artifact.bytes,
        "rows": artifact.rows,
        "outcome": artifact.outcome,
        "download_url": url,
        "expires_at": None if expires is None else _iso(expires),
    }


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
