"""``bulletin retention apply`` against moto in server mode: Bulletin's lifecycle rule is written, replaced by its ID,
and every other rule of the bucket is kept as it was."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bulletin.edge.cli.retention import retention_app
from bulletin.errors import ConfigError
from tasks.storage.lifecycle import apply_lifecycle, read_rules
from tasks.storage.lifecycle_rules import RULE_ID, bulletin_prefix, bulletin_rule, merge_rules
from tests.fixtures.s3 import REGION, S3TestBucket

THEIRS: dict[str, Any] = {
    "ID": "archive-logs",
    "Status": "Enabled",
    "Filter": {"Prefix": "logs/"},
    "Expiration": {"Days": 3},
}


def _apply(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return CliRunner().invoke(retention_app, ["apply", *args])


def _env(bucket: S3TestBucket, tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        "BULLETIN_HOME": str(tmp_path / "home"),
        "BULLETIN_S3_BUCKET": bucket.name,
        "BULLETIN_S3_ENDPOINT_URL": bucket.endpoint,
        "BULLETIN_S3_REGION": REGION,
        **more,
    }


def test_apply_writes_our_rule_and_keeps_the_buckets_other_rules(
    s3_bucket: S3TestBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_bucket.client
    stale = {**bulletin_rule("tenant-a/reports/", 10), "Expiration": {"Days": 10}}
    client.put_bucket_lifecycle_configuration(Bucket=s3_bucket.name, LifecycleConfiguration={"Rules": [THEIRS, stale]})
    env = _env(s3_bucket, tmp_path, BULLETIN_S3_PREFIX="tenant-a", BULLETIN_RETENTION_FILES_DAYS="45")

    dry = _apply(env, monkeypatch, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would write" in dry.stdout
    assert {r["ID"]: r for r in read_rules(client, s3_bucket.name)}[RULE_ID]["Expiration"] == {"Days": 10}

    result = _apply(env, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "1 other rules of the bucket kept" in result.stdout
    rules = {r["ID"]: r for r in client.get_bucket_lifecycle_configuration(Bucket=s3_bucket.name)["Rules"]}
    assert set(rules) == {"archive-logs", RULE_ID}
    assert rules["archive-logs"]["Expiration"] == {"Days": 3} and rules["archive-logs"]["Filter"] == {"Prefix": "logs/"}
    ours = rules[RULE_ID]
    assert ours["Filter"] == {"Prefix": "tenant-a/reports/"}
    assert ours["Expiration"] == {"Days": 45}
    assert ours["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}

    again = _apply(env, monkeypatch)
    assert again.exit_code == 0 and "already as wanted" in again.stdout


def test_a_bucket_without_lifecycle_gets_our_rule(s3_bucket: S3TestBucket) -> None:
    assert read_rules(s3_bucket.client, s3_bucket.name) == []
    change = apply_lifecycle(s3_bucket.client, s3_bucket.name, bulletin_rule(bulletin_prefix("", "reports"), 90))
    assert change.before is None and change.others == 0
    (rule,) = read_rules(s3_bucket.client, s3_bucket.name)
    assert rule["ID"] == RULE_ID and rule["Filter"] == {"Prefix": "reports/"} and rule["Expiration"] == {"Days": 90}


def test_a_report_that_keeps_files_longer_sets_the_expiration(
    s3_bucket: S3TestBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rule covers every report (keys start with the organisation): it must not expire a file sooner than its
    report's own retention."""
    from bulletin.settings import PROJECT_ROOT

    reports = tmp_path / "reports"
    reports.mkdir()
    source = (PROJECT_ROOT / "deployments" / "reports" / "daily-account-orders.yaml").read_text()
    (reports / "daily-account-orders.yaml").write_text(source + "retention: {files_days: 365}\n")
    result = _apply(_env(s3_bucket, tmp_path, BULLETIN_REPORTS_DIR=str(reports)), monkeypatch)
    assert result.exit_code == 0, result.output
    (rule,) = read_rules(s3_bucket.client, s3_bucket.name)
    assert rule["Expiration"] == {"Days": 365}


def test_without_a_bucket_apply_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULLETIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BULLETIN_S3_BUCKET", raising=False)
    result = CliRunner().invoke(retention_app, ["apply"])
    assert isinstance(result.exception, ConfigError) and "BULLETIN_S3_BUCKET" in str(result.exception)


def test_merge_replaces_only_our_rule_in_place() -> None:
    ours = bulletin_rule("reports/", 30)
    other = {"ID": "x", "Status": "Enabled", "Filter": {"Prefix": "x/"}, "Expiration": {"Days": 1}}
    old_ours = {**ours, "Expiration": {"Days": 9}}
    assert merge_rules([old_ours, other], ours) == [ours, other]
    assert merge_rules([other], ours) == [other, ours]
    with pytest.raises(ConfigError):
        bulletin_rule("reports", 30)  # a prefix without its slash would also match reports-archive/
    with pytest.raises(ConfigError):
        bulletin_rule("reports/", 0)


def test_s3_files_kept_for_less_than_the_longest_go_at_their_own_time(s3_bucket: S3TestBucket) -> None:
    """The rule expires at the longest retention (board-pack's 365 days); the prune deletes the default reports'
    files after their 90, in bounded DeleteObjects requests, and never lists outside Bulletin's prefix."""
    from datetime import UTC, datetime, timedelta

    from bulletin.retention import build_policy
    from tasks.retention import S3Files, prune_s3_files

    client, name = s3_bucket.client, s3_bucket.name
    keys = [f"reports/acme/sales/2027/01/01/r{i}/sales-20270101T070000Z-run{i}.pdf" for i in range(5)]
    keys.append("reports/acme/board-pack/2027/01/01/cfo/board-pack-20270101T070000Z-run.pdf")
    keys.append("elsewhere/sales-20270101T070000Z-run.pdf")  # not Bulletin's prefix: never touched
    for key in keys:
        client.put_object(Bucket=name, Key=key, Body=b"x")
    days = {"files": 90, "manifests": 400, "ledger": 400, "webhooks": 30, "inbound": 7, "scheduled_events": 30}
    policy = build_policy(days, [], [])
    s3 = S3Files(client, name, "reports/")
    later = datetime.now(UTC) + timedelta(days=91)

    assert prune_s3_files(s3, policy, now=later, batch=2, dry_run=False).rows == 0, "one retention: the rule does it"
    policy = replace(policy, files_by_report={"board-pack": 365})
    assert prune_s3_files(s3, policy, now=datetime.now(UTC), batch=2, dry_run=False).rows == 0, "none is due yet"
    assert prune_s3_files(s3, policy, now=later, batch=2, dry_run=True).rows == 5
    assert len(client.list_objects_v2(Bucket=name)["Contents"]) == 7, "a dry run deletes nothing"
    pruned = prune_s3_files(s3, policy, now=later, batch=2, dry_run=False)
    assert pruned.rows == 5 and pruned.batches == [2, 2, 1]
    left = {item["Key"] for item in client.list_objects_v2(Bucket=name)["Contents"]}
    assert left == set(keys[5:])
