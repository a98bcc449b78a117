"""The state store's connection: one engine per process, SQLite or any SQLAlchemy URL, migrated by Alembic.

SQLite is the default (a file under BULLETIN_HOME). Several processes share it safely because every connection runs
in WAL mode with a 30 s busy timeout, and write transactions start with ``BEGIN IMMEDIATE``: the write lock is taken
up front, so a second writer waits its turn instead of failing with "database is locked" when it upgrades a read
lock mid-transaction. PostgreSQL needs none of that; migrations there are serialised by an advisory lock.

URLs are only ever shown with the password hidden, and driver errors are reduced to their first line (SQLAlchemy's
own messages carry the SQL parameters).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    RowMapping,
    Table,
    TextualSelect,
    bindparam,
    create_engine,
    event,
    exc,
    insert,
    make_url,
    select,
    text,
)
from sqlalchemy.engine.interfaces import DBAPIConnection, Dialect
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from bulletin.errors import ConfigError, StorageError, TransientError

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Our own Alembic version table, so the store can share a database with Prefect (which uses ``alembic_version``).
VERSION_TABLE = "bulletin_alembic_version"
SQLITE_BUSY_TIMEOUT_SECONDS = 30
#: ``pg_advisory_xact_lock`` key that serialises migrations across processes (ASCII "bulletin").
_PG_MIGRATION_LOCK = 0x62756C6C6574696E
#: Alembic installs its ``context``/``op`` proxies as module globals, so two threads must not migrate at once.
_MIGRATE_LOCK = threading.Lock()
_WRITE_OPTION = "bulletin_write"
#: Set on a write that may skip SQLite's fsync at commit (``Store.write(durable=False)``).
_LAZY_OPTION = "bulletin_lazy_commit"


@dataclass(frozen=True)
class Store:
    """An open state store: the engine, a session factory, and the URL as it may be shown (no password).

    Ledger code uses ``read()`` and ``write()``. ``sessions`` is for ORM use by other modules; on SQLite its
    transactions begin DEFERRED, so a session that reads and then writes can meet "database is locked" under
    contention where ``write()`` would have waited its turn.
    """

    engine: Engine
    sessions: sessionmaker[Session]
    safe_url: str

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction, rolled back at the end."""
        with self._translate_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Connection]:
        """A write transaction: committed at the end, rolled back on error; ``BEGIN IMMEDIATE`` on SQLite.

        ``durable=False`` (SQLite only; PostgreSQL ignores it): the commit skips its fsync (``synchronous=NORMAL``),
        so an operating-system crash or power loss, never a process crash, may roll it back until the next durable
        commit, whose fsync of the WAL makes every earlier commit durable too. Only for writes whose loss costs
        nothing on its own (docs/delivery.md, "Power loss").
        """
        options = {_WRITE_OPTION: True, _LAZY_OPTION: not durable}
        with self._translate_errors(), self.engine.execution_options(**options).begin() as conn:
            yield conn

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except exc.DBAPIError as error:
            raise database_error(error, self.engine.url) from error


def normalise_url(url: str) -> URL:
    """Parse a store URL. A bare ``postgresql://`` (or ``postgres://``) means psycopg 3, the driver we ship."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError as error:
        # The message of ArgumentError repeats the URL, password included: say only what kind of thing is wrong.
        raise ConfigError("BULLETIN_DATABASE_URL is not a valid SQLAlchemy URL", field="database_url") from error
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def open_store(url: str) -> Store:
    """Connect to the store at ``url`` (and create the SQLite file's folder). Does not migrate: see ``migrate``."""
    parsed = normalise_url(url)
    safe_url = parsed.render_as_string(hide_password=True)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"pool_pre_ping": not is_sqlite}
    if is_sqlite:
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
    try:
        engine = create_engine(parsed, **options)
    except (exc.ArgumentError, ImportError) as error:
        raise ConfigError(
            f"cannot use the state store {safe_url}: {type(error).__name__} (is its driver installed?)",
            field="database_url",
        ) from error
    if is_sqlite:
        _configure_sqlite(engine)
    store = Store(engine=engine, sessions=sessionmaker(engine), safe_url=safe_url)
    try:
        with store.read() as conn:  # fail now, with a clear message, rather than in the middle of a delivery
            conn.execute(text("SELECT 1"))
    except (TransientError, StorageError):
        store.close()
        raise
    logger.debug("opened the state store %s", safe_url)
    return store


