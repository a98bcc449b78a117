"""A report checked against the dataset registry and its audience (bulletin.report_checks): one valid report, then
one thing broken per case, each refused with its field path and the bad value. Every shipped report passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bulletin.datasets import load_datasets
from bulletin.report_checks import check_report, validate_reports
from bulletin.reports import ReportDefinition, load_reports
from bulletin.settings import PROJECT_ROOT

REPORTS = PROJECT_ROOT / "deployments" / "reports"
REGISTRY = load_datasets(PROJECT_ROOT / "deployments" / "datasets")
VALID: dict[str, Any] = yaml.safe_load((REPORTS / "weekly-regional-sales.yaml").read_text())
INLINE = {
    "recipients": [
        {"ref": "rm-a", "email": "a@example.com", "attributes": {"region": "APAC", "team": "x"}},
        {"ref": "rm-b", "email": "b@example.com", "attributes": {"region": "EMEA"}},
    ]
}


def report(**change: Any) -> ReportDefinition:
    return ReportDefinition.model_validate({**VALID, **change})


def problems(**change: Any) -> list[str]:
    return [str(p) for p in check_report(report(**change), REGISTRY)]


def region_filter(**change: Any) -> dict[str, Any]:
    return {"field": "region", "op": "=", "value": "{{ recipient.region }}", **change}


def test_every_shipped_report_passes() -> None:
    for shipped in load_reports(REPORTS).values():
        assert check_report(shipped, REGISTRY) == [], shipped.id


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"dataset": "salez", "secure_filters": {"salez": [region_filter()]}},
            ["dataset: 'salez' is not a dataset (known: orders, sales)", "secure_filters.salez: 'salez' is not"],
        ),
        ({"columns": ["order_date", "order_dat"]}, ["columns.1: 'order_dat' is not a column of dataset 'sales'"]),
        ({"column_labels": {"amunt": "Amount"}}, ["column_labels.amunt: 'amunt' is not a column"]),
        (
            {"filters": [{"field": "order_dat", "op": "=", "value": "2026-01-01"}]},
            ["filters.0.field: 'order_dat' is not a column of dataset 'sales'"],
        ),
        (
            {"filters": [{"field": "unit_price", "op": ">", "value": 1}]},
            ["filters.0.field: 'unit_price' is not filterable in dataset 'sales'"],
        ),
        (
            {"filters": [{"field": "amount", "op": "=", "value": 1}]},
            ["filters.0.op: '=' is not allowed on 'amount' in dataset 'sales' (allowed: >, <, >=, <=)"],
        ),
        ({"order": [{"field": "amout", "direction": "desc"}]}, ["order.0.field: 'amout' is not a column"]),
        ({"chart": {"category": "prodct", "measure": "amount"}}, ["chart.category: 'prodct' is not a column"]),
        ({"chart": {"category": "product", "measure": "amnt"}}, ["chart.measure: 'amnt' is not a column"]),
        ({"chart": {"category": "product", "measure": "region"}}, ["chart.measure: 'region' is a string column"]),
        ({"totals": ["amount", "amnt"]}, ["totals.1: 'amnt' is not a column"]),
        ({"totals": ["region"]}, ["totals.0: 'region' is not a column of amounts that add up"]),
        (
            {"secure_filters": {"sales": [region_filter(field="regoin")]}},
            ["secure_filters.sales.0.field: 'regoin' is not a column of dataset 'sales'"],
        ),
        (
            {"secure_filters": {"sales": [region_filter(op="starts_with")]}},
            ["secure_filters.sales.0.op: 'starts_with' is not allowed on 'region'"],
        ),
        (
            {"secure_filters": {"sales": [[region_filter()], [region_filter(field="amount", op="<", value=5)]]}},
            [],
        ),
        (
            {"secure_filters": {"sales": [[region_filter()], [region_filter(field="cuntry")]]}},
            ["secure_filters.sales.1.0.field: 'cuntry' is not a column"],
        ),
        ({"secure_filters": {"sales": []}}, ["secure_filters.sales: [] is empty, and the dataset requires"]),
        (
            {"secure_filters": {"sales": [region_filter()], "ordrs": [region_filter()]}},
            ["secure_filters.ordrs: 'ordrs' is not a dataset"],
        ),
        (
            {"secure_filters": {"sales": [region_filter(value="{{ recipient.regoin }}")]}},
            [
                "secure_filters.sales.0.value: '{{ recipient.regoin }}' names recipient.regoin, which the audience "
                "does not provide (it provides email, locale, org, ref, region, timezone)"
            ],
        ),
        (
            {"secure_filters": {"sales": [region_filter(op="is_one_of", value=["APAC", "{{ recipient.zone }}"])]}},
            ["secure_filters.sales.0.value.1: '{{ recipient.zone }}' names recipient.zone"],
        ),
        (
            {"secure_filters": {"sales": [region_filter(value="{{ recipient.region | upper }}")]}},
            ["secure_filters.sales.0.value: '{{ recipient.region | upper }}' is not a template of the form"],
        ),
        (
            {"filters": [{"field": "customer_id", "op": "=", "value": "{{ recipient.customer }}"}]},
            ["filters.0.value: '{{ recipient.customer }}' names recipient.customer"],
        ),
        ({"secure_filters": {"sales": [region_filter(value="{{ recipient.ref }}")]}}, []),
    ],
)
def test_each_problem_names_the_field_path_and_the_bad_value(change: dict[str, Any], expected: list[str]) -> None:
    found = problems(**change)
    assert len(found) == len(expected), found
    for text, start in zip(found, expected, strict=True):
        assert text.startswith(start), (text, start)


def test_an_inline_audience_provides_what_every_recipient_has() -> None:
    assert problems(audience=INLINE) == []
    partial = problems(audience=INLINE, secure_filters={"sales": [region_filter(value="{{ recipient.team }}")]})
    assert partial == [
        "secure_filters.sales.0.value: '{{ recipient.team }}' names recipient.team, which recipient(s) rm-b do not have"
    ]
    # A run refuses up front only what would fail every recipient: rm-b alone fails, at run time.
    at_run = report(audience=INLINE, secure_filters={"sales": [region_filter(value="{{ recipient.team }}")]})
    assert check_report(at_run, REGISTRY, each_recipient=False) == []
    nobody = report(audience=INLINE, secure_filters={"sales": [region_filter(value="{{ recipient.tema }}")]})
    assert len(check_report(nobody, REGISTRY, each_recipient=False)) == 1


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ({"subject": "{{ title }} for {{ recipient.region }} ({{ recipient.name or recipient.email }})"}, []),
        ({"html": "<p>{{ recipient.get('region') }}</p>{% for f in files %}{{ f.name }}{% endfor %}"}, []),
        ({"subject": "{{ title "}, ["email.subject: '{{ title ' does not compile"]),
        ({"text": "{% if %}"}, ["email.text: '{% if %}' does not compile"]),
        ({"html": "{{ titel }}"}, ["email.html: '{{ titel }}' names 'titel', which email templates do not have"]),
        ({"subject": "{{ recipient.regoin }}"}, ["email.subject: '{{ recipient.regoin }}' names recipient.regoin"]),
        ({"text": "{{ recipient['regoin'] }}"}, ["email.text: \"{{ recipient['regoin'] }}\" names recipient.regoin"]),
    ],
)
def test_email_templates_compile_and_name_only_what_they_are_given(email: dict[str, str], expected: list[str]) -> None:
    found = problems(email=email)
    assert len(found) == len(expected), found
    for text, start in zip(found, expected, strict=True):
        assert text.startswith(start), (text, start)


def test_validate_reports_lists_every_problem_with_the_file(tmp_path: Path) -> None:
    bad = {**VALID, "columns": ["order_dat"], "secure_filters": {"sales": [region_filter(field="regoin")]}}
    (tmp_path / "weekly-regional-sales.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "daily-account-orders.yaml").write_text((REPORTS / "daily-account-orders.yaml").read_text())
    ok, errors = validate_reports(tmp_path, REGISTRY)
    assert ok == ["daily-account-orders"]
    path = tmp_path / "weekly-regional-sales.yaml"
    assert [str(e) for e in errors] == [
        f"{path}: columns.0: 'order_dat' is not a column of dataset 'sales'",
        f"{path}: secure_filters.sales.0.field: 'regoin' is not a column of dataset 'sales'",
    ]
    assert [e.field for e in errors] == ["columns.0", "secure_filters.sales.0.field"]
    assert validate_reports(tmp_path)[0] == ["daily-account-orders", "weekly-regional-sales"], "shape only"


def test_validate_names_an_inline_recipients_unknown_locale_or_zone() -> None:
    readers = {
        "recipients": [
            {"ref": "rm-a", "email": "a@example.com", "attributes": {"region": "APAC", "locale": "xx-XX"}},
            {"ref": "rm-b", "email": "b@example.com", "attributes": {"region": "EMEA", "timezone": "Mars/Base"}},
            {"ref": "rm-c", "email": "c@example.com", "attributes": {"region": "EMEA", "locale": "de-DE"}},
        ]
    }
    assert problems(audience=readers) == [
        "audience.recipients.0.attributes.locale: 'xx-XX' is not a locale CLDR knows (use e.g. en-GB, de-DE)",
        "audience.recipients.1.attributes.timezone: 'Mars/Base' is not an IANA time zone (use e.g. Europe/Berlin)",
    ]
    # A run refuses up front only what fails everyone: these recipients fail alone, at their delivery.
    assert check_report(report(audience=readers), REGISTRY, each_recipient=False) == []
