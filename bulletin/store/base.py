"""What every table module of the store shares: the one ``MetaData``, the UTC timestamp column, and a few checks.

Every table registers on ``metadata``, so the one Alembic history (and its autogenerate) sees all of them. Pure:
no I/O here, so every table module can import it without importing another table module.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, DateTime, MetaData, Select, and_, or_
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.types import TypeDecorator

from bulletin.clock import require_aware
from bulletin.errors import ConfigError

metadata = MetaData()

#: Where a page of a newest-first listing ended: the last row's creation time and id.
Cursor = tuple[datetime, str]

#: What a naive time given to the store is called in the error.
STORE_TIMES = "timestamps given to the state store"


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL keeps the zone (timestamptz). SQLite has none: values are stored as naive UTC text, which also sorts
    and compares correctly as text, and are made aware again on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = aware(value)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def aware(value: datetime, what: str = STORE_TIMES, *, field: str | None = None) -> datetime:
    """``value`` in UTC; ConfigError ("<what> must be timezone-aware") when it is naive."""
    return require_aware(value, what, field=field).astimezone(UTC)


def check_limit(limit: int, most: int = 10_000) -> int:
    """``limit`` if it is a page size from 1 to ``most``; ConfigError naming the ``limit`` field otherwise."""
    if not 1 <= limit <= most:
        raise ConfigError(f"limit must be between 1 and {most}", field="limit")
    return limit


def newest_first(
    query: Select[Any], created: ColumnElement[datetime], ident: ColumnElement[str], *, after: Cursor | None, limit: int
) -> Select[Any]:
    """One page of ``query``, newest first by (``created``, ``ident``), strictly after the cursor ``after``.

    Keyset pagination: a page never repeats or skips a row because others were created meanwhile.
    """
    if after is not None:
        at, last = aware(after[0]), after[1]
        query = query.where(or_(created < at, and_(created == at, ident < last)))
    return query.order_by(created.desc(), ident.desc()).limit(limit)


def truncate_utf8(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, never splitting a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
