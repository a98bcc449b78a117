"""Start-up benchmark (issue 14, target 2): three commands from a cold shell, each beside its baseline in the same run.

    .venv/bin/python -m bench.bench_startup            # 7 pairs per command (about 3 minutes)
    .venv/bin/python -m bench.bench_startup --quick    # 3 pairs: a smoke run

1. ``bulletin --help`` beside ``python -c pass`` (an interpreter's own start). Target: under 0.5 s.
2. ``bulletin query`` (a token scoped to one region, a filter on one country, 1,000 rows as CSV) beside a raw DuckDB
   script that runs the same SQL on the same file and writes the same CSV (checked byte for byte). Target: within
   0.5 s of the raw script.
3. ``bulletin run weekly-regional-sales --recipient rm-emea-north --format xlsx`` against a Prefect server (SQLite, in
   its own temporary PREFECT_HOME, started and warmed up before the clock) delivering to the local bucket folder and
   the outbox, beside a raw script that runs the same query and writes the rows to an XLSX file with XlsxWriter (no
   token, no ledger, no Prefect). "first file" is when the delivered XLSX appeared (its mtime), from the command's
   start; "exit" is when the command ended. Target: the file within 3 s.

Every command is a new process, timed from outside: wall seconds from just before its start to its exit, and CPU
seconds (user + system) from ``getrusage(RUSAGE_CHILDREN)``. The two commands of a pair run one after the other
(A B A B ...), and the figures quoted are medians with the median of the per-pair ratios A/B, so a machine whose
speed drifts during the run moves both sides. Data: the demo warehouse (bench/out/, as bench_delivery builds it).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.bench_delivery import ensure_warehouse
from tests.fixtures.prefect_server import running_prefect_server

ROOT = Path(__file__).resolve().parent.parent
BULLETIN = str(Path(sys.executable).with_name("bulletin"))
REPORT, RECIPIENT, AS_OF = "weekly-regional-sales", "rm-emea-north", "2026-10-31"
QUERY_SQL = (
    'SELECT "order_id", "order_date", "region", "country", "product", "category", "customer_id", "customer_name", '
    '"account_id", "quantity", "unit_price", "amount" FROM "sales" WHERE (("region" = ?)) AND ("country" = ?) '
    'ORDER BY "order_id" ASC LIMIT 1000'
)
RAW_QUERY = f"""
import csv, sys
import duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
cur = con.execute({QUERY_SQL!r}, ["EMEA-North", "Sweden"])
out = csv.writer(sys.stdout, lineterminator="\\n")
out.writerow([d[0] for d in cur.description])
out.writerows(cur.fetchall())
"""
RAW_XLSX = """
import sys
import duckdb, xlsxwriter
con = duckdb.connect(sys.argv[1], read_only=True)
cur = con.execute(
    "SELECT * FROM sales WHERE region = ? AND order_date BETWEEN CAST(? AS DATE) - 6 AND CAST(? AS DATE) "
    "ORDER BY order_id", ["EMEA-North", sys.argv[3], sys.argv[3]],
)
book = xlsxwriter.Workbook(sys.argv[2], {"constant_memory": True})
sheet = book.add_worksheet("Data")
sheet.write_row(0, 0, [d[0] for d in cur.description])
for number, row in enumerate(cur.fetchall(), start=1):
    sheet.write_row(number, 0, [v if isinstance(v, (int, float, str)) or v is None else str(v) for v in row])
book.close()
"""


@dataclass
class Timed:
    wall: float
    cpu: float
    first_file: float | None = None


@dataclass
class Pairs:
    label: str
    baseline: str
    ours: list[Timed] = field(default_factory=list)
    base: list[Timed] = field(default_factory=list)


def run_timed(cmd: Sequence[str], env: dict[str, str], *, stdout: int | None = subprocess.DEVNULL) -> tuple[Timed, str]:
    """One command, timed from outside; raises if it fails (a failed command has no time worth quoting)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, check=False, timeout=300)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... exited {done.returncode}: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu), done.stdout or ""


