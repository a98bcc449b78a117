"""The channel registry: which channels exist, how each is opened, whether settings configure it.

Adding a channel is one module (a ``Channel``, or only a ``Destination`` for a store of files) and one entry in
``CHANNELS``, keyed by its ``bulletin.models.ChannelName``. Nothing else branches on a channel's name: delivery
(tasks/delivery/deliver.py) opens the recipient's channels here and calls each the same way; webhooks and the API find
the store that holds a delivered file through ``file_store``.

A channel is opened per batch of recipients (a small run's task, a large run's lane) and closed after it; what its
openings may share within a process (a boto3 client) is kept in ``Shared``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from bulletin.clock import Clock, utc_now
from bulletin.errors import ConfigError
from bulletin.models import ChannelName
from bulletin.settings import Settings
from tasks.delivery.channels import (
    BucketChannel,
    Channel,
    DestinationChoice,
    EmailChannel,
    LinkStore,
    choose_destination,
)
from tasks.storage import Destination, LocalLinks

T = TypeVar("T")

#: A store's choice from settings; ``LocalLinks`` says how the API serves a local folder's files, when it does.
DestinationChooser = Callable[[Settings, "LocalLinks | None", Clock], DestinationChoice]


class Shared:
    """What a process builds once for its channels (S3's client) and every batch's channels then share."""

    def __init__(self) -> None:
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def once(self, key: str, build: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._made:
                self._made[key] = build()
            return cast(T, self._made[key])


@dataclass(frozen=True)
class ChannelKind:
    """One registered channel: how to open it for a batch, which settings it cannot do without, and, for a channel
    whose files stay in a store, how to reach that store (download links, deletes)."""

    name: ChannelName
    open: Callable[[Settings, Shared], Channel]
    #: Settings that must be set for the channel to work (``"sftp_host"``): unset, a report naming it is refused.
    needs: tuple[str, ...] = ()
    store: DestinationChooser | None = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.needs if n not in Settings.model_fields]
        if unknown:
            raise ValueError(f"channel {self.name}: {unknown[0]!r} is not a setting")

    def unconfigured(self, settings: Settings) -> str | None:
        """Why ``settings`` do not configure this channel, or None when they do."""
        missing = [f"BULLETIN_{n.upper()}" for n in self.needs if not getattr(settings, n)]
        return f"is not configured on this server: set {', '.join(missing)}" if missing else None


def bucket_kind(name: ChannelName, choose: DestinationChooser, *, needs: tuple[str, ...] = ()) -> ChannelKind:
    """A channel that stores each file in the destination ``choose`` picks, built once per process."""

    def open_bucket(settings: Settings, shared: Shared) -> Channel:
        choice = choose(settings, None, utc_now)
        return BucketChannel(name, lambda: shared.once(name, choice.build), link_seconds=settings.link_expiry_seconds)

    return ChannelKind(name=name, open=open_bucket, needs=needs, store=choose)


def destination_kind(
    name: ChannelName,
    build: Callable[[Settings], Destination],
    *,
    needs: tuple[str, ...] = (),
    shares_links: bool = True,
) -> ChannelKind:
    """A bucket-style channel over one kind of ``Destination``, built from settings (``SftpDestination.from_settings``).
    ``shares_links``: its links open anywhere, not only on this host (they go into webhook events)."""

    def choose(settings: Settings, local_links: LocalLinks | None, clock: Clock) -> DestinationChoice:
        del local_links, clock  # only the local bucket folder is served by the API, and only S3 presigns
        return DestinationChoice(shares_links=shares_links, build=lambda: build(settings), where=name.value)

    return bucket_kind(name, choose, needs=needs)


def _s3_or_local(settings: Settings, local_links: LocalLinks | None, clock: Clock) -> DestinationChoice:
    return choose_destination(settings, local_links=local_links, clock=clock)


def _sftp(settings: Settings) -> Destination:
    # Imported when a run first opens the channel: paramiko is not loaded by processes that never deliver by SFTP.
    from tasks.storage.sftp import SftpDestination

    return SftpDestination.from_settings(settings)


def _open_email(settings: Settings, shared: Shared) -> Channel:
    del shared  # one SMTP connection per batch: a connection is not shared between lanes
    return EmailChannel.from_settings(settings)


#: Every channel, by name. A name of ``ChannelName`` missing here is refused at the door (``channel_problem``).
CHANNELS: dict[ChannelName, ChannelKind] = {
    ChannelName.S3: bucket_kind(ChannelName.S3, _s3_or_local),
    ChannelName.EMAIL: ChannelKind(name=ChannelName.EMAIL, open=_open_email),
    # sftp:// links open in no browser: webhook events list the files' URIs, never as download links.
    ChannelName.SFTP: destination_kind(ChannelName.SFTP, _sftp, needs=("sftp_host",), shares_links=False),
}

#: The channel whose store serves the download links another channel sends instead of files (email over its cap).
LINKS_FROM = ChannelName.S3


def channel_problem(name: str, settings: Settings) -> str | None:
    """Why a report may not name channel ``name`` under ``settings`` (not registered, not configured), or None.
    ``bulletin.requests.check_request`` asks it, so such a report is refused before any work."""
    kind = _kind(name)
    if kind is None:
        return "is not a channel this server can deliver on (no module registers it)"
    return kind.unconfigured(settings)


def _kind(name: str, registry: Mapping[ChannelName, ChannelKind] = CHANNELS) -> ChannelKind | None:
    try:
        return registry.get(ChannelName(name))
    except ValueError:
        return None


def file_store(
    name: str, settings: Settings, *, local_links: LocalLinks | None = None, clock: Clock = utc_now
) -> DestinationChoice | None:
    """The store that holds the files delivered on channel ``name`` (None: its files stay nowhere we can reach, as
    an email's), for links and deletes after the run."""
    kind = _kind(name)
    if kind is None or kind.store is None or kind.unconfigured(settings) is not None:
        return None
    return kind.store(settings, local_links, clock)


class Channels:
    """A process's channels: its settings, the registry, and what their openings share."""

    def __init__(self, settings: Settings, registry: Mapping[ChannelName, ChannelKind] | None = None) -> None:
        self.settings = settings
        self.registry = CHANNELS if registry is None else registry
        self.shared = Shared()

    def open(self) -> OpenChannels:
        return OpenChannels(self)


class OpenChannels:
    """One batch's channels, each opened when a recipient first needs it and closed together at the end."""

    def __init__(self, channels: Channels) -> None:
        self._channels = channels
        self._open: dict[str, Channel] = {}

    def get(self, name: str) -> Channel:
        """The channel ``name``, opened. ConfigError if no module registers it (checked at the door too)."""
        if name not in self._open:
            kind = _kind(name, self._channels.registry)
            if kind is None:
                raise ConfigError(f"channel {name!r} is not registered on this server")
            self._open[name] = kind.open(self._channels.settings, self._channels.shared)
        return self._open[name]

    def link_store(self) -> LinkStore:
        """The store download links come from (``LINKS_FROM``), opened."""
        channel = self.get(LINKS_FROM)
        if not isinstance(channel, BucketChannel):
            raise ConfigError(f"channel {LINKS_FROM.value!r} keeps no files to link to")
        return channel

    def close(self) -> None:
        for channel in self._open.values():
            channel.close()
        self._open.clear()
