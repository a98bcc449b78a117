"""Delivery channels: where a recipient's rendered files go, behind one protocol (``Channel``).

``s3``    the bucket: S3 when ``BULLETIN_S3_BUCKET`` is set, else the local bucket folder (the embedded default).
``email`` one message per recipient: SMTP when ``BULLETIN_SMTP_HOST`` is set, else ``.eml`` files in the outbox.

A channel takes the files of one recipient (a ``Parcel``) and says on the ``Receipt`` which it sent, and where; a
BulletinError it raises fails the files it has not sent, on that channel only. The ledger bookkeeping (claim, mark
sent, skip) stays in ``tasks.delivery.deliver`` and ``tasks.delivery.outcomes``; channels only move bytes. Which
channels exist, and how each is opened, is ``tasks.delivery.registry``'s.

``BucketChannel`` serves any ``Destination`` (tasks/storage/base.py) under the name it is registered with, so a new
store is a destination module and one registration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bulletin.clock import Clock, utc_now
from bulletin.models import ChannelName, Recipient
from bulletin.reports import EmailTemplates
from bulletin.settings import Settings
from tasks.email import (
    DownloadLink,
    EmailAttachment,
    OutboxSender,
    SmtpSender,
    build_message,
    make_sender,
    plan_attachments,
    render_bodies,
    render_chart_png,
)
from tasks.email.unsubscribe import UnsubscribeLinks
from tasks.render import MEDIA_TYPES
from tasks.render.base import RenderContext
from tasks.render.chart import chart_rows
from tasks.render.display import generated_text
from tasks.storage import Destination, LocalBucket, LocalLinks, ObjectFinder, StoredObject, build_key


@dataclass(frozen=True)
class RenderedFile:
    """One rendered file of one recipient, before it goes anywhere."""

    format: str
    path: Path
    rows: int
    bytes: int
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class KeyParts:
    """What an object key is built from; the same for every file of one delivery."""

    prefix: str
    report_id: str
    recipient_ref: str
    org: str | None
    run_id: str
    when: datetime
    output_prefix: str | None = None  # a job's own folder (POST /v1/jobs output.prefix), inside its organisation's


@dataclass(frozen=True)
class DestinationChoice:
    """The destination settings pick, before it is built: building S3's boto3 client is worth putting off until
    a file needs it (and a credentials block is a Prefect API call)."""

    shares_links: bool  # its links open anywhere (presigned, or served by the API), not only on this host (file://)
    build: Callable[[], Destination]
    where: str  # for people: s3://bucket or the folder


def choose_destination(
    settings: Settings, *, local_links: LocalLinks | None = None, clock: Clock = utc_now
) -> DestinationChoice:
    """The one place that picks the store: S3 when a bucket is configured, else the local bucket folder, whose
    files ``local_links`` serves when given (the API's ``/v1/files`` route); else their links are file:// URIs."""
    if settings.s3_bucket:
        return DestinationChoice(
            shares_links=True,
            build=lambda: _s3_destination(settings, clock),
            where=f"s3://{settings.s3_bucket}",
        )
    return DestinationChoice(
        shares_links=local_links is not None,
        build=lambda: LocalBucket(settings.bucket_path, links=local_links),
        where=str(settings.bucket_path),
    )


def _s3_destination(settings: Settings, clock: Clock) -> Destination:
    # Imported here: boto3 costs about half a second to import, which runs that store files locally never need.
    from tasks.storage.s3 import S3Destination

    return S3Destination.from_settings(settings, clock=clock)


def make_destination(
    settings: Settings, *, local_links: LocalLinks | None = None, clock: Clock = utc_now
) -> Destination:
    """The store ``settings`` pick (``choose_destination``), built."""
    return choose_destination(settings, local_links=local_links, clock=clock).build()


class Receipt(Protocol):
    """Where a channel says what it sent: each file once, with where it went (never a link: those carry a
    signature) and an optional note for the manifest.

    A channel whose store can be asked what it holds (``ObjectFinder``) also says where it is about to store a file
    (``storing``), and asks whether an earlier attempt that did not finish recorded a file there (``stored_before``)
    so that a file found is recorded (``found``) rather than stored twice."""

    def sent(self, file: RenderedFile, uri: str, note: str | None = None) -> None: ...

    def storing(self, file: RenderedFile, uri: str) -> bool:
        """Record on the ledger where ``file`` is about to go; False: another run took the delivery over."""
        ...

    def stored_before(self, file: RenderedFile) -> tuple[str, str] | None:
        """(uri, sha256) an earlier unfinished attempt of this delivery recorded, if any."""
        ...

    def found(self, file: RenderedFile, uri: str) -> None:
        """The earlier attempt's file is at ``uri``: recorded as sent, not stored again."""
        ...


class LinkStore(Protocol):
    """What makes download links: a channel whose files stay in a store (``BucketChannel`` fits)."""

    @property
    def name(self) -> str: ...

    def store(self, parts: KeyParts, file: RenderedFile, metadata: dict[str, str]) -> StoredObject: ...

    def link(self, stored: StoredObject, file: RenderedFile) -> DownloadLink: ...


class Links:
    """Download links to one recipient's files, for a channel that sends links instead of files (an email over its
    size cap). They come from one channel's store (``tasks.delivery.registry.LINKS_FROM``): a file that channel
    stored in this attempt is linked where it is; any other is stored there first (and is not recorded as
    delivered on that channel). The store is opened only when a link or a file needs it."""

    def __init__(
        self, source_name: str, source: Callable[[], LinkStore], parts: KeyParts, metadata: dict[str, str]
    ) -> None:
        self._source_name = source_name
        self._source = source
        self._parts = parts
        self._metadata = metadata
        self._stored: dict[str, StoredObject] = {}

    def keep(self, channel: str, file: RenderedFile, stored: StoredObject) -> None:
        """A channel stored ``file``: if it is the links' own store, link that copy rather than store another."""
        if channel == self._source_name:
            self._stored[file.format] = stored

    def link_for(self, file: RenderedFile) -> DownloadLink:
        source = self._source()
        if file.format not in self._stored:
            self._stored[file.format] = source.store(self._parts, file, self._metadata)
        return source.link(self._stored[file.format], file)


@dataclass(frozen=True)
class Parcel:
    """What one channel sends to one recipient: its files (in the plan's format order) and what any channel may
    need to send them."""

    recipient: Recipient
    files: list[RenderedFile]
    ctx: RenderContext
    parts: KeyParts  # the object key of each file, for channels that store files
    metadata: dict[str, str]  # stored with each file: report, recipient, run, token id
    key_figures: list[tuple[str, str]]  # for a message's body
    templates: EmailTemplates | None
    links: Links


class Channel(Protocol):
    """One way files reach a recipient. ``name`` (a ``bulletin.models.ChannelName``) is its ledger identity: the
    ledger's and the manifest's channel column.

    ``send`` says each file it sent on the receipt; a BulletinError it raises fails the files it has not said,
    on this channel only (a TransientError lets a retry try them again). ``close`` ends what it opened for a
    batch of recipients (an SMTP connection); it is opened again on demand.
    """

    @property
    def name(self) -> str: ...

    def send(self, parcel: Parcel, receipt: Receipt) -> None: ...

    def close(self) -> None: ...


class BucketChannel:
    """Stores each file under its own key in a ``Destination``, never overwriting, and makes download links for it.

    The destination is built on first use (``destination`` may be a builder): S3's boto3 client, or an SFTP
    connection, is built only by a run that stores something.
    """

    def __init__(self, name: str, destination: Destination | Callable[[], Destination], *, link_seconds: int) -> None:
        self.name = name
        self._destination = destination
        self.link_seconds = link_seconds

    @property
    def destination(self) -> Destination:
        if callable(self._destination):
            self._destination = self._destination()
        return self._destination

    def send(self, parcel: Parcel, receipt: Receipt) -> None:
        """File by file: a file stored is sent even if a later one fails (the bucket refusing: the rest wait for a
        retry rather than each waiting on it in turn). Where the store can say what it holds, a file an earlier
        attempt stored before it died is recorded as found, and every file's place is on the ledger before it goes.
        """
        finder = self.destination if isinstance(self.destination, ObjectFinder) else None
        for file in parcel.files:
            if finder is not None:
                earlier = receipt.stored_before(file)
                if earlier is not None and finder.find(*earlier):
                    receipt.found(file, earlier[0])
                    continue
                if not receipt.storing(file, finder.uri_for(self.key_for(parcel.parts, file))):
                    continue
            stored = self.store(parcel.parts, file, parcel.metadata)
            parcel.links.keep(self.name, file, stored)
            receipt.sent(file, stored.uri)

    def close(self) -> None:
        """Nothing per batch: the destination is the process's, shared by its lanes."""

    def intended_uri(self, parts: KeyParts, file: RenderedFile) -> str | None:
        """Where ``send`` will say it is storing ``file`` (its storing intent); None for a store that cannot be asked
        what it holds (SFTP), which writes no intent."""
        finder = self.destination if isinstance(self.destination, ObjectFinder) else None
        return None if finder is None else finder.uri_for(self.key_for(parts, file))

    def key_for(self, parts: KeyParts, file: RenderedFile) -> str:
        prefix = "/".join(p for p in (parts.prefix, parts.org, parts.output_prefix) if p)
        return build_key(
            prefix=prefix,
            report_id=parts.report_id,
            recipient_ref=parts.recipient_ref,
            run_id=parts.run_id,
            extension=file.path.suffix.lstrip("."),
            when=parts.when,
        )

    def store(self, parts: KeyParts, file: RenderedFile, metadata: dict[str, str]) -> StoredObject:
        key = self.key_for(parts, file)
        media = MEDIA_TYPES[file.format]
        return self.destination.put(key, file.path, content_type=media, metadata=metadata, sha256=file.sha256)

    def link(self, stored: StoredObject, file: RenderedFile) -> DownloadLink:
        """The destination's link: presigned SigV4 on S3, the file's own URI in the local bucket folder."""
        made = self.destination.link(stored, file.filename, self.link_seconds)
        return DownloadLink(filename=file.filename, url=made.url, expires_at=made.expires_at, size=file.bytes)


@dataclass(frozen=True)
class EmailOutcome:
    location: str  # the .eml path or "smtp://host" - never a link, never a token
    message_id: str
    attached: bool  # False: the files were too big and the message carries download links instead


class EmailChannel:
    """One message per recipient with every file attached, or links to them when the message would be too big."""

    name = ChannelName.EMAIL.value

    def __init__(self, settings: Settings, *, sender_factory: Callable[[Settings], SmtpSender | OutboxSender]) -> None:
        self.settings = settings
        self.sender_factory = sender_factory
        self._sender: SmtpSender | OutboxSender | None = None
        self.unsubscribe = UnsubscribeLinks(settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailChannel:
        return cls(settings, sender_factory=make_sender)

    @property
    def sender(self) -> SmtpSender | OutboxSender:
        if self._sender is None:
            self._sender = self.sender_factory(self.settings)
        return self._sender

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def send(self, parcel: Parcel, receipt: Receipt) -> None:
        """One message with every file, or with links to them (``parcel.links``) when it would be too big."""
        sent = self.send_message(
            parcel.recipient,
            parcel.files,
            parcel.ctx,
            link_for=parcel.links.link_for,
            key_figures=parcel.key_figures,
            templates=parcel.templates,
            report_id=parcel.parts.report_id,
        )
        note = "attached" if sent.attached else "over the size cap: sent as download links"
        for file in parcel.files:
            receipt.sent(file, sent.location, note)

    def send_message(
        self,
        recipient: Recipient,
        files: list[RenderedFile],
        ctx: RenderContext,
        *,
        link_for: Callable[[RenderedFile], DownloadLink],
        key_figures: list[tuple[str, str]],
        templates: EmailTemplates | None = None,
        report_id: str | None = None,
    ) -> EmailOutcome:
        attachments = [_attachment(f) for f in files]
        chart_png = render_chart_png(ctx.chart) if ctx.chart and ctx.chart.categories else None
        sender = self.sender
        way_out = self.unsubscribe.link(recipient, report_id, sent_at=ctx.generated_at) if report_id else None

        def build(attached: list[EmailAttachment], links: list[DownloadLink]) -> Any:
            subject, text, html = render_bodies(
                title=ctx.title,
                description=ctx.description,
                recipient=recipient,
                key_figures=key_figures,
                files=[(f.filename, f.bytes, f.rows) for f in files],
                links=links,
                generated_at=ctx.generated_at,
                generated=generated_text(ctx.generated_at, ctx.timezone, ctx.locale) if ctx.locale else None,
                period=ctx.period,
                no_rows=ctx.no_rows if files and max(f.rows for f in files) == 0 else None,
                chart_title=ctx.chart.title if chart_png and ctx.chart else None,
                chart_rows=chart_rows(ctx.chart, ctx.locale) if chart_png and ctx.chart else None,
                subject_template=templates.subject if templates else None,
                text_template=templates.text if templates else None,
                html_template=templates.html if templates else None,
                unsubscribe_url=way_out,
            )
            return build_message(
                sender=self.settings.smtp_from,
                recipient=recipient,
                subject=subject,
                text_body=text,
                html_body=html,
                attachments=attached,
                links=links,
                chart_png=chart_png,
                message_id_domain="bulletin.local",
                date=ctx.generated_at,
                unsubscribe_url=way_out,
            )

        fits = plan_attachments(
            attachments,
            cap_bytes=self.settings.email_max_bytes,
            server_size=sender.server_max_size(),
            build=lambda attached: build(attached, []),
        )
        message = build(attachments, []) if fits else build([], [link_for(f) for f in files])
        result = sender.send(message)
        location = result.location or f"smtp://{self.settings.smtp_host}"
        return EmailOutcome(location=location, message_id=result.message_id, attached=fits)


def _attachment(file: RenderedFile) -> EmailAttachment:
    return EmailAttachment(
        filename=file.filename,
        content_type=MEDIA_TYPES[file.format],
        path=file.path,
        size=file.bytes,
        sha256=file.sha256,
    )
