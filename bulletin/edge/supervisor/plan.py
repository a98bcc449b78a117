"""What ``bulletin serve`` starts and how: the parts, their commands, environments and URLs. Pure, no I/O.

The supervisor (``bulletin.edge.supervisor.run``) executes a ``ServePlan``; everything that can be decided without
starting a process is decided here, so it is tested without one.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bulletin.edge.automations import HEARTBEAT_SECONDS
from bulletin.errors import ConfigError

if TYPE_CHECKING:
    from bulletin.settings import Settings
    from bulletin.triggers import Trigger


class Part(StrEnum):
    """The parts ``bulletin serve`` can start, in start order (they stop in the reverse order)."""

    PREFECT = "prefect"  # a local `prefect server start` (SQLite under BULLETIN_HOME)
    DEPLOY = "deploy"  # the work pool and one deployment per report (`prefect deploy --all`)
    WORKER = "worker"  # `prefect worker start --pool bulletin --type process`
    API = "api"  # the Bulletin HTTP API (uvicorn)


WORK_POOL = "bulletin"
#: The local Prefect server listens on loopback only: the open-source server has no authentication.
PREFECT_HOST = "127.0.0.1"
DEFAULT_PREFECT_PORT = 4200
#: The flow every report deployment runs, relative to the project dir; ``prefect deploy`` and the worker need it.
FLOW_FILE = Path("flows") / "deliver_report.py"


@dataclass(frozen=True)
class ServePlan:
    """One ``bulletin serve``: which parts, where, and which Prefect server they use."""

    parts: frozenset[Part]
    api_host: str
    api_port: int
    prefect_port: int
    #: The Prefect API every child talks to: the local server's, or the one PREFECT_API_URL names.
    prefect_api_url: str | None
    #: True: start ``prefect server start`` here; False: use ``prefect_api_url`` as it is.
    start_prefect: bool
    project_dir: Path
    home: Path
    work_pool: str = WORK_POOL

    @property
    def serve_dir(self) -> Path:
        """Generated prefect.yaml and the children's logs."""
        return self.home / "serve"

    @property
    def logs_dir(self) -> Path:
        return self.serve_dir / "logs"

    @property
    def prefect_yaml(self) -> Path:
        return self.serve_dir / "prefect.yaml"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def prefect_ui_url(self) -> str | None:
        if self.start_prefect:
            return f"http://{url_host(PREFECT_HOST)}:{self.prefect_port}"
        return None

    @property
    def api_url(self) -> str:
        """Where this machine reaches the Bulletin API (``0.0.0.0`` binds every address; probe loopback)."""
        return f"http://{url_host(probe_host(self.api_host))}:{self.api_port}"


def make_plan(
    only: Iterable[Part] | None,
    *,
    api_host: str,
    api_port: int,
    prefect_port: int,
    project_dir: Path,
    home: Path,
    environ: Mapping[str, str],
) -> ServePlan:
    """Decide what to start. Raises ConfigError naming the flag when the combination cannot work.

    With PREFECT_API_URL in ``environ`` no local Prefect server is started: every part uses that one.
    """
    parts = frozenset(only) if only else frozenset(Part)
    external = (environ.get("PREFECT_API_URL") or "").strip().rstrip("/") or None
    if external is not None:
        check_api_url(external)
    start_prefect = Part.PREFECT in parts and external is None
    if Part.PREFECT in parts and external is not None and parts == {Part.PREFECT}:
        raise ConfigError(
            f"--only prefect starts a Prefect server, but PREFECT_API_URL already names one ({external}): "
            "unset PREFECT_API_URL to start a local one",
            field="only",
        )
    api_url = f"http://{url_host(PREFECT_HOST)}:{prefect_port}/api" if start_prefect else external
    needs_prefect = sorted(p.value for p in parts if p in (Part.DEPLOY, Part.WORKER))
    if needs_prefect and api_url is None:
        raise ConfigError(
            f"--only {' --only '.join(needs_prefect)} needs a Prefect server: add --only prefect, "
            "or set PREFECT_API_URL to a running one",
            field="only",
        )
    if Part.API in parts and api_port == 0:
        raise ConfigError("--port 0 (any free port) works only with --only api", field="port")
    if Part.API in parts and start_prefect and api_port == prefect_port:
        raise ConfigError(f"--port and --prefect-port are both {api_port}: give them different ports", field="port")
    project = project_dir.expanduser().resolve()
    if (Part.DEPLOY in parts or Part.WORKER in parts) and not (project / FLOW_FILE).is_file():
        raise ConfigError(
            f"{project} has no {FLOW_FILE}: run bulletin serve from the project root or pass --project-dir",
            field="project_dir",
        )
    return ServePlan(
        parts=parts,
        api_host=api_host,
        api_port=api_port,
        prefect_port=prefect_port,
        prefect_api_url=api_url,
        start_prefect=start_prefect,
        project_dir=project,
        home=home,
    )


def check_api_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"PREFECT_API_URL must be an http(s) URL such as http://127.0.0.1:4200/api, not {redact(url)!r}",
            field="PREFECT_API_URL",
        )
    return url


