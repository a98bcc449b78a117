"""The query engine against a real (small) demo warehouse: scope ANDed, allowlists enforced, values bound, streamed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from bulletin.datasets import load_datasets
from bulletin.demo_data import DEMO_END_DATE, build_demo_warehouse
from bulletin.errors import ConfigError, DefinitionError, NotFoundError, QueryError, ScopeError
from bulletin.models import Filter, OrderBy, QuerySpec
from bulletin.settings import PROJECT_ROOT
from tasks.tokens import TokenClaims
from tasks.warehouse import Warehouse, read_audience, run_aggregate, run_query
from tasks.warehouse.query import build_aggregate, build_query, scope_for

REGISTRY = load_datasets(PROJECT_ROOT / "deployments" / "datasets")
SALES = REGISTRY["sales"]
INJECTIONS = ["' OR 1=1 --", "x'); DROP TABLE sales; --", '" OR ""="', "EMEA-North' OR 'a'='a"]


@pytest.fixture(scope="module")
def warehouse_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("query") / "warehouse.duckdb"
    build_demo_warehouse(path, rows=20_000, end_date=DEMO_END_DATE)
    return path


@pytest.fixture(scope="module")
def wh(warehouse_path):
    with Warehouse(str(warehouse_path)) as warehouse:
        yield warehouse


def claims(secure_filters: dict[str, Any] | None = None, dataset_ids: Any = "*") -> TokenClaims:
    """Verified claims as verify_token returns them (the token layer is tested in test_tokens.py)."""
    groups = {
        ds: [[Filter.model_validate(f) for f in group] for group in value]
        for ds, value in (secure_filters or {}).items()
    }
    now = datetime(2026, 10, 31, tzinfo=UTC)
    return TokenClaims("sub", "jti", now, now + timedelta(minutes=5), dataset_ids, groups, "kid")


def region(value: str, op: str = "=") -> dict[str, Any]:
    return {"field": "region", "op": op, "value": value}


def rows_of(result) -> list[dict[str, Any]]:
    return [row for batch in result for row in batch.to_pylist()]


def count_sales(path: Path, where: str = "TRUE", params: list[Any] | None = None) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute(f"SELECT count(*) FROM sales WHERE {where}", params or []).fetchone()
    assert row is not None
    return int(row[0])


def query(**kwargs: Any) -> QuerySpec:
    return QuerySpec(dataset=kwargs.pop("dataset", "sales"), **kwargs)


# --- What the SQL looks like ----------------------------------------------------------------------------------------


def test_values_are_bound_and_identifiers_quoted():
    compiled = build_query(
        SALES,
        query(columns=["region", "amount"], filters=[Filter(field="customer_name", op="=", value="' OR 1=1 --")]),
        [[Filter(field="region", op="=", value="EMEA-North")]],
    )
    assert compiled.sql == (
        'SELECT "region", "amount" FROM "sales" WHERE (("region" = ?)) AND ("customer_name" = ?) '
        'ORDER BY "order_id" ASC LIMIT 1000001'
    )
    assert compiled.params == ["EMEA-North", "' OR 1=1 --"]
    assert compiled.columns == ["region", "amount"]
    assert compiled.limit == SALES.max_limit


def test_all_declared_columns_by_default():
    compiled = build_query(SALES, query(), [[Filter(field="region", op="=", value="A")]])
    assert compiled.columns == SALES.column_names


# --- Scope: ANDed, never ORed; empty means deny ---------------------------------------------------------------------


def test_query_filters_narrow_the_scope_and_never_widen_it(wh):
    token = claims({"sales": [[region("EMEA-North")]]})
    result = run_query(token, query(filters=[Filter(**region("APAC"))]), REGISTRY, wh, batch_rows=1000)
    assert rows_of(result) == []


def test_the_scope_alone_returns_only_its_rows(wh, warehouse_path):
    token = claims({"sales": [[region("EMEA-North")]]})
    rows = rows_of(run_query(token, query(columns=["region"]), REGISTRY, wh, batch_rows=1000))
    assert len(rows) == count_sales(warehouse_path, "region = ?", ["EMEA-North"]) > 0
    assert {r["region"] for r in rows} == {"EMEA-North"}


def test_or_of_and_groups(wh, warehouse_path):
    scope = {
        "sales": [
            [region("EMEA-North"), {"field": "category", "op": "=", "value": "Hardware"}],
            [region("APAC")],
        ]
    }
    rows = rows_of(run_query(claims(scope), query(columns=["region", "category"]), REGISTRY, wh, batch_rows=500))
    assert all((r["region"] == "EMEA-North" and r["category"] == "Hardware") or r["region"] == "APAC" for r in rows)
    assert {(r["region"], r["category"]) for r in rows if r["region"] == "EMEA-North"} == {("EMEA-North", "Hardware")}
    expected = count_sales(warehouse_path, "(region = 'EMEA-North' AND category = 'Hardware') OR region = 'APAC'")
    assert len(rows) == expected


def test_streaming_yields_many_batches_and_every_row_is_in_scope(wh, warehouse_path):
    scope = {"sales": [[{"field": "region", "op": "is_one_of", "value": ["EMEA-North", "LATAM"]}]]}
    result = run_query(claims(scope), query(), REGISTRY, wh, batch_rows=1000)
    assert isinstance(result.schema, pa.Schema)
    assert result.schema.names == SALES.column_names
    batches = list(result)
    assert len(batches) > 3
    assert all(isinstance(b, pa.RecordBatch) and b.num_rows <= 1000 for b in batches)
    total = 0
    for batch in batches:
        for row in batch.to_pylist():
            assert row["region"] in ("EMEA-North", "LATAM")
            total += 1
    assert total == result.rows == count_sales(warehouse_path, "region IN ('EMEA-North', 'LATAM')")
    assert result.truncated is False


def test_a_dataset_that_requires_a_secure_filter_refuses_a_token_without_one(wh):
    scopes: list[dict[str, Any]] = [
        {},
        {"sales": []},
        {"orders": [[{"field": "account_id", "op": "=", "value": "ACC-0001"}]]},
    ]
    for scope in scopes:
        with pytest.raises(ScopeError, match="empty scope means deny"):
            run_query(claims(scope), query(), REGISTRY, wh, batch_rows=1000)


def test_an_empty_group_is_refused_not_read_as_true():
    with pytest.raises(ScopeError, match="empty group"):
        scope_for(claims({"sales": [[region("EMEA-North")], []]}), SALES)
    with pytest.raises(ScopeError, match="empty group"):
        build_query(SALES, query(), [[]])


def test_build_query_itself_refuses_an_empty_scope_for_a_secured_dataset():
    with pytest.raises(ScopeError):
        build_query(SALES, query(), [])


def test_a_dataset_not_in_dataset_ids_is_refused(wh):
    token = claims({"sales": [[region("EMEA-North")]]}, dataset_ids=["orders"])
    with pytest.raises(ScopeError, match="does not grant dataset 'sales'"):
        run_query(token, query(), REGISTRY, wh, batch_rows=1000)
    # and an unknown dataset is not revealed as unknown to a token that does not name it
    with pytest.raises(ScopeError):
        run_query(token, query(dataset="secret_payroll"), REGISTRY, wh, batch_rows=1000)


def test_star_allows_every_dataset(wh):
    scope = {"sales": [[region("EMEA-North")]], "orders": [[{"field": "account_id", "op": "=", "value": "ACC-0001"}]]}
    token = claims(scope, dataset_ids="*")
    assert rows_of(run_query(token, query(limit=3), REGISTRY, wh, batch_rows=10))
    orders = rows_of(run_query(token, query(dataset="orders", limit=3), REGISTRY, wh, batch_rows=10))
    assert {r["account_id"] for r in orders} == {"ACC-0001"}
    with pytest.raises(NotFoundError, match="no_such_dataset"):
        run_query(token, query(dataset="no_such_dataset"), REGISTRY, wh, batch_rows=10)


def test_a_dataset_without_required_scope_reads_every_row(wh, warehouse_path):
    open_spec = SALES.model_copy(update={"id": "open_sales", "require_secure_filter": False})
    result = run_query(claims({}), query(dataset="open_sales"), {"open_sales": open_spec}, wh, batch_rows=5000)
    assert sum(b.num_rows for b in result) == count_sales(warehouse_path)


def test_secure_filter_fields_and_operators_must_be_allowlisted():
    with pytest.raises(QueryError, match="secure filter field 'secret'"):
        scope_for(claims({"sales": [[{"field": "secret", "op": "=", "value": 1}]]}), SALES)
    with pytest.raises(QueryError, match="secure filter operator 'starts_with'"):
        scope_for(claims({"sales": [[region("EMEA", "starts_with")]]}), SALES)


# --- Injection ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_in_a_query_filter_matches_nothing(wh, warehouse_path, value):
    token = claims({"sales": [[region("EMEA-North")]]})
    for op in ("=", "contains_substring"):
        result = run_query(
            token, query(filters=[Filter(field="customer_name", op=op, value=value)]), REGISTRY, wh, batch_rows=100
        )
        assert rows_of(result) == []
    assert count_sales(warehouse_path) == 20_000


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_in_a_secure_filter_matches_nothing(wh, warehouse_path, value):
    token = claims({"sales": [[region(value)], [{"field": "region", "op": "is_one_of", "value": [value, value]}]]})
    assert rows_of(run_query(token, query(), REGISTRY, wh, batch_rows=100)) == []
    assert count_sales(warehouse_path) == 20_000


def test_like_wildcards_in_values_are_literal(wh):
    token = claims({"sales": [[region("EMEA-North")], [region("LATAM")], [region("APAC")]]})

    def names(op: str, value: str) -> set[str]:
        spec = query(columns=["customer_name"], filters=[Filter(field="customer_name", op=op, value=value)])
        return {r["customer_name"] for r in rows_of(run_query(token, spec, REGISTRY, wh, batch_rows=1000))}

    assert names("contains_substring", "%") == set()
    assert names("starts_with", "_") == set()
    assert names("contains_substring", "!") == set()
    assert names("ends_with", ", Ltd.") == {"O'Brien & Sons, Ltd."}
    assert names("contains_substring", "'Brien") == {"O'Brien & Sons, Ltd."}
    assert names("starts_with", "@Home") == {"@Home Interiors"}


# --- Allowlists -----------------------------------------------------------------------------------------------------


SCOPE = [[Filter(field="region", op="=", value="EMEA-North")]]


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        (query(columns=["region", "password"]), QueryError, "column 'password'"),
        (query(columns=["region", "region"]), QueryError, "twice"),
        (query(filters=[Filter(field="nope", op="=", value=1)]), QueryError, "field 'nope'"),
        (query(filters=[Filter(field="unit_price", op=">", value=1)]), QueryError, "not filterable"),
        (query(filters=[Filter(field="amount", op="=", value=1)]), QueryError, "operator '='"),
        (query(filters=[Filter(field="region", op="starts_with", value="E")]), QueryError, "operator 'starts_with'"),
        (query(order=[OrderBy(field="nope")]), QueryError, "order field 'nope'"),
        (query(filters=[Filter(field="region", op="is_one_of", value=[])]), QueryError, "non-empty list"),
        (query(filters=[Filter(field="region", op="is_one_of", value="EMEA")]), QueryError, "non-empty list"),
        (query(filters=[Filter(field="region", op="=", value=["a", "b"])]), QueryError, "not a list"),
        (query(filters=[Filter(field="region", op="is_one_of", value=["a", None])]), QueryError, "null"),
        (query(filters=[Filter(field="product", op="starts_with", value="")]), QueryError, "non-empty text"),
        (query(filters=[Filter(field="order_date", op=">=", value="last week")]), QueryError, "not a valid date"),
        (query(filters=[Filter(field="quantity", op=">", value="5")]), QueryError, "not a valid integer"),
        (query(filters=[Filter(field="quantity", op=">", value=True)]), QueryError, "not a valid integer"),
        (query(filters=[Filter(field="region", op="=", value=5)]), QueryError, "not a valid string"),
        (query(filters=[Filter(field="quantity", op=">", value=None)]), QueryError, "null"),
        (query(dataset="orders"), QueryError, "not 'sales'"),
    ],
)
def test_anything_outside_the_allowlist_is_refused(spec, error, message):
    with pytest.raises(error, match=message):
        build_query(SALES, spec, SCOPE)


def test_null_comparisons_become_is_null():
    compiled = build_query(SALES, query(filters=[Filter(field="region", op="!=", value=None)]), SCOPE)
    assert '("region" IS NOT NULL)' in compiled.sql


def test_date_objects_are_accepted_too():
    # Report templates keep a parameter's type: "{{ params.as_of }}" is a date, not a string.
    spec = query(filters=[Filter.model_construct(field="order_date", op="=", value=DEMO_END_DATE)])
    assert build_query(SALES, spec, SCOPE).params[-1] == DEMO_END_DATE
    stamp = Filter.model_construct(field="order_date", op="=", value=datetime(2026, 10, 31, 12, 0))
    with pytest.raises(QueryError, match="not a valid date"):
        build_query(SALES, query(filters=[stamp]), SCOPE)


def test_dates_are_bound_as_dates(wh):
    token = claims({"orders": [[{"field": "account_id", "op": "=", "value": "ACC-0002"}]]})
    spec = query(dataset="orders", filters=[Filter(field="order_date", op="=", value=DEMO_END_DATE.isoformat())])
    rows = rows_of(run_query(token, spec, REGISTRY, wh, batch_rows=100))
    assert rows
    assert {(r["order_date"], r["account_id"]) for r in rows} == {(DEMO_END_DATE, "ACC-0002")}


# --- Limits ---------------------------------------------------------------------------------------------------------


def test_the_limit_cuts_and_says_so(wh):
    token = claims({"sales": [[region("EMEA-North")]]})
    result = run_query(token, query(limit=25), REGISTRY, wh, batch_rows=10)
    assert [b.num_rows for b in result] == [10, 10, 5]
    assert result.truncated is True
    assert result.rows == 25


def test_max_limit_caps_the_query_limit(wh):
    capped = SALES.model_copy(update={"max_limit": 7})
    compiled = build_query(capped, query(limit=1_000), SCOPE)
    assert compiled.limit == 7
    result = wh.stream(compiled, 100)
    assert sum(b.num_rows for b in result) == 7
    assert result.truncated


def test_an_exact_fit_is_not_truncated(wh, warehouse_path):
    n = count_sales(warehouse_path, "region = 'EMEA-North'")
    result = run_query(claims({"sales": [[region("EMEA-North")]]}), query(limit=n), REGISTRY, wh, batch_rows=999)
    assert sum(b.num_rows for b in result) == n
    assert result.truncated is False


# --- Aggregates, audiences, the adapter -----------------------------------------------------------------------------


def test_the_chart_aggregate_uses_the_same_scope_and_filters(wh):
    token = claims({"sales": [[region("EMEA-North")]]})
    since = Filter(field="order_date", op=">=", value=(DEMO_END_DATE - timedelta(days=6)).isoformat())
    series = run_aggregate(token, query(filters=[since]), REGISTRY, wh, category="product", measure="amount", agg="sum")
    rows = rows_of(
        run_query(token, query(columns=["product", "amount"], filters=[since]), REGISTRY, wh, batch_rows=500)
    )
    expected: dict[str, Any] = {}
    for r in rows:
        expected[r["product"]] = expected.get(r["product"], 0) + r["amount"]
    assert dict(series) == expected
    assert [product for product, _ in series] == sorted(expected)


def test_aggregate_arguments_are_checked():
    with pytest.raises(QueryError, match="chart measure 'nope'"):
        build_aggregate(SALES, query(), SCOPE, category="product", measure="nope", agg="sum")
    with pytest.raises(QueryError, match="numeric"):
        build_aggregate(SALES, query(), SCOPE, category="product", measure="region", agg="sum")
    with pytest.raises(QueryError, match="not one of"):
        build_aggregate(SALES, query(), SCOPE, category="product", measure="amount", agg="max")  # type: ignore[arg-type]
    counted = build_aggregate(SALES, query(), SCOPE, category="region", measure="region", agg="count")
    assert counted.columns == ["region", "count_region"]


def test_read_audience_binds_values_and_validates_identifiers(wh):
    rows = read_audience(wh, "regional_managers", ["ref", "email", "region"], [Filter(**region("EMEA-North"))])
    assert [r["ref"] for r in rows] == ["rm-emea-north", "rm-emea-north-2"]
    assert read_audience(wh, "regional_managers", ["ref"], [Filter(**region(INJECTIONS[0]))]) == []
    for table, columns in [("regional_managers; DROP TABLE sales", ["ref"]), ("regional_managers", ["ref, email"])]:
        with pytest.raises(DefinitionError):
            read_audience(wh, table, columns, [])


def test_one_warehouse_serves_queries_from_many_threads(wh, warehouse_path):
    regions = ["EMEA-North", "EMEA-South", "AMER-East", "LATAM", "AMER-West", "APAC"]

    def run(name: str) -> tuple[str, set[str], int]:
        rows = rows_of(
            run_query(claims({"sales": [[region(name)]]}), query(columns=["region"]), REGISTRY, wh, batch_rows=300)
        )
        return name, {r["region"] for r in rows}, len(rows)

    with ThreadPoolExecutor(max_workers=6) as pool:
        for name, seen, n in pool.map(run, regions * 2):
            assert seen == {name}
            assert n == count_sales(warehouse_path, "region = ?", [name])


def test_duckdb_url_and_missing_files(warehouse_path, tmp_path):
    with Warehouse(f"duckdb:///{warehouse_path}") as warehouse:
        assert warehouse.fetch_all(
            build_aggregate(SALES, query(), SCOPE, category="region", measure="order_id", agg="count")
        )
    with pytest.raises(ConfigError, match="bulletin demo"):
        Warehouse(str(tmp_path / "missing.duckdb"))


def test_the_warehouse_is_read_only_and_sealed(wh):
    from tasks.warehouse.base import CompiledQuery

    with pytest.raises(QueryError):
        wh.fetch_all(CompiledQuery("DELETE FROM sales", [], []))
    with pytest.raises(QueryError):
        wh.fetch_all(CompiledQuery("SELECT * FROM read_csv('/etc/passwd')", [], []))


def test_a_dataset_naming_a_missing_table_is_a_config_error(wh):
    ghost = SALES.model_copy(update={"source": "ghost"})
    with pytest.raises(ConfigError, match="does not match the dataset definition"):
        wh.stream(build_query(ghost, query(), SCOPE), 100)


def test_a_failed_query_leaves_the_warehouse_usable(wh):
    ghost = SALES.model_copy(update={"source": "ghost"})
    with pytest.raises(ConfigError):
        wh.stream(build_query(ghost, query(), SCOPE), 100)
    assert rows_of(wh.stream(build_query(SALES, query(limit=1), SCOPE), 100))
