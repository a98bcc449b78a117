"""bench/bench_s3_put.py runs end to end: moto over HTTPS with its throwaway certificate (bench_delivery.moto_server's
``tls``), the old put, ours and a bare connection, each with client and moto CPU per put."""

from __future__ import annotations

import subprocess
import sys

from bulletin.settings import PROJECT_ROOT


def test_the_s3_put_benchmark_runs_over_https() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_s3_put", "--puts", "10", "--rounds", "1", "--size", "2000", "--https"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "10 puts per way, 2000 bytes, https"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if not line.startswith("load average")}
    assert set(rows) == {"old", "ours", "connect"}
    assert rows["old"][1] == "1.00"
    assert float(rows["ours"][0]) > 0  # client ms (moto's CPU is read in 10 ms ticks: ten small puts may show 0)
