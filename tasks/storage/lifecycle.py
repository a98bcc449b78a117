"""Writing Bulletin's S3 lifecycle rule into a bucket, keeping the bucket's other rules (``lifecycle_rules`` decides
what is written; this module reads and writes it with an explicit boto3 client); and deleting, before the rule
would, the files of reports kept for less than the longest retention (the rule expires at the longest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bulletin.errors import StorageError
from tasks.storage.lifecycle_rules import RULE_ID, merge_rules, without_empty_ids
from tasks.storage.s3 import classify_error


@dataclass(frozen=True)
class LifecycleChange:
    """What ``apply_lifecycle`` found and wrote: Bulletin's rule before (None: there was none) and after, and how
    many other rules the bucket has (kept as they were)."""

    before: dict[str, Any] | None
    after: dict[str, Any]
    others: int

    @property
    def changed(self) -> bool:
        return self.before != self.after


def read_rules(client: Any, bucket: str) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules; none when it has no lifecycle configuration."""
    try:
        answer = client.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return []
        raise classify_error(exc, uri=f"s3://{bucket}") from exc
    except BotoCoreError as exc:
        raise classify_error(exc, uri=f"s3://{bucket}") from exc
    return without_empty_ids(answer.get("Rules", []))


def apply_lifecycle(client: Any, bucket: str, rule: dict[str, Any], *, dry_run: bool = False) -> LifecycleChange:
    """Replace Bulletin's rule (by its ID) in ``bucket``'s lifecycle configuration; nothing else changes.

    ``dry_run``: read and compare only. A rule already as wanted is not written again.
    """
    existing = read_rules(client, bucket)
    before = next((r for r in existing if r.get("ID") == RULE_ID), None)
    others = sum(1 for r in existing if r.get("ID") != RULE_ID)
    change = LifecycleChange(before=before, after=dict(rule), others=others)
    if dry_run or not change.changed:
        return change
    try:
        client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": merge_rules(existing, rule)}
        )
    except (ClientError, BotoCoreError) as exc:
        raise classify_error(exc, uri=f"s3://{bucket}") from exc
    return change


#: ``DeleteObjects`` takes at most this many keys per request.
DELETE_BATCH_MAX = 1_000


def delete_due_objects(
    client: Any, bucket: str, prefix: str, is_due: Callable[[str, datetime], bool], *, dry_run: bool, batch: int
) -> list[int]:
    """Delete the objects under ``prefix`` that ``is_due(name, last_modified)`` says are past their retention, at
    most ``batch`` (and 1,000) keys per ``DeleteObjects`` request; the number deleted by each request (``dry_run``:
    one entry, the number that would be). Objects outside ``prefix`` are never listed, so never deleted."""
    size = max(1, min(batch, DELETE_BATCH_MAX))
    due: list[str] = []
    counts: list[int] = []
    would = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if not is_due(item["Key"].rsplit("/", 1)[-1], item["LastModified"]):
                    continue
                would += 1
                if not dry_run:
                    due.append(item["Key"])
                if len(due) >= size:  # deleting behind the listing is safe: it continues after the last key listed
                    counts.append(_delete_keys(client, bucket, due))
                    due = []
        if due:
            counts.append(_delete_keys(client, bucket, due))
    except (ClientError, BotoCoreError) as exc:
        raise classify_error(exc, uri=f"s3://{bucket}/{prefix}") from exc
    return [would] if dry_run else counts


def _delete_keys(client: Any, bucket: str, keys: list[str]) -> int:
    answer = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
    errors = answer.get("Errors", [])
    if errors:
        first = errors[0]
        raise StorageError(
            f"S3 refused to delete {len(errors)} of {len(keys)} objects in s3://{bucket} "
            f"(first: {first.get('Key')!r}, {first.get('Code')})"
        )
    return len(keys)
