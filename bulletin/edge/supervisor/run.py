"""``bulletin serve``'s supervisor: start the parts of a ServePlan, watch them, stop all of them.

Start order: the Prefect server (wait for ``/api/health``), the work pool (created if missing), every deployment
(``prefect deploy --all`` with the generated prefect.yaml, then ``bulletin deployments check``), the worker, the HTTP
API (wait for ``/healthz``). A stop request (Ctrl-C, SIGTERM, SIGHUP) stops them in the reverse order and exits
cleanly; a child that dies on its own stops the rest, and the supervisor raises a one-line BulletinError. Whatever
fails, nothing it started is left running.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bulletin.deployment_checks import read_declared_deployments
from bulletin.deployments import write_prefect_yaml
from bulletin.edge.supervisor.plan import (
    PREFECT_HOST,
    Part,
    ServePlan,
    api_command,
    automations_command,
    check_command,
    child_env,
    deploy_command,
    describe_exit,
    last_line,
    pool_create_command,
    pool_inspect_command,
    pool_type,
    redact,
    server_command,
    server_env,
    unconfigured_triggers_line,
    worker_command,
)
from bulletin.edge.supervisor.processes import (
    Child,
    ProcessTracker,
    StopSignals,
    become_subreaper,
    start_child,
    stop_child,
    sweep,
    wait_until,
)
from bulletin.errors import BulletinError, ConfigError
from bulletin.settings import Settings
from bulletin.triggers import load_triggers

#: A cold Prefect server start took 11 s on an idle 2-core machine; allow for a loaded one.
STARTUP_TIMEOUT_SECONDS = 180.0
#: ``prefect deploy`` imports every flow; the other one-shot commands take about 2 s.
STEP_TIMEOUT_SECONDS = 300.0
#: How long each part may take to stop after SIGTERM before it is killed. The worker stops taking runs at once
#: and waits for the running ones; a report run usually ends well within this.
GRACE_SECONDS = {Part.API: 10.0, Part.WORKER: 30.0, Part.PREFECT: 10.0}
SWEEP_GRACE_SECONDS = 5.0
LABELS = {Part.PREFECT: "the Prefect server", Part.WORKER: "the worker", Part.API: "the Bulletin API"}

Say = Callable[[str], None]


class _StopRequested(Exception):
    """A stop was requested while starting: stop what runs, exit cleanly."""


def prefect_cli() -> list[str]:
    """The ``prefect`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("prefect")
    if script.is_file():
        return [str(script)]
    found = shutil.which("prefect")
    return [found] if found else [sys.executable, "-m", "prefect"]


def bulletin_cli() -> list[str]:
    return [sys.executable, "-m", "bulletin.edge.cli"]


def check_port_free(host: str, port: int, flag: str) -> None:
    """Refuse a port something else listens on, before anything starts (SO_REUSEADDR as uvicorn binds)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"{flag}: cannot resolve host {host!r}: {exc.strerror}", field=flag) from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            raise ConfigError(
                f"port {port} on {host} {reason} ({flag}): stop what uses it or choose another port", field=flag
            ) from exc


def serve(plan: ServePlan, settings: Settings, *, say: Say, prepare: Callable[[], None] | None = None) -> None:
    """Run the plan until a stop is requested (returns) or a part fails (raises BulletinError, one line).

    ``prepare`` runs once every refusal that needs no process has passed, before the first process starts.
    """
    env = child_env(os.environ, settings, plan)
    # Everything that can be refused without starting a process is refused first.
    if plan.start_prefect:
        check_port_free(PREFECT_HOST, plan.prefect_port, "--prefect-port")
    if Part.API in plan.parts:
        check_port_free(plan.api_host, plan.api_port, "--port")
    if Part.DEPLOY in plan.parts:  # validates every report before writing anything
        write_prefect_yaml(settings, plan.prefect_yaml, work_pool=plan.work_pool)
    if prepare is not None:
        prepare()
    plan.logs_dir.mkdir(parents=True, exist_ok=True)
    become_subreaper()
    supervisor = Supervisor(plan, env, say)
    if Part.API in plan.parts:
        supervisor.triggers_line = unconfigured_triggers_line(load_triggers(settings.triggers_dir), env)
    failure: str | None = None
    with supervisor.signals.installed():
        try:
            supervisor.start_all()
            say(supervisor.banner())
            failure = supervisor.watch()
        except _StopRequested:
            pass
        finally:
            left = supervisor.stop_all()
    if failure:
        raise BulletinError(failure)
    if left:
        raise BulletinError(f"stopped, but process(es) {', '.join(map(str, left))} would not die")
    say("stopped: nothing left running")


class Supervisor:
    """The children of one ``bulletin serve`` and the steps that start them."""

    def __init__(self, plan: ServePlan, env: dict[str, str], say: Say) -> None:
        self.plan = plan
        self.env = env
        self.say = say
        self.signals = StopSignals()
        self.tracker = ProcessTracker()
        self.children: dict[Part, Child] = {}
        self.step: Child | None = None
        self.deployments = 0
        #: Triggers the API cannot verify yet (unset secret variables), named in the banner.
        self.triggers_line: str | None = None

    # --- starting ---

    def start_all(self) -> None:
        plan = self.plan
        if plan.start_prefect:
            self.say(f"starting the Prefect server at {plan.prefect_ui_url} (home {plan.prefect_home})")
            server = self._start(
                Part.PREFECT, server_command(prefect_cli(), plan.prefect_port), server_env(self.env, plan)
            )
            self._wait_healthy(server, f"{plan.prefect_api_url}/health")
        elif plan.prefect_api_url is not None and plan.parts & {Part.DEPLOY, Part.WORKER}:
            self.say(f"using the Prefect server at {redact(plan.prefect_api_url)} (PREFECT_API_URL)")
            self._check_reachable(plan.prefect_api_url)
        if Part.DEPLOY in plan.parts:
            self._ensure_work_pool()
            self._deploy()
        if Part.WORKER in plan.parts:
            self.say(f"starting a worker on work pool {plan.work_pool!r}")
            self._start(Part.WORKER, worker_command(prefect_cli(), plan.work_pool), self.env)
        if Part.API in plan.parts:
            self.say(f"starting the Bulletin API at {plan.api_url}")
            api = self._start(Part.API, api_command(bulletin_cli(), plan.api_host, plan.api_port), self.env)
            self._wait_healthy(api, f"{plan.api_url}/healthz")

    def _start(self, part: Part, command: list[str], env: dict[str, str]) -> Child:
        child = start_child(
            LABELS[part],
            command,
            env=env,
            cwd=self.plan.project_dir,
            log_path=self.plan.logs_dir / f"{part.value}.log",
            grace_seconds=GRACE_SECONDS[part],
        )
        self.tracker.own(child.pid)
        self.children[part] = child
        return child

    def _wait_healthy(self, child: Child, url: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        with httpx.Client(timeout=3.0, trust_env=False) as client:
            while True:
                if self.signals.requested:
                    raise _StopRequested
                code = child.poll()
                if code is not None:
                    raise BulletinError(
                        f"{child.name} exited while starting ({describe_exit(code)}): "
                        f"{last_line(child.log_tail())} (log: {child.log_path})"
                    )
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise BulletinError(
                        f"{child.name} did not answer {url} within {STARTUP_TIMEOUT_SECONDS:.0f} s "
                        f"(log: {child.log_path})"
                    )
                time.sleep(0.5)

    def _check_reachable(self, api_url: str) -> None:
        try:
            with httpx.Client(timeout=10.0) as client:
                status = client.get(f"{api_url}/health").status_code
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"the Prefect server at {redact(api_url)} (PREFECT_API_URL) does not answer: {type(exc).__name__}",
                field="PREFECT_API_URL",
            ) from exc
        if status >= 500:
            raise ConfigError(
                f"the Prefect server at {redact(api_url)} (PREFECT_API_URL) answers {status} to /health",
                field="PREFECT_API_URL",
            )

    def _run_step(self, name: str, command: list[str]) -> tuple[int, str]:
        """Run a one-shot command as a child (stoppable like the others); its exit code and output."""
        env = {**self.env, "COLUMNS": "250"}  # Rich would wrap the lines we read back
        log_path = self.plan.logs_dir / f"{name}.log"
        step = start_child(name, command, env=env, cwd=self.plan.project_dir, log_path=log_path, append=False)
        self.tracker.own(step.pid)
        self.step = step
        finished = wait_until(
            lambda: step.poll() is not None, STEP_TIMEOUT_SECONDS, hurry=lambda: self.signals.requested
        )
        if not finished:
            stop_child(step)
            if self.signals.requested:
                raise _StopRequested
            raise BulletinError(f"{name} took more than {STEP_TIMEOUT_SECONDS:.0f} s (log: {log_path})")
        self.step = None
        return step.poll() or 0, log_path.read_text(encoding="utf-8", errors="replace")

    def _ensure_work_pool(self) -> None:
        pool = self.plan.work_pool
        code, output = self._run_step("work-pool", pool_inspect_command(prefect_cli(), pool))
        if code == 0:
            kind = pool_type(output)
            if Part.WORKER in self.plan.parts and kind != "process":
                raise ConfigError(
                    f"work pool {pool!r} exists with type {kind!r}, but bulletin serve starts a process worker: "
                    f"delete it (`prefect work-pool delete {pool}`) or start without --only worker",
                    field="work_pool",
                )
            return
        if "not found" not in output.lower():
            raise BulletinError(f"cannot read work pool {pool!r}: {last_line(output)}")
        self.say(f"creating work pool {pool!r} (process)")
        code, output = self._run_step("work-pool", pool_create_command(prefect_cli(), pool))
        if code != 0:
            raise BulletinError(f"cannot create work pool {pool!r} ({describe_exit(code)}): {last_line(output)}")

    def _deploy(self) -> None:
        plan = self.plan
        self.deployments = len(read_declared_deployments(plan.prefect_yaml))
        self.say(f"deploying {self.deployments} deployment(s) from {plan.prefect_yaml}")
        log = plan.logs_dir / "deploy.log"
        code, output = self._run_step("deploy", deploy_command(prefect_cli(), plan.prefect_yaml))
        if code != 0:
            raise BulletinError(f"prefect deploy failed ({describe_exit(code)}): {last_line(output)} (log: {log})")
        code, output = self._run_step("check", check_command(bulletin_cli(), plan.prefect_yaml, plan.work_pool))
        if code != 0:
            raise BulletinError(f"the deployed deployments are not as planned: {last_line(output)}")
        code, output = self._run_step("automations", automations_command(bulletin_cli()))
        if code != 0:
            raise BulletinError(f"cannot apply the crashed-run automation: {last_line(output)}")

    def banner(self) -> str:
        plan = self.plan
        lines = ["Bulletin is running. Ctrl-C (or SIGTERM) stops all of it."]
        if plan.prefect_ui_url:
            lines.append(f"  Prefect UI    {plan.prefect_ui_url}")
        if plan.prefect_api_url:
            lines.append(f"  Prefect API   {redact(plan.prefect_api_url)}")
        if Part.API in plan.parts:
            lines.append(f"  Bulletin API  {plan.api_url}  (GET /healthz, POST /v1/hooks/{{trigger_id}})")
            if self.triggers_line:
                lines.append(self.triggers_line)
        if Part.DEPLOY in plan.parts:
            lines.append(
                f"  deployments   {self.deployments} on work pool {plan.work_pool!r}, from {plan.prefect_yaml}"
            )
        if Part.WORKER in plan.parts:
            lines.append(f"  worker        on work pool {plan.work_pool!r}, running flows from {plan.project_dir}")
        lines.append(f"  logs          {plan.logs_dir}")
        return "\n".join(lines)

    # --- running and stopping ---

    def watch(self) -> str | None:
        """Until a stop is requested (None) or a child exits on its own (the one-line reason)."""
        next_snapshot = 0.0
        while not self.signals.requested:
            for part, child in self.children.items():
                code = child.poll()
                if code is not None:
                    return (
                        f"{LABELS[part]} stopped unexpectedly ({describe_exit(code)}): "
                        f"{last_line(child.log_tail())}; everything else was stopped (log: {child.log_path})"
                    )
            if time.monotonic() >= next_snapshot:
                self.tracker.snapshot()
                self.tracker.reap()
                next_snapshot = time.monotonic() + 2.0
            time.sleep(0.25)
        return None

    def stop_all(self) -> list[int]:
        """Stop every child in the reverse start order, then sweep their descendants; the pids that survived."""
        if self.signals.requested:
            self.say(f"{self.signals.name}: stopping (again to stop at once)")
        self.tracker.snapshot()
        if self.step is not None:
            stop_child(self.step, hurry=self.signals.hurry)
        for part in reversed(list(self.children)):
            child = self.children[part]
            if child.poll() is None:
                if part is Part.WORKER:
                    self.say(f"stopping the worker (running flow runs get up to {child.grace_seconds:.0f} s)")
                else:
                    self.say(f"stopping {child.name}")
            self.tracker.snapshot()
            stop_child(child, hurry=self.signals.hurry)
        return sweep(self.tracker, grace_seconds=SWEEP_GRACE_SECONDS, hurry=self.signals.hurry)
