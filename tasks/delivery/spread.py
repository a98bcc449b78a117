"""Spread a large run's recipients over lanes (the flow's task threads, worker processes), one recipient at a time.

Each lane is a thread (tasks/delivery/lanes.py: one per Prefect task on the flow's threads, several in a worker
process, tasks/delivery/worker.py) that takes recipients from its own small queue, delivers each and reports it on
one shared queue. The flow's dispatcher hands the next recipient to whichever lane just reported, keeping at most
``ahead`` recipients per lane. So a lane starts work only once it says it is ready (a worker process takes a second
to import and open its services, while the threads already deliver), fast lanes take more, and every lane ends
within one delivery of the others: no batch boundaries, no idle lane while another finishes a batch.

``Dispatcher`` is the bookkeeping, pure and clock-driven: who holds what, transient failures retried after a delay,
a lane that stops early. ``dispatch`` drives it with the queues. A lane's messages, in order:
``("ready", lane)`` once, then ``("done", lane, index, result, transient)`` per recipient; the flow adds
``("ended", lane)`` when the lane's task, or its worker process, ends. ``None`` in a lane's queue tells it to stop.
"""

from __future__ import annotations

import heapq
import queue
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

R = TypeVar("R")

#: Recipients a lane holds at most. A lane takes all it holds at once, claims them in one ledger transaction and
#: renders them from one warehouse query (tasks/delivery/chunk.py), so more is cheaper per delivery (docs/benchmarks.md,
#: "One scan per lane chunk": 4 and 8 measured); it never waits for the dispatcher between two deliveries either. The
#: lanes still end together: near the end a lane holds no more than its share of what is left (``Dispatcher._fill``).
AHEAD = 8
#: Seconds before the first and second retry of a recipient whose delivery failed for a transient reason (the
#: warehouse or a destination did not answer); after that its failure is final. A small run's per-recipient tasks
#: use the same schedule for Prefect's retries (tasks.delivery.prefect_tasks.deliver_batch).
RETRY_DELAYS = (2.0, 10.0)

Send = tuple[int, int]  # (lane, recipient index)


@dataclass
class Dispatcher(Generic[R]):
    """Which lane delivers which of ``count`` recipients next. No I/O: every method returns what to send."""

    count: int
    lanes: int
    ahead: int = AHEAD
    retry_delays: tuple[float, ...] = RETRY_DELAYS
    results: list[R | None] = field(init=False)
    per_lane: list[int] = field(init=False)
    _waiting: deque[int] = field(init=False)
    _held: list[list[int]] = field(init=False)
    _ready: list[bool] = field(init=False)
    _ended: list[bool] = field(init=False)
    _attempts: list[int] = field(init=False)
    _later: list[tuple[float, int]] = field(init=False)
    _left: int = field(init=False)

    def __post_init__(self) -> None:
        self.results = [None] * self.count
        self.per_lane = [0] * self.lanes
        self._waiting = deque(range(self.count))
        self._held = [[] for _ in range(self.lanes)]
        self._ready = [False] * self.lanes
        self._ended = [False] * self.lanes
        self._attempts = [0] * self.count
        self._later = []
        self._left = self.count

    @property
    def finished(self) -> bool:
        """Every recipient has its final result."""
        return self._left == 0

    @property
    def stranded(self) -> bool:
        """Recipients are left but no lane can take them: every lane has ended."""
        return self._left > 0 and all(self._ended)

    def unfinished(self) -> list[int]:
        return [i for i, r in enumerate(self.results) if r is None]

    def ready(self, lane: int, now: float) -> list[Send]:
        self._ready[lane] = True
        return self._fill(now)

    def done(self, lane: int, index: int, result: R, *, transient: bool, now: float) -> list[Send]:
        """A lane delivered ``index``. A transient failure goes back in line after its delay, while retries last.

        A result can come after its lane was declared ended (the news of a worker's end can overtake its last
        messages): it counts all the same, and the recipient is not handed out again if it is still waiting in line.
        """
        if index in self._held[lane]:
            self._held[lane].remove(index)
        elif index in self._waiting:
            self._waiting.remove(index)
        attempt = self._attempts[index]
        if self.results[index] is not None:
            pass  # a second report of one recipient (handed out again after its lane ended): the first one counts
        elif transient and attempt < len(self.retry_delays):
            self._attempts[index] = attempt + 1
            heapq.heappush(self._later, (now + self.retry_delays[attempt], index))
        else:
            self.results[index] = result
            self.per_lane[lane] += 1
            self._left -= 1
        return self._fill(now)

    def ended(self, lane: int, now: float) -> list[Send]:
        """A lane's task ended. What it held but never reported goes to the other lanes first.

        Sending it again is safe: a delivery the lane had claimed in the ledger and perhaps sent is still claimed
        by this run, so the next lane records it as in progress and never sends it twice.
        """
        self._ended[lane] = True
        self._waiting.extendleft(reversed(self._held[lane]))
        self._held[lane] = []
        return self._fill(now)

    def tick(self, now: float) -> list[Send]:
        """Retries that fell due, to whichever lanes have room."""
        return self._fill(now)

    def next_due(self) -> float | None:
        """When the next retry is due, if one is waiting."""
        return self._later[0][0] if self._later else None

    def _fill(self, now: float) -> list[Send]:
        while self._later and self._later[0][0] <= now:
            self._waiting.append(heapq.heappop(self._later)[1])
        sends: list[Send] = []
        cap = self._share()
        for lane in range(self.lanes):
            while self._waiting and self._ready[lane] and not self._ended[lane] and len(self._held[lane]) < cap:
                index = self._waiting.popleft()
                self._held[lane].append(index)
                sends.append((lane, index))
        return sends

    def _share(self) -> int:
        """How many recipients a lane may hold now: ``ahead``, but no more than its share of those not yet delivered
        (waiting or held) over the lanes still running, so that near the end no lane holds a long chunk while the
        others have nothing left: the lanes end within about one delivery of each other whatever ``ahead`` is."""
        running = sum(not ended for ended in self._ended) or 1
        left = len(self._waiting) + sum(len(held) for held in self._held)
        return max(1, min(self.ahead, -(-left // running)))


class Source(Protocol):
    def get(self, block: bool = True, timeout: float | None = None) -> Any: ...


class Sink(Protocol):
    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None: ...


def dispatch(
    dispatcher: Dispatcher[R],
    lanes: Sequence[Sink],
    reports: Source,
    *,
    clock: Callable[[], float],
    on_result: Callable[[int, R], None],
) -> None:
    """Run ``dispatcher`` until every recipient is finished or every lane has ended, then stop every lane.

    ``lanes[i]`` is lane i's queue; ``reports`` carries the lanes' messages (module docstring). ``on_result`` sees each
    final result as it arrives. Recipients left when every lane ended stay unfinished; the caller records them.
    """
    try:
        while not dispatcher.finished and not dispatcher.stranded:
            due = dispatcher.next_due()
            try:
                message = reports.get(timeout=None if due is None else max(0.0, due - clock()))
            except queue.Empty:
                message = None
            now = clock()
            if message is None:  # a retry fell due
                sends = dispatcher.tick(now)
            elif message[0] == "ready":
                sends = dispatcher.ready(message[1], now)
            elif message[0] == "done":
                _, lane, index, result, transient = message
                sends = dispatcher.done(lane, index, result, transient=transient, now=now)
                if dispatcher.results[index] is result:
                    on_result(index, result)
            else:  # "ended"
                sends = dispatcher.ended(message[1], now)
            for lane, index in sends:
                lanes[lane].put(index)
    finally:
        for lane_queue in lanes:
            lane_queue.put(None)
