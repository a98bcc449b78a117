"""A report checked against the dataset registry and its own audience, before anything runs.

Loading a report (``bulletin.reports``) checks its shape; ``check_report`` checks what loading cannot see, which
would otherwise fail every recipient at run time: the dataset exists; every column, filter, order and chart field is
one the dataset allows, with an operator it allows on that field; every secure filter too; every
``{{ recipient.X }}`` names something the audience provides; the email templates compile in the sandbox the email
channel renders them with. It is pure, and returns every problem, each with its field path and the bad value, so
``bulletin reports validate`` (the CI gate) can list them all with ``validate_reports``. The query engine
(``tasks.warehouse.query``) still checks the same rules at run time, as the last defence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulletin.datasets import DatasetSpec
from bulletin.email_templates import TemplateKind, template_problems
from bulletin.errors import DefinitionError
from bulletin.models import Filter
from bulletin.reports import ReportDefinition, load_report_file
from bulletin.schedules import check_timezone
from bulletin.templating import TemplateError, is_template, template_path

#: What a secure filter or filter template may read from ``recipient`` besides its attributes
#: (``bulletin.reports.recipient_context``).
_RECIPIENT_KEYS = frozenset({"ref", "email", "org"})
_NUMERIC = {"integer", "decimal", "number"}
_SHOWN_CHARS = 80


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a report: where (a dotted field path), the value found there, and why it is refused."""

    path: str
    value: object
    reason: str

    def __str__(self) -> str:
        shown = repr(self.value)
        if len(shown) > _SHOWN_CHARS:
            shown = shown[: _SHOWN_CHARS - 4] + "...'"
        return f"{self.path}: {shown} {self.reason}"


@dataclass(frozen=True)
class _Audience:
    """What every recipient of the report provides to templates, and who lacks what some others have."""

    attributes: frozenset[str]
    partial: Mapping[str, list[str]]  # an attribute only some inline recipients have -> the refs lacking it

    def problem(self, name: str) -> str | None:
        if name in self.attributes:
            return None
        if name in self.partial:
            lacking = self.partial[name]
            more = f" and {len(lacking) - 3} more" if len(lacking) > 3 else ""
            return f"names recipient.{name}, which recipient(s) {', '.join(lacking[:3])}{more} do not have"
        return (
            f"names recipient.{name}, which the audience does not provide "
            f"(it provides {', '.join(sorted(self.attributes | _RECIPIENT_KEYS))})"
        )


def _audience(report: ReportDefinition, *, each_recipient: bool) -> _Audience:
    query = report.audience.query
    if query is not None:
        return _Audience(frozenset(query.attributes), {})
    recipients = report.audience.recipients
    every = set.intersection(*(set(r.attributes) for r in recipients)) if recipients else set()
    some = set().union(*(set(r.attributes) for r in recipients)) - every
    if not each_recipient:  # an attribute some recipients have: those without it fail alone, at run time
        return _Audience(frozenset(every | some), {})
    partial = {name: [r.ref for r in recipients if name not in r.attributes] for name in sorted(some)}
    return _Audience(frozenset(every), partial)


def _value_problems(path: str, value: Any, audience: _Audience) -> list[Problem]:
    """A filter value's templates: well formed, and naming only what recipients provide."""
    items = value if isinstance(value, list) else [value]
    problems = []
    for i, item in enumerate(items):
        where = f"{path}.{i}" if isinstance(value, list) else path
        if not (is_template(item) and isinstance(item, str)):
            continue
        try:
            parts = template_path(item)
        except TemplateError:
            problems.append(Problem(where, item, "is not a template of the form '{{ recipient.<attribute> }}'"))
            continue
        reason: str | None = None
        if parts[0] != "recipient":
            reason = None if parts[0] == "params" else "names neither recipient.<attribute> nor params.<name>"
        elif len(parts) != 2:
            reason = "names a path inside an attribute; only recipient.<attribute> is provided"
        elif parts[1] not in _RECIPIENT_KEYS:
            reason = audience.problem(parts[1])
        if reason is not None:
            problems.append(Problem(where, item, reason))
    return problems


def _filter_problems(path: str, flt: Filter, spec: DatasetSpec | None, audience: _Audience) -> list[Problem]:
    problems = []
    refused = spec.filter_problem(flt.field, flt.op) if spec is not None else None
    if refused is not None:
        part, reason = refused
        problems.append(Problem(f"{path}.{part}", getattr(flt, part), reason))
    return problems + _value_problems(f"{path}.value", flt.value, audience)


def _column_problem(path: str, name: str, spec: DatasetSpec) -> list[Problem]:
    if spec.column(name) is None:
        return [Problem(path, name, f"is not a column of dataset {spec.id!r}")]
    return []


