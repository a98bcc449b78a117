"""Deliver one report to one recipient: claim in the ledger, mint a scoped token, query through it, render, send.

``deliver_recipient`` is the whole pipeline as a plain function of explicit dependencies (``DeliveryServices``),
so tests run it without Prefect. Two thin Prefect tasks run it: ``deliver_batch`` (a small run's one task per
recipient) and ``deliver_lane`` (a large run's long-lived lanes, fed one recipient at a time by tasks/spread.py).

Exactly-once, from the recipient's point of view: every (run key, recipient, format, channel) is claimed in the
ledger before anything is rendered. What an earlier attempt sent is not sent again, what failed is retried, and a
delivery another run is sending right now is left to it.

Each channel is tried on its own, so the manifest tells per file what happened: a refused email does not stop the
S3 copy, nor hide it. The recipient's status follows from its files (``bulletin.models.delivery_status``).
"""

from __future__ import annotations

import contextvars
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime.task_run import get_run_count

from bulletin.clock import Clock
from bulletin.errors import BulletinError, TransientError
from bulletin.models import (
    Artifact,
    Delivery,
    DeliveryStatus,
    QuerySpec,
    Recipient,
    delivery_status,
    describe_scope,
)
from bulletin.reports import ReportDefinition, recipient_context, template_filters
from bulletin.store import (
    ClaimOutcome,
    ClaimResult,
    LedgerRow,
    LedgerStatus,
    Store,
    claim,
    last_sent,
    mark_failed,
    mark_sent,
)
from bulletin.store import mark_skipped as ledger_skip
from bulletin.store.channel_preferences import RunPreferences
from tasks.audience import scope_for_recipient
from tasks.channels import EmailChannel, KeyParts, RenderedFile
from tasks.preferences import recipient_channels
from tasks.query import run_aggregate, run_query
from tasks.render import EXTENSIONS, open_writer
from tasks.render.base import ChartData, RenderContext
from tasks.services import DeliveryServices, ServicesSpec, services_for
from tasks.spread import RETRY_DELAYS, Sink, Source, worker_queues
from tasks.storage import StoredObject, sha256_file
from tasks.tokens import TokenClaims, mint_token, verify_token

Pair = tuple[str, str]  # (format, channel)


@dataclass(frozen=True)
class DeliveryPlan:
    """What this run delivers: the same for every recipient."""

    report: ReportDefinition
    params: dict[str, Any]
    formats: list[str]
    channels: list[str]
    run_id: str
    run_key: str
    started_at: datetime
    dry_run: bool
    storage_prefix: str
    token_issuer: str
    token_audience: str
    token_ttl_minutes: int
    batch_rows: int
    csv_bom: bool = False
    lease_seconds: float = 900.0
    output_prefix: str | None = None  # key segments after the organisation's prefix (a job's output.prefix)
    #: The communication-channel preferences for this run's event type, loaded once by the flow
    #: (``load_run_preferences``). None: every recipient gets ``channels``.
    channel_preferences: RunPreferences | None = None


@dataclass
class _Outcomes:
    """Per (format, channel): the manifest entry, filled in as each one is decided; and what failed, and whether a
    retry may help (some failure was a TransientError)."""

    artifacts: dict[Pair, Artifact]
    errors: list[str] = field(default_factory=list)
    transient: bool = False

    def add(self, pair: Pair, artifact: Artifact) -> None:
        self.artifacts[pair] = artifact


def build_query(plan: DeliveryPlan, recipient: Recipient) -> QuerySpec:
    report = plan.report
    context = {"recipient": recipient_context(recipient), "params": plan.params}
    return QuerySpec(
        dataset=report.dataset,
        columns=list(report.columns),
        filters=template_filters(report.filters, context),
        order=list(report.order),
        limit=report.limit,
    )


def deliver_recipient(
    plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient, email: EmailChannel | None = None
) -> Delivery:
    """Deliver every format on every channel to one recipient; the Delivery lists every file with its outcome.

    The channels are the plan's that the recipient's organisation's preference keeps (tasks/preferences.py); the
    others are recorded as skipped with the reason. A channel that fails is recorded (its files ``failed``, with
    the reason) and the other channels still go; a failure before any channel (the token, the query, a render)
    fails every file this attempt had to deliver. A BulletinError raised from here (the ledger itself failing) is
    for the caller to record; anything else is a bug, raised once the ledger says the unfinished files failed."""
    return _deliver(plan, services, recipient, email)[0]


