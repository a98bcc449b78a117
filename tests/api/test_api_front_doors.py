"""The front doors in-process: ThoughtSpot's and Hasura's documented example requests, sent as their documents write
them, answer in those APIs' shapes, and their effect shows through Bulletin's own routes; bad input is a 4xx in the
mirrored API's error shape and changes nothing. QuickSight-style submit checks are here too (nothing is started);
a whole snapshot job runs in test_api_snapshots_e2e.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulletin.edge.api import create_app
from bulletin.edge.api.snapshot_shapes import (
    SnapshotRequest,
    job_request,
    quicksight_parameters,
    snapshot_status,
)
from bulletin.errors import RequestError
from tests.api.conftest import AppClient, Clock
from tests.api.v1_support import Api, api_settings, bearer

TS = "/api/rest/2.0/system/preferences/communication-channels"
OWN_PREFERENCES = "/v1/preferences/communication-channels"

# --- ThoughtSpot's examples, as its documentation writes them -----------------------------------------------------
TS_CONFIGURE_CLUSTER = {"cluster_preferences": [{"event_type": "LIVEBOARD_SCHEDULE", "channels": ["WEBHOOK"]}]}
TS_CONFIGURE_ORG = {
    "org_preferences": [
        {
            "org_identifier": "testOrg1",
            "operation": "REPLACE",
            "preferences": [{"event_type": "LIVEBOARD_SCHEDULE", "channels": ["WEBHOOK"]}],
        }
    ]
}
TS_SEARCH_CLUSTER = {"cluster_preferences": ["LIVEBOARD_SCHEDULE"]}
TS_SEARCH_ORG = {"org_preferences": [{"org_identifier": "testOrg1", "event_types": ["LIVEBOARD_SCHEDULE"]}]}

# --- Hasura's examples, as its documentation writes them ----------------------------------------------------------
HASURA_CREATE = {
    "type": "create_scheduled_event",
    "args": {
        "webhook": "https://send-email.com",
        "schedule_at": "2022-06-18T18:45:00Z",
        "payload": {"email": "bob@ross.com"},
    },
}
HASURA_CREATE_ADVANCED = {
    "type": "create_scheduled_event",
    "args": {
        "webhook": "https://send-email.com",
        "schedule_at": "2022-06-18T18:45:00Z",
        "payload": {"email": "bob@ross.com"},
        "headers": [{"name": "key", "value": "value"}],
        "retry_conf": {
            "num_retries": 3,
            "timeout_seconds": 120,
            "tolerance_seconds": 21675,
            "retry_interval_seconds": 12,
        },
        "comment": "sample scheduled event comment",
    },
}
#: The documents' day: their schedule_at is 45 minutes ahead of it.
DOCUMENT_DAY = datetime(2022, 6, 18, 18, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(prefect_api: None, tmp_path: Path, demo_warehouse: Path, clock: Clock) -> Iterator[Api]:
    settings = api_settings(tmp_path, demo_warehouse, webhook_allowed_networks=["127.0.0.0/8"])
    client = AppClient(create_app(settings, clock=clock))
    try:
        yield Api(client, settings)
    finally:
        client.close()


# --- ThoughtSpot-style preferences ----------------------------------------------------------------------------------


def test_thoughtspot_examples_configure_and_search_as_written(api: Api) -> None:
    cluster_admin = api.key("acme", cluster_admin=True)
    org_admin = api.key("testOrg1")
    assert (
        api.client.post(f"{TS}/configure", json=TS_CONFIGURE_CLUSTER, headers=bearer(cluster_admin)).status_code == 204
    )
    assert api.client.post(f"{TS}/configure", json=TS_CONFIGURE_ORG, headers=bearer(org_admin)).status_code == 204

    cluster = api.client.post(f"{TS}/search", json=TS_SEARCH_CLUSTER, headers=bearer(cluster_admin))
    assert cluster.status_code == 200, cluster.text
    assert cluster.json()["cluster_preferences"] == [{"event_type": "LIVEBOARD_SCHEDULE", "channels": ["WEBHOOK"]}]
    org = api.client.post(f"{TS}/search", json=TS_SEARCH_ORG, headers=bearer(org_admin)).json()
    assert [o["org"]["name"] for o in org["org_preferences"]] == ["testOrg1"]
    assert org["org_preferences"][0]["preferences"] == [{"event_type": "LIVEBOARD_SCHEDULE", "channels": ["WEBHOOK"]}]

    # The same preferences through Bulletin's own route: a scheduled report is its REPORT_SCHEDULE.
    own = api.client.post(f"{OWN_PREFERENCES}/search", json={}, headers=bearer(org_admin)).json()
    assert own["cluster_preferences"] == [{"event_type": "REPORT_SCHEDULE", "channels": ["WEBHOOK"]}]
    assert own["org_preferences"][0]["preferences"] == [{"event_type": "REPORT_SCHEDULE", "channels": ["WEBHOOK"]}]


def test_thoughtspot_bad_requests_are_400_or_403_and_change_nothing(api: Api) -> None:
    org_admin = api.key("testOrg1")
    member = api.key("testOrg1", role="member")
    before = api.client.post(f"{OWN_PREFERENCES}/search", json={}, headers=bearer(org_admin)).json()
    unknown_event = {"org_preferences": [{**TS_CONFIGURE_ORG["org_preferences"][0], "preferences": [
        {"event_type": "LIVEBOARD_SCHEDULE", "channels": ["WEBHOOK"]},
        {"event_type": "LIVEBOARD_REFRESH", "channels": ["EMAIL"]},
    ]}]}  # fmt: skip
    response = api.client.post(f"{TS}/configure", json=unknown_event, headers=bearer(org_admin))
    assert response.status_code == 400 and "event_type" in response.json()["error"]["field"], response.text
    twice = {"org_preferences": [{**TS_CONFIGURE_ORG["org_preferences"][0], "preferences": [
        {"event_type": "LIVEBOARD_SCHEDULE", "channels": ["WEBHOOK"]},
        {"event_type": "REPORT_SCHEDULE", "channels": ["EMAIL"]},
    ]}]}  # fmt: skip
    assert api.client.post(f"{TS}/configure", json=twice, headers=bearer(org_admin)).status_code == 400
    cluster = api.client.post(f"{TS}/configure", json=TS_CONFIGURE_CLUSTER, headers=bearer(org_admin))
    assert cluster.status_code == 403  # cluster preferences need a cluster-admin key
    assert api.client.post(f"{TS}/configure", json=TS_CONFIGURE_ORG, headers=bearer(member)).status_code == 403
    assert api.client.post(f"{TS}/configure", json=TS_CONFIGURE_ORG).status_code == 401
    assert api.client.post(f"{OWN_PREFERENCES}/search", json={}, headers=bearer(org_admin)).json() == before


# --- Hasura-style scheduled events ----------------------------------------------------------------------------------


def metadata(api: Api, key: str, body: Any) -> Any:
    return api.client.post("/v1/metadata", json=body, headers=bearer(key))


def own_events(api: Api, key: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = api.client.get("/v1/scheduled-events", headers=bearer(key)).json()["events"]
    return events


def test_hasura_examples_create_events_that_bulletin_lists(api: Api, clock: Clock) -> None:
    key = api.key("acme", role="member")
    clock.now = DOCUMENT_DAY  # the examples' schedule_at is in 2022: send them on their day
    simple = metadata(api, key, HASURA_CREATE)
    advanced = metadata(api, key, HASURA_CREATE_ADVANCED)
    clock.now = None
    for response in (simple, advanced):
        assert response.status_code == 200, response.text
        assert response.json()["message"] == "success" and response.json()["event_id"]

    listed = {e["event_id"]: e for e in own_events(api, key)}
    assert set(listed) == {simple.json()["event_id"], advanced.json()["event_id"]}
    event = listed[advanced.json()["event_id"]]
    assert event["webhook"] == "https://send-email.com" and event["payload"] == {"email": "bob@ross.com"}
    assert event["schedule_at"].startswith("2022-06-18T18:45:00")
    assert event["comment"] == "sample scheduled event comment"
    assert event["retry_conf"] == HASURA_CREATE_ADVANCED["args"]["retry_conf"]
    assert event["headers"] == [{"name": "key", "value": "********"}]


def test_hasura_get_delete_and_invocations_over_bulletins_events(api: Api) -> None:
    key = api.key("acme", role="member")
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    made = [
        metadata(api, key, {"type": "create_scheduled_event", "args": {**HASURA_CREATE["args"], "schedule_at": at}})
        for _ in range(3)
    ]
    ids = [m.json()["event_id"] for m in made]
    window = {"type": "one_off", "limit": 2, "offset": 1, "get_rows_count": True}
    page = metadata(api, key, {"type": "get_scheduled_events", "args": window}).json()
    assert page["count"] == 3 and [e["id"] for e in page["events"]] == ids[::-1][1:3]
    assert {"webhook_conf", "scheduled_time", "header_conf", "retry_conf", "status"} <= set(page["events"][0])

    gone = metadata(api, key, {"type": "delete_scheduled_event", "args": {"type": "one_off", "event_id": ids[0]}})
    assert gone.status_code == 200 and gone.json() == {"message": "success"}
    assert api.client.get(f"/v1/scheduled-events/{ids[0]}", headers=bearer(key)).json()["status"] == "cancelled"
    pending = {"type": "one_off", "status": ["scheduled"], "get_rows_count": True}
    assert metadata(api, key, {"type": "get_scheduled_events", "args": pending}).json()["count"] == 2

    logs = {"type": "one_off", "event_id": ids[1], "limit": 10, "offset": 0, "get_rows_count": True}
    invocations = metadata(api, key, {"type": "get_scheduled_event_invocations", "args": logs})
    assert invocations.status_code == 200 and invocations.json() == {"invocations": [], "count": 0}
    other = api.key("globex")
    assert metadata(api, other, {"type": "get_scheduled_event_invocations", "args": logs}).status_code == 404


def create(**args: Any) -> dict[str, Any]:
    return {"type": "create_scheduled_event", "args": {**HASURA_CREATE["args"], **args}}


BAD_CALLS = [
    ({"type": "create_cron_trigger", "args": {}}, 400, "$", "parse-failed"),  # a command Bulletin does not serve
    ({"type": "run_sql", "args": {"sql": "select 1"}}, 400, "$", "parse-failed"),
    ({"args": {}}, 400, "$.type", "parse-failed"),
    ([1, 2], 400, "$", "parse-failed"),
    ({"type": "create_scheduled_event", "args": {"schedule_at": "2030-01-01T00:00:00Z"}}, 400, "$.args.webhook", None),
    (create(schedule_at="tomorrow"), 400, "$.args.schedule_at", None),
    (create(webhook="http://169.254.169.254/latest/meta-data"), None, "$.args.webhook", None),  # SSRF guard
    (create(headers=[{"name": "x", "value": "a\r\nb"}]), 400, "$.args.headers.0.value", None),
    ({"type": "delete_scheduled_event", "args": {"type": "cron", "event_id": "x"}}, 400, "$.args.type", None),
    ({"type": "delete_scheduled_event", "args": {"type": "one_off", "event_id": "nope"}}, 404, "$.args.event_id", None),
    ({"type": "get_scheduled_events", "args": {"type": "one_off", "limit": 0}}, 400, "$.args.limit", None),
]


@pytest.mark.parametrize(("body", "status", "path", "code"), BAD_CALLS)
def test_hasura_bad_calls_answer_in_hasuras_error_shape_and_store_nothing(
    api: Api, body: Any, status: int | None, path: str, code: str | None
) -> None:
    key = api.key("acme")
    response = metadata(api, key, body)
    assert 400 <= response.status_code < 500 and (status is None or response.status_code == status), response.text
    error = response.json()
    assert set(error) == {"path", "error", "code"} and error["path"] == path and error["error"], error
    assert code is None or error["code"] == code
    assert own_events(api, key) == []


def test_hasura_calls_need_an_api_key(api: Api) -> None:
    response = api.client.post("/v1/metadata", json=HASURA_CREATE)
    assert response.status_code == 401 and response.json()["code"] == "access-denied"


# --- QuickSight-style snapshot jobs: the pure status mapping and the checks before anything starts ------------------


@pytest.mark.parametrize(
    ("status", "started", "expected"),
    [
        ("QUEUED", None, "SUBMITTED"),
        ("QUEUED", "2026-11-02T07:00:00Z", "QUEUED"),  # its run started and waits for a report-run slot
        ("RUNNING", "2026-11-02T07:00:00Z", "RUNNING"),
        ("COMPLETED", "2026-11-02T07:00:00Z", "COMPLETED"),
        ("PARTIAL", "2026-11-02T07:00:00Z", "COMPLETED"),
        ("FAILED", "2026-11-02T07:00:00Z", "FAILED"),
        ("CANCELLED", None, "FAILED"),
    ],
)
def test_snapshot_status_names_bulletins_job_states_as_quicksight_does(
    status: str, started: str | None, expected: str
) -> None:
    assert snapshot_status({"status": status, "started_at": started}) == expected


def test_a_snapshot_request_is_the_jobs_request_it_maps_to() -> None:
    request = SnapshotRequest.model_validate(
        {
            "dashboardId": "weekly-regional-sales",
            "sheetId": "sales",
            "format": "EXCEL",
            "visualId": ["sales"],
            "parameters": {
                "DateTimeParameters": [{"Name": "as_of", "Values": ["2026-10-31T00:00:00Z"]}],
                "IntegerParameters": [{"Name": "top", "Values": [10]}],
            },
            "bucketConfiguration": {"BucketPrefix": "snapshots/weekly-regional-sales/"},
        }
    )
    assert job_request(request) == {
        "report_id": "weekly-regional-sales",
        "formats": ["xlsx"],
        "parameters": {"top": 10, "as_of": "2026-10-31"},
        "output": {"prefix": "snapshots/weekly-regional-sales"},
    }
    assert quicksight_parameters({"top": 10, "as_of": "2026-10-31"}) == {
        "IntegerParameters": [{"Name": "top", "Values": [10]}],
        "StringParameters": [{"Name": "as_of", "Values": ["2026-10-31"]}],
    }
    twice = request.model_copy(
        update={
            "parameters": request.parameters.model_copy(
                update={"StringParameters": request.parameters.IntegerParameters}
            )
        }  # type: ignore[union-attr]
    )
    with pytest.raises(RequestError) as refused:
        job_request(twice)
    assert refused.value.field == "parameters.IntegerParameters.0"


PDF_REQUEST = {
    "dashboardId": "weekly-regional-sales",
    "sheetId": "sales",
    "format": "PDF",
    "parameters": None,
    "bucketConfiguration": {"BucketPrefix": "snapshots/weekly-regional-sales/"},
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sheetId": "Sheet1"}, "sheetId"),
        ({"format": "CSV", "visualId": ["sales"]}, "format"),  # not one of this report's formats
        ({"format": "EXCEL"}, "visualId"),  # CSV and EXCEL need a visual
        ({"format": "EXCEL", "visualId": ["chart-1"]}, "visualId.0"),
        ({"format": "XLSX"}, "format"),
        ({"dashboardId": "no-such-report"}, "dashboardId"),
        ({"bucketConfiguration": {"BucketPrefix": "../etc/"}}, "bucketConfiguration.BucketPrefix"),
        ({"bucketConfiguration": {"BucketPrefix": "/snapshots/x"}}, "bucketConfiguration.BucketPrefix"),
        ({"bucketConfiguration": {"BucketPrefix": "a\\b"}}, "bucketConfiguration.BucketPrefix"),
        ({"bucketConfiguration": {"BucketPrefix": "snapshots//x"}}, "bucketConfiguration.BucketPrefix"),
        ({"bucketConfiguration": {"BucketPrefix": "snap\x00shots"}}, "bucketConfiguration.BucketPrefix"),
        ({"bucketConfiguration": {"BucketPrefix": "ab/" * 100}}, "bucketConfiguration.BucketPrefix"),
        ({"parameters": {"StringParameters": [{"Name": "as_of", "Values": ["someday"]}]}}, "parameters.as_of"),
        ({"parameters": {"StringParameters": [{"Name": "region", "Values": ["APAC"]}]}}, "parameters"),
        ({"jobId": "x"}, "jobId"),
    ],
)
def test_a_bad_snapshot_request_is_a_400_in_the_sample_apis_shape_and_records_no_job(
    api: Api, change: dict[str, Any], field: str
) -> None:
    key = api.key("acme")
    response = api.client.post("/qs-anonymous-snapshot", json={**PDF_REQUEST, **change}, headers={"x-api-key": key})
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str) and response.json()["field"] == field, response.json()
    assert api.client.get("/v1/jobs", headers=bearer(key)).json()["jobs"] == []


def test_snapshot_routes_need_a_key_and_hide_other_jobs(api: Api) -> None:
    unauthorised = api.client.post("/qs-anonymous-snapshot", json=PDF_REQUEST)
    assert unauthorised.status_code == 401 and isinstance(unauthorised.json()["error"], str)
    key = {"x-api-key": api.key("acme")}
    missing = api.client.get("/qs-anonymous-snapshot/describe_job/weekly-regional-sales/job_nope", headers=key)
    assert missing.status_code == 404 and isinstance(missing.json()["error"], str)
    assert api.client.get("/qs-anonymous-snapshot", headers=key).json() == {"Items": [], "Count": 0, "nextToken": None}


def test_an_over_large_body_is_a_413_in_each_front_doors_shape(api: Api) -> None:
    key = bearer(api.key("acme"))
    big = b"{" + b" " * (api.settings.api_max_body_bytes + 1) + b"}"
    headers = {**key, "content-type": "application/json"}
    hasura = api.client.post("/v1/metadata", content=big, headers=headers)
    assert hasura.status_code == 413 and set(hasura.json()) == {"path", "error", "code"}
    quicksight = api.client.post("/qs-anonymous-snapshot", content=big, headers=headers)
    assert quicksight.status_code == 413 and isinstance(quicksight.json()["error"], str)


def test_every_front_door_is_in_the_openapi_document_with_a_description_and_the_api_key(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    doors = {
        (method.upper(), path): operation
        for path, operations in spec["paths"].items()
        if path.startswith(("/qs-anonymous-snapshot", "/api/rest/2.0/", "/v1/metadata"))
        for method, operation in operations.items()
    }
    assert len(doors) == 9, sorted(doors)
    for route, operation in doors.items():
        assert operation["security"] == [{"ApiKeyBearer": []}, {"ApiKeyHeader": []}], route
        assert len(operation.get("description", "")) > 40 and operation["tags"], route
    assert "QuickSightError" in str(doors["POST", "/qs-anonymous-snapshot"]["responses"]["400"])
    assert "HasuraError" in str(doors["POST", "/v1/metadata"]["responses"]["400"])
