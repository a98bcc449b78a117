"""Delivery benchmark: the deliver-report flow beside a naive pandas loop, XLSX to S3 on loopback, in the same run.

    .venv/bin/python -m bench.bench_delivery                          # 1,000 recipients per side (about 6 minutes)
    .venv/bin/python -m bench.bench_delivery --quick                  # 50 recipients per side: a smoke run
    .venv/bin/python -m bench.bench_delivery --naive-recipients 200   # the naive loop on an evenly spread subset

Data: the 1,200,000-row demo warehouse (``bulletin.demo_data``), built once under bench/out/ (git-ignored) and
reused. Audience: each account's two years are cut into whole-day windows of about 1,000 rows (about 1,200 windows);
the recipients get windows spread evenly over that list, so each has the secure filter ``account_id = A AND
order_date >= from AND order_date < to``. Both sides deliver the same windows and the same 11 columns as XLSX.

S3: moto's server as a separate process on 127.0.0.1 (its CPU counts against neither side's GIL), fake credentials
only, one fresh bucket per measured case.

Ours: the real ``deliver_report`` Prefect flow (ledger claim, ES256 token, token-scoped DuckDB query streamed as Arrow
batches, XLSX writer, S3 put with If-None-Match, ledger mark-sent, manifest, Prefect artifacts) for an inline-audience
report written to a temporary reports folder, against a Prefect test server started and warmed up before the clock.
The flow spreads the recipients over lanes itself (tasks/delivery/spread.py): its own task thread and a worker process.
Naive: what a user would write: one DuckDB connection, then per recipient ``pandas.read_sql`` + ``to_excel``
(openpyxl) + boto3 ``put_object``, in one loop.

Each case runs in a fresh ``python -m bench.bench_delivery --child ...`` process. Seconds: wall time of the deliveries
only (imports, the Prefect server's start and a warm-up are excluded; for ours the whole flow run is timed, worker
processes' start included). Peak MB: the child's own high-water mark (``VmHWM``: ``ru_maxrss`` would carry the
parent's across fork and exec), and for ours the peak of the child plus the worker processes its flow starts, sampled
every 0.2 s (the Prefect server and moto are other processes); floor MB: the child after imports and warm-up. RSS
(with the workers) is also sampled after every tenth of the deliveries. CPU columns are CPU seconds during the timed
part: the measuring process with its worker processes, the Prefect API server, moto; "others" is what the rest of
the (shared) machine used, in cores; the same three per delivery, in milliseconds, show what is ours and what is
Prefect's and moto's. After each case the bucket is checked: one object per recipient, and three random files opened
with python-calamine hold exactly their recipient's rows (account, date window, row count).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"
WAREHOUSE = OUT / "warehouse.duckdb"
REPORT_ID = "bench-delivery"
REGION = "us-east-1"
FAKE_ACCESS_KEY_ID = "AKIAFAKEBULLETINBENCH"
FAKE_SECRET_ACCESS_KEY = "fake/bulletin+bench/key/not-a-real-one00"
COLUMNS = [
    "order_id",
    "order_date",
    "region",
    "country",
    "product",
    "category",
    "customer_name",
    "account_id",
    "quantity",
    "unit_price",
    "amount",
]
TARGET_ROWS = 1_000  # rows per recipient, on average
# Ours also runs at this size: does the peak depend on the audience? The smallest run that uses worker processes
# (tasks.delivery.services.PROCESSES_FROM_RECIPIENTS), so both sizes compare the same way of running.
SMALL_AUDIENCE = 500
#: Issue 14's fan-out target, at the full audience: both on a quiet machine.
TARGET_RATIO = 20.0
TARGET_RATE = 100.0
CHILD_TIMEOUT_SECONDS = 1_800
SETTINGS_PASSED_ON = ("BULLETIN_DELIVERY_PROCESSES",)
SERVER_START_SECONDS = 60
SAMPLED_FILES = 3


@dataclass(frozen=True)
class Scope:
    """One recipient: an account and a date window [start, end) holding ``rows`` rows of the sales table."""

    ref: str
    account_id: str
    start: str  # ISO date, inclusive
    end: str  # ISO date, exclusive
    rows: int


@dataclass(frozen=True)
class Case:
    side: str  # "naive" or "ours"
    scopes: list[Scope]

    @property
    def label(self) -> str:
        return "naive loop (read_sql + to_excel + put_object)" if self.side == "naive" else "ours: deliver_report flow"


# --- setup (parent, not timed) ------------------------------------------------------------------------------------


def ensure_warehouse() -> Path:
    """The full demo warehouse under bench/out/, built once (about 2 s) and reused while it is current."""
    import duckdb

    from bulletin.demo_data import DEMO_ROWS, META_TABLE, build_demo_warehouse, demo_warehouse_ready

    if demo_warehouse_ready(WAREHOUSE):
        with duckdb.connect(str(WAREHOUSE), read_only=True) as con:
            found = con.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'rows'").fetchone()
        if found is not None and int(found[0]) == DEMO_ROWS:
            return WAREHOUSE
    build_demo_warehouse(WAREHOUSE, rows=DEMO_ROWS)
    return WAREHOUSE


_WINDOWS_SQL = """
WITH daily AS (
    SELECT account_id, order_date, count(*) AS n FROM sales GROUP BY account_id, order_date
), running AS (
    SELECT *,
        sum(n) OVER (PARTITION BY account_id ORDER BY order_date ROWS UNBOUNDED PRECEDING) - n AS before,
        sum(n) OVER (PARTITION BY account_id) AS total
    FROM daily
), cut AS (
    SELECT *, floor(before * greatest(1, round(total / $target)) / total)::INTEGER AS window_no FROM running
)
SELECT account_id, min(order_date) AS start, max(order_date) + 1 AS "end", sum(n)::BIGINT AS rows
FROM cut GROUP BY account_id, window_no ORDER BY account_id, start
"""


def all_windows(warehouse: Path) -> list[tuple[str, date, date, int]]:
    """Every account's timeline cut into whole-day windows of about TARGET_ROWS rows."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(_WINDOWS_SQL, {"target": TARGET_ROWS}).fetchall()
    return [(str(a), start, end, int(n)) for a, start, end, n in rows]


