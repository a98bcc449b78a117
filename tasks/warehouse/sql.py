"""SQLAlchemy warehouses: any database with a SQLAlchemy dialect and driver, streamed into Arrow record batches.

The query builder writes ``?`` markers and double-quoted identifiers (DuckDB's dialect). Here the markers become
named binds of a ``text()`` clause, and each identifier is re-quoted by the target dialect's own preparer, which
quotes only when needed so case-folding databases (Oracle, Snowflake) still find lower-case names. Rewriting the
text is safe because the builder emits no string literals: every value is a bound parameter and every identifier
matches ``[A-Za-z_][A-Za-z0-9_]*``.

Rows are read with ``yield_per`` (a server-side cursor where the driver has one) and turned into Arrow batches; the
schema comes from the dataset's declared column types, else from the first batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from bulletin.errors import BulletinError, ConfigError, QueryError, TransientError
from tasks.warehouse.base import CompiledQuery, StreamResult, bounded, first_line

_QUOTED = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"')
_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "boolean": pa.bool_(),
    # "decimal" is left to inference: the scale is the database's, and SQLite hands back floats.
}
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def redact_url(url: str) -> str:
    """The URL with its password masked; unparseable URLs are not echoed at all (they may hold a password)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa_exc.ArgumentError, ValueError):
        return "<unparseable warehouse URL>"


class SQLAlchemyBackend:
    """One engine (thread-safe, pooled); every query borrows its own connection."""

    def __init__(self, url: str) -> None:
        self.display = redact_url(url)
        try:
            parsed = sa.engine.make_url(url)
        except (sa_exc.ArgumentError, ValueError) as exc:
            raise ConfigError("the warehouse URL cannot be parsed") from exc
        self._password = parsed.password
        try:
            self._engine = sa.create_engine(parsed, pool_pre_ping=True)
        except (sa_exc.NoSuchModuleError, ImportError) as exc:
            raise ConfigError(
                f"no SQLAlchemy dialect or driver for {parsed.drivername!r} ({self.display}): install it"
            ) from exc
        except sa_exc.ArgumentError as exc:
            raise ConfigError(f"the warehouse URL {self.display} is not valid") from exc
        self._preparer = self._engine.dialect.identifier_preparer

    def statement(self, compiled: CompiledQuery) -> sa.TextClause:
        """The compiled query as a ``text()`` clause in this dialect: named binds, dialect quoting."""
        pieces = compiled.sql.split("?")
        if len(pieces) - 1 != len(compiled.params):
            raise QueryError("the compiled query's markers do not match its parameters")
        if ":" in compiled.sql:
            raise QueryError("the compiled query contains ':', which text() would read as a bind")
        sql = pieces[0] + "".join(f":p{i}{piece}" for i, piece in enumerate(pieces[1:]))
        sql = _QUOTED.sub(lambda m: self._preparer.quote(m.group(1)), sql)
        binds: list[sa.BindParameter[Any]] = [sa.bindparam(f"p{i}", value) for i, value in enumerate(compiled.params)]
        return sa.text(sql).bindparams(*binds)

    def _error(self, exc: sa_exc.SQLAlchemyError) -> BulletinError:
        text = first_line(getattr(exc, "orig", None) or exc)
        if self._password:
            text = text.replace(self._password, "***")
        if "no such table" in text or "no such column" in text or "does not exist" in text:
            return ConfigError(f"the warehouse {self.display} does not match the dataset definition: {text}")
        transient = (
            sa_exc.OperationalError,
            sa_exc.InterfaceError,
            sa_exc.InternalError,
            sa_exc.DisconnectionError,
            sa_exc.TimeoutError,
        )
        if isinstance(exc, transient) or not isinstance(exc, sa_exc.DBAPIError):
            return TransientError(f"the warehouse {self.display} failed: {text}")
        return QueryError(f"the warehouse refused the query: {text}")

    def stream(self, compiled: CompiledQuery, batch_rows: int) -> StreamResult:
        try:
            conn = self._engine.connect()
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc) from exc
        try:
            result = conn.execution_options(yield_per=batch_rows).execute(self.statement(compiled))
            names = list(result.keys())
            partitions = result.partitions(batch_rows)
            first = next(partitions, None)
            schema = _schema(names, first or [], compiled.types)
        except sa_exc.SQLAlchemyError as exc:
            conn.close()
            raise self._error(exc) from exc
        except BaseException:
            conn.close()
            raise

        def batches() -> Iterator[pa.RecordBatch]:
            part = first
            while part:
                yield _batch(part, schema)
                try:
                    part = next(partitions, None)
                except sa_exc.SQLAlchemyError as exc:
                    raise self._error(exc) from exc

        return StreamResult(schema, batches(), limit=compiled.limit, on_close=conn.close)

    def fetch_all(self, compiled: CompiledQuery, max_rows: int) -> list[dict[str, Any]]:
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(self.statement(compiled)).mappings().fetchmany(max_rows + 1)
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc) from exc
        return bounded([dict(row) for row in rows], compiled, max_rows)

    def close(self) -> None:
        self._engine.dispose()


def _schema(names: list[str], rows: Sequence[Sequence[Any]], types: list[str | None]) -> pa.Schema:
    fields = []
    for i, name in enumerate(names):
        declared = _ARROW_TYPES.get(types[i] or "") if i < len(types) else None
        if declared is None:
            try:
                inferred = pa.array([row[i] for row in rows]).type
            except _ARROW_ERRORS as exc:
                raise QueryError(f"column {name!r}: the warehouse returned values of mixed types") from exc
            if pa.types.is_decimal(inferred):
                # The first batch's precision may be too small for later ones; the scale is the column's.
                inferred = pa.decimal128(38, inferred.scale)
            if pa.types.is_null(inferred):  # no rows, or only nulls, to infer from
                inferred = pa.float64() if i < len(types) and types[i] == "decimal" else pa.string()
            declared = inferred
        fields.append(pa.field(name, declared))
    return pa.schema(fields)


def _batch(rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for i, target in enumerate(schema):
        try:
            array = pa.array([row[i] for row in rows])
            arrays.append(array if array.type == target.type else array.cast(target.type))
        except _ARROW_ERRORS as exc:
            raise QueryError(
                f"column {target.name!r}: the warehouse returned values that are not {target.type}"
            ) from exc
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
