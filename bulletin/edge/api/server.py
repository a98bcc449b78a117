"""The API on uvicorn: ``build_server`` (not started, to run beside other services) and ``serve_api`` (blocking).

``bulletin serve --only api`` calls ``serve_api``; plain ``bulletin serve`` runs that command as a child process beside
the Prefect server and the worker (``bulletin.edge.supervisor``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import uvicorn

from bulletin.edge.api.app import create_app
from bulletin.settings import Settings


class NoQueryString(logging.Filter):
    """uvicorn's access log prints the path with its query string; a sender may have put a credential there
    (``?token=...``), and no route of ours reads one, so it is cut off."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def build_server(
    settings: Settings, host: str | None = None, port: int | None = None, *, deployments: bool = True
) -> uvicorn.Server:
    """A uvicorn server for the API (not started), on ``host``/``port`` or the settings' ``api_host``/``api_port``;
    ``deployments=False``: triggered runs never go through a deployment (``create_app``).

    Port 0 picks a free port (tests); the bound port is then ``server.servers[0].sockets[0].getsockname()[1]``.
    """
    config = uvicorn.Config(
        create_app(settings, deployments=deployments),
        host=host or settings.api_host,
        port=settings.api_port if port is None else port,
        # Our own structured access log (bulletin.edge.api.middleware.AccessLog) replaces uvicorn's.
        access_log=False,
        log_level="info",
        server_header=False,
    )
    access = logging.getLogger("uvicorn.access")  # configured by uvicorn.Config just above
    if not any(isinstance(f, NoQueryString) for f in access.filters):
        access.addFilter(NoQueryString())
    structured = logging.getLogger("bulletin.api.access")
    if not structured.handlers:  # one JSON object per line on stderr; stdout stays the commands' own output
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        structured.addHandler(handler)
        structured.setLevel(logging.INFO)
        structured.propagate = False
    return uvicorn.Server(config)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler on whatever ``sys.stderr`` is when it writes, not the one it was made with: a process that
    swaps sys.stderr (a terminal UI, a test's capture) and starts a second server must not log to a closed stream."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def serve_api(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the API until interrupted (Ctrl-C or SIGTERM); stopping waits for the flow runs it started here."""
    build_server(settings, host, port).run()
