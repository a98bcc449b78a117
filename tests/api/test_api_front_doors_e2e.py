"""The front doors end to end on uvicorn with the session's real Prefect API. QuickSight-style snapshot jobs: the
sample API's own client script (its payloads as written, its polling loop, its download) run against Bulletin, the
jobs it made seen through Bulletin's own /v1/jobs routes, the CSV example's job deleted through the front door.
Hasura-style: an event made through /v1/metadata is delivered to a loopback receiver and its invocation read back
through the envelope. ThoughtSpot-style: the documented requests as written.

The flow run reads its settings from the environment, as in production, so the test sets them there for both."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bulletin.settings import Settings
from bulletin.store import migrate, open_store
from bulletin.store.api_keys import create_key
from tests.api.test_api_front_doors import (
    HASURA_CREATE,
    TS_CONFIGURE_CLUSTER,
    TS_CONFIGURE_ORG,
    TS_SEARCH_CLUSTER,
    TS_SEARCH_ORG,
)
from tests.api.test_api_jobs_e2e import key
from tests.api.v1_support import serving
from tests.fixtures.webhook_receiver import Receiver, running_receiver


@pytest.fixture
def api_url(prefect_api: None, bulletin_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("BULLETIN_DATABASE_URL", f"sqlite:///{tmp_path / 'state' / 'bulletin.db'}")
    (tmp_path / "triggers").mkdir()
    monkeypatch.setenv("BULLETIN_TRIGGERS_DIR", str(tmp_path / "triggers"))
    monkeypatch.setenv("BULLETIN_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    with serving(Settings(), "front-doors-e2e") as url:
        yield url


def poll(status_url: str, headers: dict[str, str], seconds: float = 180) -> dict[str, Any]:
    """The sample's loop (``while status_response.json()['JobStatus'] != 'COMPLETED'``), with a deadline so a hang
    fails instead of blocking (a wait, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    seen: list[str] = []
    while True:
        status_response = httpx.get(status_url, headers=headers, timeout=60)
        answer: dict[str, Any] = status_response.json()
        seen.append(answer["JobStatus"])
        if answer["JobStatus"] in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
            assert set(seen) <= {"SUBMITTED", "QUEUED", "RUNNING", "COMPLETED"}, seen
            return answer
        time.sleep(0.3)


def test_the_sample_clients_pdf_and_csv_requests_run_as_bulletin_jobs(api_url: str) -> None:
    # --- the sample's client, as written; only its base URL, key and ids are ours ---------------------------------
    base_url = f"{api_url}/qs-anonymous-snapshot"
    api_key = key("acme", "admin")
    dashboard_id = "weekly-regional-sales"
    sheet_id = "sales"
    headers = {"x-api-key": api_key, "Content-Type": "application/json"}
    payload = {
        "dashboardId": dashboard_id,
        "sheetId": sheet_id,
        "format": "PDF",
        "parameters": None,
        "bucketConfiguration": {"BucketPrefix": f"snapshots/{dashboard_id}/"},
    }
    response = httpx.post(base_url, json=payload, headers=headers, timeout=60)
    assert response.status_code == 202, response.text
    job_id = response.json()["SnapshotJobId"]
    assert response.json()["Status"] == "SUBMITTED"

    csv_dashboard_id = "daily-account-orders"  # the CSV example, on the report whose format is CSV
    visual_id = "orders"
    csv_payload = {
        "dashboardId": csv_dashboard_id,
        "sheetId": visual_id,
        "format": "CSV",
        "parameters": None,
        "visualId": [visual_id],
        "bucketConfiguration": {"BucketPrefix": f"snapshots/{csv_dashboard_id}"},
    }
    csv_response = httpx.post(base_url, json=csv_payload, headers=headers, timeout=60)
    assert csv_response.status_code == 202, csv_response.text
    csv_job_id = csv_response.json()["SnapshotJobId"]

    status_url = f"{base_url}/describe_job/{dashboard_id}/{job_id}"
    described = poll(status_url, headers)
    assert described["JobStatus"] == "COMPLETED", described
    files = described["SnapshotConfiguration"]["FileGroups"][0]["Files"]
    assert files == [{"FormatType": "PDF", "SheetSelections": [{"SheetId": "sales", "SelectionScope": "ALL_VISUALS"}]}]

    download_url = f"{base_url}/download_output/{dashboard_id}/{job_id}"
    download_response = httpx.get(download_url, headers=headers, timeout=60)
    assert download_response.status_code == 200, download_response.text
    presigned = download_response.json()["presignedUrl"]

    # --- what it got, checked against Bulletin's own routes ----------------------------------------------------------
    own = {"x-api-key": api_key}
    job = httpx.get(f"{api_url}/v1/jobs/{job_id}", headers=own).json()
    assert job["status"] == "COMPLETED" and job["formats"] == ["pdf"], job
    assert job["output"] == {"prefix": "snapshots/weekly-regional-sales"}
    manifest = httpx.get(f"{api_url}/v1/jobs/{job_id}/result", headers=own).json()
    first = download_response.json()["files"][0]
    delivery = next(d for d in manifest["deliveries"] if d["recipient"] == first["recipient"])
    artifact = next(a for a in delivery["artifacts"] if a["format"] == "pdf" and a["uri"])
    got = httpx.get(presigned, timeout=60)  # the link alone is the credential
    assert got.status_code == 200 and got.headers["content-type"] == "application/pdf"
    assert hashlib.sha256(got.content).hexdigest() == artifact["sha256"]
    refs = sorted(d["recipient"] for d in manifest["deliveries"])
    assert sorted(f["recipient"] for f in download_response.json()["files"]) == refs

    result = httpx.get(f"{base_url}/describe_job_result/{dashboard_id}/{job_id}", headers=headers).json()
    users = result["Result"]["AnonymousUsers"]
    assert sorted(u["RecipientRef"] for u in users) == refs
    stored = [r for u in users for r in u["FileGroups"][0]["S3Results"]]
    assert len(stored) == len(refs) and all(r["S3Uri"] and r["ErrorInfo"] == [] for r in stored), stored
    assert {r["Channel"] for r in stored} == {"s3"}  # the email copies are sent, not stored

    listed = httpx.get(f"{base_url}?dashboardId={dashboard_id}", headers=headers).json()
    assert [(i["jobId"], i["jobStatus"], i["outputFormat"]) for i in listed["Items"]] == [(job_id, "COMPLETED", "PDF")]

    # --- the CSV job: finished, then deleted through the front door, gone from Bulletin's routes -------------------
    assert poll(f"{base_url}/describe_job/{csv_dashboard_id}/{csv_job_id}", headers)["JobStatus"] == "COMPLETED"
    csv_job = httpx.get(f"{api_url}/v1/jobs/{csv_job_id}", headers=own).json()
    assert csv_job["formats"] == ["csv"] and csv_job["output"] == {"prefix": "snapshots/daily-account-orders"}
    wrong_dashboard = httpx.delete(f"{base_url}/{dashboard_id}/{csv_job_id}", headers=headers)
    assert wrong_dashboard.status_code == 404 and isinstance(wrong_dashboard.json()["error"], str)
    assert httpx.delete(f"{base_url}/{csv_dashboard_id}/{csv_job_id}", headers=headers).status_code == 204
    assert httpx.get(f"{api_url}/v1/jobs/{csv_job_id}", headers=own).status_code == 404
    assert httpx.get(f"{api_url}/v1/jobs/{job_id}", headers=own).status_code == 200  # the other job stays


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


def test_a_hasura_style_event_is_delivered_and_its_invocation_read_through_the_envelope(
    api_url: str, receiver: Receiver
) -> None:
    headers = {"x-api-key": key("acme", "member"), "Content-Type": "application/json"}
    schedule_at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    args = {**HASURA_CREATE["args"], "webhook": receiver.url("/hook"), "schedule_at": schedule_at}
    created = httpx.post(
        f"{api_url}/v1/metadata", json={"type": "create_scheduled_event", "args": args}, headers=headers
    )
    assert created.status_code == 200 and created.json()["message"] == "success", created.text
    event_id = created.json()["event_id"]

    deadline = time.monotonic() + 90  # a wait, not a timing assertion
    while time.monotonic() < deadline:
        event = httpx.get(f"{api_url}/v1/scheduled-events/{event_id}", headers=headers).json()
        if event["status"] != "scheduled":
            break
        time.sleep(0.2)
    assert event["status"] == "delivered", event
    sent = receiver.received("/hook")
    assert len(sent) == 1 and sent[0].headers["webhook-id"] == event_id

    logs = {"type": "one_off", "event_id": event_id, "get_rows_count": True}
    call = {"type": "get_scheduled_event_invocations", "args": logs}
    invocations = httpx.post(f"{api_url}/v1/metadata", json=call, headers=headers).json()
    assert invocations["count"] == 1 and invocations["invocations"][0]["status"] == 200, invocations
    assert invocations["invocations"][0]["event_id"] == event_id
    listed = {"type": "get_scheduled_events", "args": {"type": "one_off", "status": ["delivered"]}}
    events = httpx.post(f"{api_url}/v1/metadata", json=listed, headers=headers).json()["events"]
    assert [(e["id"], e["status"], e["tries"]) for e in events] == [(event_id, "delivered", 1)]


def test_thoughtspots_documented_requests_on_uvicorn(api_url: str) -> None:
    base = f"{api_url}/api/rest/2.0/system/preferences/communication-channels"
    cluster = {"Authorization": f"Bearer {cluster_key()}", "Content-Type": "application/json"}
    org = {"Authorization": f"Bearer {key('testOrg1')}", "Content-Type": "application/json"}
    assert httpx.post(f"{base}/configure", json=TS_CONFIGURE_CLUSTER, headers=cluster).status_code == 204
    assert httpx.post(f"{base}/configure", json=TS_CONFIGURE_ORG, headers=org).status_code == 204
    found = httpx.post(f"{base}/search", json=TS_SEARCH_CLUSTER, headers=cluster).json()
    assert found["cluster_preferences"] == [{"event_type": "LIVEBOARD_SCHEDULE", "channels": ["WEBHOOK"]}]
    mine = httpx.post(f"{base}/search", json=TS_SEARCH_ORG, headers=org).json()["org_preferences"]
    assert mine == [
        {
            "org": {"id": "testOrg1", "name": "testOrg1"},
            "preferences": [{"event_type": "LIVEBOARD_SCHEDULE", "channels": ["WEBHOOK"]}],
        }
    ]


def cluster_key() -> str:
    with open_store(Settings().database) as store:
        migrate(store)
        _, made = create_key(store, org="acme", role="admin", cluster_admin=True, now=datetime.now(UTC))
    return made
