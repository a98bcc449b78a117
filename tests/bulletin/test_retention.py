"""Retention decisions, pure: the policy from the settings, reports and triggers; cutoffs; a file's report; the
settings and report fields refused in one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulletin.errors import ConfigError, DefinitionError
from bulletin.reports import load_report_file
from bulletin.retention import Kind, build_policy, cutoff, cutoffs, file_is_due, inbound_floor, report_of_file
from bulletin.settings import PROJECT_ROOT, Settings
from bulletin.triggers import Trigger

NOW = datetime(2027, 6, 1, 3, 15, tzinfo=UTC)
DEFAULT_DAYS = {"files": 90, "manifests": 400, "ledger": 400, "webhooks": 30, "inbound": 7, "scheduled_events": 30}
BULLETIN = str(Path(sys.executable).parent / "bulletin")


def _trigger(scheme: str, **verify: Any) -> Trigger:
    source = {"public_key_env": "K"} if scheme == "jwt-es256" else {"secret_env": "S"}
    return Trigger.model_validate(
        {"id": f"t-{scheme}", "verify": {"scheme": scheme, **source, **verify}, "action": {"flow": "refresh"}}
    )


def test_the_settings_defaults_are_the_issues() -> None:
    settings = Settings()
    assert (
        settings.retention_files_days,
        settings.retention_manifests_days,
        settings.retention_ledger_days,
        settings.retention_webhooks_days,
        settings.retention_inbound_days,
        settings.retention_scheduled_events_days,
        settings.prune_batch_rows,
    ) == (90, 400, 400, 30, 7, 30, 1_000)


@pytest.mark.parametrize("value", ["0", "-3", "ninety", "40000"])
def test_a_bad_retention_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("BULLETIN_RETENTION_LEDGER_DAYS", value)
    with pytest.raises(ConfigError, match="BULLETIN_RETENTION_LEDGER_DAYS"):
        Settings()


def test_each_kind_has_its_cutoff_exactly_its_days_before_now() -> None:
    policy = build_policy(DEFAULT_DAYS, [], [])
    limits = cutoffs(policy, NOW)
    assert limits[Kind.LEDGER] == NOW - timedelta(days=400)
    assert limits[Kind.WEBHOOK_ATTEMPTS] == limits[Kind.WEBHOOK_MESSAGES] == NOW - timedelta(days=30)
    assert limits[Kind.INBOUND_RECEIPTS] == NOW - timedelta(days=7)
    assert limits[Kind.SCHEDULED_EVENTS] == NOW - timedelta(days=30)
    assert limits[Kind.FILES] == NOW - timedelta(days=90)
    with pytest.raises(ConfigError, match="timezone"):
        cutoff(datetime(2027, 1, 1), 1)


def test_inbound_receipts_are_never_kept_shorter_than_the_replay_window() -> None:
    week_old_dbt = _trigger("dbt-cloud", max_age_seconds=7 * 86_400, tolerance_seconds=600)
    assert inbound_floor([week_old_dbt, _trigger("github")]) == (8, "t-dbt-cloud")
    raised = build_policy(DEFAULT_DAYS, [], [week_old_dbt])
    assert raised.inbound_days == 8 and raised.inbound_floor == "t-dbt-cloud"
    # A window shorter than the setting leaves it alone; GitHub signs no time, so it has no window to raise it to.
    kept = build_policy(DEFAULT_DAYS, [], [_trigger("standard-webhooks"), _trigger("github"), _trigger("jwt-es256")])
    assert kept.inbound_days == 7 and kept.inbound_floor is None


def test_a_report_keeps_its_files_its_own_number_of_days(tmp_path: Path) -> None:
    source = (PROJECT_ROOT / "deployments" / "reports" / "daily-account-orders.yaml").read_text()
    path = tmp_path / "daily-account-orders.yaml"
    path.write_text(source + "retention: {files_days: 730}\n")
    policy = build_policy(DEFAULT_DAYS, [load_report_file(path)], [])
    assert policy.files_days_of("daily-account-orders") == 730
    assert policy.files_days_of("weekly-regional-sales") == 90 and policy.files_days_of(None) == 90
    assert policy.longest_files_days == 730 and policy.files_days_differ
    assert not build_policy(DEFAULT_DAYS, [], []).files_days_differ
    name = "daily-account-orders-20250101T063000Z-0b1c2d3e.csv"
    assert report_of_file(name) == "daily-account-orders"
    assert not file_is_due(name, NOW - timedelta(days=400), policy, NOW)
    assert file_is_due("weekly-regional-sales-20250101T070000Z-abc.pdf", NOW - timedelta(days=91), policy, NOW)


def test_the_ledger_keeps_a_run_key_as_long_as_its_slot_may_still_run(tmp_path: Path) -> None:
    """A scheduled run may start up to its report's tolerance after its slot and must find what that slot sent."""
    source = (PROJECT_ROOT / "deployments" / "reports" / "daily-account-orders.yaml").read_text()
    path = tmp_path / "daily-account-orders.yaml"
    path.write_text(source + "tolerance_seconds: 2592001\n")  # 30 days and a second
    policy = build_policy({**DEFAULT_DAYS, "ledger": 7}, [load_report_file(path)], [])
    assert policy.ledger_days == 31 and policy.ledger_floor == "daily-account-orders"
    assert build_policy(DEFAULT_DAYS, [load_report_file(path)], []).ledger_floor is None  # 400 days is longer


@pytest.mark.parametrize("retention", ["{files_days: 0}", "{files_days: 30, manifests_days: 3}", "{}", "30"])
def test_a_bad_report_retention_is_refused(tmp_path: Path, retention: str) -> None:
    source = (PROJECT_ROOT / "deployments" / "reports" / "daily-account-orders.yaml").read_text()
    path = tmp_path / "daily-account-orders.yaml"
    path.write_text(source + f"retention: {retention}\n")
    with pytest.raises(DefinitionError, match="retention"):
        load_report_file(path)


def test_file_names_bulletin_did_not_make_have_no_report() -> None:
    assert report_of_file("notes.txt") is None
    assert report_of_file("sales-20250101T070000Z-run.pdf") == "sales"
    assert report_of_file("sales-20250101T070000Z-run-2.pdf") == "sales"  # a name taken: a new one on conflict


def test_missing_or_bad_days_are_refused() -> None:
    with pytest.raises(ConfigError, match="no retention given for ledger"):
        build_policy({k: v for k, v in DEFAULT_DAYS.items() if k != "ledger"}, [], [])
    with pytest.raises(ConfigError, match="BULLETIN_RETENTION_FILES_DAYS"):
        build_policy({**DEFAULT_DAYS, "files": 0}, [], [])


def test_prune_refuses_a_bad_setting_in_one_line_and_deletes_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "BULLETIN_HOME": str(tmp_path / "home"), "BULLETIN_RETENTION_WEBHOOKS_DAYS": "0"}
    result = subprocess.run([BULLETIN, "prune"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: BULLETIN_RETENTION_WEBHOOKS_DAYS") and "Traceback" not in result.stdout
    assert not (tmp_path / "home").exists()
