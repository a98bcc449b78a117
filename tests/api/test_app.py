"""The app around the receiver: health, readiness, the one error shape, startup checks, and the real server
(``bulletin serve``'s uvicorn on 127.0.0.1, a free port) end to end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bulletin.edge.api import create_app
from bulletin.edge.api.server import build_server
from bulletin.errors import DefinitionError
from bulletin.settings import Settings
from tests.api.conftest import REFRESH_NOTHING, AppClient, flow_runs, run_completed, standard_request, write_trigger

Serve = Callable[..., AppClient]


def test_healthz_and_readyz(serve: Serve) -> None:
    client = serve()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"store": "ok", "prefect": "ok"}, "triggers_not_configured": []}


def test_readyz_is_503_naming_what_is_down(serve: Serve) -> None:
    client = serve()

    def down() -> None:
        raise ConnectionRefusedError("http://user:password@prefect.internal/api")

    state = client.app.state
    state.readiness = {**state.readiness, "prefect": down}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"store": "ok", "prefect": "unavailable"},
        "triggers_not_configured": [],
    }
    assert "password" not in response.text


def test_an_unexpected_error_is_a_generic_500_without_traceback(
    prefect_api: None, bulletin_env: Path, tmp_path: Path
) -> None:
    app = create_app(Settings(triggers_dir=tmp_path))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail /etc/passwd")

    client = AppClient(app, raise_app_exceptions=False)
    try:
        response = client.get("/boom")
        missing = client.get("/nowhere")
    finally:
        client.close()
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal", "message": "internal error; the server log has the details"}
    }
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"verify": {"scheme": "github"}}, "exactly one of 'secret_env' or 'secret_block'"),
        ({"verify": {"scheme": "github", "secret_env": "X", "public_key_env": "Y"}}, "does not apply"),
        ({"action": {"report": "no-such-report"}}, "no report 'no-such-report'"),
        ({"action": {"report": "daily-account-orders", "parameters": {"nope": 1}}}, "has no parameter 'nope'"),
        ({"action": {"flow": "refresh", "parameters": {"nope": 1}}}, "has no parameter 'nope'"),
    ],
)
def test_a_wrong_trigger_stops_the_app_at_startup(tmp_path: Path, change: dict[str, Any], reason: str) -> None:
    data = {"id": "t", "verify": {"scheme": "github", "secret_env": "X"}, "action": {"flow": "refresh"}, **change}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DefinitionError, match=reason):
        create_app(Settings(triggers_dir=tmp_path))


def test_end_to_end_on_uvicorn(prefect_api: None, bulletin_env: Path, hook_env: None, triggers_dir: Path) -> None:
    """The real server: a signed request starts a run that completes; its replay and an oversized body start
    nothing; stopping the server waits for the run."""
    trigger = write_trigger(
        triggers_dir, "standard-webhooks", REFRESH_NOTHING, [{"path": "type", "op": "==", "value": "run.completed"}]
    )
    server = build_server(Settings(triggers_dir=triggers_dir, api_max_body_bytes=2048), "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/v1/hooks/{trigger}"
        body = run_completed("weekly-regional-sales")
        headers = standard_request(body)
        with httpx.Client(timeout=30) as http:
            started = http.post(url, content=body, headers=headers)
            replay = http.post(url, content=body, headers=headers)
            big = b"{" + b" " * 4096 + b"}"
            too_big = http.post(url, content=big, headers=standard_request(big))
            chunked = http.post(url, content=iter([big[:2000], big[2000:]]), headers=standard_request(big))
            bad = http.post(url, content=body, headers={**headers, "webhook-signature": "v1,AAAA"})
    finally:
        server.should_exit = True
        thread.join(timeout=60)
    assert started.status_code == 202, started.text
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    assert too_big.status_code == 413 and chunked.status_code == 413
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "signature"
    ((run, name),) = flow_runs(trigger)
    assert name == "refresh-dependents" and str(run.id) == started.json()["flow_run_id"]
    assert run.state is not None and run.state.is_completed(), run.state
