"""``bulletin serve`` as a person runs it: the installed script in a subprocess, on free loopback ports.

The smoke test starts everything (Prefect server, work pool, deployments, worker, HTTP API) with a temporary state
folder and an every-minute report over the demo warehouse, waits for a scheduled run to deliver, then sends SIGTERM
and checks that no process it started survives, grandchildren (the worker's flow-run processes) included. It takes
two to four minutes and is not skipped anywhere. The other tests check startup refusals and a part that dies.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bulletin.settings import PROJECT_ROOT, Settings
from bulletin.store import migrate, open_store
from bulletin.store.webhooks import add_endpoint
from tests.fixtures.webhook_receiver import Receiver, Reply, running_receiver

BULLETIN = str(Path(sys.executable).with_name("bulletin"))
STARTUP_SECONDS = 300
RUN_SECONDS = 240

MINUTELY_REPORT = """\
id: minutely-sales
title: Minutely sales
description: The week's sales lines of one region, every minute (the bulletin serve smoke test).
dataset: sales
columns: [order_date, region, product, amount]
parameters:
  as_of: {type: date, default: yesterday}
filters:
  - {field: order_date, op: ">=", value: "{{ params.as_of - 6d }}"}
  - {field: order_date, op: "<=", value: "{{ params.as_of }}"}
formats: [csv]
audience:
  recipients:
    - {ref: ana, email: ana@example.com, name: Ana Lima, org: acme, attributes: {region: EMEA-North}}
secure_filters:
  sales:
    - {field: region, op: "=", value: "{{ recipient.region }}"}
schedule:
  preset: every minute
  timezone: UTC
  parameters: {as_of: "2026-10-31"}   # the demo data ends on 2026-10-31
channels: [s3]
# A slow worker start on a loaded machine must not turn the run into a missed one.
tolerance_seconds: 600
"""


# --- the process table, read here independently of bulletin.edge.supervisor.processes -------------------------------


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, start time, state) from /proc."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[19]), fields[0])
    return table


def tree(root: int) -> dict[int, int]:
    """Every descendant of ``root``: pid -> start time."""
    table = process_table()
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, start, _) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def survivors(seen: dict[int, int]) -> list[str]:
    table = process_table()
    return [
        f"{pid} {cmdline(pid)}"
        for pid, start in seen.items()
        if pid in table and table[pid][1] == start and table[pid][2] not in ("Z", "X")
    ]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def is_flow_run(command: str) -> bool:
    """A process the Prefect worker starts for a flow run (the engine, or the workspace supervisor before it)."""
    return "prefect.engine" in command or "workspace_supervisor" in command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.TransportError:
        return False


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture
def serve_env(demo_warehouse: Path, tmp_path: Path) -> dict[str, str]:
    """A temporary state folder and reports folder (one every-minute report), no triggers, no outside Prefect."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "minutely-sales.yaml").write_text(MINUTELY_REPORT)
    triggers = tmp_path / "triggers"  # the repository's triggers name reports this folder does not have
    triggers.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULLETIN_") and k != "PREFECT_API_URL"}
    env.update(
        BULLETIN_HOME=str(tmp_path / "home"),
        BULLETIN_WAREHOUSE_URL=str(demo_warehouse),
        BULLETIN_REPORTS_DIR=str(reports),
        BULLETIN_TRIGGERS_DIR=str(triggers),
        COLUMNS="250",
    )
    return env


class Served:
    """One ``bulletin serve`` subprocess; remembers every descendant it ever saw, and kills leftovers at the end."""

    def __init__(self, args: list[str], env: dict[str, str], out_dir: Path) -> None:
        self.stdout_path = out_dir / "serve.out"
        self.stderr_path = out_dir / "serve.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [BULLETIN, "serve", *args], stdout=out, stderr=err, env=env, cwd=PROJECT_ROOT
            )
        self.seen: dict[int, int] = {}

    def sample(self) -> dict[int, int]:
        current = tree(self.process.pid)
        self.seen.update(current)
        return current

    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.sample()
            assert self.process.poll() is None, f"bulletin serve exited while waiting for {what}:\n{self.output()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.output()}"
            time.sleep(0.5)

    def kill_leftovers(self) -> None:
        for line in survivors(self.seen):
            os.kill(int(line.split()[0]), signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def serve(serve_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Served:
        served = Served(list(args), env or serve_env, tmp_path)
        started.append(served)
        return served

    yield start
    for served in started:
        served.kill_leftovers()


# --- the smoke test ---------------------------------------------------------------------------------------------


def completed_runs(api_url: str, deployment: str) -> list:
    """Completed flow runs of a deployment, read through the Prefect client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            ),
        )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


def subscribe(serve_env: dict[str, str], receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run.completed endpoint at ``receiver`` whose first answer is a 500, so the first message needs a retry."""
    monkeypatch.setenv("BULLETIN_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    serve_env["BULLETIN_WEBHOOK_ALLOWED_NETWORKS"] = "127.0.0.0/8"
    receiver.script("/serve", Reply(status=500))
    with open_store(Settings(home=Path(serve_env["BULLETIN_HOME"])).database) as store:
        migrate(store)
        add_endpoint(store, url=receiver.url("/serve"), event_types=["run.completed"], now=datetime.now(UTC))


def all_runs(api_url: str, deployment: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])))


