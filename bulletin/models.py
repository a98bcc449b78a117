"""Shared models: secure filters, queries, recipients and the delivery manifest.

They are plain pydantic models with no I/O, imported by tasks, flows, the CLI and the API alike.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: Identifiers of reports, datasets and recipients: safe in object keys, file names and Prefect names.
IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
IDENTIFIER_RE = re.compile(IDENTIFIER_PATTERN)
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
ColumnName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
#: One segment of an object key (S3 or the local bucket): letters, digits, ``.``, ``_``, ``-``; never ``..``.
OBJECT_KEY_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def is_bucket_name(name: str) -> bool:
    """Whether ``name`` is an S3 bucket name Bulletin uses: 3-63 lowercase letters, digits, ``.`` and ``-``."""
    return bool(_BUCKET_RE.match(name)) and ".." not in name


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_safe_key_segment(segment: str) -> bool:
    """Whether ``segment`` may stand in an object key (tasks.storage builds keys only from such segments)."""
    return bool(OBJECT_KEY_SEGMENT_RE.match(segment)) and ".." not in segment


#: The output formats, spelt here only: report definitions, triggers, the API, manifests and the renderers
#: import them, so a new format is added in one place (and a renderer) or nowhere.
Format = Literal["pdf", "csv", "xlsx"]
FORMATS: tuple[Format, ...] = get_args(Format)


class ChannelName(StrEnum):
    """The channels a report delivers files on, spelt here only: report definitions (``channels: [s3, email]``),
    the ledger's channel column, manifests and the channel registry (``tasks.delivery.registry``) use these values,
    and the communication-channel preferences' API spelling (``EMAIL``, ``S3``) is their upper case.

    A name here is not yet a channel: a report naming one that no module registers, or that the settings do not
    configure, is refused before any work (``bulletin.requests.check_request``).
    """

    S3 = "s3"  # the bucket: S3 when BULLETIN_S3_BUCKET is set, else the local bucket folder
    EMAIL = "email"  # one message per recipient: SMTP when BULLETIN_SMTP_HOST is set, else the outbox folder
    SFTP = "sftp"  # an SFTP server's folder


#: Filter operators. The names follow Vizzly's; the short aliases are accepted on input.
Operator = Literal[
    "=",
    "!=",
    ">",
    "<",
    ">=",
    "<=",
    "is_one_of",
    "is_not_one_of",
    "starts_with",
    "ends_with",
    "contains_substring",
]
OPERATOR_ALIASES: dict[str, str] = {"==": "=", "<>": "!=", "in": "is_one_of", "not_in": "is_not_one_of"}

Scalar = str | int | float | bool | None
FilterValue = Scalar | list[Scalar]


class Filter(BaseModel):
    """One condition: ``field op value``. Values are always bound as query parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: ColumnName
    op: Operator
    value: FilterValue

    def describe(self) -> str:
        return f"{self.field} {self.op} {self.value!r}"


#: OR of AND groups: ``[[a, b], [c]]`` means ``(a AND b) OR c``.
FilterGroups = list[list[Filter]]


def normalise_filters(value: list[Filter] | list[list[Filter]] | list[Any]) -> FilterGroups:
    """Turn the Vizzly shapes into OR-of-AND groups: a flat list is one AND group, a list of lists is OR."""
    if not value:
        return []
    if all(isinstance(item, list) for item in value):
        return [[Filter.model_validate(f) for f in group] for group in value]
    return [[Filter.model_validate(f) for f in value]]


def describe_scope(groups: FilterGroups) -> str:
    """A human-readable scope, as printed in the PDF and the CLI."""
    if not groups:
        return "no row filter"
    parts = [" AND ".join(f.describe() for f in group) for group in groups]
    return parts[0] if len(parts) == 1 else " OR ".join(f"({p})" for p in parts)


def scope_words(groups: FilterGroups) -> str:
    """The scope as a reader names it: the values of a scope made of equalities (``EMEA-North``; ``ACC-0001, EUR``),
    or ``describe_scope``'s text for anything else."""
    if len(groups) == 1 and groups[0] and all(f.op in ("=", "is_one_of") for f in groups[0]):
        return ", ".join(
            " or ".join(map(str, f.value)) if isinstance(f.value, list) else str(f.value) for f in groups[0]
        )
    return describe_scope(groups)


def no_rows_sentence(what: str, groups: FilterGroups, period: str | None) -> str:
    """What a file with no rows says instead of an empty table: ``No sales lines for EMEA-North (25 – 31 Oct
    2026).`` ``what`` is the dataset's title; the scope and the period are the recipient's and the run's."""
    sentence = f"No {what[:1].lower()}{what[1:]} for {scope_words(groups)}" if groups else f"No {what.lower()}"
    return f"{sentence} ({period})." if period else f"{sentence}."


