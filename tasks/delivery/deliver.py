"""Deliver one report to one recipient: claim in the ledger, mint a scoped token, query through it, render, send.

``deliver_recipient`` is the whole pipeline as a plain function of explicit dependencies (``DeliveryServices``),
so tests run it without Prefect. Thin Prefect tasks run it (tasks/delivery/prefect_tasks.py): ``deliver_batch`` (a small
run's one task per recipient) and ``deliver_lane`` (a large run's long-lived lanes, fed one recipient at a time by
tasks/delivery/spread.py).

Exactly-once, from the recipient's point of view: every (run key, recipient, format, channel) is claimed in the
ledger before anything is rendered. What an earlier attempt sent is not sent again, what failed is retried, and a
delivery another run is sending right now is left to it.

Each channel is tried on its own, and every one the same way (``tasks.delivery.channels.Channel``, found in
``tasks.delivery.registry``), so the manifest tells per file what happened: a refused email does not stop the S3
copy, nor hide it. The recipient's status follows from its files (``bulletin.models.delivery_status``).
"""

from __future__ import annotations

import shutil
from dataclasses import replace

from bulletin.errors import BulletinError
from bulletin.models import Delivery, Recipient, delivery_status
from bulletin.store import ClaimRequest, ClaimResult, last_sent, write_batch
from bulletin.store import mark_skipped as ledger_skip
from tasks.audience import recipient_channels
from tasks.delivery.channels import KeyParts, Links, Parcel, RenderedFile
from tasks.delivery.leases import LeaseKeeper
from tasks.delivery.outcomes import Attempt, artifact, earlier, turned_off
from tasks.delivery.plan import DeliveryPlan
from tasks.delivery.produce import Produced, key_figures, render_for
from tasks.delivery.registry import LINKS_FROM, OpenChannels
from tasks.delivery.services import DeliveryServices


def deliver_recipient(
    plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient, channels: OpenChannels | None = None
) -> Delivery:
    """Deliver every format on every channel to one recipient; the Delivery lists every file with its outcome.

    The channels are the plan's that the recipient's organisation's preference keeps (tasks/audience/preferences.py);
    the others are recorded as skipped with the reason. A channel that fails is recorded (its files ``failed``, with
    the reason) and the other channels still go; a failure before any channel (the token, the query, a render)
    fails every file this attempt had to deliver. A BulletinError raised from here (the ledger itself failing) is
    for the caller to record; anything else is a bug, raised once the ledger says the unfinished files failed.

    ``channels``: a batch's open channels, reused across its recipients; None opens them for this one.
    """
    if channels is not None:
        return deliver_attempt(plan, services, recipient, channels)[0]
    opened = services.channels.open()
    try:
        return deliver_attempt(plan, services, recipient, opened)[0]
    finally:
        opened.close()


def deliver_attempt(
    plan: DeliveryPlan,
    services: DeliveryServices,
    recipient: Recipient,
    channels: OpenChannels,
    keeper: LeaseKeeper | None = None,
    claimed: Attempt | None = None,
    rendered: Produced | BulletinError | None = None,
) -> tuple[Delivery, bool]:
    """``deliver_recipient``, and whether a retry may help: some file failed for a transient reason.

    ``keeper`` renews the claims while they are worked on (a batch's or lane's, shared by its recipients); None
    starts one for this recipient alone. ``claimed``: the attempt a lane claimed ahead, in one transaction with its
    other recipients (``claim_requests``, ``attempt_from``); None claims here. ``rendered``: the files of ``claimed``
    (or why they could not be made) when the lane rendered its chunk from one scan (tasks/delivery/chunk.py); None
    renders here.
    """
    if plan.dry_run or services.store is None:
        return _dry_run(plan, services, recipient), False
    if keeper is None:
        with LeaseKeeper(services.store, lease_seconds=plan.lease_seconds, clock=services.clock) as own:
            return deliver_attempt(plan, services, recipient, channels, own, claimed, rendered)
    attempt = claimed if claimed is not None else _claim(plan, services, recipient)
    if not attempt.todo:
        return attempt.delivery(recipient), False
    attempt.keeper = keeper
    with keeper.holding(attempt.todo.values()):
        _work(plan, services, recipient, channels, attempt, rendered)
    return attempt.delivery(recipient), attempt.transient


def _work(
    plan: DeliveryPlan,
    services: DeliveryServices,
    recipient: Recipient,
    channels: OpenChannels,
    attempt: Attempt,
    rendered: Produced | BulletinError | None = None,
) -> None:
    """Render what the attempt claimed, apply the report's rules, send; every claim ends sent, skipped or failed.

    The recipient's files are deleted once sent: nothing reads them again (a retry renders anew, and a takeover
    finds the stored copy), and the run's work folder is then all but empty at its end instead of holding every
    recipient's files for one long delete.
    """
    produced: Produced | None = None
    try:
        try:
            if isinstance(rendered, BulletinError):
                raise rendered
            produced = rendered or render_for(plan, services, recipient, sorted({f for f, _ in attempt.todo}))
            attempt.token_id, attempt.scope = produced.jti, produced.claims.secure_filters
            _apply_rules(plan, services, attempt, recipient, produced.files)
        except BulletinError as exc:  # nothing to send: every file of this attempt failed, for one reason
            attempt.fail(attempt.pending(), exc, {}, None)
        else:
            _send(plan, channels, attempt, recipient, produced)
    except Exception as exc:
        attempt.abandon(exc)
        raise
    finally:
        if produced is not None and produced.folder is not None:
            shutil.rmtree(produced.folder, ignore_errors=True)


