"""``make scale-demo`` end to end at a tiny size: its own PostgreSQL, a Prefect server on it, two real workers, one
report run in two shards, the count from the bucket and the ledger, the JSON line last, and nothing left running.

About 30-40 s on two cores. It needs Debian's PostgreSQL server binaries (not a running cluster: the demo starts its
own); without them it is skipped locally and fails in CI (tests/fixtures/required.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import scale_demo
from bench.bench_delivery import descendants
from bench.scale_cluster import MissingPostgres, postgres_bin
from tests.fixtures import required

RECIPIENTS = 40
SHARD_RECIPIENTS = 20


@pytest.fixture
def postgres_installed() -> None:
    try:
        postgres_bin()
    except MissingPostgres as exc:
        required.missing(str(exc))


def test_the_scale_demo_delivers_every_recipient_once_and_stops_everything(
    postgres_installed: None,
    demo_warehouse: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SCALE_RECIPIENTS", str(RECIPIENTS))
    monkeypatch.setenv("SCALE_KILL", "0")
    monkeypatch.setenv("SCALE_SHARD_RECIPIENTS", str(SHARD_RECIPIENTS))
    monkeypatch.setattr(scale_demo, "WAREHOUSE", demo_warehouse)
    before = set(descendants(os.getpid()))

    status = scale_demo.main(tmp_path / "scale")

    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert status == 0, "\n".join(out[-20:])
    assert list(result) == list(scale_demo.JSON_KEYS)
    assert result["recipients"] == result["delivered"] == RECIPIENTS
    assert (result["failed"], result["duplicates"], result["missing"], result["killed_worker"]) == (0, 0, 0, None)
    assert (result["workers"], result["shards"]) == (2, RECIPIENTS // SHARD_RECIPIENTS)
    assert any("SIGKILL" not in line and "delivered" in line for line in out[:-1])  # progress before the verdict
    recipient_folders = {p.parent.name for p in (tmp_path / "scale" / "home" / "bucket").rglob("*.csv")}
    assert len(recipient_folders) == RECIPIENTS
    assert set(descendants(os.getpid())) <= before, "a process the demo started is still running"
