"""One recipient's files: mint its scoped token, query through it once, and stream the rows through every format's
writer. What the channels then send (tasks/delivery/channels.py).

``prepare`` (the token, the query, the render context) and ``file_paths`` are apart from the query so that a lane's
chunk of recipients can share one scan (tasks/delivery/chunk.py) and still be prepared exactly as one alone."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from zoneinfo import ZoneInfo

from bulletin.datasets import ColumnFormat
from bulletin.errors import DefinitionError
from bulletin.models import QuerySpec, Recipient, describe_scope, no_rows_sentence
from bulletin.period import DEFAULT_LOCALE, period_label, reader_locale
from bulletin.schedules import check_timezone
from tasks.audience import scope_for_recipient
from tasks.delivery.channels import RenderedFile
from tasks.delivery.plan import DeliveryPlan, build_query
from tasks.delivery.services import DeliveryServices
from tasks.render import EXTENSIONS, open_writer
from tasks.render.base import ChartData, RenderContext
from tasks.render.chart import shape_chart
from tasks.render.display import format_value
from tasks.storage import sha256_file
from tasks.tokens import TokenClaims, mint_token, verify_token
from tasks.warehouse import run_aggregate, run_query


@dataclass(frozen=True)
class Produced:
    """A recipient's rendered files, by format, and what made them: the token's id and verified claims, and the
    context the renderers (and a message's body) were given. ``folder`` holds the files, and only them."""

    jti: str
    claims: TokenClaims
    ctx: RenderContext
    files: dict[str, RenderedFile]

    @property
    def folder(self) -> Path | None:
        """The folder ``file_paths`` made for these files (and only them); None when there are none."""
        return next(iter(self.files.values())).path.parent if self.files else None


@dataclass(frozen=True)
class Prepared:
    """What a recipient's files are made from, before any row is read: its token (id and verified claims), its query,
    and the context the renderers are given."""

    jti: str
    claims: TokenClaims
    query: QuerySpec
    ctx: RenderContext


def render_for(
    plan: DeliveryPlan,
    services: DeliveryServices,
    recipient: Recipient,
    formats: list[str],
    *,
    prepared: Prepared | None = None,
) -> Produced:
    """Mint, verify, query once, and stream the result through every needed format's writer. ``prepared``: the
    recipient's token and context when already made (``prepare``)."""
    if prepared is None:
        prepared = prepare(plan, services, recipient)
    paths = file_paths(plan, services, recipient, formats)
    files = _write(plan, services, prepared.claims, prepared.query, prepared.ctx, paths)
    return Produced(prepared.jti, prepared.claims, prepared.ctx, files)


def prepare(plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient) -> Prepared:
    """Mint the recipient's token and verify it; its query, and its render context (with its chart, queried through
    the verified token). Raises BulletinError for this recipient alone."""
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
    scope_filters = claims_tok.filters_for(report.dataset)
    locale, zone = reader_of(recipient, report.display_timezone)
    period = period_label(plan.period, locale or DEFAULT_LOCALE) if plan.period else None
    dataset = services.datasets.get(report.dataset)
    formats = dataset.formats() if dataset else {}
    ctx = RenderContext(
        report_id=report.id,
        title=report.title,
        description=report.description,
        recipient=recipient.label,
        scope=describe_scope(scope_filters),
        generated_at=services.clock().astimezone(ZoneInfo(zone)),
        timezone=zone,
        column_labels=dict(report.column_labels),
        chart=_chart(plan, services, claims_tok, query, formats),
        period=period,
        no_rows=no_rows_sentence(dataset.title if dataset else "rows", scope_filters, period),
        column_formats=formats,
        locale=locale,
        totals=dataset.totals_columns(report.totals, report.columns or dataset.column_names) if dataset else (),
    )
    return Prepared(minted.jti, claims_tok, query, ctx)


def reader_of(recipient: Recipient, default_zone: str) -> tuple[str | None, str]:
    """The recipient's locale (their ``locale`` attribute, a BCP 47 tag; None when they have none) and time zone
    (their ``timezone`` attribute, else ``default_zone``, the report's). A wrong one is a DefinitionError naming
    the recipient: their delivery fails, the run's other recipients are not held up."""
    locale, zone = recipient.attributes.get("locale"), recipient.attributes.get("timezone")
    try:
        if locale is not None:
            reader_locale(str(locale))
        if zone is not None:
            check_timezone(str(zone))
    except (DefinitionError, ValueError) as exc:
        raise DefinitionError(f"recipient {recipient.ref!r}: {exc}", field="recipient") from exc
    return (None if locale is None else str(locale)), (default_zone if zone is None else str(zone))


def file_paths(
    plan: DeliveryPlan, services: DeliveryServices, recipient: Recipient, formats: list[str]
) -> dict[str, Path]:
    """Where the recipient's file of each format is written: a fresh folder of the run's workdir."""
    folder = Path(tempfile.mkdtemp(prefix=f"{recipient.ref}-", dir=services.workdir))
    return {fmt: folder / f"{plan.report.id}-{recipient.ref}{EXTENSIONS[fmt]}" for fmt in formats}


def _write(
    plan: DeliveryPlan,
    services: DeliveryServices,
    claims: TokenClaims,
    query: QuerySpec,
    ctx: RenderContext,
    paths: dict[str, Path],
) -> dict[str, RenderedFile]:
    """Run the query once and write every format from the same batches."""
    result = run_query(claims, query, services.datasets, services.warehouse, batch_rows=plan.batch_rows)
    with ExitStack() as stack:
        stack.callback(result.close)
        writers = {fmt: open_writer(fmt, p, result.schema, ctx, csv_bom=plan.csv_bom) for fmt, p in paths.items()}
        for batch in result:
            for writer in writers.values():
                writer.write_batch(batch)
        truncated_at = result.rows if result.truncated else None
        rows = {fmt: writer.close(truncated_at=truncated_at) for fmt, writer in writers.items()}
    return rendered_files(paths, rows)


def rendered_files(paths: dict[str, Path], rows: dict[str, int]) -> dict[str, RenderedFile]:
    """The written files as the channels take them: rows, size and checksum."""
    return {
        fmt: RenderedFile(format=fmt, path=p, rows=rows[fmt], bytes=p.stat().st_size, sha256=sha256_file(p))
        for fmt, p in paths.items()
    }


def _chart(
    plan: DeliveryPlan,
    services: DeliveryServices,
    claims: TokenClaims,
    query: QuerySpec,
    formats: dict[str, ColumnFormat],
) -> ChartData | None:
    spec = plan.report.chart
    if spec is None:
        return None
    rows = run_aggregate(
        claims, query, services.datasets, services.warehouse, category=spec.category, measure=spec.measure, agg=spec.agg
    )
    labels = plan.report.column_labels
    measure, category = labels.get(spec.measure, spec.measure), labels.get(spec.category, spec.category)
    chart = shape_chart(
        rows,
        top=spec.top,
        agg=spec.agg,
        title=spec.title or f"{'Count' if spec.agg == 'count' else spec.agg.capitalize()} of {measure} by {category}",
        category_label=category,
        value_label=measure,
    )
    # A sum or an average is in the measure's unit (euros); a count is not.
    value_format = formats.get(spec.measure) if spec.agg != "count" else ColumnFormat(kind="integer")
    return replace(chart, value_format=value_format)


def key_figures(ctx: RenderContext, files: dict[str, RenderedFile]) -> list[tuple[str, str]]:
    """The few figures a message's body leads with: rows, the chart's total and top category, the scope."""
    rows = max((f.rows for f in files.values()), default=0)
    counted = format_value(rows, ColumnFormat(kind="integer"), ctx.locale) if ctx.locale else f"{rows:,}"
    figures = [("Rows", counted), ("Scope", ctx.scope)]
    chart = ctx.chart
    if chart and chart.values and not chart.time:  # bars come largest first, "Other" last
        figures.insert(1, (f"Top {chart.category_label}", chart.categories[0]))
    if chart and chart.values and chart.total is not None:
        figures.insert(1, (f"Total {chart.value_label}", format_value(chart.total, chart.value_format, ctx.locale)))
    return figures
