"""Each person's channel preferences in the state store (for every report, and for one report), the table a run
loads, and the migration that makes it. On SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bulletin.store import Store
from bulletin.store import channel_preferences as cp
from bulletin.store import recipient_preferences as rp
from bulletin.store.api_keys import create_key
from bulletin.store.base import metadata
from bulletin.store.channel_preferences import Channel, EventType, Operation, OrgChange
from bulletin.store.db import VERSION_TABLE

T0 = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
EMAIL, S3 = Channel.EMAIL, Channel.S3


def test_migration_0007_matches_the_table(store: Store) -> None:
    def mine(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table == "recipient_channel_preferences"

    opts = {"compare_type": True, "version_table": VERSION_TABLE, "include_object": mine}
    with store.read() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts=opts), metadata) == []


def test_set_list_replace_and_clear(store: Store) -> None:
    rp.set_preference(store, org="acme", recipient="ann", report_id=None, channels=[S3, EMAIL], updated_by="k", now=T0)
    rp.set_preference(store, org="acme", recipient="ann", report_id="daily", channels=[], updated_by="k", now=T0)
    later = T0 + timedelta(hours=1)
    rp.set_preference(store, org="acme", recipient="ann", report_id="daily", channels=[S3], updated_by="j", now=later)
    rp.set_preference(store, org="globex", recipient="ann", report_id=None, channels=[], updated_by="k", now=T0)
    found = rp.list_preferences(store, org="acme", recipient="ann")
    assert [(p.report_id, p.channels, p.updated_by) for p in found] == [(None, (EMAIL, S3), "k"), ("daily", (S3,), "j")]
    assert found[1].updated_at == later
    assert rp.clear_preferences(store, org="acme", recipient="ann", report_id="daily") == 1
    assert [p.report_id for p in rp.list_preferences(store, org="acme", recipient="ann")] == [None]
    assert rp.clear_preferences(store, org="acme", recipient="ann", report_id=None) == 1
    assert rp.list_preferences(store, org="acme", recipient="ann") == []
    assert len(rp.list_preferences(store, org="globex", recipient="ann")) == 1, "another organisation's ann is kept"


def test_a_run_loads_every_level_with_the_most_specific_winning(store: Store) -> None:
    create_key(store, org="acme", role="admin", now=T0)
    cp.configure(
        store,
        cluster={EventType.REPORT_SCHEDULE: (EMAIL, S3)},
        orgs=[OrgChange("acme", Operation.REPLACE, {EventType.REPORT_SCHEDULE: (S3,)})],
        only_org=None,
        updated_by="k",
        now=T0,
    )
    put: dict[str, Any] = {"updated_by": "k", "now": T0}
    rp.set_preference(store, org="acme", recipient="ann", report_id=None, channels=[EMAIL], **put)
    rp.set_preference(store, org="acme", recipient="bob", report_id=None, channels=[EMAIL, S3], **put)
    rp.set_preference(store, org="acme", recipient="bob", report_id="daily", channels=[], **put)
    rp.set_preference(store, org="acme", recipient="cat", report_id="weekly", channels=[], **put)
    rp.set_preference(store, org=None, recipient="dan", report_id="daily", channels=[S3], **put)
    run = rp.load_run_preferences(store, EventType.REPORT_SCHEDULE, "daily")
    assert run.for_recipient("acme", "ann") == ((EMAIL,), "recipient")
    assert run.for_recipient("acme", "bob") == ((), "recipient for this report")
    assert run.for_recipient("acme", "cat") == ((S3,), "organisation acme"), "weekly's preference is not daily's"
    assert run.for_recipient(None, "dan") == ((S3,), "recipient for this report")
    assert run.for_recipient("globex", "ann") == ((EMAIL, S3), "cluster"), "acme's ann is not globex's ann"


def test_unsubscribing_turns_email_off_and_nothing_on_and_repeats_harmlessly(store: Store) -> None:
    create_key(store, org="acme", role="admin", now=T0)
    cp.configure(
        store,
        orgs=[OrgChange("acme", Operation.REPLACE, {EventType.REPORT_SCHEDULE: (EMAIL,)})],
        only_org=None,
        updated_by="k",
        now=T0,
    )
    for _ in range(2):
        rp.unsubscribe_email(store, org="acme", recipient="ann", report_id="daily", updated_by="link", now=T0)
    assert [(p.report_id, p.channels) for p in rp.list_preferences(store, org="acme", recipient="ann")] == [
        ("daily", ())
    ], "acme gave ann email only: without it, nothing (S3 is not turned on)"
    rp.unsubscribe_email(store, org="", recipient="dan", report_id="daily", updated_by="link", now=T0)
    (dans,) = rp.list_preferences(store, org=None, recipient="dan")
    assert dans.channels == (Channel.WEBHOOK, S3, Channel.SFTP), "no preference anywhere: every channel but email"
