"""The Prefect automation that marks a Bulletin flow run Crashed when its heartbeats stop.

A worker killed with SIGKILL (or a machine that dies) takes its flow-run process with it, and nothing tells the
server: the run stays Running forever and a parent waiting on it never retries it. Prefect's documented answer
("detect zombie flows") is a heartbeat every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds from each flow run and a
proactive automation: after a ``prefect.flow-run.heartbeat``, expect another heartbeat (or a final state) within N
seconds, else change the run to Crashed. The wait also starts when the run turns Running (an event the server itself
emits): a process killed in its first second may not have got its first heartbeat out, and a wait that only a
heartbeat starts would never start for it (measured: a worker killed 1.4 s into a shard left it Running for good). This module builds that automation for runs tagged ``bulletin`` (every
deployment in the generated prefect.yaml carries the tag) and creates or updates it by name, so applying it twice
leaves one automation.
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


def check_within(within_seconds: int) -> int:
    """``within_seconds`` if it is longer than one heartbeat interval; shorter would crash runs that are alive."""
    if within_seconds <= HEARTBEAT_SECONDS:
        raise ConfigError(
            f"--within must be more than the {HEARTBEAT_SECONDS} s heartbeat interval (got {within_seconds}); "
            f"{DEFAULT_WITHIN_SECONDS} allows three missed heartbeats",
            field="within",
        )
    return within_seconds


def crash_silent_runs(within_seconds: int, *, name: str = AUTOMATION_NAME) -> Any:
    """The automation (a Prefect ``AutomationCore``): no I/O. ``within_seconds`` is not checked here, so a test can
    use a few seconds; the command checks it with ``check_within``."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    trigger = EventTrigger(
        after=set(STARTING_EVENTS),
        expect={f"prefect.flow-run.{event}" for event in ENDING_EVENTS},
        match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
        match_related=ResourceSpecification(
            {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{BULLETIN_TAG}"}
        ),
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=timedelta(seconds=within_seconds),
    )
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
