"""``bulletin deployments ...``: write prefect.yaml from the report definitions, and check a Prefect server."""

from __future__ import annotations

import contextlib
import difflib
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from bulletin.edge.automations import (
    AUTOMATION_NAME,
    DEFAULT_PENDING_SECONDS,
    DEFAULT_WITHIN_SECONDS,
    HEARTBEAT_SECONDS,
    PENDING_AUTOMATION_NAME,
    apply_automation,
    check_pending_within,
    check_within,
    crash_silent_runs,
    crash_unstarted_runs,
)
from bulletin.errors import ConfigError, NotFoundError, TransientError

if TYPE_CHECKING:
    from bulletin.deployment_checks import ServerDeployment
    from bulletin.deployments import DeploymentSpec

# Settings and the deployment planner (YAML, the report definitions) are imported by the commands: `bulletin --help`
# pays for neither. So the defaults that come from them are resolved when a command runs, and said in the help.

deployments_app = typer.Typer(
    help="Generate prefect.yaml from the report definitions and check the deployments on a Prefect server.",
    no_args_is_help=True,
)
err_console = Console(stderr=True)

_PATH_HELP = "The prefect.yaml to write or read. Default: prefect.yaml at the project root."


def _default_path(path: Path | None) -> Path:
    from bulletin.settings import PROJECT_ROOT

    return path if path is not None else PROJECT_ROOT / "prefect.yaml"


@deployments_app.command("sync")
def sync(
    check: bool = typer.Option(
        False, "--check", help="Write nothing; exit non-zero if the file differs from what the reports imply."
    ),
    path: Path | None = typer.Option(None, "--path", help=_PATH_HELP),
    pool: str | None = typer.Option(None, "--pool", help="Work pool every deployment runs on. Default: bulletin."),
) -> None:
    """Write prefect.yaml from the report definitions: one deployment per report, plus the fixed flows."""
    from bulletin.deployments import DEFAULT_WORK_POOL, prefect_yaml_text, write_prefect_yaml
    from bulletin.settings import Settings

    settings = Settings()
    path = _default_path(path)
    pool = pool or DEFAULT_WORK_POOL
    if check:
        expected = prefect_yaml_text(settings, work_pool=pool)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == expected:
            typer.echo(f"{path} is up to date")
            return
        if current is not None:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True), expected.splitlines(keepends=True), str(path), "generated"
            )
            typer.echo("".join(diff), nl=False)
        reason = "does not exist" if current is None else "is stale: it differs from what the report definitions imply"
        raise ConfigError(f"{path} {reason}; run `bulletin deployments sync`", field="path")
    changed = write_prefect_yaml(settings, path, work_pool=pool)
    typer.echo(f"{'wrote' if changed else 'unchanged:'} {path}")


@deployments_app.command("check")
def check_server(
    path: Path | None = typer.Option(None, "--path", help=_PATH_HELP),
    pool: str | None = typer.Option(
        None, "--pool", help="Work pool the deployments must be on. Default: the pool prefect.yaml names."
    ),
    clear_schedules: bool = typer.Option(
        False,
        "--clear-stale-schedules",
        help="First remove the schedules of deployments that prefect.yaml gives none (`prefect deploy` keeps them).",
    ),
) -> None:
    """Check the deployments on the Prefect server at PREFECT_API_URL; exit non-zero naming each problem.

    Every work pool prefect.yaml names (and --pool) must exist, and every deployment the reports imply must be
    deployed, on its work pool, with the schedules and parameters prefect.yaml gives it.
    """
    from bulletin.deployment_checks import declared_work_pools, find_problems, read_declared_deployments
    from bulletin.deployments import planned_deployments
    from bulletin.reports import load_reports
    from bulletin.settings import Settings

    settings = Settings()
    path = _default_path(path)
    planned = planned_deployments(load_reports(settings.reports_dir).values())
    declared = read_declared_deployments(path)
    pools = set(declared_work_pools(declared)) | ({pool} if pool else set())
    import asyncio

    if clear_schedules:
        for name, count in asyncio.run(_clear_stale_schedules([p for p in planned if not p.schedules])):
            typer.echo(f"cleared {count} schedule(s) of {name}: prefect.yaml gives it none")
    api_url, server_pools, server_deployments = asyncio.run(_read_server(pools, planned))
    problems = find_problems(planned, declared, server_pools, server_deployments, pool=pool)
    if problems:
        for problem in problems:
            err_console.print(f"[bold red]problem[/] {problem}", highlight=False, soft_wrap=True)
        error = NotFoundError if any(p.missing for p in problems) else ConfigError
        raise error(f"{len(problems)} problem(s) with the deployments on {api_url}: {problems[0]}")
    typer.echo(f"ok: {len(planned)} deployment(s) on {api_url}, work pool(s) {', '.join(sorted(pools))}")


