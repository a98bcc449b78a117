from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from bulletin.errors import DefinitionError, NotFoundError
from bulletin.reports import get_report, load_report_file, load_reports, resolve_parameters
from bulletin.settings import PROJECT_ROOT

REPORTS = PROJECT_ROOT / "deployments" / "reports"
VALID = yaml.safe_load((REPORTS / "weekly-regional-sales.yaml").read_text())


def write(tmp_path: Path, data: dict, name: str = "weekly-regional-sales") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_reports_are_valid() -> None:
    reports = load_reports(REPORTS)
    assert {"weekly-regional-sales", "daily-account-orders"} <= set(reports)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"formats": ["pdf", "docx"]}, "formats.1", "Input should be"),
        ({"formats": []}, "formats", "at least 1"),
        ({"schedule": {"cron": "61 * * * *"}}, "schedule", "invalid cron"),
        ({"schedule": {"cron": "0 7 * * 1", "timezone": "Mars/Olympus"}}, "schedule", "unknown time zone"),
        ({"schedule": {"preset": "every fortnight"}}, "schedule", "unknown schedule preset"),
        ({"secure_filters": {}}, "(file)", "no entry for the report's dataset"),
        ({"columns": ["amount; DROP TABLE x"]}, "columns.0", "should match pattern"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
        ({"filters": [{"field": "order_date", "op": "=", "value": "{{ params.nope }}"}]}, "(file)", "not declared"),
    ],
)
def test_a_wrong_file_names_path_field_and_reason(tmp_path: Path, change: dict, field: str, reason: str) -> None:
    path = write(tmp_path, {**VALID, **change})
    with pytest.raises(DefinitionError) as info:
        load_report_file(path)
    message = str(info.value)
    assert str(path) in message
    assert field in message
    assert reason in message


def test_id_must_match_file_name(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="must equal the file name"):
        load_report_file(write(tmp_path, VALID, name="other"))


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("id: [unclosed")
    with pytest.raises(DefinitionError, match="invalid YAML"):
        load_report_file(path)


def test_unknown_report_and_unsafe_id() -> None:
    with pytest.raises(NotFoundError):
        get_report(REPORTS, "nope")
    with pytest.raises(NotFoundError):
        get_report(REPORTS, "../../etc/passwd")


def test_parameters_resolve_relative_dates_and_refuse_unknown() -> None:
    report = get_report(REPORTS, "weekly-regional-sales")
    assert resolve_parameters(report, {}, date(2026, 11, 23)) == {"as_of": date(2026, 11, 22)}
    assert resolve_parameters(report, {"as_of": "2026-10-31"}, date(2026, 11, 23)) == {"as_of": date(2026, 10, 31)}
    with pytest.raises(DefinitionError, match="no parameter 'region'"):
        resolve_parameters(report, {"region": "x"}, date(2026, 11, 23))
    with pytest.raises(DefinitionError, match="not a date"):
        resolve_parameters(report, {"as_of": "tomorrow-ish"}, date(2026, 11, 23))


def test_inline_audience_and_several_schedules(tmp_path: Path) -> None:
    data = {
        **VALID,
        "audience": {"recipients": [{"ref": "a", "email": "a@example.com", "attributes": {"region": "X"}}]},
        "schedule": [
            {"preset": "weekdays at 07:00", "timezone": "America/New_York"},
            {"cron": "0 12 1 * *", "timezone": "UTC", "parameters": {"as_of": "today"}},
        ],
    }
    report = load_report_file(write(tmp_path, data))
    assert [s.cron_expression for s in report.schedules] == ["0 7 * * 1-5", "0 12 1 * *"]


def test_audience_needs_exactly_one_source(tmp_path: Path) -> None:
    data = {**VALID, "audience": {"recipients": [], "query": None}}
    with pytest.raises(DefinitionError, match="audience"):
        load_report_file(write(tmp_path, data))
