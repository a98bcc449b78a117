"""XLSX cell building: CPU of ``write_batch`` and ``close`` per 1,000-row file of the delivery benchmark's sales rows,
this tree against a baseline tree in the same run.

    git archive main | tar -x -C /tmp/base     # the baseline: any commit's tree
    PYTHONPATH=. .venv/bin/python -m bench.bench_xlsx_cells --baseline /tmp/base            # 7 rounds of 100 files
    PYTHONPATH=. .venv/bin/python -m bench.bench_xlsx_cells --baseline /tmp/base --rounds 3 --files 50   # quick

The rows are ``bench.bench_delivery``'s: 11 columns (order id, date, six text columns, quantity, two decimals) of
one account's date window each, about 1,000 rows, the shape a delivery renders. Each round runs a child process per
tree, alternately, so both see the same load; each child writes ``--files`` files (after 5 unmeasured ones) and
reports the CPU time of its thread in ``write_batch`` and in ``close``. The figures to compare are the medians'
ratios: on a shared machine the absolute numbers move with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow.ipc as ipc

SAMPLES = 10  # recipients' row sets, written in turn


def sales_batches(path: Path) -> None:
    """The rows of SAMPLES recipients of the delivery benchmark, one batch each, into an Arrow file at ``path``."""
    import duckdb

    from bench.bench_delivery import COLUMNS, all_windows, ensure_warehouse, pick_scopes

    warehouse = ensure_warehouse()
    scopes = pick_scopes(all_windows(warehouse), SAMPLES)
    sql = f"SELECT {', '.join(COLUMNS)} FROM sales WHERE account_id = $a AND order_date >= $s AND order_date < $e"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = [con.sql(sql, params={"a": s.account_id, "s": s.start, "e": s.end}).to_arrow_table() for s in scopes]
    with ipc.new_file(str(path), tables[0].schema) as out:
        for table in tables:
            out.write_batch(table.combine_chunks().to_batches()[0])


def child(data: Path, files: int) -> dict[str, float]:
    """CPU ms per file of write_batch and close, with whatever ``tasks`` is first on the path."""
    from tasks.render import RenderContext, open_writer

    with ipc.open_file(str(data)) as reader:
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
    ctx = RenderContext(
        report_id="bench-delivery",
        title="Sales",
        description="Every sales line of one account in one date window.",
        recipient="r-00001",
        scope="account",
        generated_at=datetime(2024, 5, 1, 9, 0, tzinfo=ZoneInfo("Europe/London")),
        timezone="Europe/London",
        chart=None,
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-xlsx-cells-"))
    spent = {"write_batch": 0.0, "close": 0.0, "rows": 0.0}
    for i in range(files + 5):
        if i == 5:
            spent = dict.fromkeys(spent, 0.0)
        batch = batches[i % len(batches)]
        writer = open_writer("xlsx", folder / f"{i % 4}.xlsx", batch.schema, ctx)
        start = time.thread_time()
        writer.write_batch(batch)
        middle = time.thread_time()
        writer.close()
        spent["write_batch"] += middle - start
        spent["close"] += time.thread_time() - middle
        spent["rows"] += batch.num_rows
    return {key: value / files * (1 if key == "rows" else 1000) for key, value in spent.items()}


def run_child(tree: Path, data: Path, files: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--child", str(data), "--files", str(files)]
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="a tree to compare with (git archive COMMIT | tar -x -C DIR)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--files", type=int, default=100, help="files per child process")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.files)))
        return
    here = Path(__file__).resolve().parent.parent
    trees = {"this tree": here} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    data = Path(tempfile.mkdtemp(prefix="bench-xlsx-cells-")) / "sales.arrow"
    sales_batches(data)
    results: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    for _ in range(args.rounds):
        for label, tree in trees.items():
            results[label].append(run_child(tree, data, args.files))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}; {args.rounds} rounds x {args.files} files")
    print("| tree | rows/file | write_batch ms CPU (median, min) | close ms CPU (median, min) |")
    medians = {}
    for label, runs in results.items():
        cells = []
        for key in ("write_batch", "close"):
            values = [r[key] for r in runs]
            medians[label, key] = statistics.median(values)
            cells.append(f"{medians[label, key]:.2f}, {min(values):.2f}")
        print(f"| {label} | {runs[0]['rows']:.0f} | {cells[0]} | {cells[1]} |")
    if args.baseline:
        for key in ("write_batch", "close"):
            print(f"{key}: baseline / this tree = {medians['baseline', key] / medians['this tree', key]:.2f}x")


if __name__ == "__main__":
    main()
