"""Renderer benchmarks: each of ours beside its baseline, in the same run, each case in a fresh process.

    .venv/bin/python -m bench.bench_render            # full sizes (a few minutes on 2 cores)
    .venv/bin/python -m bench.bench_render --quick    # smaller sizes, a smoke run
    .venv/bin/python -m bench.bench_render --only xlsx --repeat 1

Data: deterministic synthetic rows, 10 columns of mixed types (int64, int32, float64 with nulls, strings with
quotes, commas, line breaks, non-ASCII and formula-looking text, date32, timestamp), generated inside the measured
process as a stream of record batches, so the peak memory reflects the renderer, not a table held in memory.

Seconds are the time spent in the rendering calls only (data generation is excluded: for streaming cases the
generator's time between batches is not counted). Peak MB is the child's ``ru_maxrss``; "floor MB" is the same
process after imports, before any data. Each case runs ``--repeat`` times; the best time and the highest peak
are kept. Optional alternatives (pyexcelerate, rustpy-xlsxwriter) run only when importable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BATCH_ROWS = 50_000
CITIES = ["London", "Lisbon", "São Paulo", "Zürich", "New York, NY", 'The "Hague"', "Kraków", "Athína"]
NOTES = ["", "ok", "=1+1", "-2+3", "needs follow-up, urgent", "line\nbreak", "@cmd", "plain text note"]
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("customer", pa.string()),
        ("city", pa.string()),
        ("order_date", pa.date32()),
        ("shipped_at", pa.timestamp("us")),
        ("quantity", pa.int32()),
        ("unit_price", pa.float64()),
        ("amount", pa.float64()),
        ("discount", pa.float64()),
        ("note", pa.string()),
    ]
)


def batches(rows: int, batch_rows: int = BATCH_ROWS, seed: int = 7) -> Iterator[pa.RecordBatch]:
    """The same ``rows`` rows on every call, in batches of ``batch_rows``."""
    cities, notes = pa.array(CITIES), pa.array(NOTES)
    for index, start in enumerate(range(0, rows, batch_rows)):
        n = min(batch_rows, rows - start)
        rng = np.random.default_rng(seed + index)
        ids = np.arange(start, start + n, dtype=np.int64)
        unit = np.round(rng.random(n) * 100, 2)
        columns = [
            pa.array(ids),
            pc.binary_join_element_wise("Customer ", pa.array(ids % 9973).cast(pa.string()), ""),
            cities.take(pa.array(rng.integers(0, len(CITIES), n))),
            pa.array(rng.integers(18_000, 20_000, n).astype(np.int32)).cast(pa.date32()),
            pa.array(rng.integers(1_600_000_000_000_000, 1_700_000_000_000_000, n)).cast(pa.timestamp("us")),
            pa.array(rng.integers(-5, 100, n).astype(np.int32)),
            pa.array(unit),
            pa.array(np.round(unit * rng.integers(1, 20, n), 2)),
            pa.array(np.round(rng.random(n), 3), mask=rng.random(n) < 0.1),
            notes.take(pa.array(rng.integers(0, len(NOTES), n))),
        ]
        yield pa.record_batch(columns, schema=SCHEMA)


def bench_ctx() -> Any:
    """A report as readers get it: declared formats (money, counts, a percent, dates) and a totals row."""
    from bulletin.datasets import ColumnFormat
    from tasks.render import ChartData, RenderContext

    euros = ColumnFormat(kind="currency", currency="EUR")
    formats = {"order_date": ColumnFormat(kind="date"), "quantity": ColumnFormat(kind="integer")}
    formats |= {"unit_price": euros, "amount": euros, "discount": ColumnFormat(kind="percent")}
    return RenderContext(
        report_id="bench",
        title="Orders by city",
        description="Synthetic benchmark data.",
        recipient="Bench <bench@example.com>",
        scope="region = 'EU'",
        generated_at=datetime(2024, 5, 1, 9, 0, tzinfo=ZoneInfo("Europe/London")),
        timezone="Europe/London",
        chart=ChartData("Amount by city", "City", "Amount", CITIES, [float(i * 10) for i in range(len(CITIES))]),
        column_formats=formats,
        totals=("quantity", "amount"),
    )


# --- cases: each returns the seconds spent rendering ------------------------------------------------------------


def timed_stream(open_: Callable[[], Any], write: Callable[[Any, pa.RecordBatch], None], rows: int) -> float:
    """Time open, every write and close of a streaming writer, not the generation of its batches."""
    spent = 0.0
    start = time.perf_counter()
    writer = open_()
    spent += time.perf_counter() - start
    for batch in batches(rows):
        start = time.perf_counter()
        write(writer, batch)
        spent += time.perf_counter() - start
    start = time.perf_counter()
    writer.close()
    return spent + time.perf_counter() - start


def ours(fmt: str) -> Callable[[int, Path], float]:
    def run(rows: int, path: Path) -> float:
        from tasks.render import open_writer

        ctx = bench_ctx()
        return timed_stream(lambda: open_writer(fmt, path, SCHEMA, ctx), lambda w, b: w.write_batch(b), rows)

    return run


def pyarrow_csv(rows: int, path: Path) -> float:
    import pyarrow.csv as pacsv

    return timed_stream(lambda: pacsv.CSVWriter(str(path), SCHEMA), lambda w, b: w.write_batch(b), rows)


def whole_frame(rows: int) -> Any:
    return pa.Table.from_batches(list(batches(rows)), SCHEMA).to_pandas()


def pandas_csv(rows: int, path: Path) -> float:
    frame = whole_frame(rows)
    start = time.perf_counter()
    frame.to_csv(path, index=False)
    return time.perf_counter() - start


def pandas_openpyxl(rows: int, path: Path) -> float:
    frame = whole_frame(rows)
    start = time.perf_counter()
    frame.to_excel(path, engine="openpyxl", index=False)
    return time.perf_counter() - start


def xlsxwriter_constant_memory(rows: int, path: Path) -> float:
    import xlsxwriter

    state = {"row": 1}

    def open_() -> Any:
        book = xlsxwriter.Workbook(str(path), {"constant_memory": True, "default_date_format": "yyyy-mm-dd"})
        book.add_worksheet("Data").write_row(0, 0, SCHEMA.names)
        return book

    def write(book: Any, batch: pa.RecordBatch) -> None:
        sheet = book.worksheets()[0]
        for values in zip(*(c.to_pylist() for c in batch.columns), strict=True):
            sheet.write_row(state["row"], 0, values)
            state["row"] += 1

    return timed_stream(open_, write, rows)


def rustpy_xlsxwriter(rows: int, path: Path) -> float:
    from rustpy_xlsxwriter import FastExcel  # optional: only when installed

    def records() -> Iterator[dict[str, object]]:
        for batch in batches(rows):
            yield from batch.to_pylist()

    start = time.perf_counter()  # includes data generation: the library pulls rows from a generator
    FastExcel(str(path)).freeze(row=1, col=0).sheet("Data", records()).save()
    return time.perf_counter() - start


def pyexcelerate(rows: int, path: Path) -> float:
    from pyexcelerate import Workbook  # optional: only when installed

    data = [SCHEMA.names] + [list(r.values()) for b in batches(rows) for r in b.to_pylist()]
    start = time.perf_counter()
    book = Workbook()
    book.new_sheet("Data", data=data)
    book.save(str(path))
    return time.perf_counter() - start


def platypus_longtable(rows: int, path: Path) -> float:
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import LongTable, Paragraph, SimpleDocTemplate, TableStyle

    table = pa.Table.from_batches(list(batches(rows)), SCHEMA)
    data = [list(SCHEMA.names)] + [["" if v is None else str(v) for v in r.values()] for r in table.to_pylist()]
    start = time.perf_counter()
    doc = SimpleDocTemplate(str(path), pagesize=landscape(A4), invariant=1)
    grid = LongTable(data, repeatRows=1)
    grid.setStyle(TableStyle([("FONT", (0, 0), (-1, -1), "Helvetica", 7)]))
    doc.build([Paragraph("Orders by city", getSampleStyleSheet()["Title"]), grid])
    return time.perf_counter() - start


def generate_only(rows: int, path: Path) -> float:
    start = time.perf_counter()
    for _ in batches(rows):
        pass
    return time.perf_counter() - start


CASES: dict[str, tuple[str, Callable[[int, Path], float]]] = {
    "pandas to_csv (baseline)": ("csv", pandas_csv),
    "pyarrow.csv.CSVWriter (reference)": ("csv", pyarrow_csv),
    "bulletin csv": ("csv", ours("csv")),
    "pandas to_excel openpyxl (baseline)": ("xlsx", pandas_openpyxl),
    "xlsxwriter constant_memory": ("xlsx", xlsxwriter_constant_memory),
    "rustpy-xlsxwriter": ("xlsx", rustpy_xlsxwriter),
    "pyexcelerate": ("xlsx", pyexcelerate),
    "bulletin xlsx": ("xlsx", ours("xlsx")),
    "platypus LongTable (baseline)": ("pdf", platypus_longtable),
    "bulletin pdf": ("pdf", ours("pdf")),
    "data generation only": ("gen", generate_only),
}

# (case, full rows, quick rows); the first case of a renderer is its baseline, "reference" marks the CSV target.
PLAN: dict[str, list[tuple[str, int, int]]] = {
    "csv": [
        ("pandas to_csv (baseline)", 1_000_000, 100_000),
        ("pyarrow.csv.CSVWriter (reference)", 1_000_000, 100_000),
        ("bulletin csv", 1_000_000, 100_000),
    ],
    "xlsx": [
        ("pandas to_excel openpyxl (baseline)", 100_000, 10_000),
        ("xlsxwriter constant_memory", 100_000, 10_000),
        ("rustpy-xlsxwriter", 100_000, 10_000),
        ("pyexcelerate", 100_000, 10_000),
        ("bulletin xlsx", 100_000, 10_000),
        ("bulletin xlsx", 1_000_000, 100_000),
    ],
    "pdf": [
        ("platypus LongTable (baseline)", 10_000, 2_000),
        ("bulletin pdf", 10_000, 2_000),
        ("bulletin pdf", 100_000, 10_000),
    ],
    "gen": [("data generation only", 1_000_000, 100_000)],
}


def run_child(case: str, rows: int) -> None:
    """Inside the fresh process: run one case and print one JSON line."""
    floor_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fmt, run = CASES[case]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, f"out.{fmt}")
        try:
            seconds = run(rows, path)
        except ImportError as exc:
            print(json.dumps({"skipped": f"not installed: {exc.name}"}))
            return
        size = path.stat().st_size if path.exists() else 0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "floor_mb": floor_mb, "bytes": size}))


def measure(case: str, rows: int, repeat: int) -> dict[str, float | str]:
    best: dict[str, float | str] = {}
    for _ in range(repeat):
        command = [sys.executable, "-m", "bench.bench_render", "--child", case, "--rows", str(rows)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=Path(__file__).parent.parent)
        if done.returncode != 0:
            return {"skipped": f"failed: {done.stderr.strip().splitlines()[-1:]}"}
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if "skipped" in result:
            return dict(result)
        if not best or result["seconds"] < best["seconds"]:
            best = {**result, "peak_mb": max(result["peak_mb"], float(best.get("peak_mb", 0)))}
        else:
            best["peak_mb"] = max(float(best["peak_mb"]), result["peak_mb"])
    return best


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor() or "unknown",
    )
    libs = ["pyarrow", "pandas", "xlsxwriter", "openpyxl", "reportlab", "rl_accel", "numpy"]
    versions = []
    for lib in [*libs, "pyexcelerate", "rustpy-xlsxwriter"]:
        try:
            versions.append(f"{lib} {metadata.version(lib)}")
        except metadata.PackageNotFoundError:
            if lib in libs:
                versions.append(f"{lib} (not installed)")
    return (
        f"- date: {datetime.now(UTC):%Y-%m-%d}\n- machine: {os.cpu_count()} cores (nproc), {cpu}\n"
        f"- Python {platform.python_version()}; {', '.join(versions)}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--repeat", type=int, default=None, help="runs per case (default 3, quick 1)")
    parser.add_argument("--only", default="csv,xlsx,pdf,gen", help="comma-separated renderers to run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.rows)
        return
    repeat = args.repeat or (1 if args.quick else 3)
    print(f"# Renderer benchmark ({'quick' if args.quick else 'full'}, best of {repeat})\n\n{machine()}\n")
    for group in args.only.split(","):
        print(f"\n## {group}\n\n| case | rows | seconds | peak MB | floor MB | file MB | vs baseline |")
        print("|---|---:|---:|---:|---:|---:|---|")
        baseline: dict[int, float] = {}
        reference: dict[int, float] = {}
        for case, full, quick in PLAN[group]:
            rows = quick if args.quick else full
            result = measure(case, rows, repeat)
            if "skipped" in result:
                print(f"| {case} | {rows:,} | - | - | - | - | {result['skipped']} |", flush=True)
                continue
            seconds = float(result["seconds"])
            if "(baseline)" in case:
                baseline[rows] = seconds
            if "(reference)" in case:
                reference[rows] = seconds
            notes = []
            if rows in baseline and "(baseline)" not in case:
                notes.append(f"{baseline[rows] / seconds:.1f}x faster than baseline")
            if rows in reference and "(reference)" not in case:
                notes.append(f"{seconds / reference[rows]:.2f}x pyarrow's time")
            print(
                f"| {case} | {rows:,} | {seconds:.2f} | {float(result['peak_mb']):.0f} | "
                f"{float(result['floor_mb']):.0f} | {float(result['bytes']) / 1e6:.1f} | {'; '.join(notes)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
