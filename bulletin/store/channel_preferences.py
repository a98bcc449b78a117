"""Communication-channel preferences (ThoughtSpot-style): which channels a report's recipients get, per event.

Two levels, per event type: the cluster's default (``cluster_channel_preferences``) and an organisation's override
(``org_channel_preferences``). ``effective_channels`` is the rule: an organisation's preference for the event wins
over the cluster's; with neither, None, meaning the report's own channels. Event types are ``REPORT_SCHEDULE``
(a scheduled delivery) and ``REPORT_JOB`` (an on-demand job); channels ``EMAIL``, ``WEBHOOK`` and ``S3``.

``configure`` applies one request in one write transaction, after checking all of it: a request that names an
unknown organisation, or repeats an event type, changes nothing. ``REPLACE`` sets the channels of the event types it
lists (the organisation's other event types keep theirs); ``RESET`` removes the organisation's own preference for
the events in ``reset_events`` (all when absent), so the cluster's applies again.

``only_org`` scopes a call to one organisation (an organisation's API key): any other organisation is reported as
unknown (NotFoundError), exactly as a missing one, so a key cannot learn which organisations exist. None: every
organisation (a cluster-admin key). Organisations are named by id or by name (ThoughtSpot's ``org_identifier``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, Connection, ForeignKey, String, Table, delete, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from bulletin.errors import NotFoundError, RequestError
from bulletin.models import ChannelName
from bulletin.store.api_keys import organisations
from bulletin.store.base import UTCDateTime, aware, metadata
from bulletin.store.db import Store


class EventType(StrEnum):
    REPORT_SCHEDULE = "REPORT_SCHEDULE"  # a scheduled delivery: a deployment's scheduled run
    REPORT_JOB = "REPORT_JOB"  # an on-demand job: POST /v1/jobs, `bulletin run`, a run started by hand


class Channel(StrEnum):
    """A preference's channel, in the API's spelling (Hasura's upper case): a file channel's ``ChannelName`` in
    upper case, or ``WEBHOOK``."""

    EMAIL = "EMAIL"
    WEBHOOK = "WEBHOOK"
    S3 = "S3"
    SFTP = "SFTP"

    @property
    def file_channel(self) -> ChannelName | None:
        """The report channel this preference keeps; None for WEBHOOK, which keeps none (webhooks are per run)."""
        return None if self is Channel.WEBHOOK else ChannelName(self.value.lower())


class Operation(StrEnum):
    REPLACE = "REPLACE"
    RESET = "RESET"


Channels = tuple[Channel, ...]
Preferences = Mapping[EventType, Channels]

_EVENT_CHECK = "event_type IN ({})".format(", ".join(f"'{e.value}'" for e in EventType))

cluster_channel_preferences = Table(
    "cluster_channel_preferences",
    metadata,
    Column("event_type", String(32), primary_key=True),
    Column("channels", JSON(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("updated_by", String(40)),
    CheckConstraint(_EVENT_CHECK, name="ck_cluster_channel_preferences_event_type"),
)

org_channel_preferences = Table(
    "org_channel_preferences",
    metadata,
    Column("org", String(128), ForeignKey("organisations.id"), primary_key=True),
    Column("event_type", String(32), primary_key=True),
    Column("channels", JSON(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("updated_by", String(40)),
    CheckConstraint(_EVENT_CHECK, name="ck_org_channel_preferences_event_type"),
)


# --- the rule (pure) -------------------------------------------------------------------------------------------------


def normalise_channels(channels: Iterable[Channel | str]) -> Channels:
    """Each channel once, in the one order answers use (EMAIL, WEBHOOK, S3)."""
    wanted = {Channel(c) for c in channels}
    return tuple(c for c in Channel if c in wanted)


def effective_channels(cluster: Preferences, org: Preferences | None, event_type: EventType) -> Channels | None:
    """The channels for ``event_type``: the organisation's preference, else the cluster's, else None (= the report's
    own channels)."""
    if org is not None and event_type in org:
        return org[event_type]
    return cluster.get(event_type)


def preference_map(entries: Sequence[tuple[EventType, Iterable[Channel]]], field: str) -> dict[EventType, Channels]:
    """``[(event_type, channels), ...]`` as a mapping; an event type given twice is refused (which one would win?)."""
    found: dict[EventType, Channels] = {}
    for i, (event_type, channels) in enumerate(entries):
        if event_type in found:
            raise RequestError(f"event type {event_type.value} is given twice", field=f"{field}.{i}.event_type")
        found[event_type] = normalise_channels(channels)
    return found


@dataclass(frozen=True)
class RunPreferences:
    """What one run needs to choose each recipient's channels: every preference for its event type, loaded once
    (picklable, so a run's worker processes get it with the plan)."""

    event_type: EventType
    cluster: dict[EventType, Channels] = field(default_factory=dict)
    orgs: dict[str, dict[EventType, Channels]] = field(default_factory=dict)
    #: (org or "", ref) -> channels: each person's preference for every report, and for this run's report
    #: (bulletin/store/recipient_preferences.py).
    recipients: dict[tuple[str, str], Channels] = field(default_factory=dict)
    recipient_report: dict[tuple[str, str], Channels] = field(default_factory=dict)

    def for_recipient(self, org: str | None, ref: str) -> tuple[Channels | None, str | None]:
        """The most specific level that says something: the person's preference for this report, else theirs for
        every report (the source is ``recipient``), else ``for_org``."""
        person = (org or "", ref)
        if person in self.recipient_report:
            return self.recipient_report[person], "recipient for this report"
        if person in self.recipients:
            return self.recipients[person], "recipient"
        return self.for_org(org)

    def for_org(self, org: str | None) -> tuple[Channels | None, str | None]:
        """The effective channels for a recipient of ``org`` (None: a recipient without an organisation) and whose
        preference they are (``organisation acme``, ``cluster``), or (None, None) when neither has one."""
        own = self.orgs.get(org) if org is not None else None
        channels = effective_channels(self.cluster, own, self.event_type)
        if channels is None:
            return None, None
        return channels, f"organisation {org}" if own is not None and self.event_type in own else "cluster"


# --- reading and writing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrgChange:
    """One entry of a configure request's ``org_preferences``."""

    org_identifier: str
    operation: Operation
    preferences: dict[EventType, Channels] = field(default_factory=dict)
    reset_events: tuple[EventType, ...] | None = None  # RESET only; None: every event type


@dataclass(frozen=True)
class OrgPreferences:
    """An organisation with its own preferences (none: it inherits the cluster's)."""

    id: str
    name: str
    preferences: dict[EventType, Channels]


@dataclass(frozen=True)
class Found:
    """What a search found: the cluster's preferences and the organisations' own."""

    cluster: dict[EventType, Channels]
    orgs: list[OrgPreferences]


def check_change(change: OrgChange, field: str) -> None:
    """ThoughtSpot's rules for one org entry: REPLACE needs preferences and takes no reset_events; RESET takes no
    preferences."""
    if change.operation is Operation.REPLACE:
        if not change.preferences:
            raise RequestError("REPLACE needs at least one preference", field=f"{field}.preferences")
        if change.reset_events is not None:
            raise RequestError("reset_events goes with operation RESET only", field=f"{field}.reset_events")
    elif change.preferences:
        raise RequestError(
            "RESET takes no preferences: it returns the events in reset_events (or all) to the cluster's",
            field=f"{field}.preferences",
        )


def configure(
    store: Store,
    *,
    cluster: Preferences | None = None,
    orgs: Sequence[OrgChange] = (),
    only_org: str | None,
    updated_by: str | None,
    now: datetime,
) -> None:
    """Apply a configure request at once or not at all. Org entries are checked (``check_change``) and resolved
    before anything is written; an organisation named twice is refused."""
    now = aware(now)
    for i, change in enumerate(orgs):
        check_change(change, f"org_preferences.{i}")
    stamp = {"updated_at": now, "updated_by": updated_by}
    with store.write() as conn:
        resolved: dict[str, int] = {}
        targets: list[tuple[str, OrgChange]] = []
        for i, change in enumerate(orgs):
            where = f"org_preferences.{i}.org_identifier"
            org_id = _resolve(conn, change.org_identifier, only_org, where)["id"]
            if org_id in resolved:
                raise RequestError(
                    f"organisation {org_id!r} is already configured by org_preferences.{resolved[org_id]}", field=where
                )
            resolved[org_id] = i
            targets.append((org_id, change))
        for event_type, channels in (cluster or {}).items():
            values = {"event_type": event_type.value, "channels": [c.value for c in channels], **stamp}
            _upsert(conn, cluster_channel_preferences, ["event_type"], values)
        for org_id, change in targets:
            if change.operation is Operation.RESET:
                events = [e.value for e in (change.reset_events or tuple(EventType))]
                table = org_channel_preferences
                conn.execute(delete(table).where(table.c.org == org_id, table.c.event_type.in_(events)))
                continue
            for event_type, channels in change.preferences.items():
                values = {"org": org_id, "event_type": event_type.value, "channels": [c.value for c in channels]}
                _upsert(conn, org_channel_preferences, ["org", "event_type"], {**values, **stamp})


def search(
    store: Store,
    *,
    cluster_events: Iterable[EventType] | None = None,
    orgs: Sequence[tuple[str, Iterable[EventType] | None]] | None = None,
    only_org: str | None,
) -> Found:
    """The cluster's preferences (for ``cluster_events`` only, when given) and each organisation's own: those named
    in ``orgs`` as ``(org_identifier, event_types or None for all)``, in that order, else every organisation the
    scope shows, by id. An organisation without preferences of its own is listed with none."""
    with store.read() as conn:
        cluster = _cluster(conn)
        wanted: list[tuple[Any, set[EventType] | None]] = []
        if orgs is None:
            query = select(organisations).order_by(organisations.c.id)
            if only_org is not None:
                query = query.where(organisations.c.id == only_org)
            wanted = [(row, None) for row in conn.execute(query).mappings()]
        else:
            seen: set[str] = set()
            for i, (identifier, events) in enumerate(orgs):
                where = f"org_preferences.{i}.org_identifier"
                row = _resolve(conn, identifier, only_org, where)
                if row["id"] in seen:
                    raise RequestError(f"organisation {row['id']!r} is named twice", field=where)
                seen.add(row["id"])
                wanted.append((row, None if events is None else set(events)))
        own = _orgs(conn, [row["id"] for row, _ in wanted])
    if cluster_events is not None:
        keep = set(cluster_events)
        cluster = {e: c for e, c in cluster.items() if e in keep}
    found = []
    for row, events in wanted:
        prefs = own.get(row["id"], {})
        if events is not None:
            prefs = {e: c for e, c in prefs.items() if e in events}
        found.append(OrgPreferences(id=row["id"], name=row["name"], preferences=prefs))
    return Found(cluster=cluster, orgs=found)


def load_run_preferences(store: Store, event_type: EventType) -> RunPreferences:
    """Every preference a run of ``event_type`` may need, in one read (the flow calls this once per run)."""
    with store.read() as conn:
        cluster = _cluster(conn)
        table = org_channel_preferences
        rows = conn.execute(select(table).where(table.c.event_type == event_type.value)).mappings()
        orgs: dict[str, dict[EventType, Channels]] = {}
        for row in rows:
            orgs.setdefault(row["org"], {})[event_type] = normalise_channels(row["channels"])
    return RunPreferences(event_type=event_type, cluster=cluster, orgs=orgs)


def _sorted(prefs: dict[EventType, Channels]) -> dict[EventType, Channels]:
    return {e: prefs[e] for e in EventType if e in prefs}


def _cluster(conn: Connection) -> dict[EventType, Channels]:
    rows = conn.execute(select(cluster_channel_preferences)).mappings()
    return _sorted({EventType(r["event_type"]): normalise_channels(r["channels"]) for r in rows})


def _orgs(conn: Connection, org_ids: list[str]) -> dict[str, dict[EventType, Channels]]:
    if not org_ids:
        return {}
    table = org_channel_preferences
    found: dict[str, dict[EventType, Channels]] = {}
    for row in conn.execute(select(table).where(table.c.org.in_(org_ids))).mappings():
        found.setdefault(row["org"], {})[EventType(row["event_type"])] = normalise_channels(row["channels"])
    return {org: _sorted(prefs) for org, prefs in found.items()}


def _resolve(conn: Connection, identifier: str, only_org: str | None, field: str) -> Any:
    """The organisation row named by ``identifier`` (its id, else its name), within the caller's scope.

    Outside the scope it is "unknown", word for word as a missing one. A name shared by several organisations
    (visible only to a cluster admin) is refused: give the id.
    """
    unknown = NotFoundError(f"no organisation {identifier[:60]!r}", field=field)
    by_id = conn.execute(select(organisations).where(organisations.c.id == identifier)).mappings().first()
    if by_id is not None and only_org in (None, by_id["id"]):
        return by_id
    query = select(organisations).where(organisations.c.name == identifier)
    if only_org is not None:
        query = query.where(organisations.c.id == only_org)
    named = conn.execute(query.order_by(organisations.c.id).limit(2)).mappings().all()
    if not named:
        raise unknown
    if len(named) > 1:
        raise RequestError(f"several organisations are named {identifier[:60]!r}: give its id", field=field)
    return named[0]


def _upsert(conn: Connection, table: Table, keys: list[str], values: dict[str, Any]) -> None:
    """Insert or replace one row by its primary key (concurrent writers: the last one wins, neither fails)."""
    backend = conn.dialect.name
    changes = {k: v for k, v in values.items() if k not in keys}
    if backend in {"sqlite", "postgresql"}:
        dialect_insert = sqlite.insert if backend == "sqlite" else postgresql.insert
        statement = dialect_insert(table).values(values)
        conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=changes))
        return
    try:
        with conn.begin_nested():
            conn.execute(insert(table).values(values))
    except sa_exc.IntegrityError:
        conn.execute(table.update().where(*(table.c[k] == values[k] for k in keys)).values(changes))
