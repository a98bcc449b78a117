"""The warehouse adapter: runs a compiled query and streams Arrow record batches. The one I/O seam of the engine.

A DuckDB file (a path or ``duckdb:///path``) is opened read-only, with file access and Python replacement scans off,
so no SQL can reach anything but the warehouse's own tables. Prefect runs tasks in threads: a ``Warehouse`` holds one
connection and every query gets its own cursor. Any other URL goes to SQLAlchemy (``tasks.warehouse.sql``).

Errors: connection and I/O failures are ``TransientError`` (a retry may help); a query the warehouse refuses is
``QueryError``; a dataset naming a table or column the warehouse lacks is ``ConfigError``. Messages never contain a
password (URLs are shown redacted) or a token.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from bulletin.errors import BulletinError, ConfigError, QueryError, TransientError
from tasks.warehouse.base import Backend, CompiledQuery, StreamResult, bounded, first_line

#: A URL with a scheme (``postgresql+psycopg://``, ``sqlite:///``); anything else is a DuckDB file path.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_DUCKDB_PREFIX = "duckdb:///"
#: Rows ``fetch_all`` returns at most: it is for audiences and chart aggregates, never report rows.
FETCH_ALL_MAX_ROWS = 100_000


def _duckdb_error(exc: BaseException, display: str) -> BulletinError:
    text = first_line(exc)
    if isinstance(exc, duckdb.CatalogException) or text.startswith("Catalog Error"):
        return ConfigError(f"the warehouse {display} does not match the dataset definition: {text}")
    transient = (duckdb.OperationalError, duckdb.InternalError, duckdb.InterruptException)
    if isinstance(exc, transient) or text.startswith(("IO Error", "Out of Memory", "INTERRUPT", "Interrupt")):
        return TransientError(f"the warehouse {display} failed: {text}")
    return QueryError(f"the warehouse refused the query: {text}")


class _DuckDB:
    """A read-only DuckDB file: one connection, one cursor per query."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.display = str(path)
        if not path.is_file():
            raise ConfigError(f"no warehouse at {path}: run `bulletin demo` or set BULLETIN_WAREHOUSE_URL")
        try:
            # The default configuration on purpose: DuckDB shares one instance per file in a process and refuses a
            # second connection with different settings, so anything else reading this file (a test, the CLI) must
            # be able to connect as plain read-only. The hardening is applied after connecting instead.
            self._con = duckdb.connect(str(path), read_only=True)
            # Defence in depth: even a query we did not write could read no file and no Python variable. These
            # can only be switched off, never back on, while the instance lives.
            self._con.execute("SET enable_external_access = false")
            self._con.execute("SET python_enable_replacements = false")
            self._con.execute("SET enable_progress_bar = false")  # a long query would draw on the CLI's terminal
            if threads is not None:
                self._con.execute(f"SET threads = {int(threads)}")
        except duckdb.Error as exc:
            raise _duckdb_error(exc, self.display) from exc
        self._lock = threading.Lock()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:  # cursor() is cheap; serialise it so threads never share the parent mid-call
            return self._con.cursor()

    def stream(self, compiled: CompiledQuery, batch_rows: int) -> StreamResult:
        cursor = self._cursor()
        try:
            reader = cursor.sql(compiled.sql, params=compiled.params or None).to_arrow_reader(batch_rows)
        except (duckdb.Error, OSError, pa.ArrowException) as exc:
            cursor.close()
            raise _duckdb_error(exc, self.display) from exc

        def batches() -> Iterator[pa.RecordBatch]:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                # DuckDB's errors during streaming arrive through Arrow's C stream as OSError.
                except (duckdb.Error, OSError, pa.ArrowException) as exc:
                    raise _duckdb_error(exc, self.display) from exc
                yield batch

        return StreamResult(reader.schema, batches(), limit=compiled.limit, on_close=cursor.close)

    def fetch_all(self, compiled: CompiledQuery, max_rows: int) -> list[dict[str, Any]]:
        cursor = self._cursor()
        try:
            result = cursor.execute(compiled.sql, compiled.params)
            names = [d[0] for d in result.description or []]
            rows = result.fetchmany(max_rows + 1)
        except duckdb.Error as exc:
            raise _duckdb_error(exc, self.display) from exc
        finally:
            cursor.close()
        return bounded([dict(zip(names, row, strict=True)) for row in rows], compiled, max_rows)

    def close(self) -> None:
        self._con.close()


class Warehouse:
    """The warehouse named by a DuckDB path, ``duckdb:///path``, or any SQLAlchemy URL. Use as a context manager."""

    def __init__(self, url: str, *, duckdb_threads: int | None = None) -> None:
        """``duckdb_threads``: DuckDB's worker threads (a setting of the whole file's instance in this process);
        None keeps DuckDB's default, one per core."""
        self._backend: Backend
        if url.startswith(_DUCKDB_PREFIX):
            self._backend = _DuckDB(Path(url.removeprefix(_DUCKDB_PREFIX)), duckdb_threads)
        elif _URL.match(url):
            # Imported only when needed: DuckDB users never pay for SQLAlchemy's dialect machinery.
            from tasks.warehouse.sql import SQLAlchemyBackend

            self._backend = SQLAlchemyBackend(url)
        else:
            self._backend = _DuckDB(Path(url).expanduser(), duckdb_threads)

    @property
    def display_url(self) -> str:
        """The warehouse location with any password masked: safe for logs and errors."""
        return self._backend.display

    def stream(self, compiled: CompiledQuery, batch_rows: int) -> StreamResult:
        """Run ``compiled`` and stream its rows in batches of about ``batch_rows``; never reads everything."""
        if batch_rows < 1:
            raise ConfigError("batch_rows must be at least 1")
        return self._backend.stream(compiled, batch_rows)

    def fetch_all(self, compiled: CompiledQuery, *, max_rows: int = FETCH_ALL_MAX_ROWS) -> list[dict[str, Any]]:
        """Every row of a small, trusted query (audiences, chart aggregates) as dicts."""
        return self._backend.fetch_all(compiled, max_rows)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
