"""Pruning: delete everything past its retention, from the state store and from the folders Bulletin writes.

``prune_everything`` is what ``bulletin prune`` and the daily ``prune`` flow both run: the state store's kinds
(``bulletin.store.retention``, in bounded batches), then the manifests folder and the local bucket folder, where a
file's age is its modification time and a delivered file's report (read from its name) may keep it for its own number
of days. ``policy_from_settings`` reads the reports and triggers once, at the edge. Folders emptied by a prune are
removed (only those: not one a delivery has just made); symbolic links are never followed nor deleted, so nothing
outside the folders is touched.

Files in an S3 bucket are expired by the bucket's lifecycle rule (``bulletin retention apply``), which can only
expire every file after the same number of days, the longest any report asks for; the S3 files of reports kept for
fewer days are deleted here (the bucket is listed only then).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bulletin.retention import Kind, RetentionPolicy, build_policy, cutoff, cutoffs, file_is_due
from bulletin.settings import Settings
from bulletin.store import Store
from bulletin.store.retention import STORE_KINDS, Pruned, prune_kind
from bulletin.triggers import load_triggers
from tasks.storage.lifecycle import delete_due_objects


@dataclass(frozen=True)
class S3Files:
    """Where Bulletin's files are on S3: a client, the bucket, and the prefix every file's key starts with."""

    client: Any
    bucket: str
    prefix: str


@dataclass(frozen=True)
class PruneReport:
    """What one prune deleted (or would delete, ``dry_run``), per kind, and when it ran."""

    started: datetime
    dry_run: bool
    pruned: tuple[Pruned, ...]

    def rows(self) -> dict[str, int]:
        return {p.kind.value: p.rows for p in self.pruned}

    @property
    def total(self) -> int:
        return sum(p.rows for p in self.pruned)


def policy_from_settings(settings: Settings) -> RetentionPolicy:
    """The retention policy: the settings' days, each report's own files retention, the triggers' replay windows.
    A report or trigger that does not load is a DefinitionError naming it, before anything is deleted."""
    from bulletin.reports import load_reports

    days = {
        "files": settings.retention_files_days,
        "manifests": settings.retention_manifests_days,
        "ledger": settings.retention_ledger_days,
        "webhooks": settings.retention_webhooks_days,
        "inbound": settings.retention_inbound_days,
        "scheduled_events": settings.retention_scheduled_events_days,
    }
    triggers = load_triggers(settings.triggers_dir) if settings.triggers_dir.is_dir() else {}
    return build_policy(days, load_reports(settings.reports_dir).values(), triggers.values())


def _files(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every regular file under ``root`` with its status, symbolic links neither followed nor listed."""
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if not Path(folder, d).is_symlink()]
        for name in names:
            path = Path(folder, name)
            status = path.lstat()
            if path.is_file() and not path.is_symlink():
                yield path, status


def _modified(status: os.stat_result) -> datetime:
    return datetime.fromtimestamp(status.st_mtime, UTC)


def _remove_emptied_folders(root: Path, emptied: set[Path]) -> None:
    """Remove the folders this prune deleted files from, and then their parents, while they are empty; ``root``
    itself stays. Only those: a folder a delivery has just made and not yet written its file into is empty too, and
    must not go under it."""
    for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        while folder != root and root in folder.parents and not folder.is_symlink():
            try:
                folder.rmdir()  # refused unless empty: a delivery that wrote into it meanwhile keeps it
            except OSError:
                break
            folder = folder.parent


def _delete_due(paths: Iterator[Path], dry_run: bool, root: Path, pruned: Pruned) -> None:
    """Delete ``paths`` (``dry_run``: count them), then the folders they leave empty."""
    emptied: set[Path] = set()
    for path in paths:
        pruned.rows += 1
        if not dry_run:
            path.unlink(missing_ok=True)
            emptied.add(path.parent)
    _remove_emptied_folders(root, emptied)


def prune_bucket_folder(root: Path, policy: RetentionPolicy, *, now: datetime, dry_run: bool) -> Pruned:
    """Delete the local bucket's files older than their report's retention (unknown names: the default's)."""
    pruned = Pruned(Kind.FILES)
    if root.is_dir():
        due = (path for path, status in _files(root) if file_is_due(path.name, _modified(status), policy, now))
        _delete_due(due, dry_run, root, pruned)
    return pruned


def prune_manifests(folder: Path, days: int, *, now: datetime, dry_run: bool) -> Pruned:
    """Delete the manifests (``<report>/<run>.json``) written more than ``days`` days ago."""
    pruned = Pruned(Kind.MANIFESTS)
    if not folder.is_dir():
        return pruned
    limit = cutoff(now, days)
    due = (path for path, status in _files(folder) if path.suffix == ".json" and _modified(status) < limit)
    _delete_due(due, dry_run, folder, pruned)
    return pruned


def prune_s3_files(s3: S3Files, policy: RetentionPolicy, *, now: datetime, batch: int, dry_run: bool) -> Pruned:
    """Delete the S3 files kept for less than the longest retention once past their own. The bucket's lifecycle rule
    (``bulletin retention apply``) expires the rest at the longest; when every file is kept as long, it does it all
    and the bucket is not listed."""
    pruned = Pruned(Kind.S3_FILES)
    if not policy.files_days_differ:
        return pruned

    def is_due(name: str, modified: datetime) -> bool:
        return file_is_due(name, modified, policy, now)

    pruned.batches = delete_due_objects(s3.client, s3.bucket, s3.prefix, is_due, dry_run=dry_run, batch=batch)
    pruned.rows = sum(pruned.batches)
    return pruned


def prune_everything(
    store: Store,
    policy: RetentionPolicy,
    *,
    bucket_dir: Path,
    manifests_dir: Path,
    now: datetime,
    batch: int,
    dry_run: bool,
    s3: S3Files | None = None,
) -> PruneReport:
    """Prune every kind: the store's in batches of ``batch`` rows, then the manifests, the local bucket, and the S3
    files that the bucket's lifecycle rule would keep too long (``s3``, when files go to S3)."""
    limits = cutoffs(policy, now)
    pruned = [
        prune_kind(store, kind, cutoff=limits[kind], now=now, batch=batch, dry_run=dry_run) for kind in STORE_KINDS
    ]
    pruned.append(prune_manifests(manifests_dir, policy.manifests_days, now=now, dry_run=dry_run))
    pruned.append(prune_bucket_folder(bucket_dir, policy, now=now, dry_run=dry_run))
    if s3 is not None:
        pruned.append(prune_s3_files(s3, policy, now=now, batch=batch, dry_run=dry_run))
    return PruneReport(started=now, dry_run=dry_run, pruned=tuple(pruned))
