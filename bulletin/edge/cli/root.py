"""The root ``bulletin`` command that the command modules register on.

Its own module so that those modules need nothing from ``bulletin.edge.cli``, which imports them to register them: the
package and its command modules no longer import each other.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="bulletin",
    help="Scheduled, row-secure report delivery on Prefect 3.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
