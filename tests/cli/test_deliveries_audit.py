"""`bulletin deliveries audit` reads at 80 columns: who, when, which report, channel, format and file, nothing cut
short with an ellipsis; wider terminals add the whole location, checksum and token id; `--json` keeps every field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bulletin.models import Filter
from bulletin.settings import Settings
from bulletin.store import claim, mark_sent, migrate, open_store

BULLETIN = str(Path(sys.executable).with_name("bulletin"))
T0 = datetime(2026, 12, 5, 6, 30, 12, tzinfo=UTC)
RUN_ID = "0193c5d2-7e4b-7c1a-9f3e-1c2d3e4f5a6b"  # a whole flow-run id: the longest file names
SENT = [  # (report, format, channel, uri)
    (
        "weekly-regional-sales",
        "xlsx",
        "s3",
        "s3://bulletin-reports-production/reports/acme/weekly-regional-sales/2026/12/05/rm-emea-north-2/"
        f"weekly-regional-sales-20261205T063012Z-{RUN_ID}.xlsx",
    ),
    (
        "weekly-regional-sales",
        "pdf",
        "email",
        "/home/reports/.bulletin/outbox/20261205T063012Z-rm-emea-north-2-95c00dd1b52c.eml",
    ),
    (
        "account-orders-digest",
        "pdf",
        "s3",
        "file:///home/reports/.bulletin/bucket/reports/acme/account-orders-digest/2026/12/05/rm-emea-north-2/"
        "account-orders-digest-20261205T063012Z-4d6ccc55dc72.pdf",
    ),
]
RECIPIENT = "rm-emea-north-2"


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("BULLETIN_HOME", str(home))
    scope = {"sales": [[Filter(field="region", op="=", value="EMEA-North")]]}
    with open_store(Settings().database) as store:
        migrate(store)
        for n, (report, fmt, channel, uri) in enumerate(SENT):
            now = T0 + timedelta(minutes=n)
            held = claim(
                store,
                run_key=f"{report}@2026-12-05T06:30:00Z",
                report_id=report,
                run_id=RUN_ID,
                recipient=RECIPIENT,
                format=fmt,
                channel=channel,
                lease_seconds=60,
                now=now,
            )
            mark_sent(
                store,
                held,
                sha256=f"{n}" * 64,
                uri=uri,
                bytes=1000 + n,
                rows=2463,
                token_jti=f"jti{n}" * 8,
                secure_filters=scope,
                now=now,
            )
    return home


def audit(*args: str, columns: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [BULLETIN, "deliveries", "audit", RECIPIENT, *args], capture_output=True, text=True, env=env, timeout=60
    )


def file_column(lines: list[str]) -> str:
    """The text of the report/file column, its wrapped lines joined back together."""
    header = next(line for line in lines if "sent (UTC)" in line)
    start, end = header.index("report"), header.find("sha256") if "sha256" in header else None
    return "".join(line[start:end].strip() for line in lines[lines.index(header) + 2 :])


@pytest.mark.usefixtures("ledger")
def test_at_80_columns_every_key_fact_is_whole() -> None:
    result = audit(columns=80)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert not [line for line in lines if line.rstrip().endswith(("…", "..."))], result.stdout
    assert "…" not in result.stdout
    assert lines[0].startswith(f"Sent to {RECIPIENT}: 3 file(s)")
    column = file_column(lines)
    for report, fmt, channel, uri in SENT:
        assert uri.rsplit("/", 1)[1] in column, uri  # the whole file name, if wrapped
        assert f"{report}  {channel} {fmt} · 2,463 rows" in result.stdout
    assert "2026-12-05" in result.stdout and "06:32:12" in result.stdout
    assert "scope: sales: region = 'EMEA-North'" in result.stdout


@pytest.mark.usefixtures("ledger")
def test_a_wide_terminal_shows_the_whole_location_checksum_and_token() -> None:
    result = audit(columns=200)
    assert result.returncode == 0, result.stderr
    column = file_column(result.stdout.splitlines())
    for _, _, _, uri in SENT:
        assert uri in column, uri
    assert "000000000000" in result.stdout and "jti0jti0jti0jti0jti0jti0jti0jti0" in result.stdout
    assert "…" not in result.stdout


@pytest.mark.usefixtures("ledger")
def test_json_keeps_every_field() -> None:
    result = audit("--json", columns=80)
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [e["uri"] for e in entries] == [uri for *_, uri in reversed(SENT)]
    newest = entries[0]
    assert newest["sha256"] == "2" * 64 and newest["token_jti"] == "jti2" * 8
    assert newest["rows"] == 2463 and newest["bytes"] == 1002 and newest["status"] == "sent"
    assert newest["run_key"] == "account-orders-digest@2026-12-05T06:30:00Z"
    assert newest["secure_filters"] == {"sales": [[{"field": "region", "op": "=", "value": "EMEA-North"}]]}


def test_nothing_sent_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULLETIN_HOME", str(tmp_path / "home"))
    result = audit(columns=80)
    assert result.returncode == 0 and result.stdout.strip() == f"Nothing sent to {RECIPIENT} is in the ledger."
