"""spread(): every batch runs once, on whichever lane is free, and results come back in batch order."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from tasks.spread import Lane, spread


def test_every_batch_once_in_order_on_two_lanes() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def work(batch: int) -> int:
        with lock:
            seen.append(batch)
        return batch * 10

    with ThreadPoolExecutor(2) as fast, ThreadPoolExecutor(1) as slow:

        def slow_submit(batch: int) -> Future[int]:
            return slow.submit(lambda: (time.sleep(0.05), work(batch))[1])

        lanes = [Lane("fast", lambda b: fast.submit(work, b), 2), Lane("slow", slow_submit, 1)]
        results, counts = spread(list(range(20)), lanes, lambda future, batch: (batch, future.result()))
    assert results == [(b, b * 10) for b in range(20)]
    assert sorted(seen) == list(range(20))
    assert sum(counts.values()) == 20
    assert counts["fast"] > counts["slow"] >= 1  # the free lane takes the next batch


def test_a_lane_with_no_slots_gets_nothing_and_no_batches_is_fine() -> None:
    with ThreadPoolExecutor(1) as pool:
        lanes = [Lane("idle", lambda b: pool.submit(int, b), 0), Lane("busy", lambda b: pool.submit(int, b), 1)]
        results, counts = spread([1, 2, 3], lanes, lambda future, _: future.result())
        assert results == [1, 2, 3]
        assert counts == {"idle": 0, "busy": 3}
        assert spread([], lanes, lambda future, _: future.result()) == ([], {"idle": 0, "busy": 0})


def test_collect_sees_a_failed_batch() -> None:
    def boom(batch: int) -> int:
        raise ValueError(f"batch {batch}")

    with ThreadPoolExecutor(2) as pool:
        lanes = [Lane("pool", lambda b: pool.submit(boom, b), 2)]
        results, _ = spread([1, 2], lanes, lambda future, _: str(future.exception()))
    assert results == ["batch 1", "batch 2"]
