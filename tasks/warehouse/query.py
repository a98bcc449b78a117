"""The query engine: a token's scope plus a query become one parameterised SELECT over one dataset.

``run_query`` is the entry point. The rules (``notes/security.md``):

- the scope (secure filters) comes from the verified token only, as OR-of-AND groups; the query's own filters are
  ANDed with it, never ORed: ``WHERE (scope) AND (filter) AND (filter)``;
- a dataset that requires a secure filter refuses a token without one: an empty scope means deny, not everything;
- columns, filter fields, operators and order fields come from the dataset's allowlist; every value is a bound
  parameter, and identifiers are validated then quoted.

The builders are pure; ``tasks.warehouse`` runs what they build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from bulletin.datasets import ColumnSpec, DatasetSpec
from bulletin.errors import DefinitionError, NotFoundError, QueryError, ScopeError
from bulletin.models import Filter, FilterGroups, QuerySpec
from tasks.tokens import TokenClaims
from tasks.warehouse.base import CompiledQuery, StreamResult
from tasks.warehouse.embedded import Warehouse

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_LIST_OPS = {"is_one_of": "IN", "is_not_one_of": "NOT IN"}
_COMPARISONS = {"=": "=", "!=": "<>", ">": ">", "<": "<", ">=": ">=", "<=": "<="}
_TEXT_OPS = {"starts_with": "{}%", "ends_with": "%{}", "contains_substring": "%{}%"}
#: LIKE's escape character: no special meaning inside string literals in any SQL dialect (unlike backslash).
_ESCAPE = "!"
MAX_LIST_VALUES = 5_000
_NUMERIC = {"integer", "decimal", "number"}


def quote(name: str) -> str:
    """A double-quoted identifier; the name is checked again here because this is where it meets SQL."""
    if not _IDENTIFIER.match(name):
        raise QueryError(f"{name!r} is not a valid SQL identifier")
    return f'"{name}"'


def quote_source(source: str) -> str:
    """``table`` or ``schema.table``, each part quoted."""
    return ".".join(quote(part) for part in source.split("."))


def _like_pattern(value: str, template: str) -> str:
    escaped = value.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    return template.format(escaped)


def _coerce(value: Any, column: ColumnSpec | None, field: str) -> Any:
    """The value to bind, checked against the column's declared type so a bad value is a QueryError, not SQL.

    Dates may arrive as ISO strings (tokens, JSON) or as ``date``/``datetime`` objects (report templates keep types).
    """
    kind = column.type if column else None
    if value is None or kind is None:
        return value
    if kind == "date" and isinstance(value, date) and not isinstance(value, datetime):
        return value
    if kind == "timestamp" and isinstance(value, datetime):
        return value
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "decimal": isinstance(value, int | float) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "date": isinstance(value, str),
        "timestamp": isinstance(value, str),
    }[kind]
    try:
        if ok and kind == "date":
            return date.fromisoformat(value)
        if ok and kind == "timestamp":
            return datetime.fromisoformat(value)
    except ValueError:
        ok = False
    if not ok:
        raise QueryError(f"{field}: {value!r} is not a valid {kind} value", field=field)
    return value


def _condition(f: Filter, column: ColumnSpec | None, params: list[Any]) -> str:
    """One filter as SQL, its values appended to ``params``. Allowlists are checked by the caller."""
    name = quote(f.field)
    if f.op in _LIST_OPS:
        if not isinstance(f.value, list) or not f.value:
            raise QueryError(f"{f.field} {f.op} needs a non-empty list of values", field=f.field)
        if len(f.value) > MAX_LIST_VALUES:
            raise QueryError(f"{f.field} {f.op} takes at most {MAX_LIST_VALUES} values", field=f.field)
        if any(v is None or isinstance(v, list) for v in f.value):
            raise QueryError(f"{f.field} {f.op}: values cannot be null or lists", field=f.field)
        params.extend(_coerce(v, column, f.field) for v in f.value)
        return f"{name} {_LIST_OPS[f.op]} ({', '.join('?' * len(f.value))})"
    if isinstance(f.value, list):
        raise QueryError(f"{f.field} {f.op} takes one value, not a list", field=f.field)
    if f.op in _TEXT_OPS:
        if not isinstance(f.value, str) or not f.value:
            # An empty pattern would match every row: refuse it rather than widen a scope.
            raise QueryError(f"{f.field} {f.op} needs a non-empty text value", field=f.field)
        if column and column.type not in (None, "string"):
            raise QueryError(f"{f.field} {f.op} applies to text columns only", field=f.field)
        params.append(_like_pattern(f.value, _TEXT_OPS[f.op]))
        return f"{name} LIKE ? ESCAPE '{_ESCAPE}'"
    if f.value is None:
        if f.op not in ("=", "!="):
            raise QueryError(f"{f.field} {f.op} cannot compare with null", field=f.field)
        return f"{name} IS NULL" if f.op == "=" else f"{name} IS NOT NULL"
    params.append(_coerce(f.value, column, f.field))
    return f"{name} {_COMPARISONS[f.op]} ?"


def _allowed(spec: DatasetSpec, f: Filter, what: str) -> ColumnSpec:
    column = spec.column(f.field)
    if column is None:
        raise QueryError(f"{what} field {f.field!r} is not a column of dataset {spec.id!r}", field=f.field)
    allowed = spec.operators_for(f.field)
    if not allowed:
        raise QueryError(f"{what} field {f.field!r} is not filterable in dataset {spec.id!r}", field=f.field)
    if f.op not in allowed:
        raise QueryError(
            f"{what} operator {f.op!r} is not allowed on {f.field!r} in dataset {spec.id!r} "
            f"(allowed: {', '.join(allowed)})",
            field=f.field,
        )
    return column


def _check_scope(spec: DatasetSpec, scope: FilterGroups) -> None:
    if any(not group for group in scope):
        # An empty AND group is TRUE: "(a) OR ()" would be every row.
        raise ScopeError(f"the secure filter for dataset {spec.id!r} has an empty group")
    if spec.require_secure_filter and not scope:
        raise ScopeError(
            f"dataset {spec.id!r} requires a secure filter and the token carries none for it "
            "(an empty scope means deny)"
        )
    for group in scope:
        for f in group:
            _allowed(spec, f, "secure filter")


def _where(spec: DatasetSpec, scope: FilterGroups, filters: list[Filter], params: list[Any]) -> str:
    clauses = row_conditions(spec, scope, filters, params)
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


def row_conditions(spec: DatasetSpec, scope: FilterGroups, filters: list[Filter], params: list[Any]) -> list[str]:
    """The conditions a row must meet, each parenthesised, to be ANDed: the scope's OR-of-AND groups, then each
    filter. Empty when neither narrows (a dataset that requires a secure filter refuses an empty scope here)."""
    _check_scope(spec, scope)
    clauses = []
    if scope:
        # Each condition is one atomic predicate, so only the groups and the whole scope need parentheses.
        groups = [" AND ".join(_condition(f, spec.column(f.field), params) for f in g) for g in scope]
        clauses.append("(" + " OR ".join(f"({g})" for g in groups) + ")")
    for f in filters:
        clauses.append(f"({_condition(f, _allowed(spec, f, 'filter'), params)})")
    return clauses


def _column(spec: DatasetSpec, name: str, what: str) -> ColumnSpec:
    column = spec.column(name)
    if column is None:
        raise QueryError(f"{what} {name!r} is not a column of dataset {spec.id!r}", field=name)
    return column


def _check_dataset(spec: DatasetSpec, query: QuerySpec) -> None:
    if query.dataset != spec.id:
        raise QueryError(f"the query is for dataset {query.dataset!r}, not {spec.id!r}")


@dataclass(frozen=True)
class Shape:
    """What a query returns, apart from which rows: its columns, their order, and its row limit (None: no limit)."""

    columns: list[ColumnSpec]
    order_sql: str
    limit: int | None

    @property
    def select_sql(self) -> str:
        return ", ".join(quote(c.name) for c in self.columns)


def query_shape(spec: DatasetSpec, query: QuerySpec) -> Shape:
    """The columns, ORDER BY and limit of ``query``, each checked against the dataset's allowlist."""
    _check_dataset(spec, query)
    names = query.columns or spec.column_names
    if len(set(names)) != len(names):
        raise QueryError("a column is requested twice")
    columns = [_column(spec, name, "column") for name in names]
    order = query.order or spec.default_order
    order_sql = ", ".join(f"{quote(_column(spec, o.field, 'order field').name)} {o.direction.upper()}" for o in order)
    limits = [n for n in (query.limit, spec.max_limit) if n is not None]
    return Shape(columns, order_sql, min(limits) if limits else None)


