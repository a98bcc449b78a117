"""What the ``bulletin`` command imports before it does anything (issue 14): ``--help`` imports Typer and Rich and
nothing heavy; ``bulletin query`` imports what the query needs (settings, tokens, DuckDB, Arrow) and no Prefect, no
format writer, no state store, no pandas. Each check runs the command's ``main`` in a fresh interpreter and reads its
``sys.modules`` afterwards: behaviour, not timing (the times are in bench/bench_startup.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bulletin.store.api_keys import ROLES
from bulletin.store.webhook_schema import ALL_EVENTS, EVENT_TYPES, STYLES

#: Each costs from a tenth of a second to over a second to import.
HEAVY = [
    "alembic", "boto3", "cryptography", "duckdb", "fastapi", "numpy", "pandas", "prefect", "pyarrow",
    "pydantic_settings", "reportlab", "sqlalchemy", "xlsxwriter",
]  # fmt: skip
PROBE = """
import json, sys
from bulletin.edge.cli import main
code = main(sys.argv[1:])
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)  # noqa: UP031 - the list goes into the probe's source


def probe(*args: str) -> tuple[int, list[str], str]:
    """Run ``bulletin ARGS`` through ``main`` in a new interpreter: its exit code, the heavy modules it imported, and
    what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    report = json.loads(done.stderr.rsplit("PROBE ", 1)[1])
    return report["code"], report["heavy"], done.stdout


def test_help_imports_nothing_heavy() -> None:
    code, heavy, out = probe("--help")
    assert code == 0 and "Usage" in out and "query" in out and "deliveries" in out
    assert heavy == []


def test_every_group_help_imports_nothing_heavy() -> None:
    for group in ("deliveries", "webhooks", "api-keys", "deployments", "schedules", "reports", "keys", "token"):
        code, heavy, out = probe(group, "--help")
        assert code == 0 and "Usage" in out, group
        assert heavy == [], group


def test_query_imports_neither_prefect_nor_a_writer_nor_pandas(bulletin_env: Path) -> None:
    assert probe("keys", "generate")[0] == 0
    code, _, token = probe("token", "mint", "--recipient", "rm-x", "--dataset", "sales", "--filter", "region=APAC")
    assert code == 0
    code, heavy, out = probe("query", "--token", token.strip(), "--dataset", "sales", "--limit", "3")
    assert code == 0 and len(out.splitlines()) == 4
    assert {"duckdb", "pyarrow"} <= set(heavy)  # what the query needs
    assert not {"prefect", "reportlab", "xlsxwriter", "pandas", "sqlalchemy", "alembic", "boto3", "fastapi"} & set(
        heavy
    )


def test_help_texts_written_as_words_name_every_value_the_store_knows() -> None:
    """The CLI spells these out so that listing commands needs no store import; this keeps the words true."""
    from bulletin.edge.cli.webhooks import EVENT_HELP, STYLE_HELP

    assert set(EVENT_HELP.replace(",", " ").replace(" or ", " ").split()) == {*EVENT_TYPES, ALL_EVENTS}
    assert set(STYLE_HELP.split(" or ")) == set(STYLES)
    _, _, out = probe("api-keys", "create", "--help")
    assert all(role in out for role in ROLES) and " or ".join(ROLES) in out
