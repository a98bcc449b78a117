"""One query for several recipients of the same report: each recipient's rows, tagged with its number, split apart.

Why: the recipients a lane holds (tasks/delivery/chunk.py) share the report's query and differ only in scope, and
each query pays a fixed cost (planning, a cursor, an Arrow stream: about a third of the benchmark's 4.6 ms per query)
besides its rows. One query per lane chunk pays it once (docs/benchmarks.md, "One scan per lane chunk").

The query is a UNION ALL of each member's single query, tagged (``build_combined``), so the rules of
``tasks.warehouse.query`` hold member by member as they do for one recipient (``notes/security.md``):

- each branch's WHERE is built from that member's own verified token only (``scope_for``, ``row_conditions``: the
  same code and the same SQL as its single query), ANDed with the query's filters, never ORed with another's;
- every value is a bound parameter; the SQL text holds quoted identifiers, generated names and the members' numbers;
- a row reaches member k only from branch k: the split keeps the rows tagged k, and drops the tag before any writer;
- a member whose token or condition is refused is refused alone (``CombinedResult.errors``); the others go on;
- each branch keeps its single query's ORDER BY and ``LIMIT max+1``: at most ``limit`` rows reach the member, and
  ``truncated`` says when one more matched.

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

#: Bound values a combined query may carry. Beyond it the caller queries the members one by one: PostgreSQL takes at
#: most 65,535 binds, and huge IN lists gain nothing from sharing a query.
MAX_COMBINED_PARAMS = 20_000
_MEMBER = "bulletin_member"


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


def _member_column(spec: DatasetSpec) -> str:
    name = _MEMBER
    while name in spec.column_names:
        name = "_" + name
    return name


def _branch(spec: DatasetSpec, shape: Shape, k: int, condition: _Condition, member: str) -> str:
    """Member k's single query (``query.build_query``'s SQL) with its number as one more column."""
    # S608: every identifier went through quote(), every value is a bound parameter; k is the member's number.
    sql = f"SELECT {shape.select_sql}, {int(k)} AS {quote(member)} FROM {quote_source(spec.source)}"  # noqa: S608
    sql += f" WHERE {condition.sql}"
    if shape.limit is not None:  # as the single query: one row more than the limit tells that it was cut
        sql += f" ORDER BY {shape.order_sql}" if shape.order_sql else ""
        sql += f" LIMIT {int(shape.limit) + 1}"
    return f"SELECT * FROM ({sql}) AS {quote(f'b{k}')}"  # noqa: S608


def build_combined(spec: DatasetSpec, shape: Shape, conditions: list[_Condition]) -> CompiledQuery:
    """Each member's single query as one branch of a UNION ALL, tagged with the member's number, ordered by member
    then by the query's order: ``SELECT * FROM (SELECT cols, k AS member FROM src WHERE cond_k ORDER BY o LIMIT n+1)
    AS b_k UNION ALL ... ORDER BY member, o``.

    Branches rather than one ``WHERE cond_0 OR cond_1 ...`` with a flag per member: DuckDB prunes row groups for a
    plain AND of comparisons but evaluates an OR of them on every row (a count over 8 recipients' scopes OR-ed took
    7 ms against 1 ms for one), so on a large table the OR would read it all; each branch keeps its own pruning and
    its own LIMIT. The subquery wrapping is what SQLite needs to take an ORDER BY and LIMIT per branch.
    """
    member = _member_column(spec)
    branches = [_branch(spec, shape, k, c, member) for k, c in enumerate(conditions)]
    sql = " UNION ALL ".join(branches) + f" ORDER BY {quote(member)}"
    if shape.order_sql:
        sql += f", {shape.order_sql}"
    params = [p for c in conditions for p in c.params]
    if len(params) > MAX_COMBINED_PARAMS:
        raise QueryError(f"a combined query would bind {len(params)} values (at most {MAX_COMBINED_PARAMS})")
    columns = [c.name for c in shape.columns] + [member]
    types: list[str | None] = [c.type for c in shape.columns]
    return CompiledQuery(sql, params, columns, [*types, "integer"], None)


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
    rows)`` pairs (a member's rows in batches of ``batch_rows``, as its single query gives them), the member column
    dropped.

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
        # member position -> its number in the query, while the member still takes rows
        taking = {position: k for k, position in enumerate(self.positions)}
        waiting = {position: _Rebatch(self.batch_rows) for position in self.positions}
        self.rows = dict.fromkeys(self.positions, 0)
        self.truncated = dict.fromkeys(self.positions, False)
        try:
            for batch in self.result:
                rows, members = batch.select(list(range(width))), batch.column(width)
                present = set(pc.unique(members).to_pylist())  # rows come member by member: one or two per batch
                here = [p for p in list(taking) if taking[p] in present]
                parts = [(p, mine) for p in here if (mine := self._part(p, members, rows, taking)) is not None]
                yield [(p, full) for p, mine in parts for full in waiting[p].add(mine)]
                if not taking:  # every member is cut at its limit: nothing more is for anyone
                    break
            yield [(p, last) for p in self.positions for last in waiting[p].flush()]
        finally:
            self.close()

    def _part(
        self, position: int, members: pa.Array, rows: pa.RecordBatch, taking: dict[int, int]
    ) -> pa.RecordBatch | None:
        mine = rows.filter(pc.equal(members, taking[position]))
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
