"""One scan for several recipients of the same query: each recipient's rows, from one SELECT, split by a flag per row.

Why: the recipients a lane holds (tasks/delivery/chunk.py) share the report's query and differ only in scope. Eight
single queries of the benchmark cost 32-34 ms of CPU, this one query for the eight 26 ms (docs/benchmarks.md, "One
scan per lane chunk"): each query pays planning, a cursor and an Arrow stream besides its rows, and DuckDB still prunes
row groups for the OR (it derives ``account_id = a OR account_id = b`` from the scopes: 6 of 10 row groups read for
four recipients). A UNION ALL of each recipient's single query, tagged, was measured too and dropped: no cheaper than
the single queries it joins (32 ms per eight), its per-branch sorts and the outer sort cost what the shared plan saves.

The rules of ``tasks.warehouse.query`` still hold, member by member (``notes/security.md``):

- each member's condition is built from its own verified token only (``scope_for``, ``row_conditions``: the same
  code as its single query), ANDed with the query's filters exactly as its single query's WHERE is;
- every value is a bound parameter; the SQL text holds quoted identifiers and generated flag names only;
- a row reaches member i only if its flag says so: ``CASE WHEN (cond_i) THEN 1 ELSE 0 END``, so a condition that is
  NULL (a comparison with a NULL column) counts as no match, as it does in a WHERE. The combined WHERE
  (``cond_0 OR cond_1 ...``) only spares the scan rows no member may see; it grants nothing by itself;
- a member whose token or condition is refused is refused alone (``CombinedResult.errors``); the others go on;
- each member's row limit is applied as its single query's ``LIMIT max+1`` is: at most ``limit`` rows, and
  ``truncated`` when one more matched. The combined SELECT has no LIMIT; the scan stops once every member is cut.
  So a member whose scope matches far more rows than its limit makes the warehouse sort all of them, where its single
  query would keep the top rows only: a cost, never a leak.

A member gets the rows of its single query in the same order when the ORDER BY is total; with ties, the order of
tied rows (and which of them a limit cuts) is the warehouse's choice in either query.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bulletin.datasets import DatasetSpec
from bulletin.errors import BulletinError, QueryError
from bulletin.models import QuerySpec
from tasks.tokens import TokenClaims
from tasks.warehouse.base import CompiledQuery, StreamResult
from tasks.warehouse.embedded import Warehouse
from tasks.warehouse.query import Shape, granted_dataset, query_shape, quote, quote_source, row_conditions, scope_for

#: Bound values a combined query may carry (each member's appear twice: in its flag and in the WHERE). Beyond it the
#: caller queries the members one by one: PostgreSQL takes at most 65,535 binds, and a huge IN list gains nothing.
MAX_COMBINED_PARAMS = 20_000
_FLAG = "bulletin_row_of_"


@dataclass(frozen=True)
class Member:
    """One recipient's part of a combined query: its verified claims and its query (the report's, templated)."""

    claims: TokenClaims
    query: QuerySpec


@dataclass
class _Condition:
    sql: str
    params: list[Any]


def _member_condition(member: Member, registry: dict[str, DatasetSpec]) -> tuple[DatasetSpec, Shape, _Condition]:
    """What the member's single query would select and which rows: ScopeError, QueryError... as that query would."""
    spec = granted_dataset(member.claims, member.query.dataset, registry)
    scope = scope_for(member.claims, spec)
    shape = query_shape(spec, member.query)
    params: list[Any] = []
    clauses = row_conditions(spec, scope, member.query.filters, params)
    # No scope and no filter (a dataset without a required secure filter): every row, as the single query's no WHERE.
    return spec, shape, _Condition(" AND ".join(clauses) if clauses else "1 = 1", params)


def _flag_prefix(spec: DatasetSpec) -> str:
    prefix = _FLAG
    while any(name.startswith(prefix) for name in spec.column_names):
        prefix = "_" + prefix
    return prefix


def build_combined(spec: DatasetSpec, shape: Shape, conditions: list[_Condition]) -> CompiledQuery:
    """The report's columns plus one 0/1 flag per member, over the rows any member may see, in the query's order.

    An integer flag rather than a boolean column: every dialect can select it (Oracle and SQL Server have no boolean
    in a select list).
    """
    prefix = _flag_prefix(spec)
    flags = [f"CASE WHEN {c.sql} THEN 1 ELSE 0 END AS {quote(f'{prefix}{i}')}" for i, c in enumerate(conditions)]
    where = " OR ".join(f"({c.sql})" for c in conditions)
    params = [p for c in conditions for p in c.params] * 2  # the flags' values, then the WHERE's
    if len(params) > MAX_COMBINED_PARAMS:
        raise QueryError(f"a combined query would bind {len(params)} values (at most {MAX_COMBINED_PARAMS})")
    # S608: every identifier went through quote(), every value is a bound parameter.
    sql = f"SELECT {shape.select_sql}, {', '.join(flags)} FROM {quote_source(spec.source)} WHERE {where}"  # noqa: S608
    if shape.order_sql:
        sql += f" ORDER BY {shape.order_sql}"
    columns = [c.name for c in shape.columns] + [f"{prefix}{i}" for i in range(len(conditions))]
    types: list[str | None] = [c.type for c in shape.columns]
    types += ["integer"] * len(conditions)
    return CompiledQuery(sql, params, columns, types, None)


