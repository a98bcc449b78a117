"""POST /v1/query and key rotation: a retired signing key stops verifying at its ``not_after`` in the API too,
even when the retirement is written while the API holds the keyset in its cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bulletin.edge.api import create_app
from tasks.tokens import generate_key, mint_token, retire_key, save_keyset
from tests.api.conftest import AppClient, Clock
from tests.api.v1_support import api_settings, bearer, region

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def test_a_key_retired_while_cached_is_refused_from_its_not_after(tmp_path: Path, demo_warehouse: Path) -> None:
    keys_file = tmp_path / "keys" / "keyset.json"
    old = generate_key(None, now=T0 - timedelta(days=30))
    old_kid = old.active_kid
    rotated = generate_key(old, now=T0)  # the new key signs; the old one still verifies during the overlap
    save_keyset(rotated, keys_file)
    settings = api_settings(tmp_path, demo_warehouse, signing_keys=None, keys_file=keys_file)
    token = mint_token(
        old,
        subject="ana",
        dataset_ids=["sales"],
        secure_filters={"sales": [[region("EMEA-North")]]},
        ttl_minutes=60,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        now=T0,
    ).token
    clock = Clock(T0 + timedelta(seconds=1))
    client = AppClient(create_app(settings, clock=clock))
    try:

        def query() -> int:
            body = {"dataset": "sales", "columns": ["region"], "limit": 1}
            return client.post("/v1/query", json=body, headers=bearer(token)).status_code

        assert query() == 200  # the keyset is now cached, the old key without a not_after
        # `bulletin keys retire OLD --after 5m`, written while the API runs.
        save_keyset(retire_key(rotated, old_kid, not_after=T0 + timedelta(minutes=5)), keys_file)
        clock.now = T0 + timedelta(minutes=4, seconds=59)
        assert query() == 200
        clock.now = T0 + timedelta(minutes=5, seconds=1)
        response = client.post("/v1/query", json={"dataset": "sales"}, headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "token key is retired"
    finally:
        client.close()
