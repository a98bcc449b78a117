"""Writing Bulletin's S3 lifecycle rule into a bucket, keeping the bucket's other rules (``lifecycle_rules`` decides
what is written; this module reads and writes it with an explicit boto3 client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

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