def pick_scopes(windows: list[tuple[str, date, date, int]], count: int) -> list[Scope]:
    """``count`` windows spread evenly over the list (so over every account), as recipients r-00001...

    Beyond the number of windows, windows repeat (under other recipients).
    """
    chosen = [windows[i * len(windows) // count] for i in range(count)]
    return [
        Scope(f"r-{n:05d}", account, start.isoformat(), end.isoformat(), rows)
        for n, (account, start, end, rows) in enumerate(chosen, start=1)
    ]


def spread(scopes: list[Scope], count: int) -> list[Scope]:
    """``count`` of ``scopes``, evenly spread: the same recipients and windows, a smaller audience."""
    if count >= len(scopes):
        return list(scopes)
    return [scopes[i * len(scopes) // count] for i in range(count)]


def fake_aws_env(folder: Path) -> dict[str, str]:
    """This environment without any AWS_ variable, plus fake credentials: a real profile, token or instance role
    must never be picked up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": str(folder / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(env: dict[str, str], log: Path, *, tls: tuple[Path, Path] | None = None) -> Iterator[tuple[str, int]]:
    """moto's S3 API in its own process on 127.0.0.1; yields (endpoint, pid). Always stopped on exit.
    ``tls``: (certificate, key) to serve HTTPS with; the readiness probe trusts that certificate only."""
    port = free_port()
    endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    tls_args = ["--ssl-cert", str(tls[0]), "--ssl-key", str(tls[1])] if tls else []
    probe_context = ssl.create_default_context(cafile=str(tls[0])) if tls else None
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), *tls_args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + SERVER_START_SECONDS
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"moto server exited with code {server.returncode}; see {log}")
                try:
                    with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2, context=probe_context):
                        break
                except (urllib.error.URLError, OSError):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"moto server did not answer within {SERVER_START_SECONDS} s") from None
                    time.sleep(0.2)
            yield endpoint, server.pid
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def s3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"mode": "standard"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=REGION, config=config)


# --- measuring (Linux /proc and getrusage) --------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far: every process, every core."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: for ours, the Prefect API server the test harness starts."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def descendants_cpu_seconds(pids: set[int] | None = None, *, among: bool = True) -> float:
    """CPU of the running processes below this one: only those in ``pids`` (``among``), or only those not in it."""
    total = 0.0
    for pid in descendants(os.getpid()):
        if pids is not None and (pid in pids) != among:
            continue
        try:
            total += process_cpu_seconds(pid)
        except OSError:
            continue
    return total


def process_rss_mb(pid: int | str = "self") -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class Workers:
    """The processes this one starts from now on (ours: the flow's worker processes), not those already running
    (the Prefect API server). ``rss_mb`` is this process plus them; a thread samples it to find the peak."""

    def __init__(self) -> None:
        self.others = set(descendants(os.getpid()))
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss_mb(self) -> float:
        total = process_rss_mb()
        for pid in descendants(os.getpid()):
            if pid not in self.others:
                try:
                    total += process_rss_mb(pid)
                except OSError:
                    continue
        return total

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self.rss_mb())

    def __enter__(self) -> Workers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


WORKERS: Workers | None = None  # set while ours is measured


def rss_mb() -> float:
    return WORKERS.rss_mb() if WORKERS is not None else process_rss_mb()


def own_peak_mb(pid: int | str = "self") -> float:
    """The process's own RSS high-water mark (``VmHWM``). Not ``ru_maxrss``: Linux keeps that across fork and exec,
    so a child started by a parent that once held 650 MB reports at least 650 MB whatever it uses itself."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def peak_mb() -> float:
    own = own_peak_mb()
    return max(own, WORKERS.peak) if WORKERS is not None else own


def cpu_seconds() -> float:
    """CPU of this process and of its children that have ended (ours: the worker processes, joined at the run's end)."""
    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime


class Progress:
    """Counts deliveries: RSS after every tenth, and when the first and last happened. Thread-safe."""

    def __init__(self, total: int) -> None:
        self.marks = {max(1, round(total * k / 10)) for k in range(1, 11)}
        self.rss: list[float] = []
        self.done = 0
        self.start = time.perf_counter()
        self.first = self.last = 0.0
        self._lock = threading.Lock()

    def begin(self) -> None:
        self.start = time.perf_counter()

    def delivered(self) -> None:
        with self._lock:
            self.done += 1
            self.last = time.perf_counter() - self.start
            if self.done == 1:
                self.first = self.last
            if self.done in self.marks:
                self.rss.append(round(rss_mb(), 1))


class Meter:
    """CPU and wall time of the timed part, for the result line."""

    def __init__(self) -> None:
        self.cpu = self.machine = self.helpers = self.start = self.seconds = 0.0
        self.helper_pids: set[int] = set()

    def __enter__(self) -> Meter:
        # The helpers are the processes already running (ours: the Prefect API server). A process started during
        # the run is one of ours (a worker process): still running at the end, it is counted here; stopped and
        # reaped, getrusage(RUSAGE_CHILDREN) counts it.
        self.helper_pids = set(descendants(os.getpid()))
        self.cpu, self.machine = cpu_seconds(), machine_cpu_seconds()
        self.helpers = descendants_cpu_seconds(self.helper_pids)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu = cpu_seconds() + descendants_cpu_seconds(self.helper_pids, among=False) - self.cpu
        self.machine = machine_cpu_seconds() - self.machine
        self.helpers = descendants_cpu_seconds(self.helper_pids) - self.helpers

    def result(self, progress: Progress, floor: float, **extra: Any) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "cpu_seconds": self.cpu,
            "helper_cpu_seconds": self.helpers,
            "machine_cpu_seconds": self.machine,
            "peak_mb": peak_mb(),
            "floor_mb": floor,
            "rss": progress.rss,
            "first_delivery_s": progress.first,
            "last_delivery_s": progress.last,
            **extra,
        }


# --- the measured children ------------------------------------------------------------------------------------------


def child_naive(scopes: list[Scope], warehouse: str, endpoint: str, bucket: str) -> dict[str, Any]:
    """The loop a user would write. One connection, one client, one recipient after another."""
    import boto3
    import duckdb
    import pandas as pd

    # pandas wants SQLAlchemy and warns on any other DB-API connection; DuckDB's works, so the user silences it.
    warnings.filterwarnings("ignore", category=UserWarning, message=".*pandas only supports SQLAlchemy.*")
    con = duckdb.connect(warehouse, read_only=True)
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM sales "  # constant column names; values are bound
        "WHERE account_id = ? AND order_date >= ? AND order_date < ? ORDER BY order_id"
    )

    def render(scope: Scope) -> bytes:
        params = [scope.account_id, date.fromisoformat(scope.start), date.fromisoformat(scope.end)]
        frame = pd.read_sql(sql, con, params=params)
        buffer = io.BytesIO()
        frame.to_excel(buffer, engine="openpyxl", index=False)
        return buffer.getvalue()

    render(scopes[0])  # warm-up, not uploaded: lazy imports inside pandas and openpyxl
    client.list_objects_v2(Bucket=bucket, MaxKeys=1)  # and the client's connection
    floor = peak_mb()
    progress = Progress(len(scopes))
    with Meter() as meter:
        progress.begin()
        for scope in scopes:
            client.put_object(Bucket=bucket, Key=f"naive/{scope.ref}.xlsx", Body=render(scope))
            progress.delivered()
    return meter.result(progress, floor, delivered=len(scopes), failed=0)


def report_definition(scopes: list[Scope]) -> dict[str, Any]:
    """The benchmark's report: inline audience, one date window of one account per recipient, XLSX to S3."""
    return {
        "id": REPORT_ID,
        "title": "Account orders by window",
        "description": "Benchmark report: every sales line of one account in one date window.",
        "dataset": "sales",
        "columns": COLUMNS,
        "order": [{"field": "order_id", "direction": "asc"}],
        "formats": ["xlsx"],
        "channels": ["s3"],
        "audience": {
            "recipients": [
                {
                    "ref": s.ref,
                    "email": f"{s.ref}@example.com",
                    "attributes": {"account_id": s.account_id, "from_date": s.start, "to_date": s.end},
                }
                for s in scopes
            ]
        },
        # Whole-value templates keep the attribute's type: ISO strings, which the query engine checks and binds as
        # dates against the DATE column (tasks.warehouse.query._coerce).
        "secure_filters": {
            "sales": [
                {"field": "account_id", "op": "=", "value": "{{ recipient.account_id }}"},
                {"field": "order_date", "op": ">=", "value": "{{ recipient.from_date }}"},
                {"field": "order_date", "op": "<", "value": "{{ recipient.to_date }}"},
            ]
        },
    }


def child_ours(scopes: list[Scope]) -> dict[str, Any]:
    """The deliver-report flow, in this process, against a Prefect test server started and warmed up first."""
    import yaml
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from bulletin import progress as bulletin_progress
    from bulletin.models import DeliveryStatus, Manifest
    from bulletin.settings import Settings
    from flows.deliver_report import deliver_report
    from tasks.delivery.fanout import DELIVERY_THREADS, LANES_PER_PROCESS, THREADS_BESIDE_PROCESSES
    from tasks.delivery.services import delivery_processes

    processes = delivery_processes(Settings().delivery_processes, len(scopes))  # for the output only
    threads = THREADS_BESIDE_PROCESSES if processes else DELIVERY_THREADS

    reports = Path(os.environ["BULLETIN_REPORTS_DIR"])
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"{REPORT_ID}.yaml").write_text(yaml.safe_dump(report_definition(scopes), sort_keys=False))

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    progress = Progress(len(scopes))

    def listener(report_id: str, event: str, detail: str) -> None:
        if event == DeliveryStatus.DELIVERED.value:
            progress.delivered()

    global WORKERS
    with prefect_test_harness(server_startup_timeout=120):
        warm_up()
        floor = peak_mb()
        with Workers() as WORKERS, bulletin_progress.listening(listener), Meter() as meter:
            progress.begin()
            began = time.time()
            state = deliver_report(REPORT_ID, return_state=True)
        manifest = state.result(raise_on_failure=False)
        ended = run_end_time(state.state_details.flow_run_id)
    if not isinstance(manifest, Manifest):
        raise SystemExit(f"the flow run ended {state.type.value}: {state.message}")
    errors = sorted({d.error or "" for d in manifest.deliveries if d.status is not DeliveryStatus.DELIVERED})
    extra = {"delivered": manifest.delivered, "failed": manifest.failed, "errors": errors[:3]}
    lanes = f"{threads} on the flow's task threads, {processes * LANES_PER_PROCESS} in {processes} worker process(es)"
    run_end = None if ended is None else ended - began
    return meter.result(progress, floor, lanes=lanes, worker_processes=processes, run_end_s=run_end, **extra)


def run_end_time(flow_run_id: Any) -> float | None:
    """When the Prefect API recorded the flow run's final state (its ``end_time``, as the UI shows it), in
    ``time.time()`` seconds. A synchronous flow call returns later: after its final state, Prefect's flow engine
    joins its heartbeat thread, which sleeps in steps of 1 s (``prefect.flow_engine._send_heartbeats``)."""
    from prefect.client.orchestration import get_client

    if flow_run_id is None:
        return None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    return None if run.end_time is None else run.end_time.timestamp()


def run_child(args: argparse.Namespace) -> None:
    scopes = [Scope(**s) for s in json.loads(Path(args.scopes).read_text())]
    if args.child == "naive":
        result = child_naive(scopes, args.warehouse, args.endpoint, args.bucket)
    else:
        result = child_ours(scopes)
    print(json.dumps(result), flush=True)


# --- the parent: one child per case, then checks ----------------------------------------------------------------------


def measure(case: Case, *, endpoint: str, bucket: str, env: dict[str, str], work: Path) -> dict[str, Any]:
    """Run one case in a fresh process with only our BULLETIN_/PREFECT_ settings; returns its JSON result."""
    case_dir = Path(tempfile.mkdtemp(prefix=f"{case.side}-{len(case.scopes)}-", dir=work))
    scopes_file = case_dir / "scopes.json"
    scopes_file.write_text(json.dumps([asdict(s) for s in case.scopes]))
    child_env = {k: v for k, v in env.items() if not k.startswith(("BULLETIN_", "PREFECT_"))}
    child_env.update(
        {
            "BULLETIN_HOME": str(case_dir / "home"),
            "BULLETIN_WAREHOUSE_URL": str(WAREHOUSE),
            "BULLETIN_REPORTS_DIR": str(case_dir / "reports"),
            "BULLETIN_S3_BUCKET": bucket,
            "BULLETIN_S3_ENDPOINT_URL": endpoint,
            "BULLETIN_S3_REGION": REGION,
            "PREFECT_HOME": str(case_dir / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "PREFECT_CLI_PROMPT": "false",
        }
    )
    for name in SETTINGS_PASSED_ON:  # what --processes sets for ours
        if name in os.environ:
            child_env[name] = os.environ[name]
    command = [sys.executable, "-m", "bench.bench_delivery", "--child", case.side, "--scopes", str(scopes_file)]
    command += ["--warehouse", str(WAREHOUSE), "--endpoint", endpoint, "--bucket", bucket]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, cwd=ROOT, env=child_env, timeout=CHILD_TIMEOUT_SECONDS
    )
    (OUT / f"{case.side}-{len(case.scopes)}.log").write_text(done.stderr)  # the child's log, kept for a look
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"the {case.label} case failed (exit {done.returncode}):\n{tail}")
    return dict(json.loads(lines[-1]))


def verify(client: Any, bucket: str, scopes: list[Scope], seed: int) -> str:
    """One object per recipient, and three random files holding exactly their recipient's rows."""
    from python_calamine import CalamineWorkbook

    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for item in page.get("Contents", [])
    ]
    if len(keys) != len(scopes):
        raise SystemExit(f"{bucket}: {len(keys)} objects for {len(scopes)} recipients")
    by_ref = {s.ref: s for s in scopes}
    rows_checked = 0
    for key in random.Random(seed).sample(sorted(keys), min(SAMPLED_FILES, len(keys))):
        answer = client.get_object(Bucket=bucket, Key=key)
        # Ours records the recipient in the object's metadata; the naive loop names the key after it.
        ref = answer["Metadata"].get("recipient") or key.rsplit("/", 1)[1].removesuffix(".xlsx")
        scope = by_ref[ref]
        book = CalamineWorkbook.from_filelike(io.BytesIO(answer["Body"].read()))
        sheet = "Data" if "Data" in book.sheet_names else book.sheet_names[0]
        header, *rows = book.get_sheet_by_name(sheet).to_python()
        at_account, at_date = header.index("account_id"), header.index("order_date")
        start, end = date.fromisoformat(scope.start), date.fromisoformat(scope.end)
        for row in rows:
            day = row[at_date].date() if isinstance(row[at_date], datetime) else row[at_date]
            if row[at_account] != scope.account_id or not start <= day < end:
                raise SystemExit(f"{key} has a row outside {ref}'s scope: {row}")
        if len(rows) != scope.rows:
            raise SystemExit(f"{key} has {len(rows)} rows; {ref}'s scope holds {scope.rows}")
        rows_checked += len(rows)
    return f"{len(keys):,} objects; {min(SAMPLED_FILES, len(keys))} random files checked, {rows_checked:,} rows"


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor() or "unknown",
    )
    libs = ["prefect", "duckdb", "pyarrow", "xlsxwriter", "pandas", "openpyxl", "boto3", "moto", "python-calamine"]
    versions = []
    for lib in libs:
        try:
            versions.append(f"{lib} {metadata.version(lib)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{lib} (not installed)")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n- machine: {os.cpu_count()} cores (nproc), {cpu}; "
        f"load average at the start {load}\n- Python {platform.python_version()}; {', '.join(versions)}"
    )


