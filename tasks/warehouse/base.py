"""What every warehouse back-end shares: the compiled query, the streamed result, the back-end protocol, and helpers.

Its own module so that the two modules no longer import each other: ``tasks.warehouse`` (the ``Warehouse`` and its
DuckDB back-end) picks the SQLAlchemy back-end of ``tasks.warehouse.sql``, and that back-end needs only these types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import pyarrow as pa

from bulletin.errors import QueryError
from tasks.arrow import keep_pandas_out

keep_pandas_out()  # before anything converts Python objects to Arrow (see tasks/arrow.py)


@dataclass(frozen=True)
class CompiledQuery:
    """SQL with ``?`` markers and double-quoted identifiers, its bound values, and the columns it returns.

    ``types`` are the dataset's declared logical types (None when undeclared), aligned with ``columns``. When
    ``limit`` is set the SQL asks for one row more, so the stream can tell that the limit cut the result.
    """

    sql: str
    params: list[Any]
    columns: list[str]
    types: list[str | None] = field(default_factory=list)
    limit: int | None = None


class StreamResult:
    """The rows of one query as Arrow record batches, read lazily; iterate once. Closes itself when exhausted.

    After iteration ``rows`` is the number of rows yielded and ``truncated`` says whether the limit cut the result.
    """

    def __init__(
        self,
        schema: pa.Schema,
        batches: Iterator[pa.RecordBatch],
        *,
        limit: int | None,
        on_close: Callable[[], None],
    ) -> None:
        self.schema = schema
        self.limit = limit
        self.rows = 0
        self.truncated = False
        self._batches = batches
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self._batches:
                if batch.num_rows == 0:
                    continue
                if self.limit is not None and self.rows + batch.num_rows > self.limit:
                    keep = self.limit - self.rows
                    self.truncated = True
                    if keep:
                        self.rows += keep
                        yield batch.slice(0, keep)
                    return
                self.rows += batch.num_rows
                yield batch
        finally:
            self.close()

    def close(self) -> None:
        """Release the cursor or connection; safe to call twice."""
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def __enter__(self) -> StreamResult:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Backend(Protocol):
    """What ``tasks.warehouse.Warehouse`` delegates to: DuckDB there, SQLAlchemy in ``tasks.warehouse.sql``."""

    display: str

    def stream(self, compiled: CompiledQuery, batch_rows: int) -> StreamResult: ...

    def fetch_all(self, compiled: CompiledQuery, max_rows: int) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def first_line(message: object, limit: int = 300) -> str:
    """The first line of a driver message, bounded: DuckDB appends the SQL text and a caret on later lines."""
    return str(message).strip().splitlines()[0][:limit] if str(message).strip() else "no detail"


def bounded(rows: list[dict[str, Any]], compiled: CompiledQuery, max_rows: int) -> list[dict[str, Any]]:
    """Apply the query's own limit, or refuse a result over ``max_rows`` rather than cut it silently."""
    if compiled.limit is not None:
        return rows[: compiled.limit]
    if len(rows) > max_rows:
        raise QueryError(f"the query returned more than {max_rows} rows: fetch_all is for small results")
    return rows
