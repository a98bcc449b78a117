"""Helpers for the /v1 API tests: an app on a fresh state store, the demo warehouse and a keyset of its own, run
in-process (no Prefect API needed: these routes never start a flow run), with API keys and data tokens to call it.

Each test module declares its own two-line fixture around ``running_api``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bulletin.edge.api import create_app
from bulletin.settings import Settings
from bulletin.store import Store
from bulletin.store.api_keys import create_key
from tasks.tokens import generate_key, mint_token
from tasks.tokens.keys import keyset_to_json
from tests.api.conftest import AppClient

KEYSET = generate_key(None, now=datetime(2026, 1, 1, tzinfo=UTC))


@dataclass
class Api:
    """A running app and what it was built with."""

    client: AppClient
    settings: Settings

    @property
    def store(self) -> Store:
        store: Store = self.client.app.state.store
        return store

    def key(self, org: str = "acme", role: str = "admin", cluster_admin: bool = False) -> str:
        """A new API key (its organisation made if new)."""
        _, key = create_key(
            self.store, org=org, role=role, cluster_admin=cluster_admin, name="test", now=datetime.now(UTC)
        )
        return key

    def token(self, filters: list[dict[str, Any]] | None = None, datasets: Any = "*", **kwargs: Any) -> str:
        """A data token whose ``sales`` scope is ``filters`` as one AND group (None: no secure filter at all)."""
        return mint_token(
            KEYSET,
            subject=kwargs.pop("subject", "ana"),
            dataset_ids=datasets,
            secure_filters={"sales": [filters]} if filters else {},
            ttl_minutes=5,
            issuer=kwargs.pop("issuer", self.settings.token_issuer),
            audience=self.settings.token_audience,
            now=kwargs.pop("now", datetime.now(UTC)),
        ).token


def api_settings(tmp_path: Path, warehouse: Path, **overrides: Any) -> Settings:
    (tmp_path / "triggers").mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "home": tmp_path / "home",
        "warehouse_url": str(warehouse),
        "database_url": f"sqlite:///{tmp_path / 'state' / 'bulletin.db'}",
        "triggers_dir": tmp_path / "triggers",
        "signing_keys": SecretStr(keyset_to_json(KEYSET)),
        **overrides,
    }
    return Settings(**values)


@contextmanager
def running_api(tmp_path: Path, warehouse: Path, **overrides: Any) -> Iterator[Api]:
    """The app with its lifespan started (state store migrated), stopped on exit."""
    settings = api_settings(tmp_path, warehouse, **overrides)
    client = AppClient(create_app(settings))
    try:
        yield Api(client, settings)
    finally:
        client.close()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def region(value: Any, op: str = "=") -> dict[str, Any]:
    return {"field": "region", "op": op, "value": value}


@contextmanager
def serving(settings: Settings, name: str = "bulletin-api") -> Iterator[str]:
    """The app on uvicorn at 127.0.0.1 on a free port, in a thread: yields its base URL, stops it at the end."""
    from bulletin.edge.api.server import build_server

    server = build_server(settings, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
    assert not thread.is_alive(), "uvicorn did not stop"
