"""What names one delivery: its run key and the identifiers beside it, checked before anything is written.

A run key says which run a delivery belongs to (``sales@2026-11-02T07:00:00Z`` for a scheduled slot, ``adhoc-...``
for a one-off), so a re-run of the same slot finds the rows it already sent. ``DeliveryKey`` is the ledger's unique
key, with the SQL condition that selects its row.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_

from bulletin.errors import ConfigError
from bulletin.models import IDENTIFIER_RE
from bulletin.store.base import aware
from bulletin.store.ledger_schema import RUN_KEY_MAX, RUN_KEY_RE, LedgerRow, deliveries


def scheduled_run_key(report_id: str, slot: datetime, parameters: Mapping[str, Any] | None = None) -> str:
    """The key of a scheduled run: its report and slot in UTC to the second, e.g. ``sales@2026-11-02T07:00:00Z``.

    A schedule with its own parameters adds their digest (``...Z+1a2b3c4d5e``): two schedules of one report due at
    the same minute with different parameters are two runs, each sent once, not one run sent once.
    """
    check_identifier(report_id, "report_id")
    key = f"{report_id}@{aware(slot, 'slot', field='slot').strftime('%Y-%m-%dT%H:%M:%SZ')}"
    if parameters:
        canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"), default=str)
        key += "+" + hashlib.sha256(canonical.encode()).hexdigest()[:10]
    return check_run_key(key)


def adhoc_run_key() -> str:
    """A fresh key for an ad-hoc run, so it never collides with another run."""
    return f"adhoc-{uuid.uuid4().hex}"


def check_run_key(text: str) -> str:
    """Return ``text`` if it is a usable run key (as given to ``bulletin run --run-key``), else raise ConfigError."""
    if len(text) > RUN_KEY_MAX or not RUN_KEY_RE.fullmatch(text):
        raise ConfigError(
            f"run key {text[:RUN_KEY_MAX]!r} must be 1-{RUN_KEY_MAX} characters: letters, digits and _ . : @ + -, "
            "starting with a letter or digit",
            field="run_key",
        )
    return text


@dataclass(frozen=True, slots=True)
class DeliveryKey:
    """The unique key of a delivery."""

    run_key: str
    recipient: str
    format: str
    channel: str

    @classmethod
    def build(cls, *, run_key: str, recipient: str, format: str, channel: str) -> DeliveryKey:
        check_run_key(run_key)
        for name, value in (("recipient", recipient), ("format", format), ("channel", channel)):
            check_identifier(value, name)
        return cls(run_key, recipient, format, channel)

    @classmethod
    def from_row(cls, row: LedgerRow) -> DeliveryKey:
        return cls(row.run_key, row.recipient, row.format, row.channel)

    def values(self) -> dict[str, str]:
        return {"run_key": self.run_key, "recipient": self.recipient, "format": self.format, "channel": self.channel}

    def where(self) -> ColumnElement[bool]:
        return and_(*(deliveries.c[name] == value for name, value in self.values().items()))

    def __str__(self) -> str:
        return f"{self.run_key}/{self.recipient}/{self.format}/{self.channel}"


def check_identifier(value: str, name: str) -> None:
    """Refuse a report id, recipient, format or channel that is not an identifier (it becomes part of a key)."""
    if not IDENTIFIER_RE.fullmatch(value):
        raise ConfigError(f"{name} {value[:130]!r} is not a valid identifier", field=name)


def check_run_id(run_id: str) -> None:
    """Refuse a flow-run id the ``run_id`` and ``claimed_by`` columns cannot hold."""
    if not 0 < len(run_id) <= 128:
        raise ConfigError("run_id must be 1-128 characters", field="run_id")
