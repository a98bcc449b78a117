"""The clock: what a function that needs the time takes, the real one the edges pass, and the check on instants.

Functions take a ``Clock`` (or a ``now``) as an argument so tests can pin time; only the edges (flows, the API, the
CLI) pass ``utc_now``. A naive ``datetime`` is no instant (which zone did the caller mean?), so every time handed
to the store, a signature or a token is checked with ``require_aware`` first.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from bulletin.errors import BulletinError, ConfigError

#: A function that says what time it is now (timezone-aware).
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock, in UTC."""
    return datetime.now(UTC)


def require_aware(
    value: datetime,
    what: str = "the clock passed in",
    *,
    field: str | None = None,
    error: type[BulletinError] = ConfigError,
) -> datetime:
    """``value`` itself, or ``error`` ("<what> must be timezone-aware") when it carries no UTC offset.

    A programming slip (a naive clock) is a ConfigError; a caller checking a definition's value passes its own
    ``error`` and ``field``.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise error(f"{what} must be timezone-aware", field=field)
    return value