def newest_xlsx(folder: Path) -> Path | None:
    found = sorted(folder.rglob("*.xlsx"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def measure_run(env: dict[str, str], bucket: Path) -> Timed:
    """``bulletin run`` once; the delivered file's mtime, from the command's start, is its first-file time."""
    started = time.time()
    timed, _ = run_timed(
        [BULLETIN, "run", REPORT, "--recipient", RECIPIENT, "--format", "xlsx", "--param", f"as_of={AS_OF}", "--json"],
        env,
    )
    delivered = newest_xlsx(bucket)
    if delivered is None or delivered.stat().st_mtime < started:
        raise SystemExit("bulletin run delivered no new XLSX file")
    timed.first_file = delivered.stat().st_mtime - started
    return timed


def setup(work: Path, warehouse: Path) -> dict[str, str]:
    """A state folder with a signing key; the environment every command of ours runs in."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BULLETIN_HOME": str(work / "home"),
        "BULLETIN_WAREHOUSE_URL": str(warehouse),
        "PREFECT_HOME": str(work / "prefect-client"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    env.pop("PREFECT_API_URL", None)
    run_timed([BULLETIN, "keys", "generate"], env)
    return env


def bench(pairs: int, work: Path) -> list[Pairs]:
    warehouse = ensure_warehouse()
    env = setup(work, warehouse)
    python = sys.executable
    token = run_timed(
        [BULLETIN, "token", "mint", "--recipient", "bench", "--dataset", "sales", "--filter", "region=EMEA-North"],
        env,
        stdout=subprocess.PIPE,
    )[1].strip()
    query = [BULLETIN, "query", "--token", token, "--dataset", "sales", "--filter", "country=Sweden", "--limit", "1000"]
    raw_query = [python, "-c", RAW_QUERY, str(warehouse)]
    if run_timed(query, env, stdout=subprocess.PIPE)[1] != run_timed(raw_query, env, stdout=subprocess.PIPE)[1]:
        raise SystemExit("bulletin query and the raw DuckDB script printed different CSV")
    results = [
        Pairs("bulletin --help", "python -c pass"),
        Pairs("bulletin query (1,000 rows, CSV)", "raw DuckDB script, same SQL and CSV"),
        Pairs("bulletin run, 1 recipient, XLSX", "raw DuckDB + XlsxWriter script"),
    ]
    for _ in range(pairs):
        for entry, ours, base in (
            (results[0], [BULLETIN, "--help"], [python, "-c", "pass"]),
            (results[1], query, raw_query),
        ):
            entry.ours.append(run_timed(ours, env)[0])
            entry.base.append(run_timed(base, env)[0])
    with running_prefect_server(work / "prefect-server") as api_url:
        run_env = {**env, "PREFECT_API_URL": api_url}
        bucket = work / "home" / "bucket"
        measure_run(run_env, bucket)  # warm-up, not counted: the server's first flow run creates its tables' rows
        raw_xlsx = [python, "-c", RAW_XLSX, str(warehouse), str(work / "raw.xlsx"), AS_OF]
        for _ in range(pairs):
            results[2].ours.append(measure_run(run_env, bucket))
            results[2].base.append(run_timed(raw_xlsx, env)[0])
    return results


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_results(results: list[Pairs], pairs: int) -> None:
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} at end")
    print(f"{pairs} pairs per command, A B A B ...; medians (wall and CPU seconds); A/B: the median of per-pair ratios")
    print()
    header = f"| {'command (A)':34} | {'baseline (B)':38} | A wall | B wall | A-B wall | A/B wall | A cpu | B cpu |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for entry in results:
        a_wall, b_wall = median([t.wall for t in entry.ours]), median([t.wall for t in entry.base])
        ratio = median([a.wall / b.wall for a, b in zip(entry.ours, entry.base, strict=True)])
        print(
            f"| {entry.label:34} | {entry.baseline:38} | {a_wall:6.2f} | {b_wall:6.2f} | {a_wall - b_wall:8.2f} | "
            f"{ratio:7.1f}x | {median([t.cpu for t in entry.ours]):5.2f} | {median([t.cpu for t in entry.base]):5.2f} |"
        )
    runs = results[2].ours
    firsts = [t.first_file for t in runs if t.first_file is not None]
    print()
    print(
        f"bulletin run: first file after {median(firsts):.2f} s (min {min(firsts):.2f}, max {max(firsts):.2f}); "
        f"command exited after {median([t.wall for t in runs]):.2f} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 pairs per command, for a smoke run")
    parser.add_argument("--pairs", type=int, default=None, help="pairs per command (default 7, quick 3)")
    args = parser.parse_args(argv)
    pairs = args.pairs or (3 if args.quick else 7)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        results = bench(pairs, Path(folder))
    print_results(results, pairs)


if __name__ == "__main__":
    main()
