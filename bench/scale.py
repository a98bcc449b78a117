"""One large report run over several Prefect workers, with a worker killed partway: what ``make scale-demo`` shows and
``bench/bench_scale.py`` measures.

``run_scale`` starts everything (``scale_cluster.py``: PostgreSQL, a Prefect server on it, the process pool and its
deployments, the heartbeat automation, the workers), writes a report with an inline audience of N recipients (each a
one-account, one-day window of the demo warehouse: a small CSV file to the local bucket), starts one run of its
``deliver-report`` deployment, watches the ledger, SIGKILLs one worker's whole process tree once about a third of the
deliveries are recorded (a worker running a shard, never the one running the parent run), waits for the parent run to
end, counts from the bucket and the ledger (``scale_count.py``), and stops everything, however it ends.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from bench import scale_cluster
from bench.bench_delivery import Scope, ensure_warehouse, process_rss_mb, report_definition
from bench.scale_count import bucket_files, ledger_rows, sent_count, tally
from bulletin.settings import PROJECT_ROOT
from tests.fixtures.prefect_postgres import with_driver
from tests.fixtures.prefect_server import prefect_env, running_prefect_server
from tests.fixtures.workers import deploy, kill_machine, start_worker, wait_for_workers

REPORT_ID = "scale-demo"
DEPLOYMENT = f"deliver-report/{REPORT_ID}"
SHARD_FLOW = "deliver-shard"
POLL_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 10.0
RUN_TIMEOUT_SECONDS = 3_600
API_PATIENCE_SECONDS = 120
Say = Callable[[str], None]


@dataclass(frozen=True)
class ScaleConfig:
    recipients: int = 10_000
    workers: int = 2
    kill: bool = True
    shard_recipients: int = 2_000  # BULLETIN_SHARD_RECIPIENTS; 0: one unsharded run
    worker_limit: int = 2  # the parent run holds a slot of its worker while its shards run
    claim_lease_seconds: int = 90
    heartbeat_within_seconds: int = 90
    kill_fraction: float = 1 / 3
    warehouse: Path | None = None  # default: the benchmarks' 1.2M-row demo warehouse under bench/out/

    def warehouse_path(self) -> Path:
        return self.warehouse or ensure_warehouse()


@dataclass
class Watch:
    """What the watcher saw while the run went on."""

    started: float
    runs_by_worker: dict[str, set[str]] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)
    rss_by_tenth: dict[str, list[float]] = field(default_factory=dict)
    last_mb: dict[str, float] = field(default_factory=dict)
    killed: str | None = None
    kill_note: str = ""


def day_scopes(warehouse: Path, count: int) -> list[Scope]:
    """``count`` recipients r-00001..., each one account's sales of one day (a handful of rows), spread evenly over
    every (account, day) of the warehouse; past their number they repeat under other recipients."""
    import duckdb

    sql = "SELECT account_id, order_date, count(*) FROM sales GROUP BY ALL ORDER BY account_id, order_date"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        days: list[tuple[str, date, int]] = con.execute(sql).fetchall()
    chosen = [days[i * len(days) // count] if count <= len(days) else days[i % len(days)] for i in range(count)]
    return [
        Scope(f"r-{n:05d}", str(a), d.isoformat(), (d + timedelta(days=1)).isoformat(), int(rows))
        for n, (a, d, rows) in enumerate(chosen, start=1)
    ]


def write_report(reports: Path, scopes: list[Scope]) -> None:
    """The scale report: the delivery benchmark's inline-audience report, as CSV to the local bucket."""
    definition = report_definition(scopes) | {
        "id": REPORT_ID,
        "title": "Scale demo: one account's orders of one day",
        "description": "make scale-demo: one large run over several workers.",
        "formats": ["csv"],
    }
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"{REPORT_ID}.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))


def worker_env(config: ScaleConfig, api_url: str, home: Path, state_url: str, reports: Path) -> dict[str, str]:
    """What every worker machine shares: the state store, the home (bucket, keys), the warehouse, the reports."""
    return prefect_env(
        api_url,
        BULLETIN_HOME=str(home),
        BULLETIN_DATABASE_URL=state_url,
        BULLETIN_WAREHOUSE_URL=str(config.warehouse_path()),
        BULLETIN_REPORTS_DIR=str(reports),
        BULLETIN_PROJECT_DIR=str(PROJECT_ROOT),
        BULLETIN_SHARD_RECIPIENTS=str(config.shard_recipients),
        BULLETIN_CLAIM_LEASE_SECONDS=str(config.claim_lease_seconds),
        BULLETIN_MAX_CONCURRENT_RUNS="100",
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30",
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_LOGGING_LEVEL="WARNING",
    )


