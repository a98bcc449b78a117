"""Each organisation's signing secret for its scheduled events: made on first use, rotated with an overlap.

One secret per organisation rather than per event or per webhook endpoint: a receiver configures it once and
verifies every event of the organisation with it, whatever URL the event names (an endpoint's secret belongs to that
endpoint's URL; a per-event secret would have to be looked up per request). Stored as given, since it must sign;
``OrgSecret`` holds it as a SecretStr. Use these through ``bulletin.store.scheduled_events``, which re-exports them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from bulletin.errors import ConfigError, StorageError
from bulletin.store.base import aware
from bulletin.store.db import Store
from bulletin.store.scheduled_event_schema import OrgSecret, scheduled_event_secrets
from bulletin.store.webhook_schema import generate_secret


def org_secret(store: Store, org: str, *, now: datetime) -> OrgSecret:
    """``org``'s signing secret, made now if it has none (concurrent first callers all get the same one)."""
    now = aware(now)
    with store.write() as conn:
        found = _secret_row(conn, org)
        if found is not None:
            return found
        values = {"org": org, "secret": generate_secret(), "created_at": now, "updated_at": now}
        backend = conn.dialect.name
        if backend in {"sqlite", "postgresql"}:
            dialect_insert = sqlite.insert if backend == "sqlite" else postgresql.insert
            statement = dialect_insert(scheduled_event_secrets).values(values)
            conn.execute(statement.on_conflict_do_nothing(index_elements=["org"]))
        else:
            try:
                with conn.begin_nested():
                    conn.execute(insert(scheduled_event_secrets).values(values))
            except sa_exc.IntegrityError:
                pass
        made = _secret_row(conn, org)
        if made is None:  # pragma: no cover - the insert above or a concurrent one made it
            raise StorageError(f"no signing secret could be made for organisation {org!r}")
        return made


def rotate_org_secret(store: Store, org: str, *, grace_seconds: float, now: datetime) -> OrgSecret:
    """A new secret for ``org``; the current one keeps signing beside it for ``grace_seconds``."""
    if grace_seconds < 0:
        raise ConfigError("grace_seconds cannot be negative", field="grace_seconds")
    current = org_secret(store, org, now=now)
    now = aware(now)
    in_grace = grace_seconds > 0
    with store.write() as conn:
        conn.execute(
            update(scheduled_event_secrets)
            .where(scheduled_event_secrets.c.org == org)
            .values(
                secret=generate_secret(),
                previous_secret=current.secret.get_secret_value() if in_grace else None,
                previous_secret_expires_at=now + timedelta(seconds=grace_seconds) if in_grace else None,
                updated_at=now,
            )
        )
        rotated = _secret_row(conn, org)
    if rotated is None:  # pragma: no cover - made just above
        raise StorageError(f"organisation {org!r} lost its signing secret")
    return rotated


def _secret_row(conn: Connection, org: str) -> OrgSecret | None:
    found = conn.execute(select(scheduled_event_secrets).where(scheduled_event_secrets.c.org == org)).mappings()
    row = found.first()
    return None if row is None else OrgSecret.model_validate(dict(row))
