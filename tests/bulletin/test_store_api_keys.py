"""Organisations and API keys in the state store (bulletin.store.api_keys), on a real SQLite file and (when
configured) a real PostgreSQL: only a hash is stored, unknown and revoked keys look alike, last use is tracked."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from bulletin.errors import ConfigError, NotFoundError
from bulletin.store import Store
from bulletin.store import api_keys as ak
from bulletin.store.base import metadata
from bulletin.store.db import VERSION_TABLE

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def test_migration_0003_matches_the_tables(store: Store) -> None:
    with store.read() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
        assert {"organisations", "api_keys"} <= set(inspect(conn).get_table_names())


def test_only_a_hash_and_a_prefix_are_stored(store: Store) -> None:
    created, key = ak.create_key(store, org="acme", role="admin", name="ci", now=T0)
    assert key.startswith("bk_") and len(key) >= 40
    assert created.prefix == key[:11] and created.org == "acme" and created.role == "admin"
    with store.read() as conn:
        dumped = " ".join(str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row)
    assert key not in dumped and key[11:] not in dumped
    assert ak.hash_key(key) in dumped
    assert "key" not in created.model_dump() and key not in repr(created)


def test_the_organisation_is_created_with_its_first_key(store: Store) -> None:
    ak.create_key(store, org="acme", org_name="Acme Corp", now=T0)
    ak.create_key(store, org="acme", org_name="ignored for an existing org", now=T0 + timedelta(seconds=1))
    ak.create_key(store, org="globex", now=T0)
    assert [(o.id, o.name) for o in ak.list_orgs(store)] == [("acme", "Acme Corp"), ("globex", "globex")]
    assert ak.get_org(store, "acme").name == "Acme Corp"
    with pytest.raises(NotFoundError):
        ak.get_org(store, "initech")


def test_concurrent_first_keys_of_one_organisation(store: Store) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        made = list(pool.map(lambda i: ak.create_key(store, org="acme", name=str(i), now=T0), range(8)))
    assert len({key for _, key in made}) == 8
    assert [o.id for o in ak.list_orgs(store)] == ["acme"]
    assert len(ak.list_keys(store, org="acme")) == 8


def test_authenticate_revoke_and_unknown_keys_look_alike(store: Store) -> None:
    created, key = ak.create_key(store, org="acme", now=T0)
    found = ak.authenticate(store, key, now=T0)
    assert found is not None and found.id == created.id
    for wrong in ("", "bk_", key + "x", key[:-1], key.upper(), "Bearer " + key, "bk_" + "a" * 500, "x" * 40):
        assert ak.authenticate(store, wrong, now=T0) is None
    revoked = ak.revoke_key(store, created.id, now=T0 + timedelta(minutes=1))
    assert revoked.revoked_at == T0 + timedelta(minutes=1) and not revoked.active
    assert ak.authenticate(store, key, now=T0 + timedelta(minutes=2)) is None
    again = ak.revoke_key(store, created.id, now=T0 + timedelta(hours=1))
    assert again.revoked_at == revoked.revoked_at  # the first revocation time is kept
    with pytest.raises(NotFoundError):
        ak.revoke_key(store, "key_nope", now=T0)
    assert [k.id for k in ak.list_keys(store, include_revoked=False)] == []


def test_last_use_is_written_at_most_once_a_minute(store: Store) -> None:
    _, key = ak.create_key(store, org="acme", now=T0)
    ak.authenticate(store, key, now=T0 + timedelta(seconds=5))
    ak.authenticate(store, key, now=T0 + timedelta(seconds=30))
    (row,) = ak.list_keys(store)
    assert row.last_used_at == T0 + timedelta(seconds=5)
    ak.authenticate(store, key, now=T0 + timedelta(seconds=70))
    (row,) = ak.list_keys(store)
    assert row.last_used_at == T0 + timedelta(seconds=70)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"org": "bad org"}, "org"),
        ({"org": ""}, "org"),
        ({"org": "-leading"}, "org"),
        ({"org": "a" * 129}, "org"),
        ({"org": "acme", "role": "owner"}, "role"),
        ({"org": "acme", "role": "member", "cluster_admin": True}, "role"),
        ({"org": "acme", "name": "n" * 201}, "name"),
        ({"org": "acme", "org_name": ""}, "name"),
    ],
)
def test_bad_values_are_refused_naming_the_field(store: Store, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ak.create_key(store, now=T0, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert ak.list_keys(store) == [] and ak.list_orgs(store) == []


def test_list_filters_by_organisation_oldest_first(store: Store) -> None:
    first, _ = ak.create_key(store, org="acme", now=T0)
    ak.create_key(store, org="globex", now=T0 + timedelta(seconds=1))
    second, _ = ak.create_key(store, org="acme", role="admin", cluster_admin=True, now=T0 + timedelta(seconds=2))
    assert [k.id for k in ak.list_keys(store, org="acme")] == [first.id, second.id]
    assert ak.list_keys(store, org="acme")[1].cluster_admin is True
    assert len(ak.list_keys(store)) == 3
