"""The demo warehouse: deterministic, complete, and shaped so every demo report has data."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from bulletin.demo_data import (
    DEMO_DAYS,
    DEMO_END_DATE,
    REGIONS,
    build_demo_warehouse,
    demo_end_date,
    demo_warehouse_ready,
    yesterday,
)
from bulletin.errors import ConfigError
from bulletin.models import Recipient

ROWS = 20_000


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "warehouse.duckdb"
    info = build_demo_warehouse(path, rows=ROWS, end_date=DEMO_END_DATE)
    assert info.rows == ROWS
    assert info.end_date == DEMO_END_DATE
    assert info.bytes == path.stat().st_size
    return path


@pytest.fixture(scope="module")
def con(warehouse):
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        yield connection


def one(con, sql: str):
    return con.execute(sql).fetchone()


def test_sales_has_the_documented_shape(con):
    columns = {row[0]: row[1] for row in con.execute("DESCRIBE sales").fetchall()}
    assert columns == {
        "order_id": "BIGINT",
        "order_date": "DATE",
        "region": "VARCHAR",
        "country": "VARCHAR",
        "product": "VARCHAR",
        "category": "VARCHAR",
        "customer_id": "INTEGER",
        "customer_name": "VARCHAR",
        "account_id": "VARCHAR",
        "quantity": "INTEGER",
        "unit_price": "DECIMAL(10,2)",
        "amount": "DECIMAL(12,2)",
    }
    rows, orders, first, last = one(
        con, "SELECT count(*), count(DISTINCT order_id), min(order_date), max(order_date) FROM sales"
    )
    assert rows == orders == ROWS
    assert last == DEMO_END_DATE
    assert first == DEMO_END_DATE - timedelta(days=DEMO_DAYS - 1)


def test_sales_values_are_consistent(con):
    regions, products, categories, accounts = one(
        con,
        "SELECT count(DISTINCT region), count(DISTINCT product), count(DISTINCT category), "
        "count(DISTINCT account_id) FROM sales",
    )
    assert (regions, categories, accounts) == (6, 6, 200)
    assert 35 <= products <= 45
    assert one(con, "SELECT count(*) FROM sales WHERE amount <> quantity * unit_price OR quantity < 1")[0] == 0
    assert one(con, "SELECT count(*) FROM sales WHERE NOT regexp_full_match(account_id, 'ACC-[0-9]{4}')")[0] == 0
    # order ids follow the dates
    assert (
        one(
            con,
            "SELECT count(*) FROM (SELECT order_date < lag(order_date) OVER (ORDER BY order_id) AS back "
            "FROM sales) WHERE back",
        )[0]
        == 0
    )


def test_one_account_per_customer(con):
    assert one(con, "SELECT count(*), count(DISTINCT account_id), count(DISTINCT customer_id) FROM customers") == (
        200,
        200,
        200,
    )
    mismatched = one(
        con,
        "SELECT count(*) FROM sales s JOIN customers c USING (customer_id) "
        "WHERE s.account_id <> c.account_id OR s.region <> c.region OR s.customer_name <> c.customer_name",
    )
    assert mismatched[0] == 0


def test_orders_view_serves_the_daily_report(con):
    columns = [row[0] for row in con.execute("DESCRIBE orders").fetchall()]
    assert columns == ["order_id", "order_date", "account_id", "customer_name", "product", "quantity", "amount"]
    without_orders = con.execute(
        "SELECT m.account_id FROM account_managers m LEFT JOIN orders o "
        "ON o.account_id = m.account_id AND o.order_date = ? GROUP BY 1 HAVING count(o.order_id) = 0",
        [DEMO_END_DATE],
    ).fetchall()
    assert without_orders == []


def test_every_region_has_rows_in_the_last_seven_days(con):
    recent = con.execute(
        "SELECT DISTINCT region FROM sales WHERE order_date > ?", [DEMO_END_DATE - timedelta(days=7)]
    ).fetchall()
    assert {r[0] for r in recent} == set(REGIONS)


@pytest.mark.parametrize(("table", "scope"), [("regional_managers", "region"), ("account_managers", "account_id")])
def test_audience_tables_hold_valid_recipients(con, table, scope):
    rows = con.execute(f"SELECT ref, email, name, org, {scope} FROM {table}").fetchall()
    assert len(rows) >= 8
    for ref, email, name, org, _ in rows:
        Recipient(ref=ref, email=email, name=name, org=org)  # the other side's model accepts every row
        assert re.fullmatch(r"[a-z0-9-]+", ref)
        assert email.endswith(("@example.com", "@example.org"))
    assert len({r[0] for r in rows}) == len(rows)
    known = {r[0] for r in con.execute(f"SELECT DISTINCT {scope} FROM sales").fetchall()}
    assert {r[4] for r in rows} <= known
    if scope == "region":
        assert {r[4] for r in rows} == set(REGIONS)


def test_the_build_is_deterministic(tmp_path):
    digest = (
        "SELECT count(*), sum(order_id * quantity), sum(amount), string_agg(customer_name || product, '' "
        "ORDER BY order_id) FROM sales"
    )
    results = []
    for name in ("a.duckdb", "b.duckdb"):
        build_demo_warehouse(tmp_path / name, rows=3_000, end_date=DEMO_END_DATE)
        with duckdb.connect(str(tmp_path / name), read_only=True) as con:
            results.append(one(con, digest))
    assert results[0] == results[1]


def test_a_rebuild_replaces_the_file_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "w.duckdb"
    build_demo_warehouse(path, rows=1_000, end_date=date(2025, 1, 31))
    build_demo_warehouse(path, rows=1_500, end_date=date(2025, 3, 31))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.duckdb"]
    with duckdb.connect(str(path), read_only=True) as con:
        assert one(con, "SELECT count(*), max(order_date) FROM sales") == (1_500, date(2025, 3, 31))


def test_ready_only_for_a_complete_warehouse(warehouse, tmp_path):
    assert demo_warehouse_ready(warehouse)
    assert demo_end_date(warehouse) == DEMO_END_DATE
    # Asked for sales up to a later day (yesterday, by the demo and serve), it is stale: they rebuild it.
    assert demo_warehouse_ready(warehouse, through=DEMO_END_DATE)
    assert not demo_warehouse_ready(warehouse, through=DEMO_END_DATE + timedelta(days=1))
    assert demo_end_date(tmp_path / "missing.duckdb") is None
    assert not demo_warehouse_ready(tmp_path / "missing.duckdb")
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"not a database")
    assert not demo_warehouse_ready(junk)
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE TABLE sales (x INTEGER)")
    assert not demo_warehouse_ready(other)


def test_the_sales_end_yesterday_unless_told_otherwise(tmp_path):
    info = build_demo_warehouse(tmp_path / "w.duckdb", rows=1_000)
    assert info.end_date == yesterday() == demo_end_date(tmp_path / "w.duckdb")
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert one(
            con,
            "SELECT max(order_date), count(DISTINCT account_id) FILTER (order_date = max_day) FROM sales, "
            "(SELECT max(order_date) AS max_day FROM sales)",
        ) == (yesterday(), 200)
    assert yesterday(date(2026, 3, 1)) == date(2026, 2, 28)


@pytest.mark.parametrize("rows", [0, 999, -1])
def test_too_few_rows_are_refused(tmp_path, rows):
    with pytest.raises(ConfigError):
        build_demo_warehouse(tmp_path / "w.duckdb", rows=rows)