def build_query(spec: DatasetSpec, query: QuerySpec, scope: FilterGroups) -> CompiledQuery:
    """The SELECT for ``query`` within ``scope`` (the token's secure filter groups for this dataset)."""
    shape = query_shape(spec, query)
    params: list[Any] = []
    where = _where(spec, scope, query.filters, params)
    # S608: every identifier here went through quote(), every value is a bound parameter.
    sql = f"SELECT {shape.select_sql} FROM {quote_source(spec.source)}{where}"  # noqa: S608
    if shape.order_sql:
        sql += f" ORDER BY {shape.order_sql}"
    if shape.limit is not None:
        sql += f" LIMIT {int(shape.limit) + 1}"  # one more than asked: the stream reports truncation
    names = [c.name for c in shape.columns]
    return CompiledQuery(sql, params, names, [c.type for c in shape.columns], shape.limit)


def build_aggregate(
    spec: DatasetSpec,
    query: QuerySpec,
    scope: FilterGroups,
    *,
    category: str,
    measure: str,
    agg: Literal["sum", "count", "avg"],
) -> CompiledQuery:
    """``agg(measure)`` per ``category`` over the same rows as ``build_query`` (its columns, order, limit unused)."""
    _check_dataset(spec, query)
    if agg not in ("sum", "count", "avg"):
        raise QueryError(f"aggregate {agg!r} is not one of sum, count, avg")
    group_col = _column(spec, category, "chart category")
    value_col = _column(spec, measure, "chart measure")
    if agg != "count" and value_col.type not in (None, *_NUMERIC):
        raise QueryError(f"{agg} needs a numeric measure; {measure!r} is {value_col.type}")
    params: list[Any] = []
    where = _where(spec, scope, query.filters, params)
    alias = measure if measure != category else f"{agg}_{measure}"
    select = f"SELECT {quote(category)}, {agg.upper()}({quote(measure)}) AS {quote(alias)}"
    sql = f"{select} FROM {quote_source(spec.source)}{where} GROUP BY {quote(category)} ORDER BY {quote(category)}"
    value_type = "integer" if agg == "count" else value_col.type
    return CompiledQuery(sql, params, [category, alias], [group_col.type, value_type])


