"""Scale benchmark: one report of 10,000 recipients on one Prefect worker and on two, sharded and not.

    .venv/bin/python -m bench.bench_scale            # 10,000 recipients, three cases (about 15 minutes on 2 cores)
    .venv/bin/python -m bench.bench_scale --quick    # 1,000 recipients in shards of 250: a smoke run

Each case is a whole ``make scale-demo`` without the kill (``bench/scale.py``), from nothing: its own PostgreSQL, a
Prefect server on it, the process pool, N ``prefect worker`` processes, one run of the report. The cases:

1. unsharded on one worker (BULLETIN_SHARD_RECIPIENTS=0): the baseline, today's one-run path;
2. sharded on one worker: the same run split into shards, so the ratio to the baseline is the cost of sharding;
3. sharded on two workers: what a second worker adds. On one 2-core machine the two workers share the same two
   cores, so this measures the overhead of spreading, not the gain of a second machine.

Seconds: from ``run_deployment`` to the parent run's final state (a worker's poll and its subprocess start
included). Peak MB: each worker's whole process tree (the worker, its flow-run processes and their delivery
processes), sampled every second; RSS after every tenth of the deliveries shows whether it stays flat. Balance: the
deliveries each worker's flow runs recorded in the ledger. Every case is counted from the bucket and the ledger and
must have no duplicate and no missing delivery.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bench_delivery import OUT, machine
from bench.scale import ScaleConfig, run_scale


@dataclass(frozen=True)
class Case:
    label: str
    config: ScaleConfig


def plan(recipients: int, shard_recipients: int) -> list[Case]:
    base = ScaleConfig(recipients=recipients, kill=False, shard_recipients=shard_recipients)
    return [
        Case(
            "unsharded, 1 worker (baseline)",
            ScaleConfig(recipients=recipients, workers=1, kill=False, shard_recipients=0),
        ),
        Case("sharded, 1 worker", ScaleConfig(**{**base.__dict__, "workers": 1})),
        Case("sharded, 2 workers", ScaleConfig(**{**base.__dict__, "workers": 2})),
    ]


def saved_result(case: Case) -> Path:
    config = case.config
    return OUT / f"scale-{config.recipients}-{config.workers}w-{config.shard_recipients}.json"


def measure(case: Case, work: Path) -> dict[str, Any]:
    print(f"\n## {case.label}\n", flush=True)
    result = run_scale(case.config, work, say=lambda line: print(f"    {line}", flush=True))
    if result["duplicates"] or result["missing"] or result["failed"]:
        raise SystemExit(f"{case.label}: {json.dumps(result)}")
    saved_result(case).write_text(json.dumps(result))
    return result


def flat(rss: list[float]) -> str:
    """The RSS from the second tenth (the first is taken while the processes start) to the ninth (the last may be
    taken once the run has ended and its delivery processes are gone)."""
    if len(rss) < 3:
        return "-"
    return f"{rss[1]:.0f} -> {rss[-2]:.0f}"


def table(results: list[tuple[Case, dict[str, Any]]]) -> None:
    baseline = results[0][1]["deliveries_per_second"]
    print("\n| case | recipients | shards (runs) | seconds | deliveries/s | vs baseline | first delivery s |", end="")
    print(" deliveries per worker | peak MB per worker | RSS 2nd -> 9th tenth |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
    for case, r in results:
        x = r["extra"]
        balance = ", ".join(f"{n} {c:,}" for n, c in x["by_worker"].items())
        peak = ", ".join(f"{n} {mb:.0f}" for n, mb in x["peak_mb"].items())
        rss = ", ".join(f"{n} {flat(s)}" for n, s in x["rss_by_tenth"].items())
        print(
            f"| {case.label} | {r['recipients']:,} | {r['shards']} ({x['shard_runs']}) | {r['seconds']:.1f} | "
            f"{r['deliveries_per_second']:.1f} | {r['deliveries_per_second'] / baseline:.2f}x | "
            f"{x['first_delivery_s']} | {balance} | {peak} | {rss} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 recipients in shards of 250")
    parser.add_argument("--recipients", type=int, default=None, help="recipients (default 10000; quick 1000)")
    parser.add_argument("--shard-recipients", type=int, default=None, help="shard size (default 2000; quick 250)")
    parser.add_argument(
        "--cases",
        type=lambda text: {int(n) for n in text.split(",")},
        default=None,
        help="run only these cases (1-3, comma-separated); the others are read from their last result in bench/out/",
    )
    args = parser.parse_args(argv)
    recipients = args.recipients or (1_000 if args.quick else 10_000)
    shard = args.shard_recipients or (250 if args.quick else 2_000)
    if recipients < 1 or shard < 1:
        raise SystemExit("--recipients and --shard-recipients must be at least 1")
    print(f"# Scale benchmark ({'quick' if args.quick else 'full'})\n\n{machine()}")
    print(f"- {recipients:,} recipients, one small CSV each to the local bucket; shards of {shard:,}")
    OUT.mkdir(parents=True, exist_ok=True)
    # Each case's folder (bucket, logs) is kept under bench/out/ until the next run, for a look after a failure.
    results = []
    for index, case in enumerate(plan(recipients, shard), start=1):
        if args.cases and index not in args.cases:
            saved = json.loads(saved_result(case).read_text())
            print(f"\n## {case.label}: not run, read from {saved_result(case)}", flush=True)
            results.append((case, saved))
        else:
            results.append((case, measure(case, OUT / f"scale-case-{index}")))
    table(results)


if __name__ == "__main__":
    main()
