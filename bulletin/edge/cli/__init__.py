"""The ``bulletin`` command. Each command is a thin call into the library or a flow.

Errors are mapped to one line and an exit code here, in one place: a BulletinError's own ``exit_code``, 2 for a
usage error, 1 for anything unexpected (never a traceback unless ``BULLETIN_DEBUG=1``).
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

from bulletin.edge.cli.root import app
from bulletin.errors import BulletinError

err_console = Console(stderr=True)


_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    from bulletin.edge.cli import delivery, ledger, reports, security, serve, webhooks  # noqa: F401 - commands register

    app.add_typer(ledger.deliveries_app, name="deliveries")
    app.add_typer(webhooks.webhooks_app, name="webhooks")
    app.add_typer(reports.reports_app, name="reports")
    app.add_typer(security.keys_app, name="keys")
    app.add_typer(security.token_app, name="token")
    from bulletin.edge.cli import api_keys

    app.add_typer(api_keys.api_keys_app, name="api-keys")
    from bulletin.edge.cli import deployments

    app.add_typer(deployments.deployments_app, name="deployments")
    from bulletin.edge.cli import schedules

    app.add_typer(schedules.schedules_app, name="schedules")
    from bulletin.edge.cli import retention

    app.add_typer(retention.retention_app, name="retention")
    from bulletin.edge.cli import preferences

    app.add_typer(preferences.preferences_app, name="preferences")


def _is_validation_error(exc: Exception) -> bool:
    """A pydantic ValidationError, told without importing pydantic: `bulletin --help` must not pay for it, and if
    pydantic_core was never imported no command could have raised one."""
    core = sys.modules.get("pydantic_core")
    return core is not None and isinstance(exc, core.ValidationError)


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bulletin`` script. Typer reports usage errors itself (exit 2); our errors are here."""
    _register()
    try:
        app(args=argv, prog_name="bulletin")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BulletinError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except Exception as exc:
        if _is_validation_error(exc):
            first = exc.errors()[0]  # type: ignore[attr-defined]
            where = ".".join(str(p) for p in first["loc"]) or "input"
            err_console.print(f"[bold red]error:[/] {where}: {first['msg']}", highlight=False, soft_wrap=True)
            return 2
        if os.environ.get("BULLETIN_DEBUG"):
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (set BULLETIN_DEBUG=1 for a traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


def run() -> None:
    sys.exit(main())
