"""The run's record: the manifest file and the Prefect artifacts the UI shows."""

from __future__ import annotations

import os
import re
from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from bulletin.errors import NotFoundError
from bulletin.models import HELD_OUTCOMES, IDENTIFIER_RE, Delivery, Manifest, RunStatus

#: Up to this many recipients, one task each (visible one by one in the UI); beyond, a few long-lived lanes
#: (tasks/delivery/spread.py). A task run costs about 60 ms of the flow's CPU and 45 ms of the Prefect API's
#: (docs/benchmarks.md, "Delivery to S3"): fine for hundreds of recipients, not for thousands.
TASK_PER_RECIPIENT_UP_TO = 200


def manifest_file(folder: Path, report_id: str, run_id: str) -> Path:
    """Where a run's manifest is saved: ``<folder>/<report_id>/<run_id>.json``. The flow saves there and the API
    reads from there, so the rule is written once."""
    return folder / report_id / f"{run_id}.json"


def save_manifest(folder: Path, manifest: Manifest) -> Path:
    target = manifest_file(folder, manifest.report_id, manifest.run_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, target)
    return target


def list_manifests(
    folder: Path, *, report_id: str | None = None, status: RunStatus | None = None, limit: int = 100
) -> list[Manifest]:
    """Saved manifests, newest file first, of one report or all; only those of ``status`` when given."""
    if report_id is not None and not IDENTIFIER_RE.match(report_id):
        raise NotFoundError(f"no report {report_id!r}", field="report_id")
    pattern = f"{report_id}/*.json" if report_id else "*/*.json"
    paths = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    found: list[Manifest] = []
    for path in paths:
        manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        if status is None or manifest.status is status:
            found.append(manifest)
            if len(found) >= limit:
                break
    return found


def _artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100]


def delivery_rows(manifest: Manifest) -> list[dict[str, object]]:
    """One row per file per channel, with its outcome (a failed one with its error), so a PARTIAL recipient shows
    what went where and what did not; a recipient with no file at all gets one row with its error."""
    rows: list[dict[str, object]] = []
    for delivery in manifest.deliveries:
        if not delivery.artifacts:
            rows.append(
                {
                    "recipient": delivery.recipient,
                    "status": delivery.status.value,
                    "format": "",
                    "channel": "",
                    "outcome": "",
                    "key": "",
                    "rows": 0,
                    "bytes": 0,
                    "sha256": "",
                    "error": delivery.error or "",
                }
            )
        for artifact in delivery.artifacts:
            rows.append(
                {
                    "recipient": delivery.recipient,
                    "status": delivery.status.value,
                    "format": artifact.format,
                    "channel": artifact.channel,
                    "outcome": artifact.outcome,
                    "key": artifact.uri,
                    "rows": artifact.rows,
                    "bytes": artifact.bytes,
                    "sha256": artifact.sha256,
                    "error": (artifact.note or "") if artifact.outcome == "failed" else "",
                }
            )
    return rows


def summary_markdown(manifest: Manifest) -> str:
    lines = [
        f"# {manifest.report_id}: {manifest.status.value}",
        "",
        f"- run `{manifest.run_id}`, {manifest.started_at:%Y-%m-%d %H:%M:%S} to {manifest.finished_at:%H:%M:%S} UTC",
        f"- {manifest.tally}, {len(manifest.deliveries)} recipient(s)",
    ]
    if manifest.note:
        lines.append(f"- {manifest.note}")
    failed = [d for d in manifest.deliveries if d.error]
    if failed:
        lines += ["", "| recipient | status | delivered | error |", "|---|---|---|---|"]
        lines += [
            f"| {d.recipient} | {d.status.value} | {_held(d)} | {(d.error or '').replace('|', '/')} |" for d in failed
        ]
    return "\n".join(lines) + "\n"


def _held(delivery: Delivery) -> str:
    """What a recipient has despite a failure: ``channel: formats`` per channel that delivered."""
    by_channel: dict[str, list[str]] = {}
    for a in delivery.artifacts:
        if a.outcome in HELD_OUTCOMES:
            by_channel.setdefault(a.channel, []).append(a.format)
    return "; ".join(f"{ch}: {' '.join(fmts)}" for ch, fmts in by_channel.items()) or "nothing"


def publish_run_artifacts(manifest: Manifest) -> None:
    """A table of every delivery and a markdown summary, attached to the current flow run."""
    key = _artifact_key(manifest.report_id)
    create_table_artifact(
        key=f"deliveries-{key}",
        table=delivery_rows(manifest),
        description=f"Deliveries of {manifest.report_id}, run {manifest.run_id}",
    )
    create_markdown_artifact(
        key=f"summary-{key}",
        markdown=summary_markdown(manifest),
        description=f"Summary of {manifest.report_id}, run {manifest.run_id}",
    )
