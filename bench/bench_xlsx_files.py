"""Small-file XLSX cost and deflate choices: what a delivery's renderer pays per file.

    PYTHONPATH=. .venv/bin/python -m bench.bench_xlsx_files              # 200 files of 1,000 rows, and deflate
    PYTHONPATH=. .venv/bin/python -m bench.bench_xlsx_files --chart      # the same files with the Summary's chart
    PYTHONPATH=. .venv/bin/python -m bench.bench_xlsx_files --chart --rows 1000000 --files 1 --no-deflate

Per file: CPU and wall milliseconds of ``open_writer`` + ``write_batch`` + ``close`` for 1,000 rows of
``bench.bench_render``'s data, each file for another recipient, after 5 warm-up files. CPU time is the figure to
compare on a busy machine. To compare with an older commit, run the same file against that commit's tree
(``git archive COMMIT | tar -x -C /tmp/old``, then ``PYTHONPATH=/tmp/old`` with this file copied in).
Deflate: the 100,000-row data sheet's XML in 8,192-row pieces through each available deflate (zlib, and python-isal
and zlib-ng when importable), best of 3.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from bench.bench_render import SCHEMA, batches, bench_ctx


def per_file(files: int, chart: bool, rows: int = 1_000) -> tuple[float, float, int]:
    """(CPU ms, wall ms, bytes of one file) per file of ``rows`` rows."""
    from tasks.render import open_writer

    ctx = bench_ctx() if chart else dataclasses.replace(bench_ctx(), chart=None)
    folder, data = Path(tempfile.mkdtemp()), list(batches(rows))

    def one(i: int) -> None:
        writer = open_writer("xlsx", folder / f"f{i}.xlsx", SCHEMA, dataclasses.replace(ctx, recipient=f"r{i}@x.org"))
        for batch in data:
            writer.write_batch(batch)
        writer.close()

    for i in range(5 if rows <= 10_000 else 0):  # warm-up, for small files only
        one(i)
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(files):
        one(i)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / files * 1000, wall / files * 1000, (folder / "f0.xlsx").stat().st_size


def sheet_pieces(rows: int) -> list[bytes]:
    from tasks.render.sanitize import column_kind
    from tasks.render.xlsx import Styles, rows_xml

    kinds, pieces, first = [column_kind(f.type) for f in SCHEMA], [], 2
    for batch in batches(rows):
        for start in range(0, batch.num_rows, 8_192):
            part = batch.slice(start, 8_192)
            pieces.append(bytes(rows_xml(part, kinds, first, Styles(1, 2, 3))))
            first += part.num_rows
    return pieces


def deflate(module: Any, level: int, pieces: list[bytes]) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(3):
        start = time.perf_counter()
        compressor = module.compressobj(level, module.DEFLATED, -15)
        size = sum(len(compressor.compress(p)) for p in pieces) + len(compressor.flush())
        best = min(best, time.perf_counter() - start)
    return best * 1000, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rows", type=int, default=1_000)
    parser.add_argument("--chart", action="store_true", help="files with the Summary's chart")
    parser.add_argument("--no-deflate", action="store_true", help="skip the deflate comparison")
    args = parser.parse_args()
    cpu, wall, size = per_file(args.files, args.chart, args.rows)
    label = f"{args.rows:,}-row file{' with chart' if args.chart else ''}"
    print(f"| {label} | {cpu:.2f} ms CPU | {wall:.2f} ms wall | {size:,} B |", flush=True)
    if args.no_deflate:
        return
    pieces = sheet_pieces(100_000)
    print(f"deflate of {sum(map(len, pieces)) / 1e6:.1f} MB of sheet XML:")
    candidates = [("zlib", "zlib", (1, 6)), ("isal", "isal.isal_zlib", (1, 2)), ("zlib-ng", "zlib_ng.zlib_ng", (1, 2))]
    for label, name, levels in candidates:
        try:
            module = zlib if name == "zlib" else importlib.import_module(name)
        except ImportError:
            print(f"| {label} | not installed |")
            continue
        for level in levels:
            ms, out = deflate(module, level, pieces)
            print(f"| {label} level {level} | {ms:.0f} ms | {out / 1e6:.2f} MB |")


if __name__ == "__main__":
    main()