@contextmanager
def cluster(config: ScaleConfig, work: Path, say: Say) -> Iterator[tuple[str, str, dict[str, subprocess.Popen[bytes]]]]:
    """Everything up, in order; yields (API URL, state store URL, workers by name). All stopped on exit."""
    from bulletin.settings import Settings
    from bulletin.store import migrate, open_store
    from tasks.tokens import load_keyset

    with ExitStack() as stack:
        say("starting PostgreSQL (Debian's package) on a free loopback port")
        pg = stack.enter_context(scale_cluster.postgres_cluster())
        prefect_db, state_url = (f"{pg}/{name}" for name in scale_cluster.PG_DATABASES)
        say("starting the Prefect server on PostgreSQL (asyncpg)")
        api_url = stack.enter_context(
            running_prefect_server(
                work / "server", PREFECT_API_DATABASE_CONNECTION_URL=with_driver(prefect_db, "asyncpg")
            )
        )
        say(f"Prefect API at {api_url}; creating the process pool and deploying (prefect deploy --all)")
        deploy(api_url, work / "reports", work)
        scale_cluster.apply_heartbeat_automation(prefect_env(api_url), config.heartbeat_within_seconds)
        with open_store(state_url) as store:
            migrate(store)
        load_keyset(Settings(home=work / "home"), create=True)
        env = worker_env(config, api_url, work / "home", state_url, work / "reports")
        workers: dict[str, subprocess.Popen[bytes]] = {}
        for n in range(1, config.workers + 1):
            name = f"worker-{n}"
            workers[name], _ = start_worker(name, env, work, limit=config.worker_limit)
            stack.callback(scale_cluster.stop_tree, workers[name])
        say(f"starting {config.workers} prefect worker process(es) on the pool (--limit {config.worker_limit})")
        wait_for_workers(api_url, workers)
        yield api_url, state_url, workers
        say("stopping the workers, the Prefect server and PostgreSQL")


def sample(watch: Watch, workers: dict[str, subprocess.Popen[bytes]]) -> None:
    """Which flow runs each live worker holds now, and the memory of its whole tree."""
    for name, process in workers.items():
        if process.poll() is not None:
            watch.last_mb.pop(name, None)
            continue
        watch.runs_by_worker.setdefault(name, set()).update(scale_cluster.flow_runs_below(process.pid))
        mb = 0.0
        for pid in scale_cluster.process_tree(process.pid):
            try:
                mb += process_rss_mb(pid)
            except OSError:
                continue
        watch.peak_mb[name] = max(watch.peak_mb.get(name, 0.0), mb)
        watch.last_mb[name] = mb


def pick_victim(workers: dict[str, subprocess.Popen[bytes]], parent: str) -> str | None:
    """A live worker running a shard and not the parent run (a dead parent would be another test altogether)."""
    for name, process in workers.items():
        if process.poll() is not None:
            continue
        runs = scale_cluster.flow_runs_below(process.pid)
        if runs and parent not in runs:
            return name
    return None


def maybe_kill(config: ScaleConfig, watch: Watch, workers: dict[str, Any], parent: str, sent: int, say: Say) -> None:
    if not config.kill or watch.killed is not None or sent < config.recipients * config.kill_fraction:
        return
    victim = pick_victim(workers, parent)
    if victim is None:
        watch.kill_note = "no worker held a shard without the parent run: nothing killed yet"
        return
    pids = kill_machine(workers[victim])
    watch.killed, watch.kill_note = victim, ""
    say(f"SIGKILL {victim} and everything below it ({len(pids)} processes) at {sent:,} deliveries: a dead machine")


def progress_line(config: ScaleConfig, watch: Watch, sent: int, state: str) -> str:
    seconds = time.monotonic() - watch.started
    memory = ", ".join(f"{n} {mb:.0f} MB" for n, mb in sorted(watch.last_mb.items()))
    memory += f", {watch.killed} killed" if watch.killed else ""
    line = (
        f"{seconds:6.0f} s  {sent:,}/{config.recipients:,} delivered ({sent / max(seconds, 1e-9):.1f}/s), run {state}"
    )
    return f"{line}; {memory}" + (f"; {watch.kill_note}" if watch.kill_note else "")


def watch_run(config: ScaleConfig, client: Any, state_url: str, workers: dict[str, Any], run_id: str, say: Say) -> Any:
    """Until the parent run is final: progress lines, samples, and the kill. Returns the run as read at the end."""
    watch = Watch(started=time.monotonic())
    tenths = [math.ceil(config.recipients * k / 10) for k in range(1, 11)]
    last_line = 0.0
    while True:
        run = read_run(client, run_id, say)
        sent = sent_count(state_url, REPORT_ID)
        sample(watch, workers)
        while tenths and sent >= tenths[0]:
            tenths.pop(0)
            for name, mb in watch.last_mb.items():
                watch.rss_by_tenth.setdefault(name, []).append(round(mb, 1))
        maybe_kill(config, watch, workers, run_id, sent, say)
        state = run.state.name if run.state is not None else "Scheduled"
        if run.state is not None and run.state.is_final():
            say(progress_line(config, watch, sent, state))
            return run, watch
        if time.monotonic() - last_line >= PROGRESS_EVERY_SECONDS:
            say(progress_line(config, watch, sent, state))
            last_line = time.monotonic()
        if time.monotonic() - watch.started > RUN_TIMEOUT_SECONDS:
            raise RuntimeError(f"the run did not end within {RUN_TIMEOUT_SECONDS} s (state {state})")
        time.sleep(POLL_SECONDS)


