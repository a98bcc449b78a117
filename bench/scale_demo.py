"""``make scale-demo``: one report of many recipients over several Prefect workers on PostgreSQL, one worker killed.

    .venv/bin/python -m bench.scale_demo      # SCALE_RECIPIENTS=10000 SCALE_WORKERS=2 SCALE_KILL=1 by default

Settings (environment): ``SCALE_RECIPIENTS`` (10000), ``SCALE_WORKERS`` (2), ``SCALE_KILL`` (1; 0 kills nothing),
``SCALE_SHARD_RECIPIENTS`` (2000: BULLETIN_SHARD_RECIPIENTS of the workers; 0 runs unsharded). Everything it makes is
under ``.bulletin/scale-demo/`` (emptied at the start): the bucket folder with one folder per recipient, the workers'
and the server's logs. PostgreSQL runs from a temp folder and is deleted at the end.

Progress lines first; the last line is one JSON object (see ``bench/scale.py``). Exit status 0 only when nothing is
duplicated or missing, 2 when PostgreSQL is not installed, 1 on any other failure.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench.scale import ScaleConfig, run_scale
from bench.scale_cluster import MissingPostgres
from bulletin.settings import PROJECT_ROOT

WORK = PROJECT_ROOT / ".bulletin" / "scale-demo"
#: The warehouse to deliver from; None: the benchmarks' 1.2M-row demo warehouse (built once under bench/out/).
WAREHOUSE: Path | None = None
JSON_KEYS = (
    "recipients",
    "workers",
    "shards",
    "delivered",
    "failed",
    "duplicates",
    "missing",
    "killed_worker",
    "seconds",
    "deliveries_per_second",
)


def env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    if not raw.isdigit() or int(raw) < minimum:
        raise SystemExit(f"{name} must be a whole number of at least {minimum} (got {raw!r})")
    return int(raw)


def config_from_env() -> ScaleConfig:
    return ScaleConfig(
        recipients=env_int("SCALE_RECIPIENTS", 10_000, 1),
        workers=env_int("SCALE_WORKERS", 2, 1),
        kill=env_int("SCALE_KILL", 1, 0) > 0,
        shard_recipients=env_int("SCALE_SHARD_RECIPIENTS", 2_000, 0),
        warehouse=WAREHOUSE,
    )


def say(line: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {line}", flush=True)


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so that every started process is stopped on the way out, as for Ctrl-C


def main(work: Path = WORK) -> int:
    config = config_from_env()
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        result = run_scale(config, work, say)
    except MissingPostgres as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        say("interrupted: everything started has been stopped")
        return 130
    except (RuntimeError, AssertionError) as exc:  # a service that would not start, a deploy that failed
        say(f"failed: {exc}")
        say(f"logs: {work}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    say(f"details: {json.dumps(result['extra'])}")
    say(f"files: {work / 'home' / 'bucket'}; logs: {work}")
    print(json.dumps({key: result[key] for key in JSON_KEYS}), flush=True)
    return 1 if result["duplicates"] or result["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