def migrate(store: Store) -> None:
    """Bring the schema to the newest revision. Idempotent, and safe when several processes start at once.

    Alembic is imported here, not with the module: a delivery worker process opens the store but never migrates."""
    from alembic import command
    from alembic.util.exc import CommandError

    backend = store.engine.dialect.name
    # SQLite (BEGIN IMMEDIATE) and PostgreSQL (advisory lock) serialise migrators; elsewhere the loser of a race
    # fails on "table exists" and simply tries again, finding the schema already current.
    tries = 1 if backend in {"sqlite", "postgresql"} else 3
    for attempt in range(1, tries + 1):
        try:
            with _MIGRATE_LOCK, store.write() as conn:
                if backend == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
                command.upgrade(alembic_config(conn), "head")
            return
        except CommandError as error:
            raise ConfigError(
                f"cannot migrate the state store {store.safe_url}: {error} (is it newer than this Bulletin?)",
                field="database_url",
            ) from error
        except (TransientError, StorageError):
            if attempt == tries:
                raise
            time.sleep(0.5 * attempt)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: no alembic.ini. ``env.py`` runs on ``connection`` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # Only `alembic revision` runs these: a generated revision comes out already linted and formatted.
    config.set_section_option("post_write_hooks", "hooks", "ruff_fix, ruff_format")
    for hook, options in (("ruff_fix", "check --fix --quiet"), ("ruff_format", "format --quiet")):
        config.set_section_option("post_write_hooks", f"{hook}.type", "module")
        config.set_section_option("post_write_hooks", f"{hook}.module", "ruff")
        config.set_section_option("post_write_hooks", f"{hook}.options", f"{options} REVISION_SCRIPT_FILENAME")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def database_error(error: exc.DBAPIError, url: URL) -> TransientError | StorageError:
    """Map a driver error: lost connections, timeouts and locks may pass on a retry; anything else will not.

    The message names the URL without its password and only the driver's first line, never SQL parameters.
    """
    detail = _first_line(error.orig)
    if url.password:  # drivers do not echo it today; make sure one that does cannot leak it
        detail = detail.replace(str(url.password), "***")
    message = f"state store {url.render_as_string(hide_password=True)}: {type(error.orig).__name__}: {detail}"
    if error.connection_invalidated or isinstance(error, exc.OperationalError | exc.InterfaceError):
        return TransientError(message)
    return StorageError(message)


def insert_if_absent(
    conn: Connection, table: Table, values: Mapping[str, Any], *, unique: Sequence[str]
) -> RowMapping | None:
    """Insert the row unless a row with the same ``unique`` columns exists: the row as inserted, or None.

    Atomic by the unique key, so of concurrent inserts of one key exactly one gets the row back. SQLite and
    PostgreSQL do it in one statement (ON CONFLICT DO NOTHING; RETURNING says whether a row went in, which rowcount
    does not once the driver returns rows: -1 on psycopg); other backends insert inside a savepoint, so a duplicate
    key does not abort the enclosing transaction, and read the row back.
    """
    if conn.dialect.name in {"sqlite", "postgresql"}:
        statement = _insert_or_nothing(conn.dialect, table, tuple(values), tuple(unique))
        return conn.execute(statement, dict(values)).mappings().first()
    try:
        with conn.begin_nested():
            conn.execute(insert(table).values(dict(values)))
    except exc.IntegrityError:
        return None
    return conn.execute(select(table).where(*(table.c[name] == values[name] for name in unique))).mappings().one()


@functools.lru_cache(maxsize=64)
def _insert_or_nothing(
    dialect: Dialect, table: Table, columns: tuple[str, ...], unique: tuple[str, ...]
) -> TextualSelect:
    """``INSERT INTO table (columns) VALUES (:columns) ON CONFLICT (unique) DO NOTHING RETURNING *``, the same on SQLite
    and PostgreSQL, built once per dialect, table and columns.

    As text, with the columns' types on its parameters and its result: SQLAlchemy never caches its own ON CONFLICT
    constructs (``sqlalchemy.dialects.*.Insert`` sets ``inherit_cache = False``), so it compiled the statement again
    on every call, 0.46 ms of CPU each against 0.06 ms for this one (measured on a lane's claims).
    """
    given = [table.c[name] for name in columns]  # only the table's own columns reach the text (KeyError otherwise)
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(column.name) for column in given)
    binds = ", ".join(f":{column.name}" for column in given)
    target = ", ".join(quote(table.c[name].name) for name in unique)
    returned = ", ".join(quote(column.name) for column in table.c)
    into = dialect.identifier_preparer.format_table(table)
    # Only quoted identifiers of the table are interpolated; every value is a bound parameter.
    sql = f"INSERT INTO {into} ({names}) VALUES ({binds}) ON CONFLICT ({target}) DO NOTHING RETURNING {returned}"  # noqa: S608
    typed = [bindparam(column.name, type_=column.type) for column in given]
    return text(sql).bindparams(*typed).columns(*table.c)


def _first_line(error: BaseException | None) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else "no detail"


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the lock it needs.

    SQLite answers "database is locked" at once, without its busy handler, when connections race to open a brand-new
    file (seen with four report runs starting together on a fresh state store). Once the file is in WAL mode the
    pragma is a no-op, so this loop only ever waits on a file's first moments.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _configure_sqlite(engine: Engine) -> None:
    """WAL, busy timeout and foreign keys per connection; our own BEGIN so writers can ask for IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Stop pysqlite from issuing its own BEGIN (and COMMITs before DDL): transactions are ours, below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # busy_timeout first: switching a fresh file to WAL takes a lock that another process may hold.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        mode = "IMMEDIATE" if options.get(_WRITE_OPTION) else "DEFERRED"
        # Per connection and outside a transaction; FULL (SQLite's default) unless this write asked for less.
        conn.exec_driver_sql(f"PRAGMA synchronous = {'NORMAL' if options.get(_LAZY_OPTION) else 'FULL'}")
        conn.exec_driver_sql(f"BEGIN {mode}")
