"""The SQLAlchemy path of the warehouse adapter, against a real SQLite file holding a copy of the demo sales."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from bulletin.datasets import load_datasets
from bulletin.demo_data import DEMO_END_DATE, build_demo_warehouse
from bulletin.errors import ConfigError, TransientError
from bulletin.models import Filter, QuerySpec
from bulletin.settings import PROJECT_ROOT
from tasks.tokens import TokenClaims
from tasks.warehouse import Warehouse, read_audience, run_aggregate, run_query
from tasks.warehouse.base import CompiledQuery
from tasks.warehouse.sql import SQLAlchemyBackend, redact_url

REGISTRY = load_datasets(PROJECT_ROOT / "deployments" / "datasets")
ROWS = 3_000


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same rows in DuckDB and in SQLite (dates as ISO text, money as REAL: SQLite's own types)."""
    folder = tmp_path_factory.mktemp("sqlite")
    duck = folder / "warehouse.duckdb"
    build_demo_warehouse(duck, rows=ROWS, end_date=DEMO_END_DATE)
    lite = folder / "warehouse.sqlite"
    with duckdb.connect(str(duck), read_only=True) as src:
        sales = src.execute("SELECT * FROM sales ORDER BY order_id").fetchall()
        managers = src.execute("SELECT ref, email, name, org, region FROM regional_managers").fetchall()
    con = sqlite3.connect(lite)
    con.execute(
        "CREATE TABLE sales (order_id INTEGER PRIMARY KEY, order_date TEXT, region TEXT, country TEXT, product TEXT,"
        " category TEXT, customer_id INTEGER, customer_name TEXT, account_id TEXT, quantity INTEGER,"
        " unit_price REAL, amount REAL)"
    )
    plain = [
        tuple(v.isoformat() if isinstance(v, date) else float(v) if isinstance(v, Decimal) else v for v in r)
        for r in sales
    ]
    con.executemany(f"INSERT INTO sales VALUES ({', '.join('?' * 12)})", plain)
    con.execute(
        "CREATE VIEW orders AS SELECT order_id, order_date, account_id, customer_name, product, quantity, amount "
        "FROM sales"
    )
    con.execute("CREATE TABLE regional_managers (ref TEXT, email TEXT, name TEXT, org TEXT, region TEXT)")
    con.executemany("INSERT INTO regional_managers VALUES (?, ?, ?, ?, ?)", managers)
    con.commit()
    con.close()
    return duck, lite


@pytest.fixture(scope="module")
def lite(warehouses):
    with Warehouse(f"sqlite:///{warehouses[1]}") as warehouse:
        yield warehouse


def claims(scope: dict[str, Any]) -> TokenClaims:
    groups = {ds: [[Filter.model_validate(f) for f in g] for g in value] for ds, value in scope.items()}
    now = datetime(2026, 10, 31, tzinfo=UTC)
    return TokenClaims("sub", "jti", now, now + timedelta(minutes=5), "*", groups, "kid")


EMEA = {"sales": [[{"field": "region", "op": "=", "value": "EMEA-North"}]]}
LAST_WEEK = [
    Filter(field="order_date", op=">=", value=(DEMO_END_DATE - timedelta(days=6)).isoformat()),
    Filter(field="order_date", op="<=", value=DEMO_END_DATE.isoformat()),
]


def rows_of(result) -> list[dict[str, Any]]:
    return [row for batch in result for row in batch.to_pylist()]


def test_sqlite_and_duckdb_return_the_same_rows(warehouses, lite):
    spec = QuerySpec(dataset="sales", columns=["order_id", "order_date", "region", "amount"], filters=LAST_WEEK)
    with Warehouse(str(warehouses[0])) as duck:
        expected = rows_of(run_query(claims(EMEA), spec, REGISTRY, duck, batch_rows=50))
    got = rows_of(run_query(claims(EMEA), spec, REGISTRY, lite, batch_rows=50))
    assert expected
    assert [r["order_id"] for r in got] == [r["order_id"] for r in expected]
    assert [r["order_date"] for r in got] == [r["order_date"] for r in expected]
    assert [r["amount"] for r in got] == pytest.approx([float(r["amount"]) for r in expected])


