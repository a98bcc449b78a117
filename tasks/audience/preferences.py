"""Which of a report's channels one recipient gets: its organisation's communication-channel preference applied.

Pure. The run loads every preference for its event type once (``load_run_preferences``: ``REPORT_SCHEDULE`` for a
scheduled deployment run, ``REPORT_JOB`` for an on-demand one) and carries it on the plan; ``recipient_channels``
then decides per recipient:

* no preference (neither the organisation's nor the cluster's): the report's channels;
* else the report's channels whose counterpart the preference lists (``Channel.file_channel``: ``EMAIL`` ->
  ``email``, ``S3`` -> ``s3``), in the report's order. The report's channels are the upper bound: a preference never
  adds a channel to a report, and a channel the preferences cannot name (``sftp``) is off wherever one is set.
* ``WEBHOOK`` keeps no file channel. Completion webhooks are per run (sent to the endpoints subscribed to the run's
  events), not per recipient, so the preference neither turns them on nor off here; a preference of ``[WEBHOOK]``
  alone means "no email, no bucket" for that organisation's recipients.

A person's own levels come first (``RunPreferences.for_recipient``): their preference for this report, else theirs
for every report, else the organisation's, else the cluster's; the most specific level that says something wins.
A channel a person's level turned off is recorded as skipped with the reason ``unsubscribed`` (``UNSUBSCRIBED``);
one turned off by the organisation's or the cluster's, with a reason naming that preference. A recipient with every
channel off is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bulletin.store.channel_preferences import RunPreferences
from bulletin.store.ledger_schema import UNSUBSCRIBED


@dataclass(frozen=True)
class RecipientChannels:
    """The report's channels split for one recipient: what it gets, what its preference turned off, and why."""

    channels: list[str]
    off: list[str]
    reason: str | None = None


def recipient_channels(
    report_channels: Sequence[str], preferences: RunPreferences | None, org: str | None, ref: str | None = None
) -> RecipientChannels:
    """The channels recipient ``ref`` of ``org`` (None: no organisation, so the cluster's preference) gets."""
    if preferences is None:
        return RecipientChannels(channels=list(report_channels), off=[])
    chosen, source = preferences.for_recipient(org, ref) if ref is not None else preferences.for_org(org)
    if chosen is None:
        return RecipientChannels(channels=list(report_channels), off=[])
    kept = {c.file_channel for c in chosen}
    on = [ch for ch in report_channels if ch in kept]
    off = [ch for ch in report_channels if ch not in kept]
    if not off:
        return RecipientChannels(channels=on, off=[])
    if source is not None and source.startswith("recipient"):
        return RecipientChannels(channels=on, off=off, reason=UNSUBSCRIBED)
    listed = ", ".join(c.value for c in chosen)
    reason = (
        f"{', '.join(off)} turned off by the {source} preference for {preferences.event_type.value} "
        f"(channels: {listed})"
    )
    return RecipientChannels(channels=on, off=off, reason=reason)