class _Rebatch:
    """A member's rows in batches of ``size`` rows (the last one shorter), as its single query streams them.

    The writers' output depends on where batches start: the XLSX column widths come from the first batch's rows. Cut
    this way, a member's file is byte for byte the one its single query would make, and its writers see a few large
    batches rather than many slivers. At most ``size`` rows wait per member: memory stays flat."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.parts: list[pa.RecordBatch] = []
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        self.parts.append(batch)
        self.rows += batch.num_rows
        if self.rows < self.size:
            return []
        whole = pa.concat_batches(self.parts) if len(self.parts) > 1 else batch
        full = whole.num_rows // self.size * self.size
        rest = whole.slice(full)
        self.parts, self.rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
        return [whole.slice(start, self.size) for start in range(0, full, self.size)]

    def flush(self) -> list[pa.RecordBatch]:
        parts, self.parts, self.rows = self.parts, [], 0
        return [pa.concat_batches(parts)] if parts else []


@dataclass
class CombinedResult:
    """The rows of several members from one stream. Iterate once: each step is a list of ``(member position, its
    rows)`` pairs (a member's rows in batches of ``batch_rows``, as its single query gives them), flags dropped.

    ``errors``: the members refused before the query ran (their position: the error), each as its single query
    would have been. After iteration ``rows`` and ``truncated`` hold, per member position, what ``StreamResult``
    would say of its single query.
    """

    errors: dict[int, BulletinError]
    positions: list[int]
    limit: int | None
    batch_rows: int = 1
    result: StreamResult | None = None
    schema: pa.Schema = field(default_factory=lambda: pa.schema([]))
    rows: dict[int, int] = field(default_factory=dict)
    truncated: dict[int, bool] = field(default_factory=dict)

    def __iter__(self) -> Iterator[list[tuple[int, pa.RecordBatch]]]:
        if self.result is None:
            return
        width = len(self.schema)
        # member position -> its flag column, while the member still takes rows
        taking = {position: width + k for k, position in enumerate(self.positions)}
        waiting = {position: _Rebatch(self.batch_rows) for position in self.positions}
        self.rows = dict.fromkeys(self.positions, 0)
        self.truncated = dict.fromkeys(self.positions, False)
        try:
            for batch in self.result:
                rows = batch.select(list(range(width)))
                parts = [(p, mine) for p in list(taking) if (mine := self._part(p, batch, rows, taking)) is not None]
                yield [(p, full) for p, mine in parts for full in waiting[p].add(mine)]
                if not taking:  # every member is cut at its limit: the rest of the scan serves no one
                    break
            yield [(p, last) for p in self.positions for last in waiting[p].flush()]
        finally:
            self.close()

    def _part(
        self, position: int, batch: pa.RecordBatch, rows: pa.RecordBatch, taking: dict[int, int]
    ) -> pa.RecordBatch | None:
        mine = rows.filter(pc.equal(batch.column(taking[position]), 1))
        if mine.num_rows == 0:
            return None
        if self.limit is not None and self.rows[position] + mine.num_rows > self.limit:
            keep = self.limit - self.rows[position]
            self.truncated[position] = True
            del taking[position]
            if not keep:
                return None
            mine = mine.slice(0, keep)
        self.rows[position] += mine.num_rows
        return mine

    def close(self) -> None:
        if self.result is not None:
            self.result.close()


def run_combined(
    members: list[Member], registry: dict[str, DatasetSpec], warehouse: Warehouse, *, batch_rows: int
) -> CombinedResult:
    """THE entry point for several recipients of one query: each member's rows, from one scan.

    A member refused (its token grants no such dataset, its scope or filter is invalid) is in ``errors`` and left out.
    Raises (QueryError, TransientError...) when the combined query itself cannot run, or when the members' queries
    differ in dataset, columns, order or limit: the caller then queries each member on its own (``run_query``).
    """
    errors: dict[int, BulletinError] = {}
    parts: list[tuple[int, DatasetSpec, Shape, _Condition]] = []
    for position, member in enumerate(members):
        try:
            parts.append((position, *_member_condition(member, registry)))
        except BulletinError as exc:
            errors[position] = exc
    if not parts:
        return CombinedResult(errors, [], None)
    _, spec, shape, _ = parts[0]
    if any(s.id != spec.id or s.source != spec.source or sh != shape for _, s, sh, _ in parts):
        raise QueryError("the members' queries differ in dataset, columns, order or limit: query them one by one")
    compiled = build_combined(spec, shape, [c for *_, c in parts])
    result = warehouse.stream(compiled, batch_rows)
    schema = pa.schema(list(result.schema)[: len(shape.columns)])
    return CombinedResult(errors, [p for p, *_ in parts], shape.limit, batch_rows, result, schema)
