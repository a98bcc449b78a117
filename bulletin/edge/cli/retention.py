"""``bulletin prune`` and ``bulletin retention ...``: deleting what is past its retention (docs/retention.md).

``prune`` checks the settings, reports and triggers first (a bad one is a one-line error, before anything is
deleted), then runs the prune flow once, so its record is the same as the daily deployment's: the flow run's
``bulletin-prune`` artifact. ``retention apply`` writes the S3 bucket's lifecycle rule for Bulletin's files.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from bulletin.edge.cli.root import app

retention_app = typer.Typer(
    help="Retention: what is kept how long, and the S3 bucket's lifecycle rule.", no_args_is_help=True
)


@app.command("prune")
def prune_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what is past its retention; delete nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Delete everything past its retention: ledger, webhooks, inbound receipts, scheduled events, manifests, files."""
    from bulletin.settings import Settings
    from tasks.retention import policy_from_settings

    policy_from_settings(Settings())  # a bad setting, report or trigger stops here, before the flow starts
    from flows.prune import ARTIFACT_KEY, prune

    result: dict[str, Any] = prune(dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    width = max(len(kind) for kind in result["deleted"])
    for kind, rows in result["deleted"].items():
        typer.echo(f"{kind:<{width}}  {verb} {rows}")
    typer.echo(f"{'total':<{width}}  {verb} {result['total']}")
    typer.echo(f"recorded: artifact {ARTIFACT_KEY!r} of flow run {result['flow_run_id']}")


@retention_app.command("show")
def retention_show() -> None:
    """Print how many days each kind of data is kept, after the reports' overrides and the replay floor."""
    from bulletin.retention import describe_policy
    from bulletin.settings import Settings
    from tasks.retention import policy_from_settings

    for what, days, note in describe_policy(policy_from_settings(Settings())):
        typer.echo(f"{what}: {days} days{f' ({note})' if note else ''}")


@retention_app.command("apply")
def retention_apply(
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the rule that would be written; write nothing."),
) -> None:
    """Write the S3 bucket's lifecycle rule for Bulletin's files (other rules of the bucket are kept)."""
    from bulletin.errors import ConfigError
    from bulletin.settings import Settings
    from tasks.retention import policy_from_settings
    from tasks.storage.lifecycle import apply_lifecycle
    from tasks.storage.lifecycle_rules import bulletin_prefix, bulletin_rule
    from tasks.storage.s3_clients import make_s3_client

    settings = Settings()
    if not settings.s3_bucket:
        raise ConfigError(
            "BULLETIN_S3_BUCKET is not set: there is no bucket to configure (the local bucket folder is pruned by "
            "`bulletin prune`)",
            field="s3_bucket",
        )
    policy = policy_from_settings(settings)
    rule = bulletin_rule(bulletin_prefix(settings.s3_prefix, settings.storage_prefix), policy.longest_files_days)
    change = apply_lifecycle(make_s3_client(settings), settings.s3_bucket, rule, dry_run=dry_run)
    where = f"s3://{settings.s3_bucket}/{rule['Filter']['Prefix']}"
    if not change.changed:
        typer.echo(f"{where}: the lifecycle rule {rule['ID']!r} is already as wanted ({change.others} other rules)")
        return
    verb = "would write" if dry_run else "wrote"
    typer.echo(
        f"{where}: {verb} lifecycle rule {rule['ID']!r}: expire files after {rule['Expiration']['Days']} days, abort "
        f"unfinished uploads after 1 day; {change.others} other rules of the bucket kept"
    )
