"""Opaque page tokens for the API's listings: the (created_at, id) cursor of the last item shown, base64url JSON.

Listings order by (created_at, id), so a page goes on from exactly where the last one stopped, whatever was added
since. A token the API did not make is a 400 naming ``page_token``.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from bulletin.errors import RequestError


def encode_page_token(cursor: tuple[datetime, str]) -> str:
    raw = json.dumps([cursor[0].isoformat(), cursor[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_page_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created, item_id = json.loads(raw)
        when = datetime.fromisoformat(created)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise RequestError("page_token is not one this API gave", field="page_token") from exc
    if when.tzinfo is None or not isinstance(item_id, str):
        raise RequestError("page_token is not one this API gave", field="page_token")
    return when, item_id