def probe_host(host: str) -> str:
    """The address to connect to for a server bound to ``host`` (a wildcard bind answers on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104 - not a bind


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# --- commands ------------------------------------------------------------------------------------------------


def server_command(prefect: list[str], port: int) -> list[str]:
    return [*prefect, "server", "start", "--host", PREFECT_HOST, "--port", str(port)]


def pool_inspect_command(prefect: list[str], pool: str) -> list[str]:
    return [*prefect, "work-pool", "inspect", pool, "--output", "json"]


def pool_create_command(prefect: list[str], pool: str) -> list[str]:
    return [*prefect, "work-pool", "create", pool, "--type", "process"]


def deploy_command(prefect: list[str], prefect_yaml: Path) -> list[str]:
    return [*prefect, "deploy", "--all", "--no-prompt", "--prefect-file", str(prefect_yaml)]


def check_command(bulletin: list[str], prefect_yaml: Path, pool: str) -> list[str]:
    # --clear-stale-schedules: a database of an earlier `bulletin serve` may hold schedules this version dropped.
    return [*bulletin, "deployments", "check", "--path", str(prefect_yaml), "--pool", pool, "--clear-stale-schedules"]


def automations_command(bulletin: list[str]) -> list[str]:
    """The automations that mark a flow run Crashed when its heartbeats stop or its process never starts."""
    return [*bulletin, "deployments", "automations"]


def worker_command(prefect: list[str], pool: str) -> list[str]:
    return [*prefect, "worker", "start", "--pool", pool, "--type", "process"]


def api_command(bulletin: list[str], host: str, port: int) -> list[str]:
    return [*bulletin, "serve", "--only", Part.API.value, "--host", host, "--port", str(port)]


# --- environments --------------------------------------------------------------------------------------------


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings the children must see differently from the inherited environment: every path, absolute.

    The other ``BULLETIN_*`` variables reach the children as they are (they inherit this environment); a relative
    path would otherwise be read from the child's working directory, which is the project dir.
    """
    env = {"BULLETIN_HOME": str(settings.home_dir)}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, Path) and name != "home":
            env[f"BULLETIN_{name.upper()}"] = str(value.expanduser().resolve())
    return env


def child_env(environ: Mapping[str, str], settings: Settings, plan: ServePlan) -> dict[str, str]:
    """The environment of every child but the Prefect server: PREFECT_API_URL of the server in use, the
    BULLETIN_* settings, the project dir for the deployments' pull step, and no telemetry."""
    env = dict(environ)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    env["PREFECT_CLI_PROMPT"] = "false"
    # Flow runs started by the worker send a heartbeat this often; the automation crashes runs that stop sending.
    env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS))
    if plan.start_prefect:
        # Our own server: its database, and no profile of the user's (say, a Prefect Cloud one) in the way.
        env["PREFECT_HOME"] = str(plan.prefect_home)
    if plan.prefect_api_url is not None:
        env["PREFECT_API_URL"] = plan.prefect_api_url
    env["BULLETIN_PROJECT_DIR"] = str(plan.project_dir)
    env.update(settings_env(settings))
    return env


def server_env(env: Mapping[str, str], plan: ServePlan) -> dict[str, str]:
    """The Prefect server's environment: the children's, minus PREFECT_API_URL (the server is the API), plus its own
    host and port as settings. ``--port`` alone binds the server but does not reach its settings: the UI reads the API
    URL from ``/ui-settings``, which Prefect derives from PREFECT_SERVER_API_HOST/PORT (default 4200), so on any
    other port the UI would call a server that is not there."""
    server = {name: value for name, value in env.items() if name != "PREFECT_API_URL"}
    server["PREFECT_SERVER_API_HOST"] = PREFECT_HOST
    server["PREFECT_SERVER_API_PORT"] = str(plan.prefect_port)
    return server


# --- reading what children said ------------------------------------------------------------------------------

_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def unconfigured_triggers_line(triggers: Mapping[str, Trigger], environ: Mapping[str, str]) -> str | None:
    """The banner line naming the triggers whose secret or public key variable is unset in the API's environment
    (each with its variable), or None when every one is set. Their hooks are answered 503 until it is."""
    from bulletin.triggers import missing_secret_env

    missing = {t.id: name for t in triggers.values() if (name := missing_secret_env(t, environ)) is not None}
    if not missing:
        return None
    listed = ", ".join(f"{trigger_id} (set {name})" for trigger_id, name in sorted(missing.items()))
    return f"  triggers      not configured, answered 503 until set: {listed}"


def redact(text: str) -> str:
    """Hide credentials in URLs (``scheme://user:password@host``) before a line reaches the terminal."""
    return _USERINFO.sub("***@", text)


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b:?")
#: Prefect's CLI ends every failure with this line; the exception above it says what happened.
_NOISE = {"An exception occurred."}


def last_line(output: str, *, limit: int = 300) -> str:
    """The line of a child's output that says why it failed: the last exception line (``SyntaxError: ...``), else
    the last non-empty line; without box drawing, redacted and cut to ``limit`` characters."""
    lines = [line.strip().strip("│╭╮╰╯─|").strip() for line in output.splitlines()]
    lines = [line for line in lines if line and line not in _NOISE]
    chosen = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), lines[-1] if lines else "")
    text = redact(chosen.removeprefix("error: ")) or "no output"  # a bulletin child's own prefix; ours follows
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pool_type(output: str) -> str | None:
    """The ``type`` of a work pool from ``prefect work-pool inspect --output json``; None if not JSON."""
    start = output.find("{")
    if start < 0:
        return None
    try:
        document = json.loads(output[start : output.rfind("}") + 1])
    except ValueError:
        return None
    value = document.get("type") if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``killed by SIGKILL`` (Popen reports a signal as a negative code)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