def _deliver(
    plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient, email: EmailChannel | None
) -> tuple[Delivery, bool]:
    """``deliver_recipient``, and whether a retry may help: some file failed for a transient reason."""
    if plan.dry_run or services.store is None:
        return _dry_run(plan, services, recipient), False
    store = services.store
    chosen = recipient_channels(plan.channels, plan.channel_preferences, recipient.org)
    claims = {
        (fmt, ch): claim(
            store,
            run_key=plan.run_key,
            report_id=plan.report.id,
            run_id=plan.run_id,
            recipient=recipient.ref,
            format=fmt,
            channel=ch,
            lease_seconds=plan.lease_seconds,
            now=services.clock(),
        )
        for ch in chosen.channels
        for fmt in plan.formats
    }
    out = _Outcomes({pair: _earlier(c, plan.run_id) for pair, c in claims.items() if not c.claimed})
    for ch in chosen.off:
        for fmt in plan.formats:
            out.add((fmt, ch), _turned_off(plan, services, recipient, (fmt, ch), chosen.reason or "turned off"))
    todo = {pair: c for pair, c in claims.items() if c.claimed}
    if not todo:
        return _delivery(recipient, out, token_id=None, scope={}), False
    finished: set[Pair] = set()
    minted_jti: str | None = None
    scope: dict[str, Any] = {}
    try:
        try:
            minted_jti, claims_tok, ctx, files = _render_for(plan, services, recipient, sorted({f for f, _ in todo}))
            scope = claims_tok.secure_filters
            _apply_rules(plan, services, recipient, todo, files, out, finished)
        except BulletinError as exc:  # nothing to send: every file of this attempt failed, for one reason
            _fail(store, services.clock, todo, [p for p in todo if p not in finished], exc, out, finished, {}, None)
        else:
            _send(plan, services, recipient, email, todo, files, ctx, minted_jti, scope, out, finished)
    except Exception as exc:
        for pair, c in todo.items():
            if pair not in finished:
                mark_failed(store, c, error=_error_text(exc), now=services.clock())
        raise
    return _delivery(recipient, out, token_id=minted_jti, scope=scope), out.transient


def _fail(
    store: Store,
    clock: Clock,
    todo: dict[Pair, ClaimResult],
    pairs: list[Pair],
    exc: BulletinError,
    out: _Outcomes,
    finished: set[Pair],
    files: dict[str, RenderedFile],
    channel: str | None,
) -> None:
    """Record ``pairs`` as failed with ``exc``: in the ledger (a retry with the run key tries them again) and in the
    manifest, with the rendered file's checksum and size when there is one, so the reader sees what did not go.
    ``channel``: the one channel that failed, named in the recipient's error; None when every file failed."""
    text = _error_text(exc)
    for pair in pairs:
        mark_failed(store, todo[pair], error=text, now=clock())
        finished.add(pair)
        file = files.get(pair[0])
        out.add(
            pair,
            Artifact.model_validate(
                {
                    "format": pair[0],
                    "channel": pair[1],
                    "uri": "",
                    "sha256": file.sha256 if file else "",
                    "bytes": file.bytes if file else 0,
                    "rows": file.rows if file else 0,
                    "outcome": "failed",
                    "note": text,
                }
            ),
        )
    if pairs:
        out.errors.append(f"{channel}: {text}" if channel else text)
        out.transient = out.transient or isinstance(exc, TransientError)


