"""bench/bench_s3_put.py runs end to end, over plain HTTP and over HTTPS with moto's throwaway certificate
(bench_delivery.moto_server's ``tls``): the old put, ours (and ours through obstore over HTTP) and a bare connection,
each with client and moto CPU per put."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bulletin.settings import PROJECT_ROOT


@pytest.mark.parametrize("https", [True, False])
def test_the_s3_put_benchmark_runs(https: bool) -> None:
    """Over HTTPS the fast path declines (the throwaway certificate is an AWS_CA_BUNDLE) and says so after the
    table; over plain HTTP it is one more way."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_s3_put", "--puts", "10", "--rounds", "1", "--size", "2000"]
        + (["--https"] if https else []),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == f"10 puts per way, 2000 bytes, {'https' if https else 'http'}"
    end = next(i for i, line in enumerate(lines) if line.startswith("load average"))
    rows = {line[:34].strip(): line[34:].split() for line in lines[2:end]}  # the way, padded to 34 characters
    fast = "ours through obstore"
    assert set(rows) == {"old", "ours", "connect"} | (set() if https else {fast})
    assert rows["old"][1] == "1.00"
    assert float(rows["ours"][0]) > 0  # client ms (moto's CPU is read in 10 ms ticks: ten small puts may show 0)
    if https:
        assert lines[end + 1] == f"{fast}: not measured (a CA bundle is configured for an https endpoint)"
    else:
        assert float(rows[fast][0]) > 0