def row_stats(scopes: list[Scope]) -> str:
    rows = [s.rows for s in scopes]
    accounts = len({s.account_id for s in scopes})
    return (
        f"{len(scopes):,} recipients over {accounts} accounts; rows per recipient: mean {sum(rows) / len(rows):,.0f}, "
        f"min {min(rows):,}, max {max(rows):,}; {sum(rows):,} rows in all"
    )


def plan_cases(scopes: list[Scope], naive_count: int) -> list[Case]:
    cases = [Case("naive", spread(scopes, naive_count)), Case("ours", scopes)]
    if len(scopes) > SMALL_AUDIENCE:
        cases.append(Case("ours", spread(scopes, SMALL_AUDIENCE)))
    return cases


def print_results(results: list[tuple[Case, dict[str, Any], float]], count: int) -> None:
    naive_case, naive, _ = results[0]
    naive_rate = len(naive_case.scopes) / naive["seconds"]
    print("\n| case | recipients | seconds | deliveries/s | vs naive | peak MB | floor MB |", end="")
    print(" CPU s: process / Prefect API / moto | CPU ms per delivery: process / Prefect API / moto | others (cores) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for case, r, moto_cpu in results:
        n = len(case.scopes)
        rate = n / r["seconds"]
        others = (r["machine_cpu_seconds"] - r["cpu_seconds"] - r["helper_cpu_seconds"] - moto_cpu) / r["seconds"]
        api = f"{r['helper_cpu_seconds']:.1f}" if case.side == "ours" else "-"
        api_ms = f"{r['helper_cpu_seconds'] * 1000 / n:.1f}" if case.side == "ours" else "-"
        per = f"{r['cpu_seconds'] * 1000 / n:.1f} / {api_ms} / {moto_cpu * 1000 / n:.1f}"
        print(
            f"| {case.label} | {n:,} | {r['seconds']:.1f} | {rate:.1f} | {rate / naive_rate:.1f}x | "
            f"{r['peak_mb']:.0f} | {r['floor_mb']:.0f} | {r['cpu_seconds']:.1f} / {api} / {moto_cpu:.1f} | {per} | "
            f"{max(0.0, others):.2f} |"
        )
    print("\nRSS after each tenth of the deliveries (MB); first and last delivery (s after the clock started):\n")
    for case, r, _ in results:
        rss = ", ".join(f"{mb:.0f}" for mb in r["rss"])
        end = f"; the run's final state at {r['run_end_s']:.1f} s" if r.get("run_end_s") else ""
        print(
            f"- {case.label} x {len(case.scopes):,}: {rss}; "
            f"first {r['first_delivery_s']:.1f} s, last {r['last_delivery_s']:.1f} s{end}; "
            f"returned at {r['seconds']:.1f} s"
        )
    ours = {len(c.scopes): r for c, r, _ in results if c.side == "ours"}
    big = ours[count]
    rate = count / big["seconds"]
    ratio = rate / naive_rate
    print(f"\nLanes of ours: {big['lanes']}.")
    target = f"target >= {TARGET_RATE:.0f}/s and >= {TARGET_RATIO:.0f}x"

    def verdict(per_second: float) -> str:
        return "met" if per_second / naive_rate >= TARGET_RATIO and per_second >= TARGET_RATE else "MISSED"

    print(f"Rate, to the flow call's return: {rate:.1f}/s, {ratio:.1f}x the naive loop's; {target}: {verdict(rate)}")
    if big.get("run_end_s"):
        end_rate = count / big["run_end_s"]
        print(
            f"Rate, to the run's final state in Prefect (its end, as the UI times it): {end_rate:.1f}/s, "
            f"{end_rate / naive_rate:.1f}x the naive loop's; {target}: {verdict(end_rate)} (the call returns later: "
            "Prefect's flow engine joins its heartbeat thread, which looks for its stop once a second)"
        )
    # Flat: the RSS does not climb over the run, and the peak does not depend on the audience size. With worker
    # processes, from the second tenth on: the first tenth is measured while the worker is still starting.
    start = 1 if big["worker_processes"] and len(big["rss"]) > 1 else 0
    flat = big["rss"][-1] <= 1.1 * big["rss"][start]
    line = f"Memory: RSS over the {count:,}-recipient run {big['rss'][start]:.0f} -> {big['rss'][-1]:.0f} MB"
    line += " (from the second tenth, once the worker process is up)" if start else ""
    if SMALL_AUDIENCE in ours and count > SMALL_AUDIENCE:
        small = ours[SMALL_AUDIENCE]["peak_mb"]
        flat = flat and max(small, big["peak_mb"]) <= 1.1 * min(small, big["peak_mb"])
        line += f"; peak {small:.0f} MB at {SMALL_AUDIENCE} recipients, {big['peak_mb']:.0f} MB at {count:,}"
    print(f"{line}; flat memory: {'met' if flat else 'NOT met'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 recipients per side, for a smoke run")
    parser.add_argument("--recipients", type=int, default=None, help="recipients of ours (default 1000, quick 50)")
    parser.add_argument(
        "--naive-recipients", type=int, default=None, help="recipients of the naive loop (default: as many as ours)"
    )
    parser.add_argument("--processes", type=int, default=None, help="BULLETIN_DELIVERY_PROCESSES for ours")
    parser.add_argument("--child", choices=["naive", "ours"], help=argparse.SUPPRESS)
    for hidden in ("--scopes", "--warehouse", "--endpoint", "--bucket"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return
    if args.processes is not None:
        os.environ["BULLETIN_DELIVERY_PROCESSES"] = str(args.processes)
    count = args.recipients or (50 if args.quick else 1_000)
    naive_count = min(args.naive_recipients or count, count)
    if count < 1 or naive_count < 1:
        raise SystemExit("--recipients and --naive-recipients must be at least 1")

    print(f"# Delivery benchmark ({'quick' if args.quick else 'full'})\n\n{machine()}")
    warehouse = ensure_warehouse()
    scopes = pick_scopes(all_windows(warehouse), count)
    print(f"- audience: {row_stats(scopes)}")
    cases = plan_cases(scopes, naive_count)
    if naive_count < count:
        print(f"- the naive loop runs {naive_count:,} of the recipients (evenly spread); rates are per recipient")

    results: list[tuple[Case, dict[str, Any], float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as folder:
        work = Path(folder)
        env = fake_aws_env(work)
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})  # for this process's checks
        with moto_server(env, work / "moto.log") as (endpoint, moto_pid):
            client = s3_client(endpoint)
            for index, case in enumerate(cases):
                bucket = f"bench-{case.side}-{len(case.scopes)}-{uuid.uuid4().hex[:8]}"
                client.create_bucket(Bucket=bucket)
                moto_cpu = process_cpu_seconds(moto_pid)
                result = measure(case, endpoint=endpoint, bucket=bucket, env=env, work=work)
                moto_cpu = process_cpu_seconds(moto_pid) - moto_cpu  # includes the untimed start of the child
                if result["failed"] or result["delivered"] != len(case.scopes):
                    failed = f"{result['delivered']} delivered, {result['failed']} failed"
                    raise SystemExit(f"{case.label}: {failed}: {result.get('errors')}")
                check = verify(client, bucket, case.scopes, seed=index)
                results.append((case, result, moto_cpu))
                print(f"- {case.label} x {len(case.scopes):,}: {result['seconds']:.1f} s; {check}", flush=True)
    print_results(results, count)


if __name__ == "__main__":
    main()