def _earlier(c: ClaimResult, run_id: str) -> Artifact:
    """The manifest entry for a delivery this attempt does not make: sent or skipped before, or being sent
    elsewhere. What an earlier attempt of this same run sent (a retry after the email failed, say) is this run's
    ``sent``: the run's manifest is the one place that says so."""
    row = c.row
    if c.outcome is ClaimOutcome.ALREADY_SENT and row.run_id == run_id:
        return _artifact_from_row(row, outcome="sent", note=None)
    outcome = {
        ClaimOutcome.ALREADY_SENT: "already_sent",
        ClaimOutcome.ALREADY_SKIPPED: "skipped",
        ClaimOutcome.IN_PROGRESS: "in_progress",
    }[c.outcome]
    note = {
        "already_sent": f"sent earlier under run key {row.run_key}; not sent again",
        "skipped": row.last_error,
        "in_progress": f"another run ({row.claimed_by}) is delivering this now",
    }[outcome]
    return _artifact_from_row(row, outcome=outcome, note=note)


def _turned_off(
    plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient, pair: Pair, reason: str
) -> Artifact:
    """A channel the recipient's organisation turned off: recorded as skipped with the reason. What this run key
    already sent, or is sending elsewhere right now, stays as it is and is reported so."""
    assert services.store is not None  # checked by the caller: only real runs reach here
    row = ledger_skip(
        services.store,
        run_key=plan.run_key,
        report_id=plan.report.id,
        run_id=plan.run_id,
        recipient=recipient.ref,
        format=pair[0],
        channel=pair[1],
        reason=reason,
        now=services.clock(),
    )
    if row.status is LedgerStatus.SENT:
        return _artifact_from_row(row, outcome="already_sent", note=f"sent earlier under run key {row.run_key}")
    if row.status is LedgerStatus.SKIPPED:
        return _artifact_from_row(row, outcome="skipped", note=row.last_error)
    return _artifact_from_row(row, outcome="in_progress", note=f"another run ({row.claimed_by}) is delivering this now")


def _artifact_from_row(row: LedgerRow, *, outcome: str, note: str | None) -> Artifact:
    return Artifact.model_validate(
        {
            "format": row.format,
            "channel": row.channel,
            "uri": row.uri or "",
            "sha256": row.sha256 or "",
            "bytes": row.bytes or 0,
            "rows": row.rows or 0,
            "outcome": outcome,
            "note": note,
        }
    )


def _render_for(
    plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient, formats: list[str]
) -> tuple[str, TokenClaims, RenderContext, dict[str, RenderedFile]]:
    """Mint, verify, query once, and stream the result through every needed format's writer."""
    report = plan.report
    scope = scope_for_recipient(report, recipient, plan.params)
    minted = mint_token(
        services.keyset,
        subject=recipient.ref,
        dataset_ids=[report.dataset],
        secure_filters=scope,
        ttl_minutes=plan.token_ttl_minutes,
        issuer=plan.token_issuer,
        audience=plan.token_audience,
        now=services.clock(),
    )
    # The query engine sees only what the verified token says: the same path as `bulletin query` and the API.
    claims_tok = verify_token(
        minted.token, services.keyset, issuer=plan.token_issuer, audience=plan.token_audience, now=services.clock()
    )
    query = build_query(plan, recipient)
    ctx = RenderContext(
        report_id=report.id,
        title=report.title,
        description=report.description,
        recipient=recipient.label,
        scope=describe_scope(claims_tok.filters_for(report.dataset)),
        generated_at=services.clock().astimezone(ZoneInfo(report.display_timezone)),
        timezone=report.display_timezone,
        column_labels=dict(report.column_labels),
        chart=_chart(plan, services, claims_tok, query),
    )
    folder = Path(tempfile.mkdtemp(prefix=f"{recipient.ref}-", dir=services.workdir))
    result = run_query(claims_tok, query, services.datasets, services.warehouse, batch_rows=plan.batch_rows)
    paths = {fmt: folder / f"{report.id}-{recipient.ref}{EXTENSIONS[fmt]}" for fmt in formats}
    with ExitStack() as stack:
        stack.callback(result.close)
        writers = {fmt: open_writer(fmt, p, result.schema, ctx, csv_bom=plan.csv_bom) for fmt, p in paths.items()}
        for batch in result:
            for writer in writers.values():
                writer.write_batch(batch)
        truncated_at = result.rows if result.truncated else None
        rows = {fmt: writer.close(truncated_at=truncated_at) for fmt, writer in writers.items()}
    files = {
        fmt: RenderedFile(format=fmt, path=p, rows=rows[fmt], bytes=p.stat().st_size, sha256=sha256_file(p))
        for fmt, p in paths.items()
    }
    return minted.jti, claims_tok, ctx, files


