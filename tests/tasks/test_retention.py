"""Pruning the folders Bulletin writes (the local bucket, the manifests) and everything at once: each at its
boundary, a report's own retention, dry runs, symbolic links; then ``bulletin prune`` end to end through the prune
flow, with its record read back from Prefect."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from bulletin.retention import build_policy
from bulletin.settings import Settings
from bulletin.store import Store, migrate, open_store
from bulletin.store.inbound import inbound_receipts
from bulletin.store.ledger_schema import deliveries
from tasks.retention import prune_bucket_folder, prune_everything, prune_manifests

NOW = datetime(2027, 6, 1, 3, 15, tzinfo=UTC)
SECOND = timedelta(seconds=1)
DAYS = {"files": 90, "manifests": 400, "ledger": 400, "webhooks": 30, "inbound": 7, "scheduled_events": 30}


def _file(path: Path, modified: datetime) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    os.utime(path, (modified.timestamp(), modified.timestamp()))
    return path


def _delivered(root: Path, report: str, modified: datetime, run: str = "r1") -> Path:
    return _file(
        root / "reports" / "acme" / report / "2027" / "01" / "01" / "ana" / f"{report}-20270101T070000Z-{run}.pdf",
        modified,
    )


def test_local_bucket_files_at_their_boundary_and_a_reports_own_retention(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    edge = NOW - timedelta(days=90)
    old = _delivered(root, "sales", edge - SECOND, "old")
    young = _delivered(root, "sales", edge + SECOND, "young")
    kept_longer = _delivered(root, "board-pack", edge - timedelta(days=100))
    stray = _file(root / "notes.txt", edge - SECOND)
    policy = build_policy(DAYS, [], [])
    policy = replace(policy, files_by_report={"board-pack": 365})

    assert prune_bucket_folder(root, policy, now=NOW, dry_run=True).rows == 2
    assert old.exists() and stray.exists()
    assert prune_bucket_folder(root, policy, now=NOW, dry_run=False).rows == 2
    assert not old.exists() and not stray.exists()
    assert young.exists() and kept_longer.exists()
    assert root.is_dir(), "the bucket folder itself stays"


def test_folders_left_empty_go_and_links_are_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    outside = _file(tmp_path / "elsewhere" / "sales-20200101T000000Z-x.pdf", NOW - timedelta(days=900))
    old = _delivered(root, "sales", NOW - timedelta(days=200))
    (root / "reports" / "link").symlink_to(outside.parent, target_is_directory=True)
    (root / "reports" / "file-link.pdf").symlink_to(outside)
    fresh = root / "reports" / "globex" / "sales" / "2027" / "06" / "01" / "bob"
    fresh.mkdir(parents=True)  # a delivery has just made it and is about to write its file
    pruned = prune_bucket_folder(root, build_policy(DAYS, [], []), now=NOW, dry_run=False)
    assert pruned.rows == 1 and not old.exists()
    assert not (root / "reports" / "acme").exists(), "folders the prune emptied are removed"
    assert fresh.is_dir(), "an empty folder the prune did not empty is left alone"
    assert outside.exists() and (root / "reports" / "link").is_symlink()


def test_manifests_at_their_boundary(tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    edge = NOW - timedelta(days=400)
    old = _file(folder / "sales" / "run-old.json", edge - SECOND)
    young = _file(folder / "sales" / "run-young.json", edge + SECOND)
    assert prune_manifests(folder, 400, now=NOW, dry_run=True).rows == 1 and old.exists()
    assert prune_manifests(folder, 400, now=NOW, dry_run=False).rows == 1
    assert not old.exists() and young.exists()
    assert prune_manifests(tmp_path / "none", 400, now=NOW, dry_run=False).rows == 0


def _count(store: Store, table: Any) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_everything_at_once_counts_each_kind(store: Store, tmp_path: Path) -> None:
    with store.write() as conn:
        conn.execute(insert(inbound_receipts).values(source="t:x", message_id="m", received_at=NOW - timedelta(days=8)))
    _delivered(tmp_path / "bucket", "sales", NOW - timedelta(days=91))
    policy = build_policy(DAYS, [], [])
    kwargs: dict[str, Any] = {"bucket_dir": tmp_path / "bucket", "manifests_dir": tmp_path / "manifests", "now": NOW}
    dry = prune_everything(store, policy, batch=10, dry_run=True, **kwargs)
    assert dry.rows()["inbound_receipts"] == 1 and dry.rows()["files"] == 1 and dry.total == 2
    assert _count(store, inbound_receipts) == 1
    done = prune_everything(store, policy, batch=10, dry_run=False, **kwargs)
    assert done.rows() == dry.rows()
    assert _count(store, inbound_receipts) == 0


@pytest.mark.usefixtures("prefect_api")
def test_bulletin_prune_runs_the_flow_and_records_what_it_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bulletin.edge.cli import _register
    from bulletin.edge.cli.root import app

    home = tmp_path / "home"
    monkeypatch.setenv("BULLETIN_HOME", str(home))
    monkeypatch.delenv("BULLETIN_DATABASE_URL", raising=False)
    now = datetime.now(UTC)
    with open_store(Settings().database) as store:
        migrate(store)
        with store.write() as conn:
            for i, age in enumerate((401, 401, 2)):
                when = now - timedelta(days=age)
                conn.execute(
                    insert(deliveries).values(
                        run_key=f"k{i}", report_id="sales", run_id="r", recipient="ana", format="pdf", channel="s3",
                        status="sent", attempts=1, created_at=when, updated_at=when, sent_at=when,
                    )
                )  # fmt: skip
    old_manifest = _file(home / "manifests" / "sales" / "r.json", now - timedelta(days=500))
    _register()

    dry = CliRunner().invoke(app, ["prune", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "ledger" in dry.stdout and "would delete 2" in dry.stdout and old_manifest.exists()
    assert "recorded: artifact 'bulletin-prune' of flow run" in dry.stdout

    done = CliRunner().invoke(app, ["prune", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["deleted"]["ledger"] == 2 and result["deleted"]["manifests"] == 1 and result["total"] == 3
    assert not old_manifest.exists()
    with open_store(Settings().database) as store:
        assert _count(store, deliveries) == 1

    record = _latest_prune_artifact()
    rows = json.loads(record.data) if isinstance(record.data, str) else record.data
    assert {"kind": "ledger", "deleted": 2} in rows and "3 deleted" in (record.description or "")


def _latest_prune_artifact() -> object:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read() -> list[object]:
        async with get_client() as client:
            return list(
                await client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["bulletin-prune"])),
                    sort=ArtifactSort.CREATED_DESC,
                    limit=1,
                )
            )

    (artifact,) = asyncio.run(read())
    return artifact
