"""Communication-channel preferences in the state store: the org-wins rule, configure (REPLACE, RESET, all or
nothing), search, the organisation scope of a key, and the snapshot a run loads. On SQLite and (when configured)
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from bulletin.errors import NotFoundError, RequestError
from bulletin.store import Store
from bulletin.store import channel_preferences as cp
from bulletin.store.api_keys import create_key
from bulletin.store.base import metadata
from bulletin.store.channel_preferences import Channel, EventType, Operation, OrgChange
from bulletin.store.db import VERSION_TABLE

T0 = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
MY_TABLES = {"cluster_channel_preferences", "org_channel_preferences"}
SCHEDULE, JOB = EventType.REPORT_SCHEDULE, EventType.REPORT_JOB
EMAIL, WEBHOOK, S3 = Channel.EMAIL, Channel.WEBHOOK, Channel.S3


@pytest.fixture
def orgs(store: Store) -> Store:
    """acme, globex (named "Globex Corp") and initech, each made by its first key."""
    for org, name in (("acme", None), ("globex", "Globex Corp"), ("initech", None)):
        create_key(store, org=org, role="admin", org_name=name, now=T0)
    return store


def replace(org: str, **prefs: list[Channel]) -> OrgChange:
    return OrgChange(org, Operation.REPLACE, {EventType(e): tuple(c) for e, c in prefs.items()})


def configure(store: Store, only_org: str | None = None, **kwargs: Any) -> None:
    cp.configure(store, only_org=only_org, updated_by="key_test", now=T0, **kwargs)


def everything(store: Store) -> cp.Found:
    return cp.search(store, only_org=None)


def test_migration_0005_matches_the_tables(store: Store) -> None:
    def mine(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in MY_TABLES

    opts = {"compare_type": True, "version_table": VERSION_TABLE, "include_object": mine}
    with store.read() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts=opts), metadata) == []
        assert set(inspect(conn).get_table_names()) >= MY_TABLES


def test_an_organisation_wins_over_the_cluster_and_neither_means_none() -> None:
    cluster = {SCHEDULE: (EMAIL,), JOB: (EMAIL, S3)}
    acme = {SCHEDULE: (WEBHOOK,)}
    assert cp.effective_channels(cluster, acme, SCHEDULE) == (WEBHOOK,)
    assert cp.effective_channels(cluster, acme, JOB) == (EMAIL, S3), "acme has no REPORT_JOB preference of its own"
    assert cp.effective_channels(cluster, None, SCHEDULE) == (EMAIL,)
    assert cp.effective_channels({}, {}, SCHEDULE) is None
    assert cp.effective_channels({}, acme, JOB) is None


def test_channels_are_kept_once_in_one_order() -> None:
    assert cp.normalise_channels([S3, EMAIL, S3, "WEBHOOK"]) == (EMAIL, WEBHOOK, S3)


def test_an_event_type_twice_is_refused_naming_the_entry() -> None:
    with pytest.raises(RequestError) as caught:
        cp.preference_map([(SCHEDULE, [EMAIL]), (JOB, [S3]), (SCHEDULE, [S3])], "cluster_preferences")
    assert caught.value.field == "cluster_preferences.2.event_type"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (OrgChange("acme", Operation.REPLACE), "org_preferences.0.preferences"),
        (OrgChange("acme", Operation.REPLACE, {SCHEDULE: (EMAIL,)}, (SCHEDULE,)), "org_preferences.0.reset_events"),
        (OrgChange("acme", Operation.RESET, {SCHEDULE: (EMAIL,)}), "org_preferences.0.preferences"),
    ],
)
def test_thoughtspots_operation_rules(orgs: Store, change: OrgChange, field: str) -> None:
    with pytest.raises(RequestError) as caught:
        configure(orgs, orgs=[change])
    assert caught.value.field == field


def test_configure_then_search_everything(orgs: Store) -> None:
    configure(orgs, cluster={SCHEDULE: (EMAIL,)}, orgs=[replace("acme", REPORT_SCHEDULE=[WEBHOOK, EMAIL])])
    found = everything(orgs)
    assert found.cluster == {SCHEDULE: (EMAIL,)}
    assert [(o.id, o.name, o.preferences) for o in found.orgs] == [
        ("acme", "acme", {SCHEDULE: (EMAIL, WEBHOOK)}),
        ("globex", "Globex Corp", {}),
        ("initech", "initech", {}),
    ]
    with orgs.read() as conn:
        row = conn.execute(select(cp.org_channel_preferences)).mappings().one()
    assert (row["updated_by"], row["updated_at"]) == ("key_test", T0)


def test_replace_sets_the_listed_events_and_keeps_the_others(orgs: Store) -> None:
    configure(orgs, orgs=[replace("acme", REPORT_SCHEDULE=[EMAIL], REPORT_JOB=[S3])])
    configure(orgs, orgs=[replace("acme", REPORT_SCHEDULE=[WEBHOOK])])
    configure(orgs, cluster={JOB: (EMAIL,)})
    configure(orgs, cluster={JOB: (WEBHOOK, S3)})
    found = everything(orgs)
    assert found.orgs[0].preferences == {SCHEDULE: (WEBHOOK,), JOB: (S3,)}
    assert found.cluster == {JOB: (WEBHOOK, S3)}


def test_reset_some_events_or_all(orgs: Store) -> None:
    both = replace("acme", REPORT_SCHEDULE=[EMAIL], REPORT_JOB=[S3])
    configure(orgs, orgs=[both, replace("globex", REPORT_JOB=[S3])])
    configure(orgs, orgs=[OrgChange("acme", Operation.RESET, reset_events=(JOB,))])
    assert everything(orgs).orgs[0].preferences == {SCHEDULE: (EMAIL,)}
    configure(orgs, orgs=[OrgChange("acme", Operation.RESET)])
    found = everything(orgs)
    assert found.orgs[0].preferences == {}
    assert found.orgs[1].preferences == {JOB: (S3,)}, "another organisation's reset is not globex's"


def test_a_request_that_fails_changes_nothing(orgs: Store) -> None:
    configure(orgs, cluster={SCHEDULE: (EMAIL,)}, orgs=[replace("acme", REPORT_SCHEDULE=[S3])])
    before = everything(orgs)
    bad = [
        OrgChange("acme", Operation.RESET),
        replace("globex", REPORT_JOB=[WEBHOOK]),
        replace("no-such-org", REPORT_JOB=[WEBHOOK]),
    ]
    with pytest.raises(NotFoundError) as caught:
        configure(orgs, cluster={SCHEDULE: (S3,), JOB: (S3,)}, orgs=bad)
    assert caught.value.field == "org_preferences.2.org_identifier"
    twice = [replace("globex", REPORT_JOB=[WEBHOOK]), replace("Globex Corp", REPORT_JOB=[S3])]
    with pytest.raises(RequestError) as caught_twice:
        configure(orgs, cluster={JOB: (S3,)}, orgs=twice)
    assert caught_twice.value.field == "org_preferences.1.org_identifier"
    assert everything(orgs) == before


def test_an_organisation_is_named_by_id_or_name(orgs: Store) -> None:
    configure(orgs, orgs=[replace("Globex Corp", REPORT_JOB=[S3])])
    found = cp.search(orgs, orgs=[("Globex Corp", None)], only_org=None)
    assert [(o.id, o.preferences) for o in found.orgs] == [("globex", {JOB: (S3,)})]
    create_key(orgs, org="umbrella", role="admin", org_name="Globex Corp", now=T0)
    with pytest.raises(RequestError, match="give its id") as caught:
        configure(orgs, orgs=[replace("Globex Corp", REPORT_JOB=[EMAIL])])
    assert caught.value.field == "org_preferences.0.org_identifier"


def test_a_key_of_one_organisation_sees_and_changes_only_its_own(orgs: Store) -> None:
    configure(orgs, orgs=[replace("globex", REPORT_JOB=[S3])])
    messages = []
    for identifier in ("globex", "Globex Corp", "no-such-org"):
        with pytest.raises(NotFoundError) as caught:
            configure(orgs, only_org="acme", orgs=[replace(identifier, REPORT_JOB=[EMAIL])])
        messages.append(caught.value.message.replace(repr(identifier), "X"))
        with pytest.raises(NotFoundError):
            cp.search(orgs, orgs=[(identifier, None)], only_org="acme")
    assert len(set(messages)) == 1, "another organisation is refused exactly as a missing one"
    configure(orgs, only_org="acme", orgs=[replace("acme", REPORT_JOB=[EMAIL])])
    mine = cp.search(orgs, only_org="acme")
    assert [(o.id, o.preferences) for o in mine.orgs] == [("acme", {JOB: (EMAIL,)})]
    assert everything(orgs).orgs[1].preferences == {JOB: (S3,)}, "globex is untouched"


def test_search_filters_by_event_type(orgs: Store) -> None:
    configure(
        orgs,
        cluster={SCHEDULE: (EMAIL,), JOB: (S3,)},
        orgs=[replace("acme", REPORT_SCHEDULE=[WEBHOOK], REPORT_JOB=[EMAIL])],
    )
    found = cp.search(orgs, cluster_events=[JOB], orgs=[("acme", [SCHEDULE])], only_org=None)
    assert found.cluster == {JOB: (S3,)}
    assert [(o.id, o.preferences) for o in found.orgs] == [("acme", {SCHEDULE: (WEBHOOK,)})]
    with pytest.raises(RequestError) as caught:
        cp.search(orgs, orgs=[("acme", None), ("acme", [JOB])], only_org=None)
    assert caught.value.field == "org_preferences.1.org_identifier"


def test_a_run_loads_its_event_types_preferences_once(orgs: Store) -> None:
    configure(
        orgs,
        cluster={SCHEDULE: (EMAIL, S3)},
        orgs=[replace("acme", REPORT_SCHEDULE=[S3]), replace("globex", REPORT_JOB=[EMAIL])],
    )
    run = cp.load_run_preferences(orgs, SCHEDULE)
    assert run.for_org("acme") == ((S3,), "organisation acme")
    assert run.for_org("globex") == ((EMAIL, S3), "cluster"), "globex's REPORT_JOB preference is not this run's"
    assert run.for_org(None) == ((EMAIL, S3), "cluster")
    job = cp.load_run_preferences(orgs, JOB)
    assert job.for_org("globex") == ((EMAIL,), "organisation globex")
    assert job.for_org("acme") == (None, None)
