"""Who a report goes to, and the data scope each recipient gets.

Pure functions, apart from ``resolve_audience`` reading an audience table through the warehouse adapter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bulletin.errors import DefinitionError, NotFoundError
from bulletin.models import FilterGroups, Recipient
from bulletin.reports import ReportDefinition, recipient_context, template_filters
from tasks.warehouse import Warehouse, read_audience


def resolve_audience(report: ReportDefinition, warehouse: Warehouse) -> list[Recipient]:
    """The report's recipients: the inline list, or the rows of its audience query."""
    if report.audience.query is None:
        return list(report.audience.recipients)
    spec = report.audience.query
    named = {"ref": spec.ref, "email": spec.email, "name": spec.name, "org": spec.org}
    columns = [c for c in named.values() if c] + [a for a in spec.attributes if a not in named.values()]
    rows = read_audience(warehouse, spec.table, columns, spec.filters)
    recipients = []
    for row in rows:
        try:
            recipients.append(
                Recipient(
                    ref=str(row[spec.ref]),
                    email=str(row[spec.email]),
                    name=str(row[spec.name]) if spec.name and row.get(spec.name) is not None else None,
                    org=str(row[spec.org]) if spec.org and row.get(spec.org) is not None else None,
                    attributes={a: row[a] for a in spec.attributes},
                )
            )
        except ValueError as exc:
            raise DefinitionError(
                f"audience table {spec.table!r} has an invalid recipient row {row.get(spec.ref)!r}: {exc}",
                field="audience.query",
            ) from exc
    refs = [r.ref for r in recipients]
    if len(refs) != len(set(refs)):
        raise DefinitionError(f"audience table {spec.table!r} has duplicate refs", field="audience.query")
    return recipients


def select_recipients(audience: list[Recipient], refs: list[str] | None) -> list[Recipient]:
    """All of the audience, or only the named refs (each must be in the audience: no ad-hoc scope)."""
    if not refs:
        return audience
    by_ref = {r.ref: r for r in audience}
    missing = [ref for ref in refs if ref not in by_ref]
    if missing:
        raise NotFoundError(f"recipient {missing[0]!r} is not in the report's audience", field="recipients")
    return [by_ref[ref] for ref in dict.fromkeys(refs)]


def scope_for_recipient(
    report: ReportDefinition, recipient: Recipient, params: dict[str, Any]
) -> dict[str, FilterGroups]:
    """The recipient's secure filters per dataset, templated from its attributes."""
    context = {"recipient": recipient_context(recipient), "params": params}
    scope: dict[str, FilterGroups] = {}
    for dataset, groups in report.secure_filter_groups().items():
        resolved = [template_filters(group, context) for group in groups]
        for group in resolved:
            for flt in group:
                if flt.value is None or flt.value == [] or flt.value == "":
                    raise DefinitionError(
                        f"recipient {recipient.ref!r} has no value for secure filter {flt.field!r}: refusing an "
                        "empty scope",
                        field="secure_filters",
                    )
        scope[dataset] = resolved
    return scope


def find_recipients(reports: Iterable[ReportDefinition], warehouse: Warehouse, ref: str) -> list[Recipient]:
    """``ref`` as each organisation's report audiences know it: one Recipient per organisation whose audience of
    some report holds ``ref`` (a ref is unique within an organisation, not across them). Empty: nobody's."""
    found: dict[str | None, Recipient] = {}
    for report in reports:
        for recipient in resolve_audience(report, warehouse):
            if recipient.ref == ref:
                found.setdefault(recipient.org, recipient)
    return list(found.values())