def scope_for(claims: TokenClaims, spec: DatasetSpec) -> FilterGroups:
    """The token's secure filter groups for ``spec``, or ScopeError when the token grants no scope for it."""
    if not claims.allows(spec.id):
        raise ScopeError(f"the token does not grant dataset {spec.id!r}")
    scope = claims.filters_for(spec.id)
    _check_scope(spec, scope)
    return scope


def granted_dataset(claims: TokenClaims, dataset_id: str, registry: dict[str, DatasetSpec]) -> DatasetSpec:
    """The dataset ``dataset_id`` if ``claims`` grant it (ScopeError) and it exists (NotFoundError)."""
    # The grant is checked first: a token cannot learn which datasets exist beyond those it names.
    if not claims.allows(dataset_id):
        raise ScopeError(f"the token does not grant dataset {dataset_id!r}")
    spec = registry.get(dataset_id)
    if spec is None:
        raise NotFoundError(f"no dataset {dataset_id!r}")
    return spec


def run_query(
    claims: TokenClaims,
    query: QuerySpec,
    registry: dict[str, DatasetSpec],
    warehouse: Warehouse,
    *,
    batch_rows: int,
) -> StreamResult:
    """THE entry point: the rows ``claims`` may see that ``query`` asks for, streamed in Arrow batches."""
    spec = granted_dataset(claims, query.dataset, registry)
    return warehouse.stream(build_query(spec, query, scope_for(claims, spec)), batch_rows)


def run_aggregate(
    claims: TokenClaims,
    query: QuerySpec,
    registry: dict[str, DatasetSpec],
    warehouse: Warehouse,
    *,
    category: str,
    measure: str,
    agg: Literal["sum", "count", "avg"],
) -> list[tuple[Any, Any]]:
    """The chart series for ``query`` in the token's scope: ``(category, value)`` pairs ordered by category."""
    spec = granted_dataset(claims, query.dataset, registry)
    compiled = build_aggregate(spec, query, scope_for(claims, spec), category=category, measure=measure, agg=agg)
    label, value = compiled.columns
    return [(row[label], row[value]) for row in warehouse.fetch_all(compiled)]


def read_audience(warehouse: Warehouse, table: str, columns: list[str], filters: list[Filter]) -> list[dict[str, Any]]:
    """A trusted (not token-scoped) read of an audience table: identifiers validated, values bound, ordered."""
    if not columns:
        raise DefinitionError("an audience query needs at least one column")
    try:
        source = quote_source(table)
        selected = [quote(c) for c in columns]
    except QueryError as exc:
        raise DefinitionError(f"audience query: {exc.message}") from exc
    params: list[Any] = []
    where = " AND ".join(f"({_condition(f, None, params)})" for f in filters)
    sql = f"SELECT {', '.join(selected)} FROM {source}"  # noqa: S608 - quoted identifiers only
    if where:
        sql += f" WHERE {where}"
    sql += f" ORDER BY {selected[0]}"
    return warehouse.fetch_all(CompiledQuery(sql, params, list(columns)))
