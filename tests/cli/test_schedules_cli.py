"""``bulletin schedules preview`` and ``bulletin schedules missed`` through ``main()`` in this process (no Prefect API
needed: preview is pure, and the missed listing reads saved manifests)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from bulletin.edge.cli import main
from bulletin.models import Manifest, RunStatus
from bulletin.settings import PROJECT_ROOT
from tasks.delivery.manifest import save_manifest

DAILY = yaml.safe_load((PROJECT_ROOT / "deployments/reports/daily-account-orders.yaml").read_text())


@pytest.fixture
def reports_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(folder))
    monkeypatch.setenv("BULLETIN_HOME", str(tmp_path / "home"))
    return folder


def write(folder: Path, report_id: str = "daily-account-orders", **changes: object) -> Path:
    path = folder / f"{report_id}.yaml"
    path.write_text(yaml.safe_dump({**DAILY, "id": report_id, **changes}))
    return path


def test_daily_seven_new_york_is_noon_utc_in_winter_and_eleven_in_summer(
    reports_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(reports_dir, schedule={"preset": "daily at 07:00", "timezone": "America/New_York"})
    assert main(["schedules", "preview", "daily-account-orders", "--after", "2026-01-10T00:00:00Z", "--json"]) == 0
    (winter,) = json.loads(capsys.readouterr().out)
    assert winter["schedule"]["cron"] == "0 7 * * *" and winter["schedule"]["timezone"] == "America/New_York"
    assert [r["utc"] for r in winter["runs"]] == [f"2026-01-{d}T12:00:00Z" for d in (10, 11, 12, 13, 14)]
    assert {r["local"][11:] for r in winter["runs"]} == {"07:00:00-05:00"}
    assert main(["schedules", "preview", "daily-account-orders", "--after", "2026-07-10", "--next", "2", "--json"]) == 0
    (summer,) = json.loads(capsys.readouterr().out)
    assert [r["utc"] for r in summer["runs"]] == ["2026-07-10T11:00:00Z", "2026-07-11T11:00:00Z"]
    assert [r["zone"] for r in summer["runs"]] == ["EDT", "EDT"]
    assert summer["tolerance_seconds"] == 6 * 3600 and summer["catch_up"] == "latest"


def test_preview_shows_the_dst_change_and_every_schedule(reports_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        reports_dir,
        schedule=[
            {"preset": "daily at 07:00", "timezone": "America/New_York"},
            {"preset": "every hour", "timezone": "UTC", "parameters": {"as_of": "today"}},
        ],
        tolerance_seconds=900,
    )
    args = ["schedules", "preview", "daily-account-orders", "--after", "2026-10-30T00:00:00+00:00", "--next", "4"]
    assert main([*args, "--json"]) == 0
    daily, hourly = json.loads(capsys.readouterr().out)
    assert [r["utc"][11:16] for r in daily["runs"]] == ["11:00", "11:00", "12:00", "12:00"]
    assert [r["dst_change"] for r in daily["runs"]] == [False, False, True, False]
    assert hourly["schedule"]["parameters"] == {"as_of": "today"} and hourly["tolerance_seconds"] == 900
    assert len(hourly["runs"]) == 4
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "schedule 1" in table and "schedule 2" in table
    assert "Sun 2026-11-01 07:00 EST (-05:00)" in table and "2026-11-01 12:00Z" in table
    assert "clocks changed before this run (now UTC-05:00)" in table
    assert "later than 15 min after its slot is missed; catch_up latest" in table


def test_a_report_without_schedule(reports_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(reports_dir, schedule=None)
    assert main(["schedules", "preview", "daily-account-orders"]) == 0
    assert "has no schedule" in capsys.readouterr().out
    assert main(["schedules", "preview", "daily-account-orders", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_preview_refuses_bad_input_in_one_line(reports_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schedules", "preview", "no-such-report"]) == 3
    assert "no report 'no-such-report'" in capsys.readouterr().err
    write(reports_dir)
    assert main(["schedules", "preview", "daily-account-orders", "--after", "next tuesday"]) == 2
    err = capsys.readouterr().err
    assert "--after" in err and "ISO 8601" in err and "Traceback" not in err
    assert main(["schedules", "preview", "daily-account-orders", "--next", "0"]) == 2
    capsys.readouterr()
    path = write(reports_dir, schedule={"cron": "0 7 * * *", "timezone": "Mars/Olympus"})
    assert main(["schedules", "preview", "daily-account-orders"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "schedule" in err and "unknown time zone 'Mars/Olympus'" in err
    assert "Traceback" not in err
    write(reports_dir, schedule={"cron": "0 7 31 2 *"})
    assert main(["schedules", "preview", "daily-account-orders"]) == 2
    assert "invalid cron expression '0 7 31 2 *'" in capsys.readouterr().err


def manifest(report_id: str, run_id: str, status: RunStatus, note: str | None = None) -> Manifest:
    moment = datetime(2026, 11, 2, 13, 5, tzinfo=UTC)
    return Manifest(
        report_id=report_id,
        run_id=run_id,
        run_key=f"{report_id}@2026-11-02T12:00:00Z",
        started_at=moment,
        finished_at=moment,
        status=status,
        note=note,
    )


def test_missed_lists_only_missed_runs(reports_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = reports_dir.parent / "home" / "manifests"
    reason = "missed: started 7 h 5 min after its slot 2026-11-02T06:00:00Z, later than the tolerance of 6 h"
    save_manifest(folder, manifest("daily-account-orders", "aaaaaaaaaaaa", RunStatus.MISSED, reason))
    save_manifest(folder, manifest("daily-account-orders", "bbbbbbbbbbbb", RunStatus.COMPLETED))
    save_manifest(folder, manifest("weekly-regional-sales", "cccccccccccc", RunStatus.MISSED, "superseded: ..."))
    assert main(["schedules", "missed", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["run_id"] for r in rows} == {"aaaaaaaaaaaa", "cccccccccccc"}
    assert main(["schedules", "missed", "--report", "daily-account-orders", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["reason"] == reason and row["run_key"] == "daily-account-orders@2026-11-02T12:00:00Z"
    assert main(["schedules", "missed", "--report", "daily-account-orders"]) == 0
    assert "daily-account-orders@2026-11-02T12:00:00Z" in capsys.readouterr().out
    assert main(["schedules", "missed", "--report", "../etc"]) == 3
    assert "no report '../etc'" in capsys.readouterr().err