def _chart(plan: DeliveryPlan, services: DeliveryServices, claims: TokenClaims, query: QuerySpec) -> ChartData | None:
    spec = plan.report.chart
    if spec is None:
        return None
    rows = run_aggregate(
        claims, query, services.datasets, services.warehouse, category=spec.category, measure=spec.measure, agg=spec.agg
    )
    labels = plan.report.column_labels
    return ChartData(
        title=spec.title or f"{spec.agg} of {labels.get(spec.measure, spec.measure)}",
        category_label=labels.get(spec.category, spec.category),
        value_label=labels.get(spec.measure, spec.measure),
        categories=[str(category) for category, _ in rows],
        values=[float(value or 0) for _, value in rows],
    )


def _apply_rules(
    plan: DeliveryPlan,
    services: DeliveryServices,
    recipient: Recipient,
    todo: dict[Pair, ClaimResult],
    files: dict[str, RenderedFile],
    out: _Outcomes,
    finished: set[Pair],
) -> None:
    """skip_if_empty and send_only_if_changed: decided per file, recorded in the ledger as skipped."""
    assert services.store is not None  # checked by the caller: only real runs reach here
    report = plan.report
    for (fmt, ch), c in todo.items():
        file = files[fmt]
        reason = None
        if report.skip_if_empty and file.rows == 0:
            reason = "no rows: skip_if_empty"
        elif report.send_only_if_changed:
            last = last_sent(services.store, report_id=report.id, recipient=recipient.ref, format=fmt, channel=ch)
            if last is not None and last.sha256 == file.sha256:
                reason = f"unchanged since {last.sent_at:%Y-%m-%d %H:%M} UTC: send_only_if_changed"
        if reason is None:
            continue
        row = ledger_skip(
            services.store,
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
        finished.add((fmt, ch))
        out.add((fmt, ch), _artifact(file, ch, uri=row.uri or "", outcome="skipped", note=reason))


def _send(
    plan: DeliveryPlan,
    services: DeliveryServices,
    recipient: Recipient,
    email: EmailChannel | None,
    todo: dict[Pair, ClaimResult],
    files: dict[str, RenderedFile],
    ctx: RenderContext,
    jti: str,
    scope: dict[str, Any],
    out: _Outcomes,
    finished: set[Pair],
) -> None:
    assert services.store is not None  # checked by the caller: only real runs reach here
    store = services.store
    parts = KeyParts(
        prefix=plan.storage_prefix,
        report_id=plan.report.id,
        recipient_ref=recipient.ref,
        org=recipient.org,
        run_id=plan.run_id,
        when=plan.started_at,
        output_prefix=plan.output_prefix,
    )
    metadata = {"report": plan.report.id, "recipient": recipient.ref, "run": plan.run_id, "token-jti": jti}
    stored: dict[str, StoredObject] = {}

    def record(pair: Pair, uri: str, note: str | None = None) -> None:
        file = files[pair[0]]
        mark_sent(
            store,
            todo[pair],
            sha256=file.sha256,
            uri=uri,
            bytes=file.bytes,
            rows=file.rows,
            token_jti=jti,
            secure_filters=scope,
            now=services.clock(),
        )
        finished.add(pair)
        out.add(pair, _artifact(file, pair[1], uri=uri, outcome="sent", note=note))

    def fail(pairs: list[Pair], exc: BulletinError, channel: str) -> None:
        _fail(store, services.clock, todo, pairs, exc, out, finished, files, channel)

    s3 = [p for p in todo if p[1] == "s3" and p not in finished]
    for pair in s3:
        try:
            stored[pair[0]] = services.bucket.store(parts, files[pair[0]], metadata)
        except BulletinError as exc:
            # The bucket is refusing: its other files wait for a retry rather than each waiting on it in turn.
            fail([p for p in s3 if p not in finished], exc, "s3")
            break
        record(pair, stored[pair[0]].uri)

    mail = [p for p in todo if p[1] == "email" and p not in finished]
    if not mail:
        return

    def link_for(file: RenderedFile) -> Any:
        if file.format not in stored:
            stored[file.format] = services.bucket.store(parts, file, metadata)
        return services.bucket.link(stored[file.format], file)

    try:
        if email is None:
            raise BulletinError("the email channel is not configured for this run")
        sent = email.send(
            recipient,
            [files[f] for f, _ in mail],
            ctx,
            link_for=link_for,
            key_figures=_key_figures(ctx, files),
            templates=plan.report.email,
        )
    except BulletinError as exc:
        fail(mail, exc, "email")
        return
    note = "attached" if sent.attached else "over the size cap: sent as download links"
    for pair in mail:
        record(pair, sent.location, note)


def _key_figures(ctx: RenderContext, files: dict[str, RenderedFile]) -> list[tuple[str, str]]:
    rows = max((f.rows for f in files.values()), default=0)
    figures = [("Rows", f"{rows:,}"), ("Scope", ctx.scope)]
    if ctx.chart and ctx.chart.values:
        figures.insert(1, (f"Total {ctx.chart.value_label}", f"{sum(ctx.chart.values):,.2f}"))
        top = max(range(len(ctx.chart.values)), key=ctx.chart.values.__getitem__)
        figures.insert(2, (f"Top {ctx.chart.category_label}", ctx.chart.categories[top]))
    return figures


def _artifact(file: RenderedFile, channel: str, *, uri: str, outcome: str, note: str | None) -> Artifact:
    return Artifact.model_validate(
        {
            "format": file.format,
            "channel": channel,
            "uri": uri,
            "sha256": file.sha256,
            "bytes": file.bytes,
            "rows": file.rows,
            "outcome": outcome,
            "note": note,
        }
    )


def _dry_run(plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient) -> Delivery:
    jti, claims_tok, _, files = _render_for(plan, services, recipient, plan.formats)
    out = _Outcomes(
        {
            (fmt, "dry-run"): _artifact(f, "dry-run", uri=f.path.as_uri(), outcome="rendered", note="dry run")
            for fmt, f in files.items()
        }
    )
    return _delivery(recipient, out, token_id=jti, scope=claims_tok.secure_filters)


def _delivery(recipient: Recipient, out: _Outcomes, *, token_id: str | None, scope: dict[str, Any]) -> Delivery:
    artifacts = list(out.artifacts.values())
    return Delivery(
        recipient=recipient.ref,
        status=delivery_status(artifacts),
        org=recipient.org,
        token_id=token_id,
        secure_filters=scope,
        artifacts=artifacts,
        error="; ".join(out.errors) or None,
    )


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BulletinError) else f"internal error ({type(exc).__name__})"


