"""Report definitions: one YAML file per report under deployments/reports/, validated when loaded.

A wrong file is refused with its path, the field and the reason. Loading is pure apart from reading the files.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bulletin.definitions import load_definition
from bulletin.errors import DefinitionError, NotFoundError
from bulletin.models import (
    IDENTIFIER_RE,
    ChannelName,
    ColumnName,
    Filter,
    FilterGroups,
    Format,
    Identifier,
    OrderBy,
    Recipient,
    normalise_filters,
)
from bulletin.schedules import check_cron, check_timezone, preset_to_cron
from bulletin.templating import TemplateError, is_template, render_value, resolve_date, template_path


def _default_channels() -> list[ChannelName]:
    return [ChannelName.S3]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Schedule(_Strict):
    """A cron expression or a preset, in an IANA time zone, with optional parameters for that schedule."""

    cron: str | None = None
    preset: str | None = None
    timezone: str = "UTC"
    parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_of(self) -> Schedule:
        if (self.cron is None) == (self.preset is None):
            raise ValueError("give exactly one of 'cron' or 'preset'")
        check_timezone(self.timezone)
        if self.cron is not None:
            check_cron(self.cron)
        else:
            assert self.preset is not None  # narrowed by the check above
            preset_to_cron(self.preset)
        return self

    @property
    def cron_expression(self) -> str:
        return self.cron if self.cron is not None else preset_to_cron(self.preset or "")


class AudienceQuery(_Strict):
    """Recipients read from a warehouse table: which columns hold the ref, email, name, org and attributes."""

    table: Identifier
    ref: ColumnName = "ref"
    email: ColumnName = "email"
    name: ColumnName | None = "name"
    org: ColumnName | None = "org"
    attributes: list[ColumnName] = Field(default_factory=list)
    filters: list[Filter] = Field(default_factory=list)


class Audience(_Strict):
    recipients: list[Recipient] = Field(default_factory=list)
    query: AudienceQuery | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Audience:
        if bool(self.recipients) == (self.query is not None):
            raise ValueError("give either 'recipients' (a list) or 'query', not both or neither")
        refs = [r.ref for r in self.recipients]
        if len(refs) != len(set(refs)):
            raise ValueError("recipient refs must be unique")
        return self


class Chart(_Strict):
    category: ColumnName
    measure: ColumnName
    agg: Literal["sum", "count", "avg"] = "sum"
    title: str | None = None
    top: int = Field(
        default=10, ge=1, le=50, description="Bars shown, largest first; the rest are one 'Other' bar (sum, count)."
    )


class EmailTemplates(_Strict):
    """Per-report email templates (Jinja2, sandboxed; the HTML one autoescaped). Unset: the built-in ones."""

    subject: str | None = Field(default=None, max_length=500)
    text: str | None = None
    html: str | None = None


class Parameter(_Strict):
    type: Literal["date", "string", "integer"] = "string"
    default: Any = None
    description: str | None = None


class PeriodSpec(_Strict):
    """The days a run covers, both included (bulletin/period.py): ISO dates or ``{{ params.<date> - Nd }}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from", description="The first day covered.")
    to: str = Field(description="The last day covered.")


class Retention(_Strict):
    """How long this report's delivered files are kept, overriding BULLETIN_RETENTION_FILES_DAYS."""

    files_days: int = Field(ge=1, le=36_500, description="Days a delivered file of this report is kept.")


