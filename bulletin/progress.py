"""A tiny observer so a terminal can show progress while a flow runs in the same process.

The flow and its tasks call ``notify``; the CLI installs a listener that advances a Rich progress bar. With no
listener (a worker, the API, tests) ``notify`` does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, str, str], None]  # (report_id, event, detail)

_lock = threading.Lock()
_listeners: list[Listener] = []


def notify(report_id: str, event: str, detail: str = "") -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(report_id, event, detail)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
