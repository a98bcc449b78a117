"""One scan for several recipients (tasks/warehouse/combined.py): each member gets, row for row, what its own single
query returns, and never a row its own filters exclude. On DuckDB and on the SQLAlchemy path (SQLite here; PostgreSQL
when BULLETIN_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from bulletin.datasets import load_datasets
from bulletin.demo_data import DEMO_END_DATE, build_demo_warehouse
from bulletin.errors import QueryError, ScopeError
from bulletin.models import Filter, OrderBy, QuerySpec
from bulletin.settings import PROJECT_ROOT
from tasks.warehouse import Warehouse, run_query
from tasks.warehouse.base import CompiledQuery
from tasks.warehouse.combined import Member, run_combined
from tests.fixtures.database import POSTGRES_URL, postgres_schema, requires_postgres
from tests.tasks.warehouse.test_query import INJECTIONS, claims
from tests.tasks.warehouse.test_warehouse import lite, warehouses  # noqa: F401 - fixtures: the SQLite copy

REGISTRY = load_datasets(PROJECT_ROOT / "deployments" / "datasets")
BATCH = 97  # small batches: a member's rows and its limit fall across many of them


@pytest.fixture(scope="module")
def duck_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo warehouse with some NULL regions and countries: a NULL comparison must count as no match."""
    path: Path = tmp_path_factory.mktemp("combined") / "warehouse.duckdb"
    build_demo_warehouse(path, rows=6_000, end_date=DEMO_END_DATE)
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE sales SET region = NULL WHERE order_id % 11 = 0")
        con.execute("UPDATE sales SET country = NULL WHERE order_id % 13 = 0")
    return path


@pytest.fixture(scope="module")
def duck(duck_path: Path) -> Iterator[Warehouse]:
    with Warehouse(str(duck_path)) as warehouse:
        yield warehouse


_PG_SALES = (
    "CREATE TABLE sales (order_id BIGINT PRIMARY KEY, order_date DATE, region TEXT, country TEXT, product TEXT,"
    " category TEXT, customer_id BIGINT, customer_name TEXT, account_id TEXT, quantity BIGINT,"
    " unit_price NUMERIC(10, 2), amount NUMERIC(12, 2))"
)


@pytest.fixture(scope="module")
def pg(duck_path: Path) -> Iterator[Warehouse]:
    """The same rows (NULLs included) in a fresh PostgreSQL schema, read through the SQLAlchemy back-end."""
    with duckdb.connect(str(duck_path), read_only=True) as src:
        rows = src.execute("SELECT * FROM sales ORDER BY order_id").fetchall()
    with postgres_schema(POSTGRES_URL) as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(_PG_SALES)
            conn.exec_driver_sql(f"INSERT INTO sales VALUES ({', '.join(['%s'] * 12)})", rows)
        engine.dispose()
        with Warehouse(url) as warehouse:
            yield warehouse


def scope(*groups: list[tuple[str, str, Any]]) -> Any:
    return claims({"sales": [[{"field": f, "op": op, "value": v} for f, op, v in g] for g in groups]})


def sales(**kwargs: Any) -> QuerySpec:
    kwargs.setdefault("order", [OrderBy(field="order_id", direction="asc")])
    return QuerySpec(dataset="sales", **kwargs)


def single(wh: Warehouse, member: Member) -> tuple[list[dict[str, Any]], bool]:
    result = run_query(member.claims, member.query, REGISTRY, wh, batch_rows=BATCH)
    rows = [row for batch in result for row in batch.to_pylist()]
    return rows, result.truncated


def combined(wh: Warehouse, members: list[Member]) -> tuple[dict[int, list[dict[str, Any]]], Any]:
    result = run_combined(members, REGISTRY, wh, batch_rows=BATCH)
    rows: dict[int, list[dict[str, Any]]] = {p: [] for p in result.positions}
    sizes: dict[int, list[int]] = {p: [] for p in result.positions}
    for parts in result:
        for position, batch in parts:
            assert batch.schema == result.schema  # the flags never reach a writer
            rows[position].extend(batch.to_pylist())
            sizes[position].append(batch.num_rows)
    # Cut as a single query's stream is (its writers' output depends on it): full batches, the last one shorter.
    assert all(set(s[:-1]) <= {BATCH} and (not s or 0 < s[-1] <= BATCH) for s in sizes.values())
    return rows, result


def assert_same_as_single(wh: Warehouse, members: list[Member]) -> dict[int, list[dict[str, Any]]]:
    rows, result = combined(wh, members)
    assert sorted(result.positions) == sorted(set(range(len(members))) - set(result.errors))
    for position in result.positions:
        alone, truncated = single(wh, members[position])
        assert rows[position] == alone, f"member {position} differs from its single query"
        assert result.rows[position] == len(alone)
        assert result.truncated[position] == truncated
    return rows


