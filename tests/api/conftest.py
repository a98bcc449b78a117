"""The webhook receiver against the session's real Prefect API: triggers written per test (unique ids, so the runs
each test starts can be counted by their ``trigger:<id>`` tag), secrets in the environment, and valid requests
built with tasks.webhooks.signing, the same primitives a sender would use."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from anyio.from_thread import BlockingPortal, start_blocking_portal
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

from bulletin.edge.api import create_app
from bulletin.settings import Settings
from tasks.webhooks import dbt_signature, standard_headers

STANDARD_SECRET = "whsec_" + base64.b64encode(b"bulletin-test-standard-webhooks-key!").decode()
DBT_SECRET = "dbt-test-secret-0123456789"
GITHUB_SECRET = "It's a Secret to Everybody"
ENV = {
    "standard-webhooks": "TEST_HOOK_STANDARD_SECRET",
    "dbt-cloud": "TEST_HOOK_DBT_SECRET",
    "github": "TEST_HOOK_GITHUB_SECRET",
    "jwt-es256": "TEST_HOOK_PUBLIC_KEY",
}
#: A refresh with no dependents: a real, quick flow run.
REFRESH_NOTHING = {"flow": "refresh", "parameters": {"report_id": "{{ payload.data.report_id }}", "dry_run": True}}
#: One recipient, rendered into a temporary folder: a real, quick deliver-report run.
DRY_REPORT = {"report": "daily-account-orders", "recipients": ["am-acc-0001"], "dry_run": True}


class AppClient:
    """A synchronous httpx client on the app in-process (httpx.ASGITransport), its lifespan run as uvicorn would.

    Starlette's TestClient warns that it is deprecated with httpx; this is the few lines of it we need.
    ``raise_app_exceptions``: an exception escaping the app fails the test (bad input must never reach a 500).
    """

    def __init__(self, app: FastAPI, *, raise_app_exceptions: bool = True) -> None:
        self.app = app
        self._portal_cm = start_blocking_portal()
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self._lifespan = self.portal.wrap_async_context_manager(app.router.lifespan_context(app))
        self._lifespan.__enter__()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://bulletin.test")
        self._open = True

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(lambda: self._client.request(method, url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def close(self) -> None:
        """Stop the app: its lifespan waits for the flow runs it started."""
        if self._open:
            self._open = False
            self.portal.call(self._client.aclose)
            self._lifespan.__exit__(None, None, None)
            self._portal_cm.__exit__(None, None, None)


@dataclass
class Clock:
    """The app's clock; tests move it (the dbt sample payload is from 2023)."""

    now: datetime | None = None

    def __call__(self) -> datetime:
        return self.now or datetime.now(UTC)


@dataclass
class Keys:
    private: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def token(self, claims: dict[str, Any], **header: Any) -> bytes:
        return jwt.encode(claims, self.private, algorithm="ES256", headers={"kid": "k1", **header}).encode()


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def hook_env(monkeypatch: pytest.MonkeyPatch, keys: Keys) -> None:
    monkeypatch.setenv(ENV["standard-webhooks"], STANDARD_SECRET)
    monkeypatch.setenv(ENV["dbt-cloud"], DBT_SECRET)
    monkeypatch.setenv(ENV["github"], GITHUB_SECRET)
    monkeypatch.setenv(ENV["jwt-es256"], keys.public_pem)


def write_trigger(
    folder: Path, scheme: str, action: dict[str, Any], conditions: list[dict[str, Any]] | None = None, **verify: Any
) -> str:
    """A trigger file with a fresh id; returns the id."""
    trigger_id = f"{scheme.split('-')[0]}-{uuid.uuid4().hex[:10]}"
    key = "public_key_env" if scheme == "jwt-es256" else "secret_env"
    data = {
        "id": trigger_id,
        "verify": {"scheme": scheme, key: ENV[scheme], **verify},
        "conditions": conditions or [],
        "action": action,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{trigger_id}.yaml").write_text(yaml.safe_dump(data))
    return trigger_id


@pytest.fixture
def triggers_dir(tmp_path: Path) -> Path:
    return tmp_path / "triggers"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def serve(
    prefect_api: None, bulletin_env: Path, hook_env: None, triggers_dir: Path, clock: Clock
) -> Iterator[Callable[..., AppClient]]:
    """``serve(**settings)`` -> a client on an app over ``triggers_dir``, lifespan started; stopped (waiting for
    the flow runs it started) at the end of the test."""
    clients: list[AppClient] = []

    def start(**settings: Any) -> AppClient:
        clients.append(AppClient(create_app(Settings(triggers_dir=triggers_dir, **settings), clock=clock)))
        return clients[-1]

    yield start
    for client in clients:
        client.close()


def standard_request(body: bytes, msg_id: str | None = None, timestamp: int | None = None) -> dict[str, str]:
    ts = int(datetime.now(UTC).timestamp()) if timestamp is None else timestamp
    return standard_headers([STANDARD_SECRET], msg_id or f"msg_{uuid.uuid4().hex}", ts, body)


def dbt_request(body: bytes) -> dict[str, str]:
    return {"authorization": dbt_signature(DBT_SECRET, body), "content-type": "application/json"}


def run_completed(report_id: str = "daily-account-orders", status: str = "COMPLETED") -> bytes:
    """A body shaped like Bulletin's own run.completed event."""
    data = {"report_id": report_id, "run_id": str(uuid.uuid4()), "status": status}
    return json.dumps({"type": "run.completed", "timestamp": datetime.now(UTC).isoformat(), "data": data}).encode()


def flow_runs(trigger_id: str) -> list[Any]:
    """The flow runs a trigger started (by tag), with their flow's name as ``flow_name``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"trigger:{trigger_id}"]))
        )
        return [(run, client.read_flow(run.flow_id).name) for run in runs]
