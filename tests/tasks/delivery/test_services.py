"""How many worker processes a run uses beside the flow's own threads."""

from __future__ import annotations

import os

from tasks.delivery.services import PROCESSES_FROM_RECIPIENTS, delivery_processes


def test_small_runs_use_no_worker_process() -> None:
    assert delivery_processes(None, PROCESSES_FROM_RECIPIENTS - 1) == 0
    assert delivery_processes(4, 8) == 0


def test_large_runs_use_the_setting_or_one_per_core_beyond_the_first() -> None:
    assert delivery_processes(3, PROCESSES_FROM_RECIPIENTS) == 3
    assert delivery_processes(0, 10_000) == 0
    assert delivery_processes(None, 1_000) == max(1, (os.cpu_count() or 1) - 1)
