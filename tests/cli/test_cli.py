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

from bulletin.demo_data import DEMO_END_DATE
from bulletin.edge.cli import _register, app, main
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


def test_every_command_has_help_and_is_in_the_command_reference() -> None:
    reference = (PROJECT_ROOT / "docs" / "cli.md").read_text()
    paths = commands()
    assert ["run"] in paths and ["token", "mint"] in paths and ["query"] in paths
    for path in paths:
        result = cli(*path, "--help")
        assert result.returncode == 0, (path, result.stderr)
        assert "Usage" in result.stdout and len(result.stdout) > 100
        assert f"bulletin {' '.join(path)}" in reference, f"`bulletin {' '.join(path)}` is not in docs/cli.md"


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


def test_reports_validate_checks_each_report_against_the_datasets(tmp_path: Path) -> None:
    # Each of these loaded "ok" before and then failed every recipient at run time.
    weekly = yaml.safe_load((PROJECT_ROOT / "deployments/reports/weekly-regional-sales.yaml").read_text())
    daily = yaml.safe_load((PROJECT_ROOT / "deployments/reports/daily-account-orders.yaml").read_text())
    weekly["secure_filters"]["sales"][0]["field"] = "regoin"
    daily["columns"][1] = "order_dat"
    scope = daily["secure_filters"]["orders"]
    digest = {**daily, "id": "digest", "dataset": "salez", "secure_filters": {"salez": scope}}
    for data in (weekly, daily, digest):
        (tmp_path / f"{data['id']}.yaml").write_text(yaml.safe_dump(data))
    bad = cli("reports", "validate", env={"BULLETIN_REPORTS_DIR": str(tmp_path)})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert f"{tmp_path / 'weekly-regional-sales.yaml'}: secure_filters.sales.0.field: 'regoin' is not" in bad.stderr
    assert f"{tmp_path / 'daily-account-orders.yaml'}: columns.1: 'order_dat' is not a column" in bad.stderr
    assert f"{tmp_path / 'digest.yaml'}: dataset: 'salez' is not a dataset" in bad.stderr
    assert "ok " not in bad.stdout


