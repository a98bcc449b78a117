"""Spread a run's batches over lanes of workers (the flow's threads, worker processes), whichever lane is free.

A lane is a way to start one batch (it returns a future) and how many batches it may have in flight. Each lane gets
its first batches at once; after that, the lane whose batch finished takes the next one. So the flow's own threads
deliver from the first second while worker processes are still starting, and a slow lane never holds the rest of
the run back. Results come back in batch order.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

B = TypeVar("B")
R = TypeVar("R")


class Future(Protocol):
    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...


@dataclass(frozen=True)
class Lane(Generic[B]):
    name: str
    submit: Callable[[B], Future]
    slots: int


def spread(
    batches: Sequence[B], lanes: Sequence[Lane[B]], collect: Callable[[Any, B], R]
) -> tuple[list[R], dict[str, int]]:
    """Run every batch on some lane; return ``collect(future, batch)`` per batch, in order, and batches per lane."""
    finished: queue.SimpleQueue[tuple[int, int, Any]] = queue.SimpleQueue()
    results: list[R | None] = [None] * len(batches)
    counts = {lane.name: 0 for lane in lanes}
    upcoming = iter(range(len(batches)))

    def start(lane_index: int) -> bool:
        index = next(upcoming, None)
        if index is None:
            return False
        lane = lanes[lane_index]
        counts[lane.name] += 1
        future = lane.submit(batches[index])
        future.add_done_callback(lambda f: finished.put((index, lane_index, f)))
        return True

    for lane_index, lane in enumerate(lanes):
        for _ in range(lane.slots):
            if not start(lane_index):
                break
    for _ in range(len(batches)):
        index, lane_index, future = finished.get()
        results[index] = collect(future, batches[index])
        start(lane_index)
    return cast(list[R], results), counts
