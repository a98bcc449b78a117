"""Datasets declare how a reader sees each column (currency with its code, integer, decimals, percent, dates);
a bad format is refused when the file loads, naming the column."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulletin.datasets import ColumnFormat, load_datasets
from bulletin.errors import DefinitionError
from bulletin.settings import PROJECT_ROOT

HEAD = """\
id: things
title: Things
source: things
columns:
  - {name: id, type: integer}
"""


def load(tmp_path: Path, column: str) -> dict[str, ColumnFormat]:
    (tmp_path / "things.yaml").write_text(HEAD + f"  - {column}\n", encoding="utf-8")
    return load_datasets(tmp_path)["things"].formats()


def test_formats_load_in_full_and_short_forms(tmp_path):
    assert load(tmp_path, "{name: amount, type: decimal, format: {kind: currency, currency: EUR}}") == {
        "amount": ColumnFormat(kind="currency", currency="EUR")
    }
    assert load(tmp_path, "{name: qty, type: integer, format: integer}")["qty"].kind == "integer"
    assert load(tmp_path, "{name: share, format: {kind: percent, decimals: 2}}")["share"].decimals == 2
    assert load(tmp_path, "{name: day, type: date, format: date}")["day"].kind == "date"


def test_undeclared_columns_have_no_format(tmp_path):
    assert load(tmp_path, "{name: amount, type: decimal}") == {}


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        ("{name: amount, format: {kind: currency}}", "needs its ISO 4217 code"),
        ("{name: amount, format: {kind: currency, currency: EUX}}", "'EUX' is not an ISO 4217 currency code"),
        ("{name: amount, format: {kind: currency, currency: eur}}", "not an ISO 4217"),
        ("{name: amount, format: {kind: money}}", "kind"),
        ("{name: amount, format: {kind: decimal, decimals: 11}}", "decimals"),
        ("{name: amount, format: {kind: integer, decimals: 2}}", "'decimals' does not apply"),
        ("{name: amount, format: {kind: decimal, currency: EUR}}", "'currency' goes with kind currency"),
        ("{name: amount, format: {kind: decimal, colour: red}}", "colour"),
        ("{name: amount, type: string, format: integer}", "does not suit a string column"),
        ("{name: amount, type: date, format: percent}", "does not suit a date column"),
    ],
)
def test_a_bad_format_names_the_column_and_the_reason(tmp_path, column, reason):
    with pytest.raises(DefinitionError) as info:
        load(tmp_path, column)
    assert "column 'amount'" in str(info.value)
    assert reason in str(info.value)
    assert str(tmp_path / "things.yaml") in str(info.value)


def test_the_shipped_sales_dataset_declares_its_money_in_euros():
    sales = load_datasets(PROJECT_ROOT / "deployments" / "datasets")["sales"]
    assert sales.formats()["amount"] == ColumnFormat(kind="currency", currency="EUR")
    assert sales.formats()["quantity"].kind == "integer"


def test_totals_true_adds_up_the_declared_amounts_only(tmp_path):
    text = HEAD + (
        "  - {name: amount, type: decimal, format: {kind: currency, currency: EUR}}\n"
        "  - {name: share, type: decimal, format: percent}\n"
        "  - {name: qty, type: integer, format: integer}\n"
    )
    (tmp_path / "things.yaml").write_text(text, encoding="utf-8")
    spec = load_datasets(tmp_path)["things"]
    assert spec.totals_columns(True, ["id", "amount", "share", "qty"]) == ("amount", "qty")
    assert spec.totals_columns(["qty", "id"], ["id", "qty"]) == ("id", "qty")
    assert spec.totals_columns(False, ["id", "amount"]) == ()
