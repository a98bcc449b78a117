"""Trigger definitions, conditions and templated parameters, and the dependents of a report: pure functions."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from bulletin.errors import DefinitionError, NotFoundError, RequestError
from bulletin.settings import PROJECT_ROOT
from bulletin.triggers import (
    Trigger,
    action_parameters,
    conditions_match,
    get_trigger,
    load_trigger_file,
    load_triggers,
    template_headers,
    webhook_run_key,
)
from tasks.dependents import check_no_cycles, find_dependents, refresh_run_key

TRIGGERS = PROJECT_ROOT / "deployments" / "triggers"
BASE = {
    "id": "t",
    "verify": {"scheme": "dbt-cloud", "secret_env": "DBT_SECRET"},
    "conditions": [
        {"path": "data.runStatus", "op": "==", "value": "Success"},
        {"path": "data.jobId", "op": "in", "value": ["123", "456"]},
    ],
    "action": {"flow": "refresh", "parameters": {"dataset": "orders", "upstream_run_id": "{{ payload.data.runId }}"}},
}


def trigger(**change: object) -> Trigger:
    return Trigger.model_validate({**BASE, **change})


def test_shipped_triggers_are_valid() -> None:
    triggers = load_triggers(TRIGGERS)
    assert set(triggers) == {"dbt-job-completed", "bulletin-run-completed", "github-release", "signed-refresh-request"}
    assert {t.verify.scheme for t in triggers.values()} == {"dbt-cloud", "standard-webhooks", "github", "jwt-es256"}


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"verify": {"scheme": "svix", "secret_env": "X"}}, "verify.scheme", "Input should be"),
        ({"verify": {"scheme": "github", "secret_env": "X", "secret_block": "y"}}, "verify", "exactly one"),
        ({"verify": {"scheme": "jwt-es256", "secret_env": "X"}}, "verify", "does not apply"),
        ({"verify": {"scheme": "github", "secret_env": "X", "max_age_seconds": 60}}, "verify", "only to"),
        ({"verify": {"scheme": "github", "secret_env": "lower-case!"}}, "verify.secret_env", "pattern"),
        ({"conditions": [{"path": "a", "op": "in", "value": "x"}]}, "conditions.0", "needs a list"),
        ({"conditions": [{"path": "a", "op": "~="}]}, "conditions.0.op", "Input should be"),
        ({"action": {"report": "r", "flow": "refresh"}}, "action", "exactly one"),
        ({"action": {"flow": "refresh", "dry_run": True}}, "action", "only to a 'report'"),
        ({"action": {"flow": "refresh", "parameters": {"x": "{{ recipient.x }}"}}}, "action", "bad template"),
        ({"action": {"deployment": "no-slash"}}, "action.deployment", "pattern"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_a_wrong_file_names_path_field_and_reason(tmp_path: Path, change: dict, field: str, reason: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({**BASE, **change}))
    with pytest.raises(DefinitionError) as info:
        load_trigger_file(path)
    assert str(path) in str(info.value) and field in str(info.value) and reason in str(info.value)


def test_id_must_match_file_name_and_lookup(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(BASE))
    with pytest.raises(DefinitionError, match="must equal the file name"):
        load_triggers(tmp_path)
    with pytest.raises(NotFoundError):
        get_trigger({"t": trigger()}, "../t")
    assert get_trigger({"t": trigger()}, "t").id == "t"


@pytest.mark.parametrize(
    ("payload", "matched", "reason"),
    [
        ({"data": {"runStatus": "Success", "jobId": "123"}}, True, "2 condition(s) matched"),
        ({"data": {"runStatus": "Error", "jobId": "123"}}, False, "data.runStatus is 'Error', not == 'Success'"),
        ({"data": {"runStatus": "Success", "jobId": 123}}, False, "data.jobId is 123, not in ['123', '456']"),
        ({"data": {"runStatus": "Success"}}, False, "data.jobId is missing"),
        ({"data": "Success"}, False, "data.runStatus is missing"),
    ],
)
def test_conditions(payload: dict, matched: bool, reason: str) -> None:
    assert conditions_match(trigger(), payload) == (matched, reason)


def test_other_operators_and_booleans_are_not_numbers() -> None:
    conditions = [
        {"path": "a", "op": "!=", "value": 1},
        {"path": "b", "op": "not_in", "value": ["x"]},
        {"path": "c.0", "op": "exists"},
        {"path": "d", "op": "exists", "value": False},
    ]
    t = trigger(conditions=conditions)
    assert conditions_match(t, {"a": True, "b": "y", "c": [0]})[0]
    assert conditions_match(t, {"a": 1, "b": "y", "c": [0]}) == (False, "a is 1, not != 1")
    assert conditions_match(t, {"a": 2, "b": "y", "c": []}) == (False, "c.0 is missing")
    assert conditions_match(t, {"a": 2, "b": "y", "c": [0], "d": None}) == (False, "d is present")
    long = conditions_match(trigger(), {"data": {"runStatus": "x" * 500}})[1]
    assert len(long) < 200


def test_parameters_are_templated_from_payload_and_safe_headers() -> None:
    t = trigger(
        action={"report": "daily-account-orders", "parameters": {"as_of": "{{ payload.day }}"}, "dry_run": True}
    )
    params = action_parameters(t, {"day": "2026-01-02"}, {"X-GitHub-Event": "release"})
    assert params == {"report_id": "daily-account-orders", "parameters": {"as_of": "2026-01-02"}, "dry_run": True}
    headers = template_headers({"X-GitHub-Event": "push", "Authorization": "abc", "webhook-signature": "v1,x"})
    assert headers == {"x_github_event": "push"}
    flow = trigger(action={"flow": "refresh", "parameters": {"upstream": "{{ headers.x_github_event }}"}})
    assert action_parameters(flow, {}, {"X-GitHub-Event": "push"}) == {"upstream": "push"}


def test_a_template_naming_what_the_payload_lacks_or_an_object_is_refused() -> None:
    with pytest.raises(RequestError, match=r"payload\.data\.runId"):
        action_parameters(trigger(), {"data": {}}, {})
    with pytest.raises(RequestError, match="names an object"):
        action_parameters(trigger(), {"data": {"runId": {"$ref": {"block_document_id": "x"}}}}, {})
    secret = trigger(action={"flow": "refresh", "parameters": {"x": "{{ headers.authorization }}"}})
    with pytest.raises(RequestError):
        action_parameters(secret, {}, {"Authorization": "abc"})


def test_run_keys_are_valid_and_bounded() -> None:
    from bulletin.store import check_run_key

    assert webhook_run_key("t", "wev_2L6ZDoilyiWzKkSA59Gmc2d7FDD") == "hook:t:wev_2L6ZDoilyiWzKkSA59Gmc2d7FDD"
    for message in ("has spaces/and slashes", "x" * 300, "é"):
        key = webhook_run_key("t" * 100, message)
        assert check_run_key(key) == key
    assert refresh_run_key("r", "orders", "12345") == "r:after:orders:12345"
    assert check_run_key(refresh_run_key("r" * 128, "s" * 128, "../x y"))


def report(rid: str, dataset: str, depends_on: list[str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(id=rid, dataset=dataset, **({"depends_on": depends_on} if depends_on is not None else {}))


def test_dependents_by_dataset_and_by_report() -> None:
    reports = {
        "a": report("a", "orders"),
        "b": report("b", "sales", ["a"]),
        "c": report("c", "orders", ["b"]),
        "d": report("d", "sales"),
    }
    assert find_dependents(reports, dataset="orders") == ["a", "c"]
    assert find_dependents(reports, report_id="a") == ["b"]
    assert find_dependents(reports, report_id="d") == []
    assert find_dependents(reports, report_id="a", dataset="sales") == ["b", "d"]
    with pytest.raises(DefinitionError):
        find_dependents(reports)
    check_no_cycles(reports)
    reports["a"] = report("a", "orders", ["c"])
    with pytest.raises(DefinitionError, match="a -> c -> b -> a"):
        check_no_cycles(reports)


def test_serve_access_log_drops_query_strings() -> None:
    from bulletin.edge.api.server import NoQueryString

    args = ("127.0.0.1:5000", "POST", "/v1/hooks/x?token=abc", "1.1", 202)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)
    assert NoQueryString().filter(record)
    assert "abc" not in record.getMessage() and "/v1/hooks/x" in record.getMessage()
