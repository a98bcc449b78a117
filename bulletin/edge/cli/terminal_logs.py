"""What the terminal shows of the Prefect run logs while a command runs flows in this process.

Prefect's console handler prints every failed attempt of every task run: each retry notice, then "Retries are
exhausted" with the whole traceback, then "Finished in state Failed". With an unreachable SMTP server or S3
endpoint that is about 25 lines per recipient, before the command's own summary says the same thing once per
recipient. While ``bulletin run`` or ``bulletin demo`` runs, the console leaves out those task-engine records and
prints no traceback; the summary table has one line per failed recipient with its reason. Prefect's API handler is
not touched: the Prefect run logs (UI, ``prefect flow-run logs``) keep every record, tracebacks included.
``BULLETIN_DEBUG=1`` shows everything at the terminal too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

#: The module of Prefect's task engine, which logs a task run's attempts and final state.
_TASK_ENGINE = "task_engine"


class _NoTaskFailures(logging.Filter):
    """Drops the task engine's records of a failed attempt: the retry notices and the final failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "prefect.task_runs" or record.module != _TASK_ENGINE:
            return True
        failed_attempt = isinstance(record.msg, str) and record.msg.startswith("Task run failed")
        return not failed_attempt and record.levelno < logging.ERROR


class _NoTraceback(logging.Formatter):
    """Formats like ``inner`` without the exception's traceback: the message already names the error.

    The record is restored afterwards: other handlers (Prefect's API handler) format the same record.
    """

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


@contextmanager
def terminal_logs() -> Iterator[None]:
    """Quiet Prefect's console handlers (see the module docstring) until the block ends."""
    if os.environ.get("BULLETIN_DEBUG"):
        yield
        return
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # what ``import prefect.main`` does: the console handler exists from here on
    consoles = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    quiet = _NoTaskFailures()
    saved = [(handler, handler.formatter) for handler in consoles]
    for handler, formatter in saved:
        handler.addFilter(quiet)
        handler.setFormatter(_NoTraceback(formatter or logging.Formatter()))
    try:
        yield
    finally:
        for handler, formatter in saved:
            handler.removeFilter(quiet)
            handler.setFormatter(formatter)