def test_run_refuses_a_report_the_registry_refuses_before_any_delivery(bulletin_env: Path, tmp_path: Path) -> None:
    """The same checks as validate, at the door of a run: one line, nothing claimed or stored."""
    daily = yaml.safe_load((PROJECT_ROOT / "deployments/reports/daily-account-orders.yaml").read_text())
    daily["columns"][1] = "order_dat"
    (tmp_path / "daily-account-orders.yaml").write_text(yaml.safe_dump(daily))
    result = cli("run", "daily-account-orders", env={"BULLETIN_REPORTS_DIR": str(tmp_path)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "columns.1: 'order_dat' is not a column" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (bulletin_env / "bucket").exists() and not (bulletin_env / "manifests").exists()


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


def test_token_mint_refuses_what_no_query_could_use(bulletin_env: Path) -> None:
    assert cli("keys", "generate").returncode == 0
    mint = ("token", "mint", "--recipient", "rm-x")
    refused = {
        "no dataset 'salez'": (3, ["--dataset", "salez", "--filter", "region=APAC"]),
        "field 'regoin' is not a column of dataset 'sales'": (5, ["--dataset", "sales", "--filter", "regoin=APAC"]),
        "op 'starts_with' is not allowed on 'region'": (5, ["--dataset", "sales", "--filter", "region starts_with A"]),
        "--ttl must be 1-60 minutes, not 0": (2, ["--dataset", "sales", "--filter", "region=APAC", "--ttl", "0"]),
        "--ttl must be 1-60 minutes, not 61": (2, ["--dataset", "sales", "--filter", "region=APAC", "--ttl", "61"]),
        "'*' with a filter would drop the filter": (2, ["--dataset", "*", "--filter", "region=APAC"]),
    }  # fmt: skip
    for message, (code, args) in refused.items():
        result = cli(*mint, *args)
        assert (result.returncode, result.stdout) == (code, ""), (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    every = cli(*mint, "--dataset", "*", "--ttl", "1")
    assert every.returncode == 0 and every.stdout.count(".") == 2, every.stderr


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
    # The webhook chain: the dbt webhook's run of the daily report, then the refresh of its dependent report.
    upstream, dependent = manifests[-2:]
    assert upstream["report_id"] == "daily-account-orders"
    assert upstream["run_key"].startswith("hook:dbt-job-completed:")
    assert dependent["report_id"] == "account-orders-digest"
    assert dependent["run_key"] == f"account-orders-digest:after:daily-account-orders:{upstream['run_id']}"
    assert {m["status"] for m in (upstream, dependent)} == {"COMPLETED"}


@pytest.mark.usefixtures("prefect_api")
def test_deliveries_list_and_audit(bulletin_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "daily-account-orders", "--param", f"as_of={DEMO_END_DATE}", "--run-key", "cli-key"]) == 0
    capsys.readouterr()
    assert main(["deliveries", "list", "--report", "daily-account-orders", "--status", "sent", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {r["run_key"] for r in rows} == {"cli-key"}
    assert {r["status"] for r in rows} == {"sent"}
    recipient = rows[0]["recipient"]
    assert main(["deliveries", "audit", recipient, "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["report_id"] == "daily-account-orders"
    assert entry["secure_filters"]["orders"][0][0]["field"] == "account_id"
    assert entry["uri"].startswith("file://") and entry["token_jti"]
    assert main(["deliveries", "list", "--status", "nonsense"]) == 2
    # The same key again: nothing is sent twice, the CLI still exits 0 (nothing failed).
    assert (
        main(["run", "daily-account-orders", "--param", f"as_of={DEMO_END_DATE}", "--run-key", "cli-key", "--json"])
        == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert {a["outcome"] for d in again["deliveries"] for a in d["artifacts"]} == {"already_sent"}


def test_link_presigns_an_s3_object(s3_bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    client, bucket, endpoint = s3_bucket
    client.put_object(Bucket=bucket, Key="reports/x/file.csv", Body=b"a,b\r\n1,2\r\n")
    env = {"BULLETIN_S3_BUCKET": bucket, "BULLETIN_S3_ENDPOINT_URL": endpoint, "BULLETIN_S3_REGION": "us-east-1"}
    result = cli("link", f"s3://{bucket}/reports/x/file.csv", "--expires", "2h", env=env)
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=7200" in url
    assert httpx.get(url).content == b"a,b\r\n1,2\r\n"
    longest = cli("link", f"s3://{bucket}/reports/x/file.csv", "--expires", "7d", env=env)
    assert longest.returncode == 0 and "X-Amz-Expires=604800" in longest.stdout, longest.stderr
    for too_long in ("30d", "169h", "604801"):
        refused = cli("link", f"s3://{bucket}/reports/x/file.csv", "--expires", too_long, env=env)
        assert refused.returncode == 2 and refused.stdout == "", refused.stderr  # an error, not a clamped link
        assert f"--expires {too_long} is longer than the maximum of 7 days" in refused.stderr
    bad = cli("link", "s3://../etc", env=env)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_link_of_a_local_bucket_file_is_its_uri(bulletin_env: Path) -> None:
    stored = bulletin_env / "bucket" / "reports" / "x" / "file.csv"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"a,b\r\n")
    result = cli("link", stored.as_uri(), "--expires", "2h")
    assert result.returncode == 0 and result.stdout.strip() == stored.as_uri(), result.stderr
    outside = cli("link", (bulletin_env / "elsewhere.csv").as_uri())
    assert outside.returncode != 0 and outside.stdout == "" and "Traceback" not in outside.stderr
    assert cli("link", stored.as_uri(), "--expires", "8d").returncode == 2


def test_keys_retire(bulletin_env: Path) -> None:
    first = json.loads(cli("keys", "generate").stdout)["keys"][0]["kid"]
    second = cli("keys", "generate")
    active = second.stderr.rsplit("active key ", 1)[1].split(")")[0]
    assert active != first
    token = cli("token", "mint", "--recipient", "x", "--dataset", "sales", "--filter", "region=APAC").stdout.strip()
    assert cli("keys", "retire", first, "--after", "0").returncode == 0
    assert len(json.loads(cli("keys", "jwks").stdout)["keys"]) >= 1
    refused = cli("keys", "retire", active)
    assert refused.returncode != 0, "the active key cannot be retired"
    ok = cli("query", "--token", token, "--dataset", "sales", "--limit", "1")
    assert ok.returncode == 0, "tokens signed by the active key still verify"
