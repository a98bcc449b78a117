"""The deliver-scheduled-events flow: attempt the one-off scheduled events that are due (Hasura-style).

Every scheduled event gets a run of this flow scheduled for its time when it is created (and one for each retry's
time), so an event is sent by the run made for it. Each run also sweeps every other due event, so an event whose
run was missed (a stopped API, a lost worker) goes out with the next run; with the deployment, the API starts one
when an event has been missed (``bulletin.edge.api.housekeeping``). The decisions are in ``tasks.scheduled_events``;
how runs are made, in ``tasks.scheduled_events.runs``.

Returns the counts by result and ``follow_ups`` (events left for a retry, with their times);
``follow_ups_scheduled`` says whether their runs were made through the deployment, or are left to the in-process
runner that ran this flow.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from bulletin.clock import utc_now
from bulletin.settings import Settings
from bulletin.store import migrate, open_store
from tasks.scheduled_events.dispatch import deliver_due_events_task
from tasks.scheduled_events.runs import schedule_follow_ups


@flow(name="deliver-scheduled-events", log_prints=False, persist_result=False)
def deliver_scheduled_events(event_ids: list[str] | None = None, limit: int = 200) -> dict[str, Any]:
    """Attempt ``event_ids`` (when due) and every other due scheduled event, at most ``limit`` in all."""
    settings = Settings()
    with open_store(settings.database) as store:
        migrate(store)
        summary = deliver_due_events_task(store, settings, utc_now, limit, event_ids)
        scheduled = schedule_follow_ups(store, summary.follow_ups, utc_now())
    counts = summary.as_dict()
    get_run_logger().info(
        "scheduled events: %d delivered, %d retrying, %d error, %d dead, %d busy",
        counts["delivered"],
        counts["retrying"],
        counts["error"],
        counts["dead"],
        counts["busy"],
    )
    return {**counts, "follow_ups_scheduled": scheduled}
