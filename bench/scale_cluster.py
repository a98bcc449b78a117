"""The pieces of a small cluster on one machine, for ``make scale-demo`` and ``bench/bench_scale.py``.

A PostgreSQL cluster of our own (Debian's ``postgresql`` package: ``initdb`` + ``pg_ctl`` into a temp folder on a free
loopback port, as the ``postgres`` user when we are root), holding two databases: the Prefect server's and Bulletin's
state store. A ``prefect server start`` on it, the process pool and its deployments, Prefect's heartbeat automation,
and ``prefect worker start`` processes, each with its own PREFECT_HOME, as separate machines would run them.

What the tests' fixtures already do is reused from them (``tests/fixtures/prefect_server.py``, ``workers.py``); what is
new here is the PostgreSQL cluster, which flow runs a worker holds (read from its processes), and stopping a worker's
whole tree: its flow runs run in sessions of their own, so nothing is left running at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.prefect_server import free_port, stop_process_group
from tests.fixtures.workers import descendants

PG_ROOT = Path("/usr/lib/postgresql")
PG_USER = "bulletin"
PG_DATABASES = ("bulletin_prefect", "bulletin_state")
PG_START_SECONDS = 120
INSTALL_HINT = "PostgreSQL is not installed: run `sudo apt-get install postgresql` (Debian/Ubuntu), then try again."
BULLETIN = str(Path(sys.executable).with_name("bulletin"))


class MissingPostgres(RuntimeError):
    """Debian's PostgreSQL server binaries are not on this machine."""


def postgres_bin(root: Path | None = None) -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl; MissingPostgres if there is none."""
    found = [b for b in (root or PG_ROOT).glob("*/bin") if (b / "initdb").is_file() and (b / "pg_ctl").is_file()]
    if not found:
        raise MissingPostgres(INSTALL_HINT)
    return max(found, key=lambda b: [int(p) if p.isdigit() else 0 for p in b.parent.name.split(".")])


def as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` user the package made."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=PG_START_SECONDS, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout)[-2000:]}")


def _init_cluster(binaries: Path, folder: Path, password: str) -> Path:
    """A new cluster in ``folder``/data with one superuser, ``bulletin``, that logs in with ``password``."""
    if os.geteuid() == 0:
        shutil.chown(folder, user="postgres", group="postgres")
    pwfile = folder / "pwfile"
    pwfile.write_text(password)
    pwfile.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(pwfile, user="postgres", group="postgres")
    data = folder / "data"
    initdb = [str(binaries / "initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}"]
    _run(as_postgres_user([*initdb, "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync"]), "initdb")
    pwfile.unlink()
    return data


def _create_databases(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"{url}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for name in PG_DATABASES:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL on 127.0.0.1 with the two databases; yields the server's URL without a database
    (``postgresql+psycopg://bulletin:<pw>@127.0.0.1:<port>``). Stopped and deleted on exit, however it ends."""
    binaries = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="bulletin-scale-pg-"))
    pg_ctl = str(binaries / "pg_ctl")
    data: Path | None = None
    try:
        password = secrets.token_urlsafe(18)
        data = _init_cluster(binaries, folder, password)
        port = free_port()
        # Loopback only, the socket in our folder; durability off because the cluster is thrown away.
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
        options += " -c full_page_writes=off -c max_connections=300"
        start = [pg_ctl, "start", "-D", str(data), "-w", "-t", str(PG_START_SECONDS), "-l", str(folder / "pg.log")]
        _run(as_postgres_user([*start, "-o", options]), "pg_ctl start")
        url = f"postgresql+psycopg://{PG_USER}:{password}@127.0.0.1:{port}"
        _create_databases(url)
        yield url
    finally:
        if data is not None and (data / "postmaster.pid").exists():
            subprocess.run(
                as_postgres_user([pg_ctl, "stop", "-D", str(data), "-m", "fast", "-w"]),
                check=False,
                capture_output=True,
                timeout=PG_START_SECONDS,
            )
        shutil.rmtree(folder, ignore_errors=True)


def apply_heartbeat_automation(env: dict[str, str], within_seconds: int) -> None:
    """``bulletin deployments automations``: the server marks Crashed a run whose heartbeats stopped."""
    command = [BULLETIN, "deployments", "automations", "--within", str(within_seconds)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`bulletin deployments automations` failed: {(done.stderr or done.stdout)[-2000:]}")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it, parents first."""
    return [pid, *descendants(pid)]


def flow_run_of(pid: int) -> str | None:
    """The flow run a process belongs to: a worker starts each run's process with PREFECT__FLOW_RUN_ID set, and the
    run's own children (delivery processes) inherit it."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"PREFECT__FLOW_RUN_ID="):
            return item.split(b"=", 1)[1].decode()
    return None


def flow_runs_below(pid: int) -> set[str]:
    """The flow runs running under one worker process right now."""
    return {run for child in descendants(pid) if (run := flow_run_of(child))}


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue


def stop_tree(process: subprocess.Popen[bytes]) -> None:
    """Stop a worker and whatever it started: SIGTERM to its process group, then SIGKILL to any process of its tree
    still alive (a flow run in a session of its own would survive the group's signal)."""
    tree = process_tree(process.pid) if process.poll() is None else []
    stop_process_group(process)
    deadline = time.monotonic() + 10
    alive = tree[1:]
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists()]
        time.sleep(0.2)
    _signal_all(alive, signal.SIGKILL)
