"""A delivery request's checks live in the core, so the HTTP API and the CLI refuse a bad request without a flow.

The run-key rule and the format choice are plain functions here: the flow passes in what only Prefect knows (its
run id, the scheduler's slot).
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bulletin.errors import ConfigError, DefinitionError, NotFoundError
from bulletin.requests import DeliveryRequest, check_request, request_run_key, requested_formats
from bulletin.settings import PROJECT_ROOT, Settings
from bulletin.store import scheduled_run_key

SLOT = datetime(2026, 11, 2, 7, tzinfo=UTC)
RUN_ID = "0190f5d2-8c1e-7a3b-9f00-123456789abc"


def test_formats_default_to_the_reports_and_are_taken_once_in_the_order_asked() -> None:
    assert requested_formats(["pdf", "xlsx"], None) == ["pdf", "xlsx"]
    assert requested_formats(["pdf", "xlsx"], []) == ["pdf", "xlsx"]
    assert requested_formats(["pdf", "xlsx"], ["xlsx", "pdf", "xlsx"]) == ["xlsx", "pdf"]


def test_a_format_the_report_lacks_is_refused_by_name() -> None:
    with pytest.raises(DefinitionError, match="'csv' is not one of this report's formats") as caught:
        requested_formats(["pdf", "xlsx"], ["pdf", "csv"])
    assert caught.value.field == "formats"


def test_the_run_key_asked_for_wins_and_is_checked() -> None:
    assert request_run_key("sales", "nightly-1", RUN_ID, None, SLOT) == "nightly-1"
    with pytest.raises(ConfigError):
        request_run_key("sales", "../x y", RUN_ID, None, SLOT)


def test_a_scheduled_run_is_keyed_by_its_slot_and_any_other_run_by_its_own_id() -> None:
    parameters = {"region": "EMEA"}
    assert request_run_key("sales", None, RUN_ID, parameters, SLOT) == scheduled_run_key("sales", SLOT, parameters)
    assert request_run_key("sales", None, RUN_ID, parameters, None) == f"adhoc-{RUN_ID}"


def test_check_request_returns_the_report_or_refuses_what_is_wrong() -> None:
    settings = Settings()
    report = check_request(settings, "weekly-regional-sales", formats=["xlsx"], parameters={"as_of": "2026-11-01"})
    assert report.id == "weekly-regional-sales"
    with pytest.raises(NotFoundError):
        check_request(settings, "no-such-report")
    with pytest.raises(DefinitionError, match="format 'docx'"):
        check_request(settings, "weekly-regional-sales", formats=["docx"])
    with pytest.raises(DefinitionError, match="no parameter 'colour'"):
        check_request(settings, "weekly-regional-sales", parameters={"colour": "red"})
    with pytest.raises(ConfigError):
        check_request(settings, "weekly-regional-sales", run_key="../x y")


def test_a_request_holds_the_flows_arguments_with_the_flows_defaults() -> None:
    request = DeliveryRequest("weekly-regional-sales")
    assert (request.recipients, request.formats, request.parameters) == (None, None, None)
    assert (request.dry_run, request.run_key, request.output_prefix) == (False, None, None)


def _imports_of(path: Path) -> set[tuple[str, str]]:
    return {
        (node.module or "", alias.name)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_the_api_and_the_cli_take_the_request_checks_from_the_core_not_from_a_flow() -> None:
    edge = [
        *(PROJECT_ROOT / "bulletin" / "edge" / "api").rglob("*.py"),
        *(PROJECT_ROOT / "bulletin" / "edge" / "cli").rglob("*.py"),
    ]
    users = {path.name: _imports_of(path) for path in edge if "check_request" in path.read_text()}
    assert users, "nothing at the edge checks a request up front any more"
    for name, imports in users.items():
        assert ("bulletin.requests", "check_request") in imports, name
        assert not any(module.startswith("flows") and what == "check_request" for module, what in imports), name
