"""Who depends on what: the reports to refresh when a report or a dataset has new data. Pure functions.

A report depends on its ``dataset`` and on every report it names in ``depends_on``. Only direct dependents are
returned: when one of them finishes, its own ``run.completed`` event refreshes the next level, so a chain is
followed one hop per run, each hop with its own upstream run id. That is also why a cycle is refused: it would
refresh forever.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Protocol

from bulletin.errors import DefinitionError, RequestError
from bulletin.store.ledger_schema import RUN_KEY_MAX

_KEY_SAFE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,128}$")


class _Report(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def dataset(self) -> str: ...


def report_dependencies(report: _Report) -> list[str]:
    """The reports ``report`` depends on. ``depends_on`` is read defensively: older definitions do not have it."""
    return list(getattr(report, "depends_on", None) or [])


def check_no_cycles(reports: Mapping[str, _Report]) -> None:
    """Refuse a report that depends on itself, directly or through others (DefinitionError naming the cycle)."""
    graph = {rid: report_dependencies(r) for rid, r in reports.items()}
    done: set[str] = set()

    def visit(rid: str, path: list[str]) -> None:
        if rid in path:
            cycle = " -> ".join([*path[path.index(rid) :], rid])
            raise DefinitionError(f"report dependencies form a cycle: {cycle}", field="depends_on")
        if rid in done:
            return
        for upstream in graph.get(rid, []):
            visit(upstream, [*path, rid])
        done.add(rid)

    for rid in sorted(graph):
        visit(rid, [])


def find_dependents(
    reports: Mapping[str, _Report], *, report_id: str | None = None, dataset: str | None = None
) -> list[str]:
    """Ids of the reports that read ``dataset`` or depend on ``report_id``, sorted; never the upstream itself."""
    if report_id is None and dataset is None:
        raise DefinitionError("name the upstream: a report_id, a dataset, or both", field="report_id")
    found = {
        rid
        for rid, report in reports.items()
        if (dataset is not None and report.dataset == dataset)
        or (report_id is not None and report_id in report_dependencies(report))
    }
    found.discard(report_id or "")
    return sorted(found)


def refresh_run_key(report_id: str, subject: str, upstream_run_id: str) -> str:
    """The ledger key of ``report_id``'s refresh after ``subject``'s run ``upstream_run_id``.

    The same upstream run always gives the same key, so a replayed upstream event finds every delivery already in
    the ledger and sends nothing twice. Ids outside the run-key alphabet (or too long) are hashed.
    """
    upstream = f"{subject}:{upstream_run_id}"
    key = f"{report_id}:after:{upstream}"
    if len(key) > RUN_KEY_MAX or not all(_KEY_SAFE.match(part) for part in (subject, upstream_run_id)):
        key = f"{report_id}:after:{hashlib.sha256(upstream.encode()).hexdigest()[:32]}"
    return key


def after_upstream_key(
    report_id: str, upstream_report: str | None, upstream_run_id: str | None, run_key: str | None
) -> str:
    """The run key of ``report_id``'s run after ``upstream_report``'s run ``upstream_run_id`` (a deployment trigger's
    parameters): both must be given, and no other run key beside them, else a RequestError says why."""
    if not upstream_report or not upstream_run_id:
        raise RequestError(
            "upstream_report and upstream_run_id go together: the run that refreshes a report after another names both",
            field="upstream_run_id",
        )
    if run_key is not None:
        raise RequestError(
            "give run_key or upstream_report with upstream_run_id, not both: the upstream run decides the key",
            field="run_key",
        )
    return refresh_run_key(report_id, upstream_report, upstream_run_id)
