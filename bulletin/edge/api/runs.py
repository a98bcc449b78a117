"""Starting the flow run a trigger asks for, through Prefect, and answering its id at once.

Two ways, chosen per request:

* A deployment exists (the action names one, or the conventional ``deliver-report/<report>`` /
  ``refresh-dependents/refresh-dependents`` is deployed): ``run_deployment(..., timeout=0, idempotency_key=...)``.
  A worker runs it; the same key never makes a second run.
* No deployment (the tests, a plain ``bulletin serve --only api``), or a starter made with ``deployments=False``
  (the demo): the flow run is created through the Prefect client, so its id is known now, and executed by Prefect's
  own engine, ``prefect.flow_engine.run_flow(flow, flow_run=...)`` (what a worker's subprocess calls), in a small
  thread pool of this process. The pool is bounded:
  beyond ``max_workers`` running plus ``max_queued`` waiting, a request is refused with 503 before anything is
  recorded, so the sender retries later. At shutdown, runs still waiting are marked Cancelled rather than left
  Pending forever, and running ones are waited for.

Every call to Prefect from a request is bounded (``prefect_timeout`` in all, ``within``): Prefect's own client
would otherwise retry for half a minute and more while the sender waits; ours tries again only while Prefect
answers "busy" (5xx) or refuses the connection, and only within that time. An unreachable Prefect is a
TransientError (503 with ``Retry-After``): the sender retries, and nothing has been remembered meanwhile.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound, ParameterTypeError, PrefectHTTPStatusError, SignatureMismatchError
from prefect.flow_engine import run_flow
from prefect.settings import PREFECT_API_REQUEST_TIMEOUT, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.states import Cancelled

from bulletin.errors import BulletinError, ConfigError, DefinitionError, RequestError, TransientError
from bulletin.reports import get_report
from bulletin.triggers import Action, Trigger
from flows.deliver_report import deliver_report
from flows.refresh import refresh_dependents

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: How long one call to the Prefect API may take while a sender waits (BULLETIN_API_PREFECT_TIMEOUT_SECONDS).
PREFECT_TIMEOUT_SECONDS = 5.0

#: The flows an action may name, and the deployment preferred for each when it exists.
NAMED_FLOWS: dict[str, tuple[Flow[..., Any], str]] = {
    "refresh": (refresh_dependents, "refresh-dependents/refresh-dependents"),
}


@dataclass(frozen=True)
class Target:
    """Where a run goes: a deployment by name, and the flow to run here when that deployment does not exist
    (``None``: the deployment is required)."""

    deployment: str
    flow: Flow[..., Any] | None


def target_for(action: Action) -> Target:
    if action.deployment is not None:
        return Target(action.deployment, None)
    if action.report is not None:
        return Target(f"deliver-report/{action.report}", deliver_report)
    flow, deployment = NAMED_FLOWS[action.flow or ""]
    return Target(deployment, flow)


def check_targets(triggers: Mapping[str, Trigger], reports_dir: Path) -> None:
    """At startup: every report a trigger names exists and declares the parameters it is given, and every named
    flow takes the parameters it is given. A wrong trigger stops the server rather than failing per request."""
    for trigger in triggers.values():
        problem = _target_problem(trigger.action, reports_dir)
        if problem is not None:
            raise DefinitionError(f"trigger {trigger.id!r}: action: {problem}", field="action")


def _target_problem(action: Action, reports_dir: Path) -> str | None:
    if action.report is not None:
        try:
            report = get_report(reports_dir, action.report)
        except BulletinError as exc:
            return str(exc)
        what, names = f"report {report.id!r}", set(report.parameters)
    elif action.flow is not None:
        flow = NAMED_FLOWS[action.flow][0]
        what, names = f"flow {flow.name!r}", set(inspect.signature(flow.fn).parameters)
    else:
        return None
    unknown = sorted(set(action.parameters) - names)
    return f"{what} has no parameter {unknown[0]!r}" if unknown else None


@dataclass
class Prepared:
    """A run about to start: its parameters checked and its way chosen, a deployment's id or a flow to run here
    (then a pool slot is held until ``start`` or the end of ``prepare``)."""

    target: Target
    parameters: dict[str, Any]
    way: UUID | Flow[..., Any]
    started: bool = field(default=False, init=False)


class FlowStarter:
    """Starts runs (see the module docstring). One per app; ``shutdown`` when the app stops."""

    def __init__(
        self,
        *,
        max_workers: int = 2,
        max_queued: int = 16,
        prefect_timeout: float = PREFECT_TIMEOUT_SECONDS,
        deployments: bool = True,
    ) -> None:
        self._prefect_timeout = prefect_timeout
        #: False: every run is made and run here, never through a deployment (the demo: a deployment there is
        #: ``bulletin serve``'s, whose worker may not be running, and would run it later, out of the demo's sight).
        self._deployments = deployments
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bulletin-flow")
        self._slots = threading.BoundedSemaphore(max_workers + max_queued)
        self._waiting: dict[Future[None], UUID] = {}
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def prepare(self, target: Target, parameters: dict[str, Any]) -> Iterator[Prepared]:
        """Check and reserve, before the caller records the message: whatever fails here can be retried by the
        sender. The slot is given back if the caller does not ``start``."""
        way = within(self._prefect_timeout, lambda: _find_way(target)) if self._deployments else _here(target)
        if isinstance(way, Flow):
            parameters = _validated(way, parameters)
            if self._closed or not self._slots.acquire(blocking=False):
                raise TransientError("too many runs are waiting to start; try again later")
        prepared = Prepared(target, parameters, way)
        try:
            yield prepared
        finally:
            if isinstance(way, Flow) and not prepared.started:
                self._slots.release()

    def start(self, prepared: Prepared, *, idempotency_key: str, tags: Sequence[str]) -> UUID:
        """Create the run and return its id: through the deployment, or here in the pool."""
        try:
            flow_run = within(
                self._prefect_timeout, lambda: _create(prepared, idempotency_key=idempotency_key, tags=tags)
            )
        except (PrefectHTTPStatusError, httpx.HTTPError, OSError) as exc:
            raise _prefect_error(exc, prepared.target.deployment) from exc
        prepared.started = True
        if isinstance(prepared.way, Flow):
            future = self._pool.submit(self._execute, prepared.way, flow_run)
            with self._lock:
                self._waiting[future] = flow_run.id
            future.add_done_callback(self._forget)
        return flow_run.id

    def _execute(self, flow: Flow[..., Any], flow_run: FlowRun) -> None:
        with self._lock:
            self._waiting = {f: i for f, i in self._waiting.items() if i != flow_run.id}
        try:
            run_flow(flow, flow_run=flow_run, return_type="state")
        except Exception:  # the edge of a worker thread: the engine has recorded the run's state; only log
            logger.exception("flow run %s ended with an engine error", flow_run.id)
        finally:
            self._slots.release()

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._waiting.pop(future, None)

    def shutdown(self) -> None:
        """Cancel the runs still waiting (marked Cancelled in Prefect), then wait for the running ones."""
        self._closed = True
        with self._lock:
            waiting = dict(self._waiting)
        cancelled = [run_id for future, run_id in waiting.items() if future.cancel()]
        if cancelled:
            _mark_cancelled(cancelled)
        self._pool.shutdown(wait=True)


@contextmanager
def bounded_prefect(timeout: float) -> Iterator[None]:
    """Prefect calls made inside fail after ``timeout`` seconds, without the client's own retries (about 30 s of
    backoff by default). Prefect's settings live in a context variable: only this thread's calls are affected."""
    with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0, PREFECT_API_REQUEST_TIMEOUT: timeout}):
        yield


#: Pauses between tries of a Prefect call that Prefect answered "busy" or whose connection it refused.
BUSY_PAUSES = (0.25, 0.5, 1.0, 2.0)


def within(budget: float, call: Callable[[], T]) -> T:
    """``call`` (which makes its own Prefect client), tried again while Prefect answers 5xx or refuses the
    connection, all within ``budget`` seconds. A SQLite-backed Prefect server answers 503 "database is locked"
    under a burst: one more try a moment later starts the run, where failing at once would make every sender wait
    for its own retry. A call that timed out is not tried again: the request may have been made.
    """
    deadline = time.monotonic() + budget
    pauses = iter(BUSY_PAUSES)
    while True:
        with bounded_prefect(max(deadline - time.monotonic(), 0.1)):
            try:
                return call()
            except (PrefectHTTPStatusError, httpx.ConnectError, BulletinError) as exc:
                pause = next(pauses, BUSY_PAUSES[-1])
                if not _busy(exc) or time.monotonic() + pause >= deadline:
                    raise
        time.sleep(pause)


def _busy(exc: Exception) -> bool:
    """Prefect said it could not do it now (5xx), or refused the connection: trying again may help."""
    cause = exc.__cause__ if isinstance(exc, BulletinError) else exc
    if isinstance(cause, PrefectHTTPStatusError):
        return cause.response.status_code >= 500
    return isinstance(cause, httpx.ConnectError)


def _create(prepared: Prepared, *, idempotency_key: str, tags: Sequence[str]) -> FlowRun:
    """The flow run: through the deployment (a worker runs it; the key never makes a second run), or created for
    this process's pool."""
    way = prepared.way
    if isinstance(way, Flow):
        with get_client(sync_client=True) as client:
            return client.create_flow_run(way, parameters=way.serialize_parameters(prepared.parameters), tags=tags)
    # async-dispatched: `_sync` keeps it synchronous whichever thread or loop this runs in.
    start_deployment: Any = run_deployment
    flow_run: FlowRun = start_deployment(
        way,
        parameters=prepared.parameters,
        timeout=0,
        idempotency_key=idempotency_key,
        tags=list(tags),
        as_subflow=False,
        _sync=True,
    )
    return flow_run


