"""The refresh-dependents flow: new data upstream (a report run, a dbt job) re-delivers what depends on it."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed

from bulletin.errors import BulletinError
from bulletin.models import Manifest, RunStatus
from bulletin.reports import load_reports
from bulletin.settings import Settings
from flows.deliver_report import deliver_report
from tasks.dependents import check_no_cycles, find_dependents, refresh_run_key


@flow(name="refresh-dependents", log_prints=False, persist_result=False)
def refresh_dependents(
    report_id: str | None = None,
    dataset: str | None = None,
    upstream_run_id: str | None = None,
    upstream: str | None = None,
    dry_run: bool = False,
) -> State:
    """Re-deliver every report that depends on ``report_id`` (its ``depends_on``) or reads ``dataset``, each to
    its whole audience, one after the other.

    ``upstream_run_id`` is the run that produced the new data (a Bulletin run id, a dbt Cloud run id); each
    dependent's ledger run key is derived from it, so a replayed upstream event delivers nothing twice.
    ``upstream`` says where the event came from (``dbt-cloud``, ``bulletin``...), for the log. Returns the
    dependents' manifests; the run ends Failed if any dependent's run failed.
    """
    logger = get_run_logger()
    try:
        reports = load_reports(Settings().reports_dir)
        check_no_cycles(reports)
        dependents = find_dependents(reports, report_id=report_id, dataset=dataset)
    except BulletinError as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc), data=exc)
    subject = report_id or dataset or ""
    origin = f"{subject} run {upstream_run_id}" if upstream_run_id else subject
    if upstream:
        origin = f"{origin} ({upstream})"
    if not dependents:
        logger.info("Nothing depends on %s", origin)
        return Completed(message=f"nothing depends on {origin}", data=[])
    if upstream_run_id is None:
        logger.warning("No upstream run id: these runs get ad-hoc ledger keys, so a repeated event re-delivers")
    logger.info("Refreshing %s after %s", ", ".join(dependents), origin)

    manifests: list[Manifest] = []
    failed: list[str] = []
    for dependent in dependents:
        key = refresh_run_key(dependent, subject, upstream_run_id) if upstream_run_id else None
        state = deliver_report(dependent, dry_run=dry_run, run_key=key, return_state=True)
        result = state.result(raise_on_failure=False)
        if isinstance(result, Manifest):
            manifests.append(result)
        if not isinstance(result, Manifest) or result.status is RunStatus.FAILED:
            failed.append(dependent)
    summary = f"refreshed {len(dependents) - len(failed)} of {len(dependents)} report(s) after {origin}"
    if failed:
        return Failed(message=f"{summary}; failed: {', '.join(failed)}", data=manifests)
    return Completed(message=summary, data=manifests)
