"""One-off scheduled events over HTTP (bulletin.edge.api.scheduled_events), in-process against the session's real
Prefect API: validation naming the field (and nothing stored), organisation isolation, keyset pagination, cancel, the
signing secret. Events here are scheduled an hour ahead, so nothing is sent; the end-to-end delivery is in
test_api_scheduled_events_e2e.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

from bulletin.store import scheduled_events as se
from tasks.scheduled_events.dispatch import Result, deliver_due_events
from tasks.scheduled_events.runs import schedule_follow_ups
from tests.api.v1_support import Api, bearer, running_api

CREDENTIAL = "Bearer receiver-credential-0123456789"
LOOPBACK = "http://127.0.0.1:9/hook"  # never called: every event here is an hour ahead, or cancelled


@pytest.fixture
def api(prefect_api: None, tmp_path: Path, demo_warehouse: Path) -> Iterator[Api]:
    with running_api(tmp_path, demo_warehouse, webhook_allowed_networks=["127.0.0.0/8"]) as running:
        yield running


def later(seconds: int = 3600) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def body(**change: Any) -> dict[str, Any]:
    return {"webhook": LOOPBACK, "schedule_at": later(), "payload": {"email": "bob@example.com"}, **change}


def schedule(api: Api, key: str, **change: Any) -> str:
    response = api.client.post("/v1/scheduled-events", json=body(**change), headers=bearer(key))
    assert response.status_code == 201, response.text
    event_id: str = response.json()["event_id"]
    return event_id


def flow_run_state(flow_run_id: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(flow_run_id)).state


def test_schedule_stores_the_event_with_hasura_defaults_and_a_flow_run_scheduled_for_its_time(api: Api) -> None:
    key = api.key("acme", role="member")
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    response = api.client.post(
        "/v1/scheduled-events",
        json=body(
            schedule_at=at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            headers=[{"name": "Authorization", "value": CREDENTIAL}],
            comment="sample scheduled event comment",
        ),
        headers=bearer(key),
    )
    assert response.status_code == 201 and set(response.json()) == {"event_id"}
    event_id = response.json()["event_id"]
    shown = api.client.get(f"/v1/scheduled-events/{event_id}", headers=bearer(key))
    assert shown.status_code == 200 and CREDENTIAL not in shown.text
    event = shown.json()
    assert event["status"] == "scheduled" and event["tries"] == 0 and event["invocations"] == []
    assert event["retry_conf"] == {
        "num_retries": 0,
        "retry_interval_seconds": 10,
        "timeout_seconds": 60,
        "tolerance_seconds": 21600,
    }
    assert event["headers"] == [{"name": "Authorization", "value": se.MASK}]
    assert event["payload"] == {"email": "bob@example.com"} and event["comment"] == "sample scheduled event comment"
    assert datetime.fromisoformat(event["schedule_at"]) == at
    state = flow_run_state(event["flow_run_id"])
    assert state.is_scheduled() and state.state_details.scheduled_time == at


def test_hasuras_documented_example_is_accepted(api: Api) -> None:
    key = api.key()
    example = {
        "webhook": LOOPBACK,
        "schedule_at": later(),
        "payload": {"email": "bob@ross.com"},
        "headers": [{"name": "key", "value": "value"}],
        "retry_conf": {
            "num_retries": 3, "timeout_seconds": 120, "tolerance_seconds": 21675, "retry_interval_seconds": 12
        },
        "comment": "sample scheduled event comment",
    }  # fmt: skip
    response = api.client.post("/v1/scheduled-events", json=example, headers=bearer(key))
    assert response.status_code == 201, response.text
    shown = api.client.get(f"/v1/scheduled-events/{response.json()['event_id']}", headers=bearer(key)).json()
    assert shown["retry_conf"] == example["retry_conf"]


BAD_REQUESTS: list[tuple[dict[str, Any], int, str]] = [
    ({"webhook": None}, 400, "body.webhook"),
    ({"webhook": "ftp://example.com/x"}, 400, "webhook"),
    ({"webhook": "http://169.254.169.254/latest/meta-data"}, 400, "webhook"),
    ({"webhook": "http://10.0.0.7/hook"}, 400, "webhook"),
    ({"webhook": "http://[::ffff:10.0.0.7]/hook"}, 400, "webhook"),
    ({"webhook": "http://user:pw@127.0.0.1/hook"}, 400, "webhook"),
    ({"webhook": "http://2852039166/hook"}, 400, "webhook"),  # 169.254.169.254 in decimal
    ({"schedule_at": "2026-12-01T09:00:00"}, 400, "body.schedule_at"),
    ({"schedule_at": 1796115600}, 400, "body.schedule_at"),
    ({"schedule_at": "1796115600"}, 400, "body.schedule_at"),
    ({"schedule_at": "next tuesday"}, 400, "body.schedule_at"),
    ({"schedule_at": "2099-01-01T00:00:00Z"}, 400, "schedule_at"),
    ({"headers": [{"name": "X-A", "value": "a\r\nX-Injected: 1"}]}, 400, "body.headers.0.value"),
    ({"headers": [{"name": "X-A\r\nX-Injected", "value": "1"}]}, 400, "body.headers.0.name"),
    ({"headers": [{"name": "webhook-signature", "value": "v1,forged"}]}, 400, "body.headers.0.name"),
    ({"headers": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]}, 400, "headers.1.name"),
    ({"headers": [{"name": f"X-{i}", "value": "v"} for i in range(21)]}, 400, "body.headers"),
    ({"headers": [{"name": "X-A", "value": "v" * 5000}]}, 400, "body.headers.0.value"),
    ({"retry_conf": {"num_retries": -1}}, 400, "body.retry_conf.num_retries"),
    ({"retry_conf": {"retry_interval_seconds": 0}}, 400, "body.retry_conf.retry_interval_seconds"),
    ({"retry_conf": {"tolerance_seconds": 10**9}}, 400, "body.retry_conf.tolerance_seconds"),
    ({"retry_conf": {"retries": 3}}, 400, "body.retry_conf.retries"),
    ({"comment": "x" * 1001}, 400, "body.comment"),
    ({"payload": {"blob": "x" * 70_000}}, 400, "payload"),
    ({"surprise": 1}, 400, "body.surprise"),
]


def test_bad_requests_are_refused_naming_the_field_and_store_nothing(api: Api) -> None:
    key = api.key()
    for change, status, field in BAD_REQUESTS:
        response = api.client.post("/v1/scheduled-events", json=body(**change), headers=bearer(key))
        assert response.status_code == status, (change, response.text)
        error = response.json()["error"]
        assert error["field"] == field and error["message"], (change, error)
    not_json = api.client.post(
        "/v1/scheduled-events", content=b"{", headers={**bearer(key), "content-type": "application/json"}
    )
    assert not_json.status_code == 400
    listed = api.client.get("/v1/scheduled-events", headers=bearer(key))
    assert listed.json() == {"events": [], "next_page_token": None}


def test_a_host_that_does_not_resolve_is_accepted_and_its_sends_fail_in_the_log_as_retry_conf_says(api: Api) -> None:
    key = api.key("acme", role="member")
    retry_conf = {"num_retries": 1, "retry_interval_seconds": 5}
    event_id = schedule(api, key, webhook="https://receiver.invalid/hook", retry_conf=retry_conf)  # 201, as Hasura
    due = datetime.now(UTC) + timedelta(hours=1, seconds=1)
    settings = api.settings
    first = deliver_due_events(api.store, settings, now=lambda: due)
    assert first.results == {event_id: Result.RETRYING}
    assert first.follow_ups == {event_id: due + timedelta(seconds=5)}
    final = deliver_due_events(api.store, settings, now=lambda: due + timedelta(seconds=6))
    assert final.results == {event_id: Result.ERROR}
    shown = api.client.get(f"/v1/scheduled-events/{event_id}", headers=bearer(key)).json()
    assert shown["status"] == "error" and shown["tries"] == 2
    logs = shown["invocations"]
    assert [i["status_code"] for i in logs] == [None, None]
    assert all("'receiver.invalid' did not resolve" in i["error"] for i in logs), logs


def test_names_resolving_to_internal_addresses_are_still_refused(
    prefect_api: None, tmp_path: Path, demo_warehouse: Path
) -> None:
    with running_api(tmp_path, demo_warehouse) as strict:  # no allowlist: loopback is internal
        key = strict.key()
        for webhook in ("http://localhost:9/hook", "http://127.0.0.1:9/hook", "http://0x7f.0.0.1:9/hook"):
            response = strict.client.post("/v1/scheduled-events", json=body(webhook=webhook), headers=bearer(key))
            assert response.status_code == 400, (webhook, response.text)
            error = response.json()["error"]
            assert error["field"] == "webhook" and "internal address (loopback" in error["message"], error
        assert strict.client.get("/v1/scheduled-events", headers=bearer(key)).json()["events"] == []


def test_an_api_key_is_required(api: Api) -> None:
    assert api.client.post("/v1/scheduled-events", json=body()).status_code == 401
    assert api.client.get("/v1/scheduled-events").status_code == 401
    assert api.client.get("/v1/scheduled-events", headers=bearer("bk_not-a-key")).status_code == 401


def test_another_organisations_event_is_a_404_like_a_missing_one(api: Api) -> None:
    acme, globex = api.key("acme"), api.key("globex")
    event_id = schedule(api, acme)
    for method in ("GET", "DELETE"):
        other = api.client.request(method, f"/v1/scheduled-events/{event_id}", headers=bearer(globex))
        missing = api.client.request(method, "/v1/scheduled-events/se_missing", headers=bearer(globex))
        assert other.status_code == missing.status_code == 404
        assert other.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
    assert api.client.get("/v1/scheduled-events", headers=bearer(globex)).json()["events"] == []
    assert api.client.get(f"/v1/scheduled-events/{event_id}", headers=bearer(acme)).json()["status"] == "scheduled"


def test_the_list_pages_with_an_opaque_token_and_filters_by_status(api: Api) -> None:
    key = api.key()
    made = [schedule(api, key) for _ in range(5)]
    seen: list[str] = []
    token: str | None = None
    while True:
        query = {"limit": 2, **({"page_token": token} if token else {})}
        page = api.client.get("/v1/scheduled-events", params=query, headers=bearer(key)).json()
        seen += [e["event_id"] for e in page["events"]]
        token = page["next_page_token"]
        if token is None:
            break
        schedule(api, key)  # created meanwhile: newer than the cursor, so not on a later page
    assert seen == list(reversed(made))
    cancelled = made[0]
    assert api.client.request("DELETE", f"/v1/scheduled-events/{cancelled}", headers=bearer(key)).status_code == 204
    by_status = api.client.get("/v1/scheduled-events", params={"status": "cancelled"}, headers=bearer(key)).json()
    assert [e["event_id"] for e in by_status["events"]] == [cancelled]
    pending = api.client.get("/v1/scheduled-events", params={"status": "pending", "limit": 100}, headers=bearer(key))
    assert cancelled not in {e["event_id"] for e in pending.json()["events"]} and len(pending.json()["events"]) == 6
    for params, field in (
        ({"page_token": "not-a-token"}, "page_token"),
        ({"status": "sent"}, "query.status"),
        ({"limit": 0}, "query.limit"),
        ({"limit": 1000}, "query.limit"),
    ):
        refused = api.client.get("/v1/scheduled-events", params=params, headers=bearer(key))
        assert refused.status_code == 400 and refused.json()["error"]["field"] == field, params


def test_cancel_a_pending_event_and_its_flow_run_but_not_a_processed_one(api: Api) -> None:
    key = api.key()
    event_id = schedule(api, key)
    flow_run_id = api.client.get(f"/v1/scheduled-events/{event_id}", headers=bearer(key)).json()["flow_run_id"]
    assert api.client.request("DELETE", f"/v1/scheduled-events/{event_id}", headers=bearer(key)).status_code == 204
    assert api.client.request("DELETE", f"/v1/scheduled-events/{event_id}", headers=bearer(key)).status_code == 204
    shown = api.client.get(f"/v1/scheduled-events/{event_id}", headers=bearer(key)).json()
    assert shown["status"] == "cancelled" and shown["processed_at"] is not None
    assert flow_run_state(flow_run_id).is_cancelled()

    done_id = schedule(api, key)
    now = datetime.now(UTC) + timedelta(hours=2)  # as a dispatcher would, once it is due
    claim = se.claim_event(api.store, done_id, lease_seconds=60, now=now)
    assert claim is not None
    se.record_invocation(
        api.store, claim, attempted_at=now, request_headers=[], status_code=200, response_body="ok",
        duration_ms=3, error=None, status=se.EventStatus.DELIVERED, next_retry_at=None, now=now,
    )  # fmt: skip
    refused = api.client.request("DELETE", f"/v1/scheduled-events/{done_id}", headers=bearer(key))
    assert refused.status_code == 409 and "already delivered" in refused.json()["error"]["message"]
    assert api.client.get(f"/v1/scheduled-events/{done_id}", headers=bearer(key)).json()["status"] == "delivered"


def test_the_signing_secret_is_for_admins_and_rotates_with_an_overlap(api: Api) -> None:
    admin, member, other = api.key("acme"), api.key("acme", role="member"), api.key("globex")
    assert api.client.get("/v1/scheduled-events/signing-secret", headers=bearer(member)).status_code == 403
    first = api.client.get("/v1/scheduled-events/signing-secret", headers=bearer(admin)).json()
    assert first["secret"].startswith("whsec_") and first["previous_secret_expires_at"] is None
    again = api.client.get("/v1/scheduled-events/signing-secret", headers=bearer(admin)).json()
    assert again == first
    assert api.client.get("/v1/scheduled-events/signing-secret", headers=bearer(other)).json() != first
    rotated = api.client.post("/v1/scheduled-events/signing-secret/rotate", headers=bearer(admin))
    assert rotated.status_code == 200 and rotated.json()["secret"] != first["secret"]
    assert rotated.json()["previous_secret_expires_at"] is not None
    org = se.org_secret(api.store, "acme", now=datetime.now(UTC))
    assert org.signing_secrets(datetime.now(UTC)) == [rotated.json()["secret"], first["secret"]]


@pytest.fixture
def deployment(prefect_api: None) -> Iterator[UUID]:
    """The deliver-scheduled-events deployment (no worker runs it here), removed afterwards."""
    from flows.deliver_scheduled_events import deliver_scheduled_events

    deployment_id: UUID = deliver_scheduled_events.to_deployment(name="deliver-scheduled-events").apply()
    try:
        yield deployment_id
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)


def test_with_the_deployment_runs_are_made_through_it(api: Api, deployment: UUID) -> None:
    key = api.key()
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    event_id = schedule(api, key, schedule_at=at.isoformat())
    flow_run_id = api.client.get(f"/v1/scheduled-events/{event_id}", headers=bearer(key)).json()["flow_run_id"]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
    assert run.deployment_id == deployment and run.parameters == {"event_ids": [event_id]}
    assert run.state is not None and run.state.is_scheduled() and run.expected_start_time == at
    assert f"scheduled-event:{event_id}" in run.tags
    # A retry's run, as the flow schedules it when a worker runs it: the same key gives the same run.
    retry_at = at + timedelta(seconds=10)
    follow_up = {event_id: retry_at}
    assert schedule_follow_ups.fn(api.store, follow_up, datetime.now(UTC))
    assert schedule_follow_ups.fn(api.store, follow_up, datetime.now(UTC))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"scheduled-event:{event_id}"]))
        )
    assert sorted(r.expected_start_time for r in runs) == [at, retry_at]
    retry_run_id = api.client.get(f"/v1/scheduled-events/{event_id}", headers=bearer(key)).json()["flow_run_id"]
    assert retry_run_id != flow_run_id and retry_run_id in {str(r.id) for r in runs}
    assert api.client.request("DELETE", f"/v1/scheduled-events/{event_id}", headers=bearer(key)).status_code == 204
    assert flow_run_state(retry_run_id).is_cancelled()
