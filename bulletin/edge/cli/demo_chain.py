"""The demo's webhook chain, end to end on this machine, through the real HTTP API and real signed webhooks:

1. a dbt Cloud style "job run completed" webhook, signed with HMAC-SHA256, is POSTed to /v1/hooks/dbt-job-completed;
2. that trigger starts a run of daily-account-orders;
3. the run's `run.completed` event goes, signed per Standard Webhooks, to a webhook endpoint that points at this
   Bulletin's own receiver (/v1/hooks/bulletin-run-completed; loopback is opened by the network setting);
4. that trigger starts refresh-dependents, which delivers account-orders-digest (it `depends_on` the daily report).
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bulletin.edge.cli.options import environment
from bulletin.errors import BulletinError, TransientError
from bulletin.models import Manifest
from bulletin.settings import Settings
from bulletin.store import migrate, open_store
from bulletin.store.webhooks import add_endpoint, remove_endpoint
from tasks.dependents import refresh_run_key
from tasks.webhooks import dbt_signature, generate_secret

UPSTREAM, DEPENDENT = "daily-account-orders", "account-orders-digest"
#: The triggers the chain goes through: the dbt webhook that starts UPSTREAM, and Bulletin's own run.completed.
CHAIN_TRIGGERS = ("dbt-job-completed", "bulletin-run-completed")
CHAIN_TIMEOUT_SECONDS = 240.0


@dataclass(frozen=True)
class ChainResult:
    upstream: Manifest
    dependent: Manifest


def dbt_payload(event_id: str, now: datetime) -> bytes:
    """A dbt Cloud "job.run.completed" webhook body, shaped like the example in dbt's documentation."""
    stamp = now.isoformat().replace("+00:00", "Z")
    return json.dumps(
        {
            "accountId": 1,
            "eventId": event_id,
            "timestamp": stamp,
            "eventType": "job.run.completed",
            "webhookName": "bulletin-demo",
            "data": {
                "jobId": "123",
                "jobName": "Nightly orders (dbt build)",
                "runId": str(uuid.uuid4().int % 10**8),
                "environmentId": "1",
                "environmentName": "Production",
                "dbtVersion": "1.9",
                "projectName": "Analytics",
                "runReason": "Bulletin demo",
                "runStartedAt": stamp,
                "runFinishedAt": stamp,
                "runStatus": "Success",
                "runStatusMessage": "None",
            },
        }
    ).encode()


def run_chain(manifests_dir: Path) -> ChainResult:
    """Run the chain and return the two runs' manifests; raises BulletinError if it does not complete in time."""
    dbt_secret = secrets.token_hex(24)
    events_secret = generate_secret()
    with (
        _chain_triggers(Settings().triggers_dir) as triggers_dir,
        environment(
            DBT_WEBHOOK_SECRET=dbt_secret,
            BULLETIN_RUN_EVENTS_SECRET=events_secret,
            BULLETIN_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
            BULLETIN_TRIGGERS_DIR=str(triggers_dir),
        ),
    ):
        settings = Settings()
        with _api(settings) as api, _endpoint(settings, api, events_secret):
            event_id = f"wev_{uuid.uuid4().hex}"
            body = dbt_payload(event_id, datetime.now(UTC))
            answer = httpx.post(
                f"{api.url}/v1/hooks/dbt-job-completed",
                content=body,
                headers={"Authorization": dbt_signature(dbt_secret, body), "Content-Type": "application/json"},
                timeout=30,
            )
            if answer.status_code != 202:
                raise BulletinError(f"the dbt webhook was answered {answer.status_code}: {answer.text[:200]}")
            return _wait(manifests_dir, event_id)


@contextmanager
def _chain_triggers(folder: Path) -> Iterator[Path]:
    """A folder holding only the chain's two triggers: the demo's API hears nothing else, so triggers the demo has
    no secret for (GitHub releases, signed refresh requests) are not reported as unconfigured."""
    with tempfile.TemporaryDirectory(prefix="bulletin-demo-triggers-") as chosen:
        for name in CHAIN_TRIGGERS:
            shutil.copyfile(folder / f"{name}.yaml", Path(chosen) / f"{name}.yaml")
        yield Path(chosen)


@dataclass
class _Api:
    """The demo's HTTP API, served from a thread of this process."""

    url: str
    stop: Callable[[], None]


@contextmanager
def _api(settings: Settings) -> Iterator[_Api]:
    from bulletin.edge.api.server import build_server

    # Every run here, none through a deployment: one that `bulletin serve` deployed (its database is the demo's
    # Prefect database too) would wait for a worker that is not running, and run later, long after the demo.
    server = build_server(settings, "127.0.0.1", 0, deployments=False)
    # uvicorn writes its access log to stdout; the demo's stdout is its summary (or JSON), so send it to stderr.
    for handler in logging.getLogger("uvicorn.access").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    thread = threading.Thread(target=server.run, name="bulletin-demo-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise TransientError("the demo's HTTP API did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True  # the server then waits for the flow runs it started
        thread.join(timeout=CHAIN_TIMEOUT_SECONDS)

    try:
        yield _Api(url=f"http://127.0.0.1:{port}", stop=stop)
    finally:
        stop()


@contextmanager
def _endpoint(settings: Settings, api: _Api, secret: str) -> Iterator[None]:
    """A webhook endpoint of this Bulletin pointing at its own receiver, removed when the demo ends.

    The API is stopped first: the runs it started (the dependent report's run among them) publish their own
    run.completed event to this endpoint as they finish, and removing the endpoint under a message in flight would
    leave that attempt nothing to be recorded against.
    """
    with open_store(settings.database) as store:
        migrate(store)
        endpoint, _ = add_endpoint(
            store,
            url=f"{api.url}/v1/hooks/bulletin-run-completed",
            event_types=["run.completed"],
            secret=secret,
            description="bulletin demo: run.completed back into this Bulletin",
            now=datetime.now(UTC),
        )
        try:
            yield
        finally:
            api.stop()
            remove_endpoint(store, endpoint.id)


def _wait(manifests_dir: Path, event_id: str) -> ChainResult:
    deadline = time.monotonic() + CHAIN_TIMEOUT_SECONDS
    upstream: Manifest | None = None
    while time.monotonic() < deadline:
        if upstream is None:
            upstream = _find(manifests_dir / UPSTREAM, lambda m: event_id in (m.run_key or ""))
        else:
            dependent = _find(manifests_dir / DEPENDENT, _keyed_after(upstream.run_id))
            if dependent is not None:
                return ChainResult(upstream=upstream, dependent=dependent)
        time.sleep(0.5)
    stage = "the dbt-triggered run" if upstream is None else "the refresh of its dependent report"
    raise TransientError(f"the webhook chain did not finish within {CHAIN_TIMEOUT_SECONDS:.0f} s: waiting for {stage}")


def _keyed_after(run_id: str) -> Callable[[Manifest], bool]:
    """The dependent's refresh after exactly this upstream run: its ledger key is made from the upstream run id."""
    key = refresh_run_key(DEPENDENT, UPSTREAM, run_id)
    return lambda manifest: manifest.run_key == key


def _find(folder: Path, match: Callable[[Manifest], bool]) -> Manifest | None:
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        if match(manifest):
            return manifest
    return None
