"""``bulletin serve``: the HTTP API on uvicorn (signed webhooks in, health and readiness)."""

from __future__ import annotations

import typer

from bulletin.cli import app
from bulletin.settings import Settings


@app.command("serve")
def serve(
    host: str | None = typer.Option(None, "--host", help="Address to bind. Default: BULLETIN_API_HOST (127.0.0.1)."),
    port: int | None = typer.Option(
        None, "--port", min=0, max=65_535, help="Port to bind (0: any free port). Default: BULLETIN_API_PORT (8400)."
    ),
) -> None:
    """Run the HTTP API: signed webhooks in at POST /v1/hooks/{trigger_id}, GET /healthz and GET /readyz."""
    # Imported here: the app pulls in Prefect and the flows, which every other `bulletin` command would pay for.
    from bulletin.api.server import serve_api

    serve_api(Settings(), host, port)
