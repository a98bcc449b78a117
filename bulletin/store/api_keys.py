"""Organisations and the HTTP API's keys in the state store.

A key is ``bk_`` + 43 URL-safe characters (32 random bytes). It is shown once, by ``create_key``; the store keeps
only its SHA-256 (a fast hash is right for a high-entropy secret: nobody can guess it, so there is nothing to
slow down) and a short prefix to recognise it in lists. ``authenticate`` looks a presented key up by its hash and
compares the hashes again in constant time; unknown and revoked keys get the same answer. ``last_used_at`` is
written at most once a minute per key, so reads do not turn every request into a write.

An organisation's ``id`` is the identifier used everywhere else (a recipient's ``org``, an endpoint's ``org``); it
is created with its first key. Every function takes the clock (``now``) as an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    String,
    Table,
    UniqueConstraint,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from bulletin.errors import ConfigError, NotFoundError
from bulletin.models import IDENTIFIER_RE
from bulletin.store.base import UTCDateTime, aware, metadata
from bulletin.store.db import Store

KEY_PREFIX = "bk_"
#: Characters of the key kept for display: ``bk_`` and 8 of its random characters (48 of its 256 bits).
DISPLAY_CHARS = 11
#: Longest text accepted as a key before hashing: anything longer is refused unhashed.
KEY_MAX_CHARS = 128
NAME_MAX = 200
ROLES = ("admin", "member")
LAST_USED_EVERY = timedelta(minutes=1)

Role = Literal["admin", "member"]

organisations = Table(
    "organisations",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org", String(128), ForeignKey("organisations.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("cluster_admin", Boolean, nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime()),
    Column("revoked_at", UTCDateTime()),
    UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    CheckConstraint("role IN ('admin', 'member')", name="ck_api_keys_role"),
    Index("ix_api_keys_org", "org"),
)


class Organisation(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    created_at: datetime


class ApiKey(BaseModel):
    """A key as listed: never the key itself (the store does not have it), only its ``prefix``."""

    model_config = ConfigDict(frozen=True)

    id: str
    org: str
    name: str
    role: Role
    cluster_admin: bool
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str) -> str:
    """The stored form of a key: hex SHA-256 of its UTF-8 text."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_org(org: str) -> str:
    if not isinstance(org, str) or not IDENTIFIER_RE.match(org):
        raise ConfigError(
            "an organisation id is 1-128 letters, digits, '_' or '-', starting with a letter or digit", field="org"
        )
    return org


def create_key(
    store: Store,
    *,
    org: str,
    role: str = "member",
    cluster_admin: bool = False,
    name: str = "",
    org_name: str | None = None,
    now: datetime,
) -> tuple[ApiKey, str]:
    """A new key for ``org`` (created if new, named ``org_name`` or its id); returns it and the key, shown once.

    A cluster-admin key must also be an admin of its organisation: cluster settings outrank org settings.
    """
    check_org(org)
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {role[:32]!r}", field="role")
    if cluster_admin and role != "admin":
        raise ConfigError("a cluster-admin key must have role admin", field="role")
    if len(name) > NAME_MAX or (org_name is not None and not 0 < len(org_name) <= NAME_MAX):
        raise ConfigError(f"names are at most {NAME_MAX} characters (an organisation's at least 1)", field="name")
    now = aware(now)
    key = generate_key()
    row = {
        "id": f"key_{uuid.uuid4().hex[:20]}",
        "org": org,
        "name": name,
        "role": role,
        "cluster_admin": cluster_admin,
        "key_hash": hash_key(key),
        "prefix": key[:DISPLAY_CHARS],
        "created_at": now,
    }
    with store.write() as conn:
        _ensure_org(conn, org, org_name or org, now)
        conn.execute(insert(api_keys).values(row))
        found = conn.execute(select(api_keys).where(api_keys.c.id == row["id"])).mappings().one()
    return ApiKey.model_validate(dict(found)), key


def list_keys(store: Store, *, org: str | None = None, include_revoked: bool = True) -> list[ApiKey]:
    """Keys, oldest first (only ``org``'s when given)."""
    query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    if org is not None:
        query = query.where(api_keys.c.org == org)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    with store.read() as conn:
        return [ApiKey.model_validate(dict(row)) for row in conn.execute(query).mappings()]


def revoke_key(store: Store, key_id: str, *, now: datetime) -> ApiKey:
    """Revoke a key at once (idempotent: revoking twice keeps the first time)."""
    with store.write() as conn:
        still_active = api_keys.c.revoked_at.is_(None)
        conn.execute(update(api_keys).where(api_keys.c.id == key_id, still_active).values(revoked_at=aware(now)))
        found = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
    if found is None:
        raise NotFoundError(f"no API key {key_id[:60]!r}", field="key_id")
    return ApiKey.model_validate(dict(found))


def authenticate(store: Store, key: str, *, now: datetime) -> ApiKey | None:
    """The active key whose text is ``key``, or None (unknown, revoked or malformed: the caller cannot tell)."""
    if not isinstance(key, str) or not key.startswith(KEY_PREFIX) or len(key) > KEY_MAX_CHARS:
        return None
    presented = hash_key(key)
    with store.read() as conn:
        found = conn.execute(select(api_keys).where(api_keys.c.key_hash == presented)).mappings().first()
    # The lookup matched on the hash already; compare again in constant time so no code path depends on a
    # variable-time comparison of anything derived from the key.
    if found is None or not hmac.compare_digest(found["key_hash"].encode("ascii"), presented.encode("ascii")):
        return None
    if found["revoked_at"] is not None:
        return None
    api_key = ApiKey.model_validate(dict(found))
    now = aware(now)
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_EVERY:
        with store.write() as conn:
            conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == api_key.id,
                    or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= now - LAST_USED_EVERY),
                )
                .values(last_used_at=now)
            )
    return api_key


def list_orgs(store: Store) -> list[Organisation]:
    with store.read() as conn:
        rows = conn.execute(select(organisations).order_by(organisations.c.id)).mappings()
        return [Organisation.model_validate(dict(row)) for row in rows]


def get_org(store: Store, org: str) -> Organisation:
    with store.read() as conn:
        found = conn.execute(select(organisations).where(organisations.c.id == org)).mappings().first()
    if found is None:
        raise NotFoundError(f"no organisation {org[:60]!r}", field="org")
    return Organisation.model_validate(dict(found))


def _ensure_org(conn: Connection, org: str, name: str, now: datetime) -> None:
    """Insert the organisation unless it exists (concurrent creators: exactly one insert, no error)."""
    values = {"id": org, "name": name, "created_at": now}
    backend = conn.dialect.name
    if backend in {"sqlite", "postgresql"}:
        dialect_insert = sqlite.insert if backend == "sqlite" else postgresql.insert
        conn.execute(dialect_insert(organisations).values(values).on_conflict_do_nothing(index_elements=["id"]))
        return
    try:
        with conn.begin_nested():
            conn.execute(insert(organisations).values(values))
    except sa_exc.IntegrityError:
        pass