class ReportDefinition(_Strict):
    id: Identifier
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    dataset: Identifier
    depends_on: list[Identifier] = Field(
        default_factory=list, description="Reports whose completed runs refresh this one (flows/refresh.py)."
    )
    columns: list[ColumnName] = Field(default_factory=list)
    column_labels: dict[ColumnName, str] = Field(default_factory=dict)
    filters: list[Filter] = Field(default_factory=list)
    order: list[OrderBy] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1)
    formats: list[Format] = Field(min_length=1)
    chart: Chart | None = None
    totals: bool | list[ColumnName] = Field(
        default=False,
        description="A totals row at the end of the PDF and XLSX tables: true for every column with a declared "
        "currency, integer or decimal format, or the columns to add up.",
    )
    period: PeriodSpec | None = Field(
        default=None, description="The days each run covers; unset: read from the filters' date bounds, if any."
    )
    parameters: dict[ColumnName, Parameter] = Field(default_factory=dict)
    audience: Audience
    secure_filters: dict[Identifier, list[Filter] | list[list[Filter]]] = Field(
        description="Per dataset, the row filters every recipient gets, templated from its attributes."
    )
    schedule: Schedule | list[Schedule] | None = None
    timezone: str | None = Field(default=None, description="Zone for dates in the files; default the schedule's.")
    channels: list[ChannelName] = Field(default_factory=_default_channels, min_length=1)
    email: EmailTemplates = Field(default_factory=EmailTemplates)
    skip_if_empty: bool = Field(default=False, description="No rows: send nothing, record it as skipped.")
    send_only_if_changed: bool = Field(
        default=False, description="Same sha256 as the last delivery to that recipient: send nothing, record it."
    )
    tolerance_seconds: int | None = Field(
        default=None,
        ge=1,
        le=366 * 86_400,
        description="A scheduled run that starts later than its slot plus this delivers nothing and is recorded as "
        "missed (Hasura's term). Unset: 6 h for schedules of a day or longer, one period for shorter ones.",
    )
    retention: Retention | None = Field(
        default=None, description="Overrides how long files are kept: `{files_days: N}` (docs/retention.md)."
    )
    catch_up: Literal["latest", "all"] = Field(
        default="latest",
        description="Of several late slots of one schedule, 'latest' runs only the newest; 'all' runs each one that "
        "is within its tolerance.",
    )

    @field_validator("formats", "channels")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(value) != len(set(value)):
            raise ValueError("values must be unique")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            check_timezone(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ReportDefinition:
        if self.dataset not in self.secure_filters:
            raise ValueError(f"secure_filters has no entry for the report's dataset {self.dataset!r}")
        for name, spec in self.parameters.items():
            if spec.type == "date" and spec.default is not None:
                try:
                    resolve_date(spec.default, date(2000, 1, 1))
                except TemplateError as exc:
                    raise ValueError(f"parameter {name!r}: {exc}") from exc
        for group in self.secure_filter_groups().values():
            for flt in (f for g in group for f in g):
                _check_template_names(flt.value, self)
        for flt in self.filters:
            _check_template_names(flt.value, self)
        if self.period is not None:
            for value in (self.period.from_, self.period.to):
                _check_period_value(value, self)
        return self

    @property
    def schedules(self) -> list[Schedule]:
        if self.schedule is None:
            return []
        return self.schedule if isinstance(self.schedule, list) else [self.schedule]

    @property
    def display_timezone(self) -> str:
        if self.timezone:
            return self.timezone
        return self.schedules[0].timezone if self.schedules else "UTC"

    def secure_filter_groups(self) -> dict[str, FilterGroups]:
        return {ds: normalise_filters(groups) for ds, groups in self.secure_filters.items()}


def _check_template_names(value: object, report: ReportDefinition) -> None:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if is_template(item) and isinstance(item, str) and "params." in item:
            name = item.split("params.", 1)[1].split()[0].rstrip("}")
            if name not in report.parameters:
                raise ValueError(f"filter value {item!r} names parameter {name!r}, which is not declared")


def _check_period_value(value: str, report: ReportDefinition) -> None:
    if not is_template(value):
        try:
            date.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError(f"period value {value!r} is neither a date (YYYY-MM-DD) nor a template") from exc
        return
    try:
        path = template_path(value)
    except TemplateError as exc:
        raise ValueError(f"period: {exc}") from exc
    spec = report.parameters.get(path[1]) if len(path) == 2 and path[0] == "params" else None
    if spec is None or spec.type != "date":
        raise ValueError(f"period value {value!r} must name a date parameter: '{{{{ params.<name> }}}}'")


def load_report_file(path: Path) -> ReportDefinition:
    """Load and validate one file; a DefinitionError names the path, the field and the reason."""
    return load_definition(path, ReportDefinition)


def load_reports(folder: Path) -> dict[str, ReportDefinition]:
    """Every report in ``folder`` (``*.yaml``), or the first error found."""
    reports: dict[str, ReportDefinition] = {}
    for path in sorted(folder.glob("*.yaml")):
        report = load_report_file(path)
        reports[report.id] = report
    return reports


def get_report(folder: Path, report_id: str) -> ReportDefinition:
    path = folder / f"{report_id}.yaml"
    if not IDENTIFIER_RE.match(report_id) or not path.is_file():
        raise NotFoundError(f"no report {report_id!r} in {folder}", field="report_id")
    return load_report_file(path)


def resolve_parameters(report: ReportDefinition, overrides: dict[str, Any], today: date) -> dict[str, Any]:
    """Defaults overridden by the caller's values, typed; unknown names are refused."""
    unknown = sorted(set(overrides) - set(report.parameters))
    if unknown:
        raise DefinitionError(
            f"report {report.id!r} has no parameter {unknown[0]!r}; it takes {sorted(report.parameters) or 'none'}",
            field="parameters",
        )
    values: dict[str, Any] = {}
    for name, spec in report.parameters.items():
        value = overrides.get(name, spec.default)
        if value is None:
            raise DefinitionError(f"parameter {name!r} of report {report.id!r} needs a value", field=name)
        try:
            if spec.type == "date":
                values[name] = resolve_date(value, today)
            elif spec.type == "integer":
                values[name] = int(value)
            else:
                values[name] = str(value)
        except (TemplateError, ValueError) as exc:
            raise DefinitionError(f"parameter {name!r}: {exc}", field=name) from exc
    return values


def template_filters(filters: list[Filter], context: dict[str, Any]) -> list[Filter]:
    """Resolve templated filter values against ``{"recipient": ..., "params": ...}``."""
    try:
        return [f.model_copy(update={"value": render_value(f.value, context)}) for f in filters]
    except TemplateError as exc:
        raise DefinitionError(str(exc), field="filters") from exc


def recipient_context(recipient: Recipient) -> dict[str, Any]:
    return {**recipient.attributes, "ref": recipient.ref, "email": recipient.email, "org": recipient.org}