def test_serve_runs_an_every_minute_report_and_sigterm_stops_everything(
    serve, serve_env: dict[str, str], tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefect_port, api_port = free_port(), free_port()
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    subscribe(serve_env, receiver, monkeypatch)
    served = serve("--host", "127.0.0.1", "--port", str(api_port), "--prefect-port", str(prefect_port))

    # Both health endpoints answer, and the banner names the URLs.
    served.wait_for("the banner", lambda: "Bulletin is running" in served.output(), STARTUP_SECONDS)
    assert httpx.get(f"{prefect_api}/health", timeout=10).json() is True
    assert httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=10).status_code == 200
    out = served.output()
    assert f"Prefect UI    http://127.0.0.1:{prefect_port}" in out
    assert f"Bulletin API  http://127.0.0.1:{api_port}" in out
    assert "creating work pool 'bulletin'" in out

    # The scheduler creates the every-minute runs, the worker runs one to a delivery: files in the local bucket
    # and a Completed flow run with the schedule's parameters.
    bucket = Path(serve_env["BULLETIN_HOME"]) / "bucket"
    runs: list = []

    def delivered() -> bool:
        nonlocal runs
        if not list(bucket.rglob("minutely-sales-*.csv")):
            return False
        runs = completed_runs(prefect_api, "minutely-sales")
        return bool(runs)

    served.wait_for("a completed every-minute run", delivered, RUN_SECONDS)
    assert runs[0].parameters == {"report_id": "minutely-sales", "parameters": {"as_of": "2026-10-31"}}
    (csv_file, *_) = sorted(bucket.rglob("minutely-sales-*.csv"))
    with csv_file.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {row["region"] for row in rows} == {"EMEA-North"}

    # The run's run.completed webhook was refused once; the API saw its retry due and started a deliver-webhooks
    # run, which the worker ran: the retry went out well within a minute of the first attempt. The housekeeping
    # deployments have no schedule, so that is their only kind of run.
    def retried() -> bool:
        ids = [r.headers.get("webhook-id") for r in receiver.received("/serve")]
        return len(ids) > len(set(ids))

    served.wait_for("the retry of a refused webhook", retried, 90)
    first, second = receiver.received("/serve")[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    sent_at = [int(r.headers["webhook-timestamp"]) for r in (first, second)]
    assert sent_at[1] - sent_at[0] < 60
    housekeeping = completed_runs(prefect_api, "deliver-webhooks")
    assert housekeeping and all("housekeeping" in run.tags for run in housekeeping)
    assert all_runs(prefect_api, "deliver-scheduled-events") == []

    # Stop while a flow-run process is alive if one comes along (the worker starts them in their own sessions).
    def flow_run_alive() -> bool:
        return any(
            "prefect.engine" in cmdline(pid) or "workspace_supervisor" in cmdline(pid) for pid in served.sample()
        )

    deadline = time.monotonic() + 75
    while not flow_run_alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    served.sample()
    commands = [cmdline(pid) for pid in served.seen]
    assert any("server start" in c for c in commands)
    assert any("worker start" in c for c in commands)
    assert any("serve --only api" in c for c in commands)
    assert any(is_flow_run(c) for c in commands), "no flow-run process seen"

    served.process.send_signal(signal.SIGTERM)
    code = served.process.wait(timeout=180)
    assert code == 0, served.output()
    assert "stopped: nothing left running" in served.output()
    assert survivors(served.seen) == []
    assert not answers(f"{prefect_api}/health")
    assert not answers(f"http://127.0.0.1:{api_port}/healthz")


# --- startup refusals and failures ------------------------------------------------------------------------------


def test_a_port_in_use_is_one_line_and_nothing_starts(serve, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        served = serve("--prefect-port", str(port), "--port", str(free_port()))
        code = served.process.wait(timeout=120)
    assert code == 2
    err = served.stderr_path.read_text().strip()
    assert (
        err == f"error: port {port} on 127.0.0.1 is in use (--prefect-port): stop what uses it or choose another port"
    )
    assert "starting" not in served.stdout_path.read_text()
    assert served.seen == {}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--only", "worker"], "--only worker needs a Prefect server"),
        (["--project-dir", "/"], "has no flows/deliver_report.py"),
        (["--only", "nonsense"], "Invalid value for '--only'"),
    ],
)
def test_refusals_name_the_flag(serve, args: list[str], words: str) -> None:
    served = serve(*args, "--prefect-port", str(free_port()), "--port", str(free_port()))
    assert served.process.wait(timeout=120) == 2
    assert words in served.stderr_path.read_text()
    assert "Traceback" not in served.output()


