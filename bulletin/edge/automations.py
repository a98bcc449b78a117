"""The Prefect automations that mark a Bulletin flow run Crashed when its process died: its heartbeats stopped, or
it never started.

A worker killed with SIGKILL (or a machine that dies) takes its flow-run process with it, and nothing tells the
server: the run stays Running forever and a parent waiting on it never retries it. Prefect's documented answer
("detect zombie flows") is a heartbeat every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds from each flow run and a
proactive automation: after a ``prefect.flow-run.heartbeat``, expect another heartbeat (or a final state) within N
seconds, else change the run to Crashed. The wait also starts when the run turns Running (an event the server itself
emits): a process killed in its first second may not have got its first heartbeat out, and a wait that only a
heartbeat starts would never start for it (measured: a worker killed 1.4 s into a shard left it Running for good).

A run whose worker dies while the run is Pending (the worker took it; its process had not turned Running) sends no
heartbeat and never turns Running, so that wait never starts. The second automation covers it: after
``prefect.flow-run.Pending``, expect Running (or a final state) within N seconds, else Crashed. N must exceed the
longest a healthy worker takes to start a run's process (seconds for a process worker, minutes for a container
pulling its image). A run that this crashed and whose worker was alive after all turns Running late: Prefect lets
a Crashed run do so, so the deliver-shard flow checks its own history first and stops when it was ever Crashed
(its parent has started another attempt by then).

This module builds both automations for runs tagged ``bulletin`` (every deployment in the generated prefect.yaml
carries the tag) and creates or updates each by name, so applying them twice leaves one of each.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bulletin.errors import ConfigError, TransientError

AUTOMATION_NAME = "bulletin: crash flow runs whose heartbeats stopped"
#: What the workers set (``bulletin serve`` sets it; docs/operations.md asks every worker to): Prefect's minimum.
HEARTBEAT_SECONDS = 30
#: Three missed heartbeats, as Prefect's docs suggest: a busy run is late by seconds, never by a minute.
DEFAULT_WITHIN_SECONDS = 90
#: The tag every Bulletin deployment carries (prefect.yaml's ``tags: [bulletin, ...]``); runs inherit it.
BULLETIN_TAG = "bulletin"
#: Events that start the wait: a heartbeat, or the run turning Running (before its first heartbeat is out).
STARTING_EVENTS = ("prefect.flow-run.heartbeat", "prefect.flow-run.Running")
#: Events that end the wait: the next heartbeat, or a final state reached in the meantime.
ENDING_EVENTS = ("heartbeat", "Completed", "Failed", "Cancelled", "Crashed")
PENDING_AUTOMATION_NAME = "bulletin: crash flow runs whose process never started"
#: Five minutes from Pending to Running: a process worker needs seconds, a container pulling its image minutes.
DEFAULT_PENDING_SECONDS = 300
#: Events that end a Pending run's wait: its process turned Running, or it ended without running.
STARTED_EVENTS = ("Running", "Completed", "Failed", "Cancelled", "Crashed", "Cancelling")


def check_within(within_seconds: int) -> int:
    """``within_seconds`` if it is longer than one heartbeat interval; shorter would crash runs that are alive."""
    if within_seconds <= HEARTBEAT_SECONDS:
        raise ConfigError(
            f"--within must be more than the {HEARTBEAT_SECONDS} s heartbeat interval (got {within_seconds}); "
            f"{DEFAULT_WITHIN_SECONDS} allows three missed heartbeats",
            field="within",
        )
    return within_seconds


#: The shortest Pending wait the command accepts: a loaded machine has taken over 30 s to start a healthy run.
MIN_PENDING_SECONDS = 60


def check_pending_within(within_seconds: int) -> int:
    """``within_seconds`` if a healthy worker can start a run's process in that time; shorter would crash runs that
    are only slow to start."""
    if within_seconds < MIN_PENDING_SECONDS:
        raise ConfigError(
            f"--pending-within must be at least {MIN_PENDING_SECONDS} s (got {within_seconds}): a busy worker takes "
            f"tens of seconds to start a run; {DEFAULT_PENDING_SECONDS} allows a container to pull its image",
            field="pending_within",
        )
    return within_seconds


def crash_silent_runs(within_seconds: int, *, name: str = AUTOMATION_NAME) -> Any:
    """The automation (a Prefect ``AutomationCore``): no I/O. ``within_seconds`` is not checked here, so a test can
    use a few seconds; the command checks it with ``check_within``."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore

    trigger = _proactive_trigger(STARTING_EVENTS, ENDING_EVENTS, within_seconds)
    return AutomationCore(
        name=name,
        description=(
            f"Marks a flow run tagged '{BULLETIN_TAG}' Crashed when no heartbeat or final state follows its last "
            f"heartbeat within {within_seconds} s (its process died). Written by `bulletin deployments automations`."
        ),
        enabled=True,
        trigger=trigger,
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {within_seconds} s: the flow-run process or its machine died.",
            )
        ],
    )


def crash_unstarted_runs(within_seconds: int, *, name: str = PENDING_AUTOMATION_NAME) -> Any:
    """The automation (a Prefect ``AutomationCore``) that crashes a run Pending for ``within_seconds`` without
    turning Running: its worker took it and died before starting its process. No I/O."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore

    return AutomationCore(
        name=name,
        description=(
            f"Marks a flow run tagged '{BULLETIN_TAG}' Crashed when it stays Pending for {within_seconds} s (its "
            "worker took it and died before starting it). Written by `bulletin deployments automations`."
        ),
        enabled=True,
        trigger=_proactive_trigger(("prefect.flow-run.Pending",), STARTED_EVENTS, within_seconds),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"Pending for {within_seconds} s without starting: its worker or its machine died.",
            )
        ],
    )


def _proactive_trigger(after: tuple[str, ...], ending: tuple[str, ...], within_seconds: int) -> Any:
    """After one of ``after`` for a Bulletin flow run, expect one of ``ending`` within ``within_seconds``; fire for
    that run when none came."""
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return EventTrigger(
        after=set(after),
        expect={f"prefect.flow-run.{event}" for event in ending},
        match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
        match_related=ResourceSpecification(
            {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{BULLETIN_TAG}"}
        ),
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=timedelta(seconds=within_seconds),
    )


async def apply_automation(automation: Any) -> tuple[str, Any]:
    """The adapter: create ``automation`` on the server at PREFECT_API_URL, or update the one of that name in place
    (removing duplicates of it an earlier race left); ``("created" | "updated", id)``."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        # Without it Prefect would start a throwaway ephemeral server and install the automation there.
        raise ConfigError("PREFECT_API_URL is not set: point it at the Prefect server", field="PREFECT_API_URL")
    async with get_client() as client:
        try:
            existing = await client.read_automations_by_name(automation.name)
            if not existing:
                return "created", await client.create_automation(automation)
            first, *extra = sorted(existing, key=lambda a: str(a.id))
            await client.update_automation(first.id, automation)
            for duplicate in extra:
                await client.delete_automation(duplicate.id)
            return "updated", first.id
        except httpx.HTTPError as exc:
            raise TransientError(f"the Prefect API at {api_url} failed: {type(exc).__name__}") from exc