@deployments_app.command("automations")
def automations(
    within: int = typer.Option(
        DEFAULT_WITHIN_SECONDS,
        "--within",
        help=f"Seconds without a heartbeat before a run is marked Crashed; more than the {HEARTBEAT_SECONDS} s "
        "heartbeat interval the workers set (PREFECT_FLOWS_HEARTBEAT_FREQUENCY).",
    ),
    pending_within: int = typer.Option(
        DEFAULT_PENDING_SECONDS,
        "--pending-within",
        help="Seconds a run may stay Pending (taken by a worker, its process not yet Running) before it is marked "
        "Crashed; more than your workers take to start a run (a container may need minutes to pull its image).",
    ),
) -> None:
    """Create or update, on the Prefect server at PREFECT_API_URL, the two automations that mark a Bulletin flow run
    Crashed when its process died: its heartbeats stopped, or its worker took it and never started it. Idempotent:
    run it after every deploy."""
    import asyncio

    silent = crash_silent_runs(check_within(within))
    unstarted = crash_unstarted_runs(check_pending_within(pending_within))
    outcome, automation_id = asyncio.run(apply_automation(silent))
    typer.echo(f"{outcome} automation '{AUTOMATION_NAME}' ({automation_id}): no heartbeat for {within} s -> Crashed")
    outcome, automation_id = asyncio.run(apply_automation(unstarted))
    typer.echo(
        f"{outcome} automation '{PENDING_AUTOMATION_NAME}' ({automation_id}): Pending for {pending_within} s -> Crashed"
    )


async def _clear_stale_schedules(unscheduled: list[DeploymentSpec]) -> list[tuple[str, int]]:
    """The adapter: delete the schedules the server still holds for deployments planned without any (say, the
    every-minute housekeeping schedules of earlier versions); the deployments changed and how many schedules each."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return []  # the check that follows says what is missing
    cleared: list[tuple[str, int]] = []
    async with get_client() as client:
        try:
            for spec in unscheduled:
                try:
                    deployment = await client.read_deployment_by_name(spec.full_name)
                except ObjectNotFound:
                    continue
                for schedule in deployment.schedules:
                    await client.delete_deployment_schedule(deployment.id, schedule.id)
                if deployment.schedules:
                    cleared.append((spec.full_name, len(deployment.schedules)))
        except httpx.HTTPError as exc:
            raise TransientError(f"the Prefect API failed while clearing schedules: {type(exc).__name__}") from exc
    return cleared


async def _read_server(
    pools: set[str], planned: list[DeploymentSpec]
) -> tuple[str, set[str], dict[str, ServerDeployment]]:
    """The adapter: which of ``pools`` exist, and what the server holds for each planned deployment."""
    # Imported here: Prefect's client costs about a second to import, which `sync` and `--help` should not pay.
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    from bulletin.deployment_checks import ServerDeployment
    from bulletin.deployments import ScheduleSpec

    api_url = PREFECT_API_URL.value()
    if not api_url:
        # Without it Prefect would start a throwaway ephemeral server, which can only say that nothing is deployed.
        raise ConfigError(
            "PREFECT_API_URL is not set: point it at the Prefect server to check", field="PREFECT_API_URL"
        )
    async with get_client() as client:
        failure = await client.api_healthcheck()
        if failure is not None:
            raise TransientError(f"cannot reach the Prefect API at {api_url}: {type(failure).__name__}")
        try:
            existing: set[str] = set()
            for name in sorted(pools):
                with contextlib.suppress(ObjectNotFound):
                    existing.add((await client.read_work_pool(name)).name)
            found: dict[str, ServerDeployment] = {}
            for spec in planned:
                try:
                    deployment = await client.read_deployment_by_name(spec.full_name)
                except ObjectNotFound:
                    continue
                schedules = tuple(
                    ScheduleSpec(s.schedule.cron, s.schedule.timezone or "UTC", dict(s.parameters or {}))
                    if isinstance(s.schedule, CronSchedule)
                    else ScheduleSpec(f"<{type(s.schedule).__name__}>", "", {})
                    for s in deployment.schedules
                )
                found[spec.full_name] = ServerDeployment(
                    work_pool=deployment.work_pool_name, parameters=dict(deployment.parameters), schedules=schedules
                )
        except httpx.HTTPError as exc:
            raise TransientError(f"the Prefect API at {api_url} failed: {type(exc).__name__}") from exc
    return str(api_url), existing, found