def test_an_unreachable_prefect_api_url_is_refused(serve, serve_env: dict[str, str]) -> None:
    env = {**serve_env, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    served = serve("--only", "deploy", "--only", "worker", env=env)
    assert served.process.wait(timeout=120) == 2
    err = served.stderr_path.read_text().strip()
    assert err.startswith("error: the Prefect server at http://127.0.0.1:") and "does not answer" in err
    assert len(err.splitlines()) == 1


def test_a_deploy_failure_is_one_line_and_stops_the_server(serve, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "flows").mkdir(parents=True)
    (project / "flows" / "deliver_report.py").write_text("this is not python(\n")
    served = serve(
        "--only", "prefect", "--only", "deploy", "--prefect-port", str(free_port()), "--project-dir", str(project)
    )
    served.wait_for("the deploy step", lambda: "deploying" in served.output(), STARTUP_SECONDS)
    code = served.process.wait(timeout=STARTUP_SECONDS)
    served.sample()
    err = served.stderr_path.read_text().strip()
    assert code == 1, served.output()
    assert err.startswith("error: prefect deploy failed (exit code 1): SyntaxError: ")
    assert len(err.splitlines()) == 1
    assert "stopping the Prefect server" in served.stdout_path.read_text()
    assert survivors(served.seen) == []


def test_the_prefect_ui_calls_the_api_on_the_chosen_prefect_port(serve) -> None:
    # The UI is a static app that asks /ui-settings where the API is; on a port other than 4200 it must say so.
    port = free_port()
    served = serve("--only", "prefect", "--prefect-port", str(port))
    served.wait_for("the banner", lambda: "Bulletin is running" in served.output(), STARTUP_SECONDS)
    ui_settings = httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=10).json()
    assert ui_settings["api_url"] == f"http://127.0.0.1:{port}/api"
    assert httpx.get(f"{ui_settings['api_url']}/health", timeout=10).json() is True
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=120) == 0, served.output()


def test_a_part_that_dies_stops_the_rest_with_one_line(serve) -> None:
    port = free_port()
    served = serve("--only", "prefect", "--only", "api", "--prefect-port", str(port), "--port", str(free_port()))
    served.wait_for("the banner", lambda: "Bulletin is running" in served.output(), STARTUP_SECONDS)
    (server,) = (pid for pid in served.sample() if "server start" in cmdline(pid))
    os.kill(server, signal.SIGKILL)
    code = served.process.wait(timeout=120)
    err = served.stderr_path.read_text().strip()
    assert code == 1, served.output()
    assert err.startswith("error: the Prefect server stopped unexpectedly (killed by SIGKILL): ")
    assert len(err.splitlines()) == 1
    assert "stopping the Bulletin API" in served.stdout_path.read_text()
    assert survivors(served.seen) == []


def test_the_api_names_unconfigured_triggers_at_start_and_answers_their_hooks_503(
    serve, serve_env: dict[str, str]
) -> None:
    """A fresh `bulletin serve` with the shipped triggers and none of their secrets set: the start output names each,
    /readyz lists them, and their hooks are answered 503 trigger_not_configured (not 500)."""
    shipped = {"bulletin-run-completed", "dbt-job-completed", "github-release", "signed-refresh-request"}
    env = {k: v for k, v in serve_env.items() if k not in {"BULLETIN_TRIGGERS_DIR", "BULLETIN_REPORTS_DIR"}}
    for name in (
        "BULLETIN_RUN_EVENTS_SECRET",
        "DBT_WEBHOOK_SECRET",
        "GITHUB_WEBHOOK_SECRET",
        "SIGNED_REQUEST_PUBLIC_KEY",
    ):
        env.pop(name, None)
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{free_port()}/api"  # not needed to refuse; kept off the network
    port = free_port()
    served = serve("--only", "api", "--port", str(port), env=env)
    api = f"http://127.0.0.1:{port}"
    served.wait_for("the API", lambda: answers(f"{api}/healthz"), STARTUP_SECONDS)
    for trigger_id in shipped:
        assert f"trigger {trigger_id!r} is not configured" in served.output()
    ready = httpx.get(f"{api}/readyz", timeout=30).json()
    assert ready["triggers_not_configured"] == sorted(shipped)
    hook = httpx.post(f"{api}/v1/hooks/github-release", content=b"{}", timeout=30)
    assert hook.status_code == 503 and hook.json()["error"]["code"] == "trigger_not_configured"
