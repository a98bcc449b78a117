"""The prune flow: delete what is past its retention (docs/retention.md), and record what it deleted.

Deployed daily (the ``prune`` deployment in prefect.yaml); ``bulletin prune`` runs it once. What it deleted, per
kind, is its return value and the run's table artifact ``bulletin-prune`` (Artifacts in the Prefect UI), the record
of every prune; a dry run counts the same things and deletes nothing.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from bulletin.clock import utc_now
from bulletin.retention import describe_policy
from bulletin.settings import Settings
from bulletin.store import migrate, open_store
from tasks.retention import PruneReport, S3Files, policy_from_settings, prune_everything

ARTIFACT_KEY = "bulletin-prune"


def _record(report: PruneReport, policy_rows: list[tuple[str, int, str]]) -> None:
    verb = "would delete" if report.dry_run else "deleted"
    table = [{"kind": kind, verb: rows} for kind, rows in report.rows().items()]
    kept = "; ".join(f"{what}: {days} days" for what, days, _ in policy_rows)
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=table,
        description=f"Prune at {report.started:%Y-%m-%d %H:%M:%S} UTC{' (dry run)' if report.dry_run else ''}: "
        f"{report.total} {verb}. Kept: {kept}.",
    )


def _s3_files(settings: Settings) -> S3Files | None:
    """Bulletin's files on S3, when deliveries go there."""
    if not settings.s3_bucket:
        return None
    from tasks.storage.lifecycle_rules import bulletin_prefix
    from tasks.storage.s3_clients import make_s3_client

    prefix = bulletin_prefix(settings.s3_prefix, settings.storage_prefix)
    return S3Files(make_s3_client(settings), settings.s3_bucket, prefix)


@flow(name="prune", log_prints=False, persist_result=False)
def prune(dry_run: bool = False) -> dict[str, Any]:
    """Delete (``dry_run``: count) every kind of data older than its retention; the rows per kind."""
    settings = Settings()
    policy = policy_from_settings(settings)
    with open_store(settings.database) as store:
        migrate(store)
        report = prune_everything(
            store,
            policy,
            bucket_dir=settings.bucket_path,
            manifests_dir=settings.manifests_dir,
            now=utc_now(),
            batch=settings.prune_batch_rows,
            dry_run=dry_run,
            s3=_s3_files(settings),
        )
    _record(report, describe_policy(policy))
    get_run_logger().info(
        "prune%s: %s", " (dry run)" if dry_run else "", ", ".join(f"{k} {n}" for k, n in report.rows().items())
    )
    from prefect.runtime import flow_run

    return {"dry_run": dry_run, "deleted": report.rows(), "total": report.total, "flow_run_id": str(flow_run.id)}