def failed_delivery(recipient: Recipient, error: BaseException) -> Delivery:
    return Delivery(recipient=recipient.ref, status=DeliveryStatus.FAILED, org=recipient.org, error=_error_text(error))


def deliver_each(
    plan: DeliveryPlan, services: DeliveryServices, recipients: list[Recipient], *, retry_left: bool = True
) -> list[Delivery]:
    """Deliver to each recipient in turn; one recipient's failure never stops the others.

    If every recipient failed for a transient reason, at least in part (the warehouse is down, the SMTP server
    said "try later"), raise TransientError so Prefect retries the task: the ledger makes the retry send only what
    has not been sent. With no ``retry_left`` (the task's last attempt) the deliveries are returned as they are, so
    what was sent is still reported.
    """
    deliveries: list[Delivery] = []
    transient = 0
    email = services.email_factory() if services.email_factory and "email" in plan.channels else None
    try:
        for recipient in recipients:
            delivery, retry = _attempt(plan, services, recipient, email)
            transient += retry
            deliveries.append(delivery)
    finally:
        if email is not None:
            email.close()
    if retry_left and recipients and transient == len(recipients):
        raise TransientError(f"every delivery in this batch failed: {deliveries[0].error}")
    return deliveries


def _attempt(
    plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient, email: EmailChannel | None
) -> tuple[Delivery, bool]:
    """One recipient's delivery, or its failure as a Delivery; and whether a retry may help (some file, or the
    whole delivery, failed with a TransientError).

    Anything other than a BulletinError is raised: a bug, which the caller decides how to record.
    """
    try:
        return _deliver(plan, services, recipient, email)
    except TransientError as exc:
        return failed_delivery(recipient, exc), True
    except BulletinError as exc:
        return failed_delivery(recipient, exc), False


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only errors that say a retry can help."""
    try:
        state.result()
    except TransientError:
        return True
    except BaseException:  # noqa: BLE001 - Prefect re-raises whatever the task raised; only its type matters here
        return False
    return False


@task(
    name="deliver-recipients",
    retries=len(RETRY_DELAYS),  # the same schedule as a large run's lanes (tasks/spread.py)
    retry_delay_seconds=list(RETRY_DELAYS),
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
    task_run_name="deliver {label}",
)
def deliver_batch(
    plan: DeliveryPlan, services: DeliveryServices | ServicesSpec, recipients: list[Recipient], label: str
) -> list[Delivery]:
    """A small run's task: one per recipient (``recipients`` holds one; Prefect retries it after a transient failure).

    ``services`` are the run's, or a spec to build this process's own (a worker process).
    """
    del label  # only in the task-run name
    if isinstance(services, ServicesSpec):
        services = services_for(services)
    # run_count is 1 on the first attempt: retries remain while it is at most the number of retries.
    return deliver_each(plan, services, recipients, retry_left=get_run_count() <= len(RETRY_DELAYS))


def deliver_from(
    plan: DeliveryPlan,
    services: DeliveryServices,
    audience: list[Recipient],
    lane: int,
    todo: Source,
    reports: Sink,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> int:
    """One lane (tasks/spread.py): say ready, then deliver each recipient the dispatcher sends until it sends None.

    Every recipient gets a result, whatever fails: a transient failure is marked so the dispatcher retries it, and
    an unexpected error is logged here (with its traceback, for the operator) and recorded as an internal error.
    Returns how many deliveries this lane made.
    """
    email = services.email_factory() if services.email_factory and "email" in plan.channels else None
    made = 0
    try:
        reports.put(("ready", lane))
        while (index := todo.get()) is not None:
            recipient = audience[index]
            try:
                delivery, transient = _attempt(plan, services, recipient, email)
            except Exception as exc:  # the edge: one recipient's bug must not stop the lane
                logger.exception("delivery to %s failed unexpectedly", recipient.ref)
                delivery, transient = failed_delivery(recipient, exc), False
            reports.put(("done", lane, index, delivery, transient))
            made += 1
    finally:
        if email is not None:
            email.close()
    return made


@task(name="deliver-lane", cache_policy=NO_CACHE, task_run_name="deliver ({label})")
def deliver_lane(
    plan: DeliveryPlan,
    services: DeliveryServices | ServicesSpec,
    audience: list[Recipient],
    lanes: list[int],
    queues: list[tuple[Source, Sink]] | None,
    label: str,
) -> int:
    """One or more of a large run's lanes: each delivers recipients one at a time as the flow's dispatcher sends
    them, on its own thread. Returns how many deliveries they made.

    In the flow's own threads ``services`` are the run's and ``queues`` the lanes'; in a worker process, a spec to
    build the process's own services, and the queues the process was started with. A worker process runs more than
    one lane so that it delivers while one lane waits for S3 or the ledger.
    """
    del label  # only in the task-run name
    if isinstance(services, ServicesSpec):
        services = services_for(services)
    pairs = queues if queues is not None else [worker_queues(lane) for lane in lanes]
    logger = get_run_logger()
    work = [
        partial(deliver_from, plan, services, audience, lane, todo, sink, logger)
        for lane, (todo, sink) in zip(lanes, pairs, strict=True)
    ]
    if len(work) == 1:
        return work[0]()
    with ThreadPoolExecutor(len(work) - 1, thread_name_prefix="bulletin-lane") as pool:
        others = [pool.submit(contextvars.copy_context().run, w) for w in work[1:]]
        made = work[0]()
        return made + sum(f.result() for f in others)
