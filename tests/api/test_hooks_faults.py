"""The webhook receiver when something it needs is missing: the Prefect API unreachable (a closed loopback port),
or a trigger whose secret is not configured. Each is a 503 the sender can retry, answered at once, that leaves the
message id unremembered, so the retry (once things are fixed) starts the run."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.api.conftest import (
    REFRESH_NOTHING,
    STANDARD_SECRET,
    AppClient,
    flow_runs,
    run_completed,
    standard_request,
    write_trigger,
)

Serve = Callable[..., AppClient]
RUN_COMPLETED = [{"path": "type", "op": "==", "value": "run.completed"}]


@contextmanager
def prefect_at(url: str) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


@contextmanager
def prefect_unreachable() -> Iterator[None]:
    """PREFECT_API_URL pointing at a loopback port where nothing listens (bound, never listening: stays closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        with prefect_at(f"http://127.0.0.1:{closed.getsockname()[1]}/api"):
            yield


@contextmanager
def prefect_hung() -> Iterator[None]:
    """A Prefect API that takes the connection and never answers (a listening socket nobody accepts from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        with prefect_at(f"http://127.0.0.1:{hung.getsockname()[1]}/api"):
            yield


class _Overloaded(BaseHTTPRequestHandler):
    """A Prefect API that finds no deployment (so the run is created through the client) and then answers every
    other call 503, as a server does under a burst ("database is locked") or while it restarts."""

    def _answer(self) -> None:
        status = 404 if "/deployments/name/" in self.path else 503
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def prefect_overloaded() -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Overloaded)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with prefect_at(f"http://127.0.0.1:{server.server_address[1]}/api"):
            yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("prefect_down", [prefect_unreachable, prefect_overloaded, prefect_hung])
def test_prefect_unreachable_is_a_quick_503_and_the_retry_starts_the_run(
    serve: Serve, triggers_dir: Path, prefect_down: Callable[[], contextlib.AbstractContextManager[None]]
) -> None:
    trigger = write_trigger(triggers_dir, "standard-webhooks", REFRESH_NOTHING, RUN_COMPLETED)
    body = run_completed()
    headers = standard_request(body)
    with prefect_down():
        down = serve(api_prefect_timeout_seconds=3)
        started = time.monotonic()
        response = down.post(f"/v1/hooks/{trigger}", content=body, headers=headers)
        elapsed = time.monotonic() - started
        down.close()
    assert response.status_code == 503, response.text
    assert elapsed < 10, f"answered after {elapsed:.1f} s"
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["error"]["code"] == "transient"
    assert "Traceback" not in response.text
    assert flow_runs(trigger) == []
    # Prefect is back: the sender's retry of the same message (same id, same signature) starts the run.
    retry = serve().post(f"/v1/hooks/{trigger}", content=body, headers=headers)
    assert retry.status_code == 202, retry.text
    assert [str(run.id) for run, _ in flow_runs(trigger)] == [retry.json()["flow_run_id"]]


def test_a_trigger_without_its_secret_is_503_trigger_not_configured(
    serve: Serve, triggers_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = write_trigger(triggers_dir, "standard-webhooks", REFRESH_NOTHING, RUN_COMPLETED)
    monkeypatch.delenv("TEST_HOOK_STANDARD_SECRET")
    client = serve()
    body = run_completed()
    headers = standard_request(body)
    response = client.post(f"/v1/hooks/{trigger}", content=body, headers=headers)
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": {"code": "trigger_not_configured", "message": f"trigger {trigger!r} has no secret configured"}
    }
    assert int(response.headers["retry-after"]) > 0
    assert "TEST_HOOK" not in response.text
    # Listed by /readyz, which stays 200 (the rest of the API serves) and says it is degraded.
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "degraded",
        "checks": {"store": "ok", "prefect": "ok"},
        "triggers_not_configured": [trigger],
    }
    # Once the operator sets the secret (read per request), the sender's retry starts the run: nothing was burned.
    monkeypatch.setenv("TEST_HOOK_STANDARD_SECRET", STANDARD_SECRET)
    retry = client.post(f"/v1/hooks/{trigger}", content=body, headers=headers)
    assert retry.status_code == 202, retry.text
    assert client.get("/readyz").json()["status"] == "ok"
    assert len(flow_runs(trigger)) == 1
