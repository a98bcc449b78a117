"""``bulletin api-keys ...``: the keys that call the HTTP API, one organisation each.

``create`` prints the key once (the store keeps only its SHA-256); ``list`` shows ids, prefixes, roles and times,
never a key; ``revoke`` stops a key at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from bulletin.settings import Settings
    from bulletin.store import Store

# The state store (SQLAlchemy, Alembic) and settings are imported by the commands, not to list them: `bulletin
# --help` pays for neither (tests/cli/test_startup.py, which also checks that the help names every role).

api_keys_app = typer.Typer(help="API keys for the HTTP API (one organisation each).", no_args_is_help=True)
console = Console(width=None if Console().is_terminal else 200)


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    from bulletin.store import migrate, open_store

    with open_store(settings.database) as store:
        migrate(store)
        yield store


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


@api_keys_app.command("create")
def api_keys_create(
    org: str = typer.Option(..., "--org", help="The organisation the key acts for (created with its first key)."),
    role: str | None = typer.Option(
        None, "--role", help="admin or member. Default: member (admin with --cluster-admin)."
    ),
    cluster_admin: bool = typer.Option(False, "--cluster-admin", help="Also allow cluster-level settings."),
    name: str = typer.Option("", "--name", help="A note for people: who or what uses the key."),
    org_name: str | None = typer.Option(None, "--org-name", help="Display name of a new organisation."),
) -> None:
    """Create an API key and print it (shown this once: the store keeps only its hash)."""
    from bulletin.settings import Settings
    from bulletin.store.api_keys import create_key

    chosen = role or ("admin" if cluster_admin else "member")
    with _store(Settings()) as store:
        key, secret = create_key(
            store,
            org=org,
            role=chosen,
            cluster_admin=cluster_admin,
            name=name,
            org_name=org_name,
            now=datetime.now(UTC),
        )
    typer.echo(f"id: {key.id}")
    typer.echo(f"key: {secret}")
    typer.echo(
        f"org {key.org}, role {key.role}{', cluster admin' if key.cluster_admin else ''}; "
        "store the key now: it is not shown again",
        err=True,
    )


@api_keys_app.command("list")
def api_keys_list(
    org: str | None = typer.Option(None, "--org", help="Only this organisation's keys."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List API keys (ids and prefixes, never the keys)."""
    from rich.table import Column, Table

    from bulletin.settings import Settings
    from bulletin.store.api_keys import list_keys

    with _store(Settings()) as store:
        keys = list_keys(store, org=org)
    if as_json:
        typer.echo(json.dumps([k.model_dump(mode="json") for k in keys], indent=2))
        return
    headers = ("id", "org", "prefix", "role", "cluster admin", "name", "created (UTC)", "last used", "revoked")
    table = Table(*(Column(h, overflow="fold") for h in headers))
    for k in keys:
        table.add_row(
            k.id, k.org, f"{k.prefix}…", k.role, "yes" if k.cluster_admin else "", k.name, _when(k.created_at),
            _when(k.last_used_at), _when(k.revoked_at),
        )  # fmt: skip
    console.print(table)


@api_keys_app.command("revoke")
def api_keys_revoke(key_id: str = typer.Argument(..., help="The key id (key_...), as `api-keys list` shows.")) -> None:
    """Revoke an API key: from now on it is refused (401)."""
    from bulletin.settings import Settings
    from bulletin.store.api_keys import revoke_key

    with _store(Settings()) as store:
        key = revoke_key(store, key_id, now=datetime.now(UTC))
    typer.echo(f"revoked {key.id} ({key.prefix}…, org {key.org})")