def read_run(client: Any, run_id: str, say: Say) -> Any:
    """The flow run, read again while the API answers 5xx or not at all: a Prefect server on a loaded 2-core machine
    has answered 500 to one read (its database pool timed out) in the middle of a run that went on fine."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    deadline = time.monotonic() + API_PATIENCE_SECONDS
    while True:
        try:
            return client.read_flow_run(run_id)
        except (PrefectHTTPStatusError, httpx.TransportError) as exc:
            status = getattr(getattr(exc, "response", None), "status_code", 500)
            if status < 500 or time.monotonic() > deadline:
                raise
            say(f"the Prefect API did not answer ({type(exc).__name__}, {status}); asking again")
            time.sleep(2)


def shard_runs(client: Any) -> list[Any]:
    """The flow runs of the deliver-shard flow (the demo's server holds one report run), retries included."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    return list(client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[SHARD_FLOW])), limit=200))


def deliveries_by_worker(rows: list[Any], watch: Watch, shards: list[Any]) -> dict[str, int]:
    """Deliveries per worker. A shard records its deliveries under its parent's run id, so with shards: the
    recipients of each completed shard run, by the worker seen running it; without: the ledger rows, by the worker
    seen running the run they name."""
    worker_of = {run: name for name, runs in watch.runs_by_worker.items() for run in runs}
    counts: dict[str, int] = {}
    if shards:
        for run in shards:
            if run.state is not None and run.state.is_completed():
                name = worker_of.get(str(run.id), "unknown")
                counts[name] = counts.get(name, 0) + len(run.parameters.get("recipients") or [])
    else:
        for row in rows:
            if row.status == "sent":
                name = worker_of.get(row.run_id, "unknown")
                counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def summarise(
    config: ScaleConfig, work: Path, state_url: str, client: Any, run: Any, watch: Watch, t0: float
) -> dict[str, Any]:
    """The result, counted from the bucket and the ledger."""
    recipients = [f"r-{n:05d}" for n in range(1, config.recipients + 1)]
    files, partial = bucket_files(work / "home" / "bucket", REPORT_ID)
    rows = ledger_rows(state_url, REPORT_ID)
    counted = tally(recipients, files, rows)
    seconds = time.time() - t0
    shards = shard_runs(client)
    sent_times = [row.sent_at for row in rows if row.sent_at is not None]
    return {
        "recipients": config.recipients,
        "workers": config.workers,
        "shards": len({str(run.parameters.get("shard", run.id)) for run in shards}),
        "delivered": counted.delivered,
        "failed": counted.failed,
        "duplicates": counted.duplicates,
        "missing": counted.missing,
        "killed_worker": watch.killed,
        "seconds": round(seconds, 1),
        "deliveries_per_second": round(counted.delivered / seconds, 1) if seconds else 0.0,
        "extra": {
            "run_state": run.state.name if run.state else None,
            "shard_runs": len(shards),
            "partial_uploads": partial,
            "first_delivery_s": round(min(sent_times) - t0, 1) if sent_times else None,
            "last_delivery_s": round(max(sent_times) - t0, 1) if sent_times else None,
            "by_worker": deliveries_by_worker(rows, watch, shards),
            "peak_mb": {n: round(mb, 1) for n, mb in sorted(watch.peak_mb.items())},
            "rss_by_tenth": watch.rss_by_tenth,
        },
    }


def run_scale(config: ScaleConfig, work: Path, say: Say = print) -> dict[str, Any]:
    """The whole demo in ``work`` (emptied first): the result dict, whose ``extra`` holds what the benchmark needs."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    scale_cluster.postgres_bin()  # before anything is started: one clear line if PostgreSQL is missing
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "server").mkdir()
    say(f"building an audience of {config.recipients:,} recipients (one account, one day each: small CSV files)")
    write_report(work / "reports", day_scopes(config.warehouse_path(), config.recipients))
    with ExitStack() as stack:
        api_url, state_url, workers = stack.enter_context(cluster(config, work, say))
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))
        client = stack.enter_context(get_client(sync_client=True))
        t0 = time.time()
        flow_run: Any = run_deployment(DEPLOYMENT, timeout=0)
        shards = math.ceil(config.recipients / config.shard_recipients) if config.shard_recipients else 1
        say(f"started {DEPLOYMENT} (flow run {flow_run.id}); expected shards: {shards}")
        run, watch = watch_run(config, client, state_url, workers, str(flow_run.id), say)
        if config.kill and watch.killed is None:
            say("nothing was killed: no worker ever held a shard without the parent run (sharding off, or one shard)")
        say(f"the run ended {run.state.name}; counting from the bucket and the ledger")
        return summarise(config, work, state_url, client, run, watch, t0)
