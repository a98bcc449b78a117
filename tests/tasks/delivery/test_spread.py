"""Lanes (tasks/delivery/spread.py): every recipient is delivered once, by whichever lane is ready; transient failures
are retried after their delay; a lane that stops hands its work to the others; dispatch always stops every lane."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tasks.delivery.spread import Dispatcher, dispatch


def test_nothing_goes_to_a_lane_before_it_is_ready_and_each_holds_at_most_ahead() -> None:
    d: Dispatcher[str] = Dispatcher(count=5, lanes=2, ahead=2)
    assert d.ready(1, now=0.0) == [(1, 0), (1, 1)]
    assert d.ready(0, now=0.0) == [(0, 2), (0, 3)]
    assert d.done(1, 0, "r0", transient=False, now=0.0) == [(1, 4)]
    assert d.done(1, 1, "r1", transient=False, now=0.0) == []  # nothing left to hand out
    for index in (2, 3):
        d.done(0, index, f"r{index}", transient=False, now=0.0)
    assert not d.finished
    d.done(1, 4, "r4", transient=False, now=0.0)
    assert d.finished and d.results == ["r0", "r1", "r2", "r3", "r4"]
    assert d.per_lane == [2, 3]


def test_a_lane_holds_no_more_than_its_share_of_what_is_left_so_the_lanes_end_together() -> None:
    # With ahead=8 and nothing else, the first lanes ready would take 8, 8 and 4 of 20 and the last none: the run would
    # wait on a lane eight deliveries behind. Each lane's share of what is left keeps them even.
    d: Dispatcher[str] = Dispatcher(count=20, lanes=4, ahead=8)
    for lane in range(4):
        d.ready(lane, now=0.0)
    assert [len(held) for held in d._held] == [5, 5, 5, 5]
    big: Dispatcher[str] = Dispatcher(count=1000, lanes=4, ahead=8)
    for lane in range(4):
        assert len(big.ready(lane, now=0.0)) == 8  # plenty left: whole chunks of 8


def test_a_transient_failure_is_retried_after_each_delay_then_final() -> None:
    d: Dispatcher[str] = Dispatcher(count=1, lanes=1, ahead=1, retry_delays=(2.0, 10.0))
    assert d.ready(0, now=0.0) == [(0, 0)]
    assert d.done(0, 0, "timeout 1", transient=True, now=1.0) == []
    assert d.next_due() == 3.0
    assert d.tick(2.9) == []
    assert d.tick(3.0) == [(0, 0)]
    assert d.done(0, 0, "timeout 2", transient=True, now=4.0) == []
    assert d.next_due() == 14.0
    assert d.tick(14.0) == [(0, 0)]
    d.done(0, 0, "timeout 3", transient=True, now=15.0)  # retries used up: this failure is the result
    assert d.finished and d.results == ["timeout 3"]


def test_a_stopped_lane_hands_what_it_held_to_the_others_first() -> None:
    d: Dispatcher[str] = Dispatcher(count=6, lanes=2, ahead=2)
    d.ready(0, now=0.0)  # holds 0 and 1
    d.ready(1, now=0.0)  # holds 2 and 3
    assert d.ended(0, now=0.0) == []  # lane 1 is full: 0 and 1 wait at the head of the line
    assert d.done(1, 2, "r2", transient=False, now=0.0) == [(1, 0)]
    assert d.done(1, 3, "r3", transient=False, now=0.0) == [(1, 1)]
    assert not d.stranded


def test_a_result_that_comes_after_its_lane_ended_counts_once() -> None:
    d: Dispatcher[str] = Dispatcher(count=3, lanes=2, ahead=2)
    d.ready(0, now=0.0)  # holds 0 and 1
    d.ready(1, now=0.0)  # holds 2
    d.ended(0, now=0.0)  # 0 and 1 wait again
    assert d.done(0, 0, "r0 (late)", transient=False, now=0.0) == []  # 0 no longer waits
    assert d.done(1, 2, "r2", transient=False, now=0.0) == [(1, 1)]  # only 1 is handed out again
    d.done(1, 1, "r1", transient=False, now=0.0)
    assert d.finished and d.results == ["r0 (late)", "r1", "r2"]
    d.done(1, 1, "r1 again", transient=False, now=0.0)
    assert d.results[1] == "r1" and d.per_lane == [1, 2]


def test_when_every_lane_has_stopped_the_rest_is_stranded_not_waited_for() -> None:
    d: Dispatcher[str] = Dispatcher(count=3, lanes=2)
    d.ready(0, now=0.0)
    d.done(0, 0, "r0", transient=False, now=0.0)
    d.ended(0, now=0.0)
    assert not d.stranded  # lane 1 may still start
    d.ended(1, now=0.0)  # it never said it was ready
    assert d.stranded and d.unfinished() == [1, 2]


def _lane(
    lane: int, todo: queue.SimpleQueue[Any], reports: queue.SimpleQueue[Any], work: Callable[[int], tuple[str, bool]]
) -> None:
    reports.put(("ready", lane))
    while (index := todo.get()) is not None:
        result, transient = work(index)
        reports.put(("done", lane, index, result, transient))


def _run(lanes: int, count: int, work: Callable[[int, int], tuple[str, bool]], **kwargs: Any) -> Dispatcher[str]:
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
    todos: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(lanes)]
    threads = [
        threading.Thread(target=_lane, args=(n, todos[n], reports, lambda i, n=n: work(n, i))) for n in range(lanes)
    ]
    for thread in threads:
        thread.start()
    d: Dispatcher[str] = Dispatcher(count=count, lanes=lanes, **kwargs)
    seen: list[int] = []
    dispatch(d, todos, reports, clock=time.monotonic, on_result=lambda i, _: seen.append(i))
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive(), "dispatch stops every lane"
    assert sorted(seen) == [i for i, r in enumerate(d.results) if r is not None]
    return d


def test_dispatch_delivers_each_once_on_real_threads_and_the_faster_lane_takes_more() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def work(lane: int, index: int) -> tuple[str, bool]:
        with lock:
            calls.append(index)
        time.sleep(0.02 if lane == 0 else 0.002)
        return f"r{index}", False

    d = _run(2, 60, work)
    assert sorted(calls) == list(range(60))
    assert d.results == [f"r{i}" for i in range(60)]
    assert d.per_lane[1] > d.per_lane[0] >= 1


def test_dispatch_retries_a_transient_failure_once_its_delay_is_over() -> None:
    attempts: dict[int, int] = {}

    def work(lane: int, index: int) -> tuple[str, bool]:
        attempts[index] = attempts.get(index, 0) + 1
        if index == 3 and attempts[index] == 1:
            return "warehouse timeout", True
        return f"r{index}", False

    started = time.monotonic()
    d = _run(1, 5, work, retry_delays=(0.2,))
    assert d.results == [f"r{i}" for i in range(5)]
    assert attempts[3] == 2 and time.monotonic() - started >= 0.2


def test_dispatch_stops_when_every_lane_has_ended_and_leaves_the_rest_unfinished() -> None:
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
    lanes: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue()]
    reports.put(("ready", 0))
    reports.put(("done", 0, 0, "r0", False))
    reports.put(("ended", 0))  # the lane's task failed after one delivery
    d: Dispatcher[str] = Dispatcher(count=3, lanes=1, ahead=1)
    dispatch(d, lanes, reports, clock=time.monotonic, on_result=lambda *_: None)
    assert d.results == ["r0", None, None] and d.unfinished() == [1, 2]
    sent = []
    while not lanes[0].empty():
        sent.append(lanes[0].get())
    assert sent[-1] is None, "the lane is told to stop"


def test_dispatch_stops_every_lane_when_it_fails_itself() -> None:
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
    lanes: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue(), queue.SimpleQueue()]
    reports.put(("ready", 0))
    reports.put(("done", 0, 0, "r0", False))

    def boom(*_: Any) -> None:
        raise RuntimeError("listener failed")

    with pytest.raises(RuntimeError):
        dispatch(Dispatcher(count=2, lanes=2), lanes, reports, clock=time.monotonic, on_result=boom)
    for lane in lanes:
        items = []
        while not lane.empty():
            items.append(lane.get())
        assert items[-1] is None
