"""Webhook endpoints (the subscribers) in the state store: add, list, rotate the secret, disable, enable, remove.

Secrets are stored as given: they must be usable to sign, so they cannot be hashed. ``Endpoint`` holds them as
``SecretStr``; only ``signing_secrets`` and the return values of ``add_endpoint``/``rotate_secret`` reveal them.
A URL is checked for syntax only here; the edges (``bulletin webhooks add``, the API) run the SSRF guard when
an endpoint is added, and it runs again at every send, because DNS answers change.
Use these through ``bulletin.store.webhooks``, which re-exports them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, update

from bulletin.errors import ConfigError, NotFoundError
from bulletin.store.base import aware
from bulletin.store.db import Store
from bulletin.store.webhook_schema import (
    DESCRIPTION_MAX,
    ERROR_MAX,
    STYLES,
    Endpoint,
    MessageStatus,
    Outcome,
    check_event_types,
    check_secret,
    check_url,
    generate_secret,
    webhook_attempts,
    webhook_endpoints,
    webhook_messages,
)


def add_endpoint(
    store: Store,
    *,
    url: str,
    event_types: Sequence[str],
    secret: str | None = None,
    style: str = "standard",
    description: str = "",
    org: str | None = None,
    now: datetime,
) -> tuple[Endpoint, str]:
    """Add a subscriber; returns it and its secret (generated when not given), to be shown once."""
    check_url(url)
    types = check_event_types(event_types)
    if style not in STYLES:
        raise ConfigError(f"style must be one of {', '.join(STYLES)}, not {style!r}", field="style")
    if len(description) > DESCRIPTION_MAX:
        raise ConfigError(f"description is longer than {DESCRIPTION_MAX} characters", field="description")
    secret = check_secret(secret) if secret is not None else generate_secret()
    now = aware(now)
    endpoint_id = f"ep_{uuid.uuid4().hex}"
    row = {
        "id": endpoint_id,
        "url": url,
        "event_types": types,
        "secret": secret,
        "style": style,
        "enabled": True,
        "description": description,
        "org": org,
        "created_at": now,
        "updated_at": now,
    }
    with store.write() as conn:
        conn.execute(insert(webhook_endpoints).values(row))
        return fetch_endpoint(conn, endpoint_id), secret


def list_endpoints(store: Store, *, org: str | None = None) -> list[Endpoint]:
    """Every endpoint, oldest first (only ``org``'s when given)."""
    query = select(webhook_endpoints).order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
    if org is not None:
        query = query.where(webhook_endpoints.c.org == org)
    with store.read() as conn:
        return [Endpoint.model_validate(dict(row)) for row in conn.execute(query).mappings()]


def get_endpoint(store: Store, endpoint_id: str) -> Endpoint:
    with store.read() as conn:
        return fetch_endpoint(conn, endpoint_id)


def remove_endpoint(store: Store, endpoint_id: str) -> None:
    """Delete an endpoint with its messages and their attempts."""
    with store.write() as conn:
        fetch_endpoint(conn, endpoint_id)
        # Explicit, not left to ON DELETE CASCADE: SQLite honours it only with foreign keys switched on.
        conn.execute(delete(webhook_attempts).where(webhook_attempts.c.endpoint_id == endpoint_id))
        conn.execute(delete(webhook_messages).where(webhook_messages.c.endpoint_id == endpoint_id))
        conn.execute(delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))


def rotate_secret(
    store: Store, endpoint_id: str, *, grace_seconds: float, now: datetime, secret: str | None = None
) -> tuple[Endpoint, str]:
    """A new secret; the current one keeps signing beside it for ``grace_seconds`` (any older one is dropped)."""
    if grace_seconds < 0:
        raise ConfigError("grace_seconds cannot be negative", field="grace_seconds")
    new_secret = check_secret(secret) if secret is not None else generate_secret()
    now = aware(now)
    with store.write() as conn:
        current = fetch_endpoint(conn, endpoint_id)
        in_grace = grace_seconds > 0
        conn.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint_id)
            .values(
                secret=new_secret,
                previous_secret=current.secret.get_secret_value() if in_grace else None,
                previous_secret_expires_at=now + timedelta(seconds=grace_seconds) if in_grace else None,
                updated_at=now,
            )
        )
        return fetch_endpoint(conn, endpoint_id), new_secret


def signing_secrets(endpoint: Endpoint, now: datetime) -> list[str]:
    """The secrets to sign with now: the current one, and the previous one while its grace lasts."""
    found = [endpoint.secret.get_secret_value()]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret is not None and expires is not None and aware(now) < expires:
        found.append(endpoint.previous_secret.get_secret_value())
    return found


def disable_endpoint(store: Store, endpoint_id: str, *, reason: str, now: datetime) -> bool:
    """Disable an endpoint and fail its pending messages (redeliver them once it is fixed and enabled again).

    True if this call disabled it; False if it already was, so of concurrent callers only one announces it.
    """
    now = aware(now)
    with store.write() as conn:
        fetch_endpoint(conn, endpoint_id)
        changed = conn.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.enabled.is_(True))
            .values(enabled=False, disabled_reason=reason[:ERROR_MAX], updated_at=now)
        ).rowcount
        if changed != 1:
            return False
        conn.execute(
            update(webhook_messages)
            .where(
                webhook_messages.c.endpoint_id == endpoint_id,
                webhook_messages.c.status == MessageStatus.PENDING.value,
            )
            .values(status=MessageStatus.FAILED.value, last_error=f"endpoint disabled: {reason}"[:ERROR_MAX])
        )
        return True


def enable_endpoint(store: Store, endpoint_id: str, *, now: datetime) -> Endpoint:
    """Enable an endpoint again, with a clean failure record. Failed messages stay failed: redeliver them."""
    with store.write() as conn:
        fetch_endpoint(conn, endpoint_id)
        conn.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint_id)
            .values(enabled=True, disabled_reason=None, failing_since=None, updated_at=aware(now))
        )
        return fetch_endpoint(conn, endpoint_id)


def track_failing_streak(conn: Connection, endpoint_id: str, outcome: Outcome, attempted_at: datetime) -> None:
    """A success clears the endpoint's ``failing_since``; the first failure after one sets it."""
    streak = webhook_endpoints.update().where(webhook_endpoints.c.id == endpoint_id)
    if outcome == "success":
        conn.execute(streak.values(failing_since=None))
    else:  # two steps, not COALESCE: the timestamp must go through UTCDateTime's bind processing
        conn.execute(streak.where(webhook_endpoints.c.failing_since.is_(None)).values(failing_since=attempted_at))


def fetch_endpoint(conn: Connection, endpoint_id: str) -> Endpoint:
    found = conn.execute(select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)).mappings().first()
    if found is None:
        raise NotFoundError(f"no webhook endpoint {endpoint_id[:60]!r}", field="endpoint_id")
    return Endpoint.model_validate(dict(found))