def test_sqlite_streams_typed_batches_within_scope(lite):
    result = run_query(claims(EMEA), QuerySpec(dataset="sales"), REGISTRY, lite, batch_rows=100)
    assert result.schema.field("order_date").type == pa.date32()  # declared type, though SQLite holds text
    assert result.schema.field("order_id").type == pa.int64()
    assert result.schema.field("amount").type == pa.float64()
    batches = list(result)
    assert len(batches) > 3
    assert all(b.num_rows <= 100 and b.schema == result.schema for b in batches)
    assert {row["region"] for b in batches for row in b.to_pylist()} == {"EMEA-North"}


def test_sqlite_limit_and_truncation(lite):
    result = run_query(claims(EMEA), QuerySpec(dataset="sales", limit=15), REGISTRY, lite, batch_rows=10)
    assert [b.num_rows for b in result] == [10, 5]
    assert result.truncated


def test_sqlite_empty_result_still_has_a_schema(lite):
    spec = QuerySpec(dataset="sales", filters=[Filter(field="product", op="=", value="no such product")])
    result = run_query(claims(EMEA), spec, REGISTRY, lite, batch_rows=10)
    assert result.schema.names == REGISTRY["sales"].column_names
    assert result.schema.field("order_date").type == pa.date32()
    assert list(result) == []


@pytest.mark.parametrize("value", ["' OR 1=1 --", "x'); DROP TABLE sales; --"])
def test_sqlite_injection_matches_nothing(lite, warehouses, value):
    scope = {"sales": [[{"field": "region", "op": "=", "value": value}]]}
    assert rows_of(run_query(claims(scope), QuerySpec(dataset="sales"), REGISTRY, lite, batch_rows=10)) == []
    spec = QuerySpec(dataset="sales", filters=[Filter(field="customer_name", op="contains_substring", value=value)])
    assert rows_of(run_query(claims(EMEA), spec, REGISTRY, lite, batch_rows=10)) == []
    with sqlite3.connect(warehouses[1]) as con:
        assert con.execute("SELECT count(*) FROM sales").fetchone()[0] == ROWS


def test_sqlite_aggregate_and_audience(lite):
    series = run_aggregate(
        claims(EMEA), QuerySpec(dataset="sales", filters=LAST_WEEK), REGISTRY, lite,
        category="category", measure="amount", agg="sum",
    )  # fmt: skip
    rows = rows_of(
        run_query(claims(EMEA), QuerySpec(dataset="sales", filters=LAST_WEEK), REGISTRY, lite, batch_rows=500)
    )
    assert sum(value for _, value in series) == pytest.approx(sum(r["amount"] for r in rows))
    managers = read_audience(
        lite, "regional_managers", ["ref", "region"], [Filter(field="region", op="=", value="EMEA-North")]
    )
    assert [m["ref"] for m in managers] == ["rm-emea-north", "rm-emea-north-2"]


def test_identifiers_are_requoted_by_the_dialect():
    backend = SQLAlchemyBackend("sqlite://")
    try:
        statement = backend.statement(
            CompiledQuery('SELECT "order", "region" FROM "main"."sales" WHERE ("region" IN (?, ?))', ["a", "b"], [])
        )
        assert str(statement) == 'SELECT "order", region FROM main.sales WHERE (region IN (:p0, :p1))'
    finally:
        backend.close()


def test_passwords_never_reach_messages():
    url = "postgresql://bulletin:s3cret-pw@127.0.0.1:1/warehouse"
    assert "s3cret-pw" not in redact_url(url)
    with pytest.raises((ConfigError, TransientError)) as info, Warehouse(url) as warehouse:
        warehouse.fetch_all(CompiledQuery("SELECT 1", [], ["x"]))
    assert "s3cret-pw" not in str(info.value)
    assert "127.0.0.1" in str(info.value)


def test_an_unreachable_database_is_transient(tmp_path):
    with Warehouse(f"sqlite:///{tmp_path}/no/such/dir/w.sqlite") as warehouse, pytest.raises(TransientError) as info:
        warehouse.stream(CompiledQuery("SELECT 1", [], ["x"]), 10)
    assert info.value.retryable


def test_a_missing_table_is_a_config_error(lite):
    with pytest.raises(ConfigError, match="does not match"):
        lite.stream(CompiledQuery('SELECT "x" FROM "ghost"', [], ["x"]), 10)


def test_duckdb_threads_can_be_set_for_a_runs_small_queries(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    with Warehouse(str(path), duckdb_threads=1) as warehouse:
        (threads,) = warehouse.fetch_all(CompiledQuery("SELECT current_setting('threads') AS t", [], ["t"]))
    assert int(threads["t"]) == 1
