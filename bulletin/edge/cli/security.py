"""``bulletin keys``, ``bulletin token`` and ``bulletin query``: signing keys, data tokens, scoped queries."""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer

from bulletin.edge.cli.options import parse_filter
from bulletin.edge.cli.root import app
from bulletin.errors import ConfigError, RequestError

# Settings, tokens (cryptography) and the warehouse (DuckDB, Arrow) are imported by the commands that use them:
# `bulletin --help` pays for none of them (tests/cli/test_startup.py).

keys_app = typer.Typer(help="Manage the keys that sign data tokens.", no_args_is_help=True)
token_app = typer.Typer(help="Mint data tokens.", no_args_is_help=True)


@keys_app.command("generate")
def keys_generate(
    out: Path | None = typer.Option(None, "--out", help="Keyset file to write. Default: the configured keys file."),
) -> None:
    """Add a new signing key (it becomes active; older keys keep verifying) and print the public JWKS."""
    from bulletin.settings import Settings
    from tasks.tokens import generate_key, keyset_from_json, public_jwks, save_keyset

    settings = Settings()
    path = out or settings.keyset_path
    current = keyset_from_json(path.read_text(encoding="utf-8")) if path.is_file() else None
    keyset = generate_key(current, now=datetime.now(UTC))
    save_keyset(keyset, path)
    typer.echo(json.dumps(public_jwks(keyset), indent=2))
    typer.echo(f"wrote {path} (active key {keyset.active_kid})", err=True)


@keys_app.command("jwks")
def keys_jwks() -> None:
    """Print the public keys (JWKS) that verify data tokens."""
    from bulletin.settings import Settings
    from tasks.tokens import load_keyset, public_jwks

    typer.echo(json.dumps(public_jwks(load_keyset(Settings())), indent=2))


@token_app.command("mint")
def token_mint(
    recipient: str = typer.Option(..., "--recipient", help="The recipient ref: the token's subject."),
    dataset: list[str] = typer.Option(..., "--dataset", help="Dataset the token grants (repeat, or '*')."),
    filters: list[str] = typer.Option(
        [], "--filter", help="Secure filter FIELD=VALUE on every granted dataset (repeat; ANDed)."
    ),
    ttl: int | None = typer.Option(None, "--ttl", help="Lifetime in minutes (1-60). Default: the setting."),
) -> None:
    """Print a signed data token for RECIPIENT carrying the given secure filters.

    Refused before signing: an unknown dataset, a filter field or operator a dataset does not allow, a TTL outside
    1-60 minutes, and '*' with a filter (the filter would have nowhere to go)."""
    from bulletin.datasets import check_grant, load_datasets
    from bulletin.settings import Settings
    from tasks.tokens import MAX_TTL_MINUTES, load_keyset, mint_token

    settings = Settings()
    if ttl is not None and not 1 <= ttl <= MAX_TTL_MINUTES:
        raise RequestError(f"--ttl must be 1-{MAX_TTL_MINUTES} minutes, not {ttl}", field="ttl")
    parsed = [parse_filter(f) for f in filters]
    check_grant(load_datasets(settings.datasets_dir), dataset, parsed)
    dataset_ids: list[str] | str = "*" if dataset == ["*"] else dataset
    scope = {ds: [parsed] for ds in dataset} if parsed else {}
    minted = mint_token(
        load_keyset(settings),
        subject=recipient,
        dataset_ids=dataset_ids,  # type: ignore[arg-type]
        secure_filters=scope,
        ttl_minutes=ttl if ttl is not None else settings.token_ttl_minutes,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        now=datetime.now(UTC),
    )
    typer.echo(minted.token)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


@app.command("query")
def query(
    token: str = typer.Option(..., "--token", envvar="BULLETIN_TOKEN", help="A data token (or BULLETIN_TOKEN)."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset to query."),
    columns: list[str] = typer.Option([], "--column", help="Column to return (repeat). Default: all allowed."),
    filters: list[str] = typer.Option([], "--filter", help="Filter FIELD=VALUE (repeat; ANDed with the token's)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many rows."),
    fmt: str = typer.Option("csv", "--format", help="csv or json (one JSON object per line)."),
) -> None:
    """Run a query as the token's holder would: the token's secure filters always apply."""
    from bulletin.datasets import load_datasets
    from bulletin.models import QuerySpec
    from bulletin.settings import Settings
    from tasks.render.formula import neutralize_formula
    from tasks.tokens import load_keyset, verify_token
    from tasks.warehouse import Warehouse, run_query

    if fmt not in {"csv", "json"}:
        raise ConfigError(f"--format must be csv or json, not {fmt!r}")
    settings = Settings()
    keyset = load_keyset(settings)
    claims = verify_token(
        token, keyset, issuer=settings.token_issuer, audience=settings.token_audience, now=datetime.now(UTC)
    )
    spec = QuerySpec(dataset=dataset, columns=columns, filters=[parse_filter(f) for f in filters], limit=limit)
    with Warehouse(settings.warehouse) as warehouse:
        result = run_query(
            claims, spec, load_datasets(settings.datasets_dir), warehouse, batch_rows=settings.query_batch_rows
        )
        names = result.schema.names
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if fmt == "csv":
            writer.writerow(names)
        for batch in result:
            for row in batch.to_pylist():
                if fmt == "csv":
                    # CSV opened in a spreadsheet: text cells that would run as formulas are neutralised.
                    writer.writerow(
                        [neutralize_formula(v) if isinstance(v, str) else v for v in (row[n] for n in names)]
                    )
                else:
                    sys.stdout.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")


@keys_app.command("retire")
def keys_retire(
    kid: str = typer.Argument(..., help="The key id to retire (see `bulletin keys jwks`)."),
    after: str = typer.Option("1h", "--after", help="Keep verifying for this long: 0, 90m, 24h, 7d."),
) -> None:
    """End a rotation overlap: KID stops verifying tokens after the given time. The active key cannot be retired."""
    from datetime import timedelta

    from bulletin.settings import Settings
    from tasks.storage import parse_duration
    from tasks.tokens import keyset_from_json, retire_key, save_keyset

    settings = Settings()
    path = settings.keyset_path
    if not path.is_file():
        raise ConfigError(f"no keyset file at {path}: run `bulletin keys generate` first")
    keyset = keyset_from_json(path.read_text(encoding="utf-8"))
    not_after = datetime.now(UTC) + timedelta(seconds=parse_duration(after) if after != "0" else 0)
    save_keyset(retire_key(keyset, kid, not_after=not_after), path)
    typer.echo(f"key {kid} is refused after {not_after:%Y-%m-%d %H:%M:%S} UTC")