DISJOINT = [scope([("region", "=", "EMEA-North")]), scope([("region", "=", "APAC")]), scope([("region", "=", "LATAM")])]
OVERLAPPING = [
    scope([("region", "=", "EMEA-North")]),
    scope([("region", "is_one_of", ["EMEA-North", "EMEA-South"])]),
    scope([("country", "=", "United Kingdom")]),
]
OR_OF_AND = [
    scope([("region", "=", "AMER-East"), ("category", "=", "Hardware")], [("country", "=", "Japan")]),
    scope([("region", "!=", "AMER-East"), ("country", "is_not_one_of", ["Japan", "Brazil"])]),
    scope([("product", "starts_with", "A")], [("customer_name", "contains_substring", "'")]),
]


@pytest.mark.parametrize("scopes", [DISJOINT, OVERLAPPING, OR_OF_AND], ids=["disjoint", "overlapping", "or-of-and"])
def test_each_member_gets_exactly_its_single_querys_rows(duck, scopes):
    assert_same_as_single(duck, [Member(c, sales()) for c in scopes])


def test_disjoint_members_never_see_each_others_rows(duck):
    rows = assert_same_as_single(duck, [Member(c, sales()) for c in DISJOINT])
    for position, region in enumerate(["EMEA-North", "APAC", "LATAM"]):
        assert rows[position], "the test needs rows for every member"
        assert {r["region"] for r in rows[position]} == {region}


def test_a_null_comparison_is_no_match(duck):
    members = [Member(scope([("region", "!=", "APAC")]), sales()), Member(scope([("country", "!=", "Japan")]), sales())]
    rows = assert_same_as_single(duck, members)
    assert all(r["region"] is not None for r in rows[0])
    assert all(r["country"] is not None for r in rows[1])


def test_a_member_over_its_limit_is_cut_as_its_single_query_is(duck):
    q = sales(limit=150)
    members = [
        Member(scope([("region", "=", "EMEA-North")]), q),  # hundreds of rows: cut at 150, truncated
        Member(scope([("account_id", "=", "ACC-0007")]), q),  # one customer's few rows: whole, not truncated
        Member(scope([("country", "=", "Chile")]), q),
    ]
    rows, result = combined(duck, members)
    assert len(rows[0]) == 150 and result.truncated[0]
    assert 0 < len(rows[1]) < 150 and not result.truncated[1]
    assert_same_as_single(duck, members)
    # Every member cut: the scan stops early, and still each gets its single query's rows.
    assert_same_as_single(duck, [Member(c, sales(limit=40)) for c in OVERLAPPING])


def test_the_query_filters_apply_to_each_member_as_to_its_single_query(duck):
    last_month = [Filter(field="order_date", op=">=", value=DEMO_END_DATE.replace(day=1).isoformat())]
    members = [Member(c, sales(filters=last_month, columns=["order_id", "region", "amount"])) for c in OVERLAPPING]
    assert_same_as_single(duck, members)


def test_an_empty_scope_is_refused_alone(duck):
    members = [Member(DISJOINT[0], sales()), Member(claims({}), sales()), Member(DISJOINT[1], sales())]
    _, result = combined(duck, members)
    assert isinstance(result.errors[1], ScopeError)
    assert result.positions == [0, 2]
    assert_same_as_single(duck, members)


def test_a_member_whose_token_does_not_grant_the_dataset_is_refused_alone(duck):
    other = claims({"orders": [[{"field": "account_id", "op": "=", "value": "ACC-0001"}]]}, dataset_ids=["orders"])
    members = [Member(DISJOINT[0], sales()), Member(other, sales())]
    _, result = combined(duck, members)
    assert isinstance(result.errors[1], ScopeError) and result.positions == [0]


@pytest.mark.parametrize("value", INJECTIONS)
def test_values_are_bound_never_in_the_sql(duck, value):
    members = [Member(DISJOINT[0], sales()), Member(scope([("region", "=", value)]), sales())]
    seen: list[CompiledQuery] = []
    stream = duck.stream
    duck.stream = lambda compiled, batch_rows: seen.append(compiled) or stream(compiled, batch_rows)
    try:
        rows, _ = combined(duck, members)
    finally:
        del duck.stream
    assert len(seen) == 1 and value not in seen[0].sql and seen[0].params.count(value) == 2  # the flag, the WHERE
    assert rows[1] == []
    assert_same_as_single(duck, members)


def test_members_of_different_queries_are_not_combined(duck):
    members = [Member(DISJOINT[0], sales()), Member(DISJOINT[1], sales(columns=["order_id"]))]
    with pytest.raises(QueryError, match="one by one"):
        run_combined(members, REGISTRY, duck, batch_rows=BATCH)


def test_the_sqlalchemy_path_splits_the_same_way(lite):  # noqa: F811 - the imported fixture
    members = [Member(c, sales(limit=120)) for c in [*DISJOINT, *OR_OF_AND]]
    assert_same_as_single(lite, members)


@requires_postgres
def test_postgresql_splits_the_same_way_nulls_and_limits_included(pg):
    q = sales(limit=120)
    members = [Member(c, q) for c in [*DISJOINT, *OVERLAPPING, *OR_OF_AND]]
    members.append(Member(scope([("region", "!=", "APAC")]), q))  # NULL regions: no match
    members.append(Member(claims({}), q))  # no scope: refused alone
    rows = assert_same_as_single(pg, members)
    assert all(r["region"] is not None for r in rows[len(members) - 2])
    assert len(rows[0]) == 120
