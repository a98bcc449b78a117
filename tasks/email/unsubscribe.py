"""The one-click unsubscribe link of one email: its URL, and the secrets that sign and verify its token.

The token itself is ``bulletin.unsubscribe`` (pure). The secrets are the ``BULLETIN_UNSUBSCRIBE_SECRET`` setting or,
unset, one derived from each key of the signing keyset (by kid), so rotating keys does not break the links in mail
already sent while the old key stays in the keyset. Without ``BULLETIN_PUBLIC_URL`` there is no link at all.
"""

from __future__ import annotations

from datetime import datetime

from bulletin.errors import ConfigError
from bulletin.models import Recipient
from bulletin.settings import Settings
from bulletin.unsubscribe import SETTING_KID, UnsubscribeKeys, derive_secret, grant_for, mint_token
from tasks.tokens import KeySet, load_keyset

#: The API route a link points at (bulletin/edge/api/unsubscribe.py).
ROUTE = "/v1/unsubscribe/"


def unsubscribe_keys(settings: Settings, keyset: KeySet | None) -> UnsubscribeKeys:
    """The setting's secret, else one per key of ``keyset`` (the active key's signs)."""
    if settings.unsubscribe_secret is not None:
        return UnsubscribeKeys(SETTING_KID, {SETTING_KID: settings.unsubscribe_secret.get_secret_value().encode()})
    if keyset is None:
        raise ConfigError(
            "a signing keyset is needed when BULLETIN_UNSUBSCRIBE_SECRET is unset", field="unsubscribe_secret"
        )
    secrets = {}
    for kid, key in keyset.keys.items():
        value = key.private_key.private_numbers().private_value
        secrets[kid] = derive_secret(kid.encode() + b":" + value.to_bytes(32, "big"))
    return UnsubscribeKeys(keyset.active_kid, secrets)


def unsubscribe_url(
    public_url: str, keys: UnsubscribeKeys, recipient: Recipient, report_id: str, *, sent_at: datetime, ttl_days: int
) -> str:
    """The link that stops ``report_id``'s email to ``recipient``: valid ``ttl_days`` from ``sent_at``."""
    grant = grant_for(recipient.org, recipient.ref, report_id, issued_at=sent_at, ttl_days=ttl_days)
    return public_url.rstrip("/") + ROUTE + mint_token(keys, grant, issued_at=sent_at)


class UnsubscribeLinks:
    """A channel's unsubscribe links: none without BULLETIN_PUBLIC_URL; the keys read once, on the first link."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._keys: UnsubscribeKeys | None = None

    def link(self, recipient: Recipient, report_id: str, *, sent_at: datetime) -> str | None:
        if self.settings.public_url is None:
            return None
        if self._keys is None:
            keyset = None if self.settings.unsubscribe_secret is not None else load_keyset(self.settings)
            self._keys = unsubscribe_keys(self.settings, keyset)
        ttl = self.settings.unsubscribe_ttl_days
        return unsubscribe_url(
            self.settings.public_url, self._keys, recipient, report_id, sent_at=sent_at, ttl_days=ttl
        )