def _claim(plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient) -> Attempt:
    """Claim every (format, channel) the recipient gets; record what its preference turned off as skipped."""
    store = services.store
    assert store is not None  # checked by the caller: only real runs reach here
    requests = claim_requests(plan, recipient)
    # No fsync for claims: one lost to a power loss costs nothing (docs/delivery.md, "Power loss").
    batch = write_batch(store, claims=requests, lease_seconds=plan.lease_seconds, now=services.clock(), durable=False)
    return attempt_from(plan, services, recipient, batch.claims)


def claim_requests(plan: DeliveryPlan, recipient: Recipient) -> list[ClaimRequest]:
    """The rows to claim for ``recipient``: every format on every channel its organisation's preference keeps."""
    chosen = recipient_channels(plan.channels, plan.channel_preferences, recipient.org, recipient.ref)
    return [
        ClaimRequest(
            run_key=plan.run_key,
            report_id=plan.report.id,
            run_id=plan.run_id,
            recipient=recipient.ref,
            format=fmt,
            channel=ch,
        )
        for ch in chosen.channels
        for fmt in plan.formats
    ]


def attempt_from(
    plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient, claims: list[ClaimResult]
) -> Attempt:
    """The attempt of ``recipient`` given its claims (``claim_requests``' order); what its organisation's preference
    turned off is recorded as skipped now."""
    store = services.store
    assert store is not None  # checked by the caller: only real runs reach here
    chosen = recipient_channels(plan.channels, plan.channel_preferences, recipient.org, recipient.ref)
    pairs = [(fmt, ch) for ch in chosen.channels for fmt in plan.formats]
    by_pair = dict(zip(pairs, claims, strict=True))
    attempt = Attempt(
        store,
        services.clock,
        todo={pair: c for pair, c in by_pair.items() if c.claimed},
        artifacts={pair: earlier(c, plan.run_id) for pair, c in by_pair.items() if not c.claimed},
    )
    for ch in chosen.off:
        for fmt in plan.formats:
            row = ledger_skip(
                store,
                run_key=plan.run_key,
                report_id=plan.report.id,
                run_id=plan.run_id,
                recipient=recipient.ref,
                format=fmt,
                channel=ch,
                reason=chosen.reason or "turned off",
                now=services.clock(),
            )
            attempt.add((fmt, ch), turned_off(row))
    return attempt


def _apply_rules(
    plan: DeliveryPlan,
    services: DeliveryServices,
    attempt: Attempt,
    recipient: Recipient,
    files: dict[str, RenderedFile],
) -> None:
    """skip_if_empty and send_only_if_changed: decided per file, recorded in the ledger as skipped."""
    report = plan.report
    for (fmt, ch), c in attempt.todo.items():
        file = files[fmt]
        reason = None
        if report.skip_if_empty and file.rows == 0:
            reason = "no rows: skip_if_empty"
        elif report.send_only_if_changed:
            last = last_sent(attempt.store, report_id=report.id, recipient=recipient.ref, format=fmt, channel=ch)
            if last is not None and last.sha256 == file.sha256:
                reason = f"unchanged since {last.sent_at:%Y-%m-%d %H:%M} UTC: send_only_if_changed"
        if reason is None:
            continue
        row = ledger_skip(
            attempt.store,
            run_key=plan.run_key,
            report_id=report.id,
            run_id=plan.run_id,
            recipient=recipient.ref,
            format=fmt,
            channel=ch,
            reason=reason,
            now=services.clock(),
            claim=c,
            sha256=file.sha256,
        )
        attempt.skipped((fmt, ch), file, row, reason)


def _send(
    plan: DeliveryPlan, channels: OpenChannels, attempt: Attempt, recipient: Recipient, produced: Produced
) -> None:
    """Each channel the recipient still needs, called the same way with its files. The links' store goes first, so
    that a channel sending links (email over its cap) links the very files that store delivered."""
    files = produced.files
    parts = key_parts(plan, recipient)
    metadata = {"report": plan.report.id, "recipient": recipient.ref, "run": plan.run_id, "token-jti": produced.jti}
    parcel = Parcel(
        recipient=recipient,
        files=[],
        ctx=produced.ctx,
        parts=parts,
        metadata=metadata,
        key_figures=key_figures(produced.ctx, files),
        templates=plan.report.email,
        links=Links(LINKS_FROM, channels.link_store, parts, metadata),
    )
    names = sorted(dict.fromkeys(ch for _, ch in attempt.pending()), key=lambda ch: ch != LINKS_FROM)
    for name in names:
        attempt.drop_lost()
        pairs = [pair for pair in attempt.pending() if pair[1] == name]
        if not pairs:
            continue
        try:
            channels.get(name).send(replace(parcel, files=[files[f] for f, _ in pairs]), attempt.receipt(name))
        except BulletinError as exc:  # this channel only: its files not yet sent wait for a retry
            attempt.fail([pair for pair in pairs if pair not in attempt.finished], exc, files, name)


def key_parts(plan: DeliveryPlan, recipient: Recipient) -> KeyParts:
    """What names ``recipient``'s stored files in this run (``BucketChannel.key_for``)."""
    return KeyParts(
        prefix=plan.storage_prefix,
        report_id=plan.report.id,
        recipient_ref=recipient.ref,
        org=recipient.org,
        run_id=plan.run_id,
        when=plan.started_at,
        output_prefix=plan.output_prefix,
    )


def _dry_run(plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient) -> Delivery:
    produced = render_for(plan, services, recipient, plan.formats)
    artifacts = [
        artifact(f, "dry-run", uri=f.path.as_uri(), outcome="rendered", note="dry run") for f in produced.files.values()
    ]
    return Delivery(
        recipient=recipient.ref,
        status=delivery_status(artifacts),
        org=recipient.org,
        token_id=produced.jti,
        secure_filters=produced.claims.secure_filters,
        artifacts=artifacts,
    )
