"""The S3 lifecycle rule that expires Bulletin's files, and how it joins a bucket's other rules. Pure: no I/O here.

A bucket has one lifecycle configuration holding every rule of every user of the bucket, and ``PutBucketLifecycle``
replaces all of it. So ``bulletin retention apply`` reads the configuration first, replaces only the rule whose ID is
Bulletin's own (``RULE_ID``), and writes every other rule back as it found it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from bulletin.errors import ConfigError
from tasks.storage.s3_rules import join_key

RULE_ID = "bulletin-files"
#: Multipart uploads a crashed delivery left unfinished are aborted after this many days (their parts cost money).
ABORT_INCOMPLETE_DAYS = 1
#: S3 refuses more rules than this in one configuration.
MAX_RULES = 1_000


def bulletin_prefix(s3_prefix: str, storage_prefix: str) -> str:
    """The key prefix every file Bulletin stores starts with, ending in ``/`` so that ``reports`` does not also
    match ``reports-archive/...``."""
    return join_key(s3_prefix, storage_prefix.strip("/")) + "/"


def bulletin_rule(prefix: str, days: int) -> dict[str, Any]:
    """Bulletin's rule: expire its files ``days`` after they were written, abort unfinished uploads after a day."""
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise ConfigError(
            "the files' retention must be a whole number of days, at least 1", field="retention_files_days"
        )
    if not prefix.endswith("/"):
        raise ConfigError(f"lifecycle prefix {prefix!r} must end with '/'", field="storage_prefix")
    return {
        "ID": RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": prefix},
        "Expiration": {"Days": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_INCOMPLETE_DAYS},
    }


def merge_rules(existing: Iterable[Mapping[str, Any]], ours: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The bucket's rules with Bulletin's own replaced (or added last); every other rule kept as it was, in order."""
    merged: list[dict[str, Any]] = []
    placed = False
    for rule in existing:
        if rule.get("ID") == ours["ID"]:
            if not placed:
                merged.append(dict(copy.deepcopy(ours)))
                placed = True
            continue
        merged.append(dict(copy.deepcopy(rule)))
    if not placed:
        merged.append(dict(copy.deepcopy(ours)))
    if len(merged) > MAX_RULES:
        raise ConfigError(f"the bucket already has {len(merged) - 1} lifecycle rules; S3 allows {MAX_RULES}")
    return merged


def without_empty_ids(rules: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rules as ``GetBucketLifecycleConfiguration`` returned them, made fit to be written back: S3 refuses an empty
    ``ID`` it may itself return for rules made without one, and a rule without an ``ID`` is given one by S3."""
    fixed = []
    for rule in rules:
        copied = dict(copy.deepcopy(rule))
        if not copied.get("ID"):
            copied.pop("ID", None)
        fixed.append(copied)
    return fixed