class OrderBy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    field: ColumnName
    direction: Literal["asc", "desc"] = "asc"


class QuerySpec(BaseModel):
    """What a token holder asks of a dataset. The token's secure filters are added by the engine, never here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: Identifier
    columns: list[ColumnName] = Field(default_factory=list, description="Empty means every allowed column.")
    filters: list[Filter] = Field(default_factory=list)
    order: list[OrderBy] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1)


class Recipient(BaseModel):
    """Someone a report goes to. Its secure filters are templated from ``attributes``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: Identifier
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$")]
    name: str | None = None
    org: Identifier | None = None
    attributes: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


class RunStatus(StrEnum):
    COMPLETED = "COMPLETED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    #: A scheduled run that started too late, or whose slot a newer one superseded: it delivered nothing on purpose
    #: (bulletin/missed.py; the manifest's ``note`` says which and why).
    MISSED = "MISSED"


class DeliveryStatus(StrEnum):
    DELIVERED = "DELIVERED"  # every file is with the recipient: sent now, or sent earlier under the same run key
    #: some files are with the recipient (sent, or sent earlier) and at least one channel failed: a re-run with the
    #: same run key retries only what failed
    PARTIAL = "PARTIAL"
    SKIPPED = "SKIPPED"  # nothing sent, on purpose: no rows, unchanged, or another run is sending it right now
    FAILED = "FAILED"  # nothing is with the recipient, and something failed


class Artifact(BaseModel):
    """One file on one channel. ``uri`` is where it went (never a presigned link: those carry a signature).

    A ``failed`` file did not reach that channel: ``note`` says why, and ``uri`` is empty."""

    format: Format
    uri: str
    sha256: str
    bytes: int
    rows: int
    channel: str = ChannelName.S3.value  # a ChannelName, or "dry-run"
    outcome: Literal["sent", "already_sent", "skipped", "in_progress", "rendered", "failed"] = "sent"
    note: str | None = None


class Delivery(BaseModel):
    """What one recipient got. ``token_id`` is the token's ``jti``; the token itself is never recorded."""

    recipient: str
    status: DeliveryStatus
    org: str | None = None  # the recipient's organisation: only its (and org-less) webhook endpoints hear of it
    token_id: str | None = None
    secure_filters: dict[str, FilterGroups] = Field(default_factory=dict)
    artifacts: list[Artifact] = Field(default_factory=list)
    error: str | None = None


class Manifest(BaseModel):
    """The record of one report run, returned by the flow and printed by ``bulletin run --json``."""

    report_id: str
    run_id: str
    run_key: str | None = None
    started_at: datetime
    finished_at: datetime
    status: RunStatus
    dry_run: bool = False
    note: str | None = None
    deliveries: list[Delivery] = Field(default_factory=list)

    @property
    def delivered(self) -> int:
        return sum(d.status is DeliveryStatus.DELIVERED for d in self.deliveries)

    @property
    def partial(self) -> int:
        return sum(d.status is DeliveryStatus.PARTIAL for d in self.deliveries)

    @property
    def failed(self) -> int:
        return sum(d.status is DeliveryStatus.FAILED for d in self.deliveries)

    @property
    def skipped(self) -> int:
        return sum(d.status is DeliveryStatus.SKIPPED for d in self.deliveries)

    @property
    def tally(self) -> str:
        """The recipients by status, as the flow state, the CLI and the run's summary artifact say it."""
        return f"{self.delivered} delivered, {self.partial} partial, {self.skipped} skipped, {self.failed} failed"


#: What a recipient holds after a delivery: files sent now, sent earlier under the run key, or rendered (dry run).
HELD_OUTCOMES = frozenset({"sent", "already_sent", "rendered"})


def delivery_status(artifacts: list[Artifact]) -> DeliveryStatus:
    """A recipient's status from its files' outcomes: PARTIAL when some are with the recipient and some failed,
    FAILED when something failed and nothing is with them, DELIVERED when something is, else SKIPPED."""
    held = any(a.outcome in HELD_OUTCOMES for a in artifacts)
    if any(a.outcome == "failed" for a in artifacts):
        return DeliveryStatus.PARTIAL if held else DeliveryStatus.FAILED
    return DeliveryStatus.DELIVERED if held else DeliveryStatus.SKIPPED


def run_status(deliveries: list[Delivery]) -> RunStatus:
    """COMPLETED when no recipient failed even in part, FAILED when every one failed outright (or there was no one
    to deliver to), else PARTIAL: a run whose recipients all got only part of their files is PARTIAL, not FAILED."""
    failed = sum(d.status is DeliveryStatus.FAILED for d in deliveries)
    partial = sum(d.status is DeliveryStatus.PARTIAL for d in deliveries)
    if deliveries and failed == partial == 0:
        return RunStatus.COMPLETED
    return RunStatus.FAILED if failed == len(deliveries) else RunStatus.PARTIAL