def _find_way(target: Target) -> UUID | Flow[..., Any]:
    """The deployment's id, or the flow to run here when that deployment does not exist."""
    try:
        with get_client(sync_client=True) as client:
            return client.read_deployment_by_name(target.deployment).id
    except ObjectNotFound as exc:
        if target.flow is None:
            raise ConfigError(f"deployment {target.deployment!r} does not exist") from exc
        return target.flow
    except (PrefectHTTPStatusError, httpx.HTTPError, OSError) as exc:
        raise _prefect_error(exc, target.deployment) from exc


def _here(target: Target) -> Flow[..., Any]:
    if target.flow is None:
        raise ConfigError(f"deployment {target.deployment!r} cannot run here: it names no flow of ours")
    return target.flow


def _validated(flow: Flow[..., Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Refuse parameters the flow would fail on, before a run exists (the payload's values are the sender's)."""
    try:
        flow.validate_parameters(parameters)
    except (ParameterTypeError, SignatureMismatchError) as exc:
        raise RequestError(f"parameters for flow {flow.name!r} do not fit: {exc}", field="parameters") from exc
    return parameters


def _prefect_error(exc: Exception, deployment: str) -> BulletinError:
    if isinstance(exc, PrefectHTTPStatusError) and 400 <= exc.response.status_code < 500:
        detail = exc.response.text[:200]
        return RequestError(f"Prefect refused the run for {deployment!r}: {detail}", field="parameters")
    return TransientError("Prefect is not reachable; try again later")


def _mark_cancelled(flow_run_ids: list[UUID]) -> None:
    try:
        with get_client(sync_client=True) as client:
            for run_id in flow_run_ids:
                client.set_flow_run_state(run_id, Cancelled(message="the API stopped before this run started"))
    except (PrefectHTTPStatusError, httpx.HTTPError, OSError):
        logger.warning("could not mark %d waiting flow run(s) Cancelled", len(flow_run_ids), exc_info=True)