def _columns(report: ReportDefinition, spec: DatasetSpec) -> list[Problem]:
    problems = []
    for i, name in enumerate(report.columns):
        problems += _column_problem(f"columns.{i}", name, spec)
    for name in report.column_labels:
        problems += _column_problem(f"column_labels.{name}", name, spec)
    for i, order in enumerate(report.order):
        problems += _column_problem(f"order.{i}.field", order.field, spec)
    for i, name in enumerate(report.totals if isinstance(report.totals, list) else []):
        column = spec.column(name)
        if column is None:
            problems += _column_problem(f"totals.{i}", name, spec)
        elif column.type not in (None, *_NUMERIC) or (column.format is not None and column.format.kind == "percent"):
            problems.append(Problem(f"totals.{i}", name, "is not a column of amounts that add up"))
    if report.chart is not None:
        problems += _column_problem("chart.category", report.chart.category, spec)
        measure = spec.column(report.chart.measure)
        if measure is None:
            problems += _column_problem("chart.measure", report.chart.measure, spec)
        elif report.chart.agg != "count" and measure.type not in (None, *_NUMERIC):
            reason = f"is a {measure.type} column; {report.chart.agg} needs a number (or use agg: count)"
            problems.append(Problem("chart.measure", report.chart.measure, reason))
    return problems


def _secure_filters(
    report: ReportDefinition, registry: Mapping[str, DatasetSpec], audience: _Audience
) -> list[Problem]:
    problems = []
    for dataset_id, given in report.secure_filters.items():
        path = f"secure_filters.{dataset_id}"
        spec = registry.get(dataset_id)
        if spec is None:
            problems.append(Problem(path, dataset_id, _unknown_dataset(registry)))
        nested = bool(given) and all(isinstance(item, list) for item in given)
        groups: list[tuple[str, list[Filter]]] = (
            [(f"{path}.{g}", list(group)) for g, group in enumerate(given) if isinstance(group, list)]
            if nested
            else [(path, [f for f in given if isinstance(f, Filter)])]
        )
        if spec is not None and spec.require_secure_filter and not any(flts for _, flts in groups):
            problems.append(Problem(path, given, "is empty, and the dataset requires a secure filter for everyone"))
        for group_path, filters in groups:
            if nested and not filters:
                problems.append(Problem(group_path, filters, "is an empty group, which would match every row"))
            for i, flt in enumerate(filters):
                problems += _filter_problems(f"{group_path}.{i}", flt, spec, audience)
    return problems


def _email(report: ReportDefinition, audience: _Audience) -> list[Problem]:
    problems = []
    templates: dict[TemplateKind, str | None] = {
        "subject": report.email.subject,
        "text": report.email.text,
        "html": report.email.html,
    }
    for kind, source in templates.items():
        if source is None:
            continue
        for reason in template_problems(kind, source, audience.attributes):
            problems.append(Problem(f"email.{kind}", source, reason))
    return problems


def _readers(report: ReportDefinition) -> list[Problem]:
    """Inline recipients' ``locale`` and ``timezone`` attributes: a run fails that recipient alone, so only
    ``validate`` (each recipient) names them ahead."""
    from bulletin.period import reader_locale  # Babel's data only for a report whose recipients name a locale

    problems = []
    for i, recipient in enumerate(report.audience.recipients):
        locale, zone = recipient.attributes.get("locale"), recipient.attributes.get("timezone")
        path = f"audience.recipients.{i}.attributes"
        try:
            if locale is not None:
                reader_locale(str(locale))
        except DefinitionError:
            problems.append(Problem(f"{path}.locale", locale, "is not a locale CLDR knows (use e.g. en-GB, de-DE)"))
        try:
            if zone is not None:
                check_timezone(str(zone))
        except ValueError:
            problems.append(Problem(f"{path}.timezone", zone, "is not an IANA time zone (use e.g. Europe/Berlin)"))
    return problems


def _unknown_dataset(registry: Mapping[str, DatasetSpec]) -> str:
    return f"is not a dataset (known: {', '.join(sorted(registry)) or 'none'})"


def check_report(
    report: ReportDefinition, registry: Mapping[str, DatasetSpec], *, each_recipient: bool = True
) -> list[Problem]:
    """Every problem that would make ``report`` fail at run time; empty when there is none.

    ``each_recipient=False`` leaves out an attribute that only some inline recipients lack: what a run refuses up
    front is what would fail every recipient, while ``bulletin reports validate`` names those recipients too.
    """
    audience = _audience(report, each_recipient=each_recipient)
    spec = registry.get(report.dataset)
    problems = [] if spec is not None else [Problem("dataset", report.dataset, _unknown_dataset(registry))]
    if spec is not None:
        problems += _columns(report, spec)
    for i, flt in enumerate(report.filters):
        problems += _filter_problems(f"filters.{i}", flt, spec, audience)
    problems += _secure_filters(report, registry, audience)
    if each_recipient:
        problems += _readers(report)
    return problems + _email(report, audience)


def validate_reports(
    folder: Path, datasets: Mapping[str, DatasetSpec] | None = None
) -> tuple[list[str], list[DefinitionError]]:
    """Validate every file, collecting all errors rather than stopping at the first.

    With ``datasets`` (the registry) each report that loads is also checked against it and its audience
    (``check_report``): one error per problem, naming the file, the field path and the bad value.
    """
    ok: list[str] = []
    errors: list[DefinitionError] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            report = load_report_file(path)
        except DefinitionError as exc:
            errors.append(exc)
            continue
        problems = check_report(report, datasets) if datasets is not None else []
        errors += [DefinitionError(f"{path}: {problem}", field=problem.path) for problem in problems]
        if not problems:
            ok.append(report.id)
    return ok, errors
