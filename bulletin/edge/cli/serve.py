"""``bulletin serve``: Bulletin on one machine (Prefect server, deployments, worker, HTTP API), or only some parts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bulletin.edge.cli.root import app
from bulletin.edge.supervisor.plan import DEFAULT_PREFECT_PORT, Part, make_plan

if TYPE_CHECKING:
    from bulletin.settings import Settings


@app.command("serve")
def serve(
    host: str | None = typer.Option(
        None, "--host", help="Address the HTTP API binds to. Default: BULLETIN_API_HOST (127.0.0.1)."
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        min=0,
        max=65_535,
        help="Port of the HTTP API (0: any free port, with --only api). Default: BULLETIN_API_PORT (8400).",
    ),
    prefect_port: int = typer.Option(
        DEFAULT_PREFECT_PORT,
        "--prefect-port",
        min=1,
        max=65_535,
        help="Port of the local Prefect server and its UI; it listens on 127.0.0.1 only.",
    ),
    only: list[Part] | None = typer.Option(
        None,
        "--only",
        help="Start only this part; repeat for several. prefect: a local Prefect server; deploy: the work pool "
        "and every report's deployment; worker: a process worker; api: the HTTP API. Default: all four. "
        "With PREFECT_API_URL set, that server is used and none is started.",
        case_sensitive=False,
    ),
    project_dir: Path = typer.Option(
        Path("."),
        "--project-dir",
        help="The checkout holding flows/: deployments are made and flow runs run from it. Default: here.",
    ),
) -> None:
    """Run Bulletin on this machine until Ctrl-C or SIGTERM: a Prefect server (UI at http://127.0.0.1:4200), the
    work pool and one deployment per report, a worker, and the HTTP API (signed webhooks in, /healthz, /readyz).
    Stopping stops every process it started."""
    from bulletin.settings import Settings

    settings = Settings()
    if only and set(only) == {Part.API}:
        # The API alone, in this process: what the supervisor runs as its `api` child.
        # Imported here: the app pulls in Prefect and the flows, which every other `bulletin` command would pay for.
        from bulletin.edge.api.server import serve_api

        serve_api(settings, host, port)
        return
    plan = make_plan(
        only,
        api_host=host or settings.api_host,
        api_port=settings.api_port if port is None else port,
        prefect_port=prefect_port,
        project_dir=project_dir,
        home=settings.home_dir,
        environ=os.environ,
    )
    from bulletin.edge.supervisor.run import serve as supervise

    prepare = (lambda: prepare_state(settings)) if Part.WORKER in plan.parts else None
    for note in startup_notes(settings):
        typer.echo(note)
    supervise(plan, settings, say=typer.echo, prepare=prepare)


def startup_notes(settings: Settings) -> list[str]:
    """What a person starting Bulletin should know about its settings, one line each. (``--only api`` runs the API
    in this process, whose start logs the same.)"""
    if settings.public_url is None:
        return ["BULLETIN_PUBLIC_URL is not set: emails carry no unsubscribe link (List-Unsubscribe)"]
    return []


def prepare_state(settings: Settings) -> None:
    """What report runs need before the first one starts: the demo warehouse when no warehouse is configured, and
    the signing keyset, made once here rather than by two flow runs racing to create the same file."""
    from bulletin.demo_data import build_demo_warehouse, demo_warehouse_ready, yesterday
    from tasks.tokens import load_keyset

    through = yesterday()
    if settings.warehouse_url is None and not demo_warehouse_ready(Path(settings.warehouse), through=through):
        typer.echo(f"building the demo warehouse at {settings.warehouse} (sales up to {through})")
        build_demo_warehouse(Path(settings.warehouse), end_date=through)
    if settings.signing_keys is None and not settings.signing_keys_block:
        load_keyset(settings, create=True)
