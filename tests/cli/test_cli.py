"""The CLI through its entry point: the installed ``bulletin`` script for cheap commands, ``main()`` in-process
for the ones that run flows (they share the session's Prefect API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bulletin.cli import _register, app, main
from bulletin.demo_data import DEMO_END_DATE
from bulletin.settings import PROJECT_ROOT

BULLETIN = str(Path(sys.executable).with_name("bulletin"))


def commands() -> list[list[str]]:
    """Every command path of the CLI, nested groups included."""
    import typer.main

    _register()
    group = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd, prefix: list[str]) -> None:
        sub = getattr(cmd, "commands", None)
        if sub:
            for name, child in sub.items():
                walk(child, [*prefix, name])
        else:
            paths.append(prefix)

    walk(group, [])
    return paths


def cli(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BULLETIN, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, input=input, timeout=120
    )


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    paths = commands()
    assert ["run"] in paths and ["token", "mint"] in paths and ["query"] in paths
    for path in paths:
        result = cli(*path, "--help")
        assert result.returncode == 0, (path, result.stderr)
        assert "Usage" in result.stdout and len(result.stdout) > 100
        assert f"bulletin {' '.join(path)}" in readme, f"`bulletin {' '.join(path)}` is not documented in README.md"


def test_errors_are_one_line_without_traceback(bulletin_env: Path) -> None:
    result = cli("run", "no-such-report")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr + result.stdout
    assert "no report 'no-such-report'" in result.stderr
    bad = cli("query", "--token", "not.a.token", "--dataset", "sales")
    assert bad.returncode in (2, 4)
    assert "Traceback" not in bad.stderr
    assert "not.a.token" not in bad.stderr


def test_reports_validate(tmp_path: Path) -> None:
    ok = cli("reports", "validate")
    assert ok.returncode == 0, ok.stderr
    assert "weekly-regional-sales" in ok.stdout
    data = yaml.safe_load((PROJECT_ROOT / "deployments/reports/weekly-regional-sales.yaml").read_text())
    data["formats"] = ["docx"]
    (tmp_path / "weekly-regional-sales.yaml").write_text(yaml.safe_dump(data))
    bad = cli("reports", "validate", env={"BULLETIN_REPORTS_DIR": str(tmp_path)})
    assert bad.returncode == 2
    assert "weekly-regional-sales.yaml: formats.0" in bad.stderr
    listing = cli("reports", "list", "--json")
    assert {r["id"] for r in json.loads(listing.stdout)} >= {"weekly-regional-sales", "daily-account-orders"}


def test_keys_token_and_query_round_trip(bulletin_env: Path) -> None:
    generated = cli("keys", "generate")
    assert generated.returncode == 0, generated.stderr
    jwks = json.loads(generated.stdout)
    assert jwks["keys"][0]["alg"] == "ES256" and "d" not in jwks["keys"][0]
    second = cli("keys", "generate")
    assert len(json.loads(second.stdout)["keys"]) == 2, "rotation keeps the old key for verification"
    assert len(json.loads(cli("keys", "jwks").stdout)["keys"]) == 2

    token = cli("token", "mint", "--recipient", "rm-x", "--dataset", "sales", "--filter", "region=APAC", "--ttl", "5")
    assert token.returncode == 0, token.stderr
    jwt = token.stdout.strip()
    assert jwt.count(".") == 2
    rows = cli(
        "query",
        "--token",
        jwt,
        "--dataset",
        "sales",
        "--column",
        "region",
        "--column",
        "amount",
        "--limit",
        "50",
        "--format",
        "json",
    )
    assert rows.returncode == 0, rows.stderr
    lines = [json.loads(line) for line in rows.stdout.splitlines()]
    assert 0 < len(lines) <= 50
    assert {line["region"] for line in lines} == {"APAC"}
    # A client filter on another region is ANDed with the token's: nothing, never the other region.
    other = cli("query", "--token", jwt, "--dataset", "sales", "--filter", "region=EMEA-North", "--format", "csv")
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip().count("\n") == 0
    unscoped = cli("token", "mint", "--recipient", "x", "--dataset", "sales")
    denied = cli("query", "--token", unscoped.stdout.strip(), "--dataset", "sales")
    assert denied.returncode == 5 and "secure filter" in denied.stderr


@pytest.mark.usefixtures("prefect_api")
def test_run_json_through_main(bulletin_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "daily-account-orders", "--param", f"as_of={DEMO_END_DATE}", "--dry-run", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    manifest = json.loads(out)
    assert manifest["status"] == "COMPLETED" and manifest["dry_run"] is True
    assert "eyJ" not in out


@pytest.mark.usefixtures("prefect_api")
def test_demo_through_main(bulletin_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    code = main(["demo", "--out", str(out_dir), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    manifests = json.loads(out)
    assert {m["report_id"] for m in manifests} >= {"weekly-regional-sales", "daily-account-orders"}
    recipients = {(m["report_id"], d["recipient"]) for m in manifests for d in m["deliveries"]}
    assert len(recipients) >= 12
    assert any(out_dir.rglob("*.pdf")) and any(out_dir.rglob("*.xlsx")) and any(out_dir.rglob("*.csv"))
