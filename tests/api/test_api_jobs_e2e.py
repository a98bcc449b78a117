"""End to end on uvicorn with the session's real Prefect API: submit a job for a report over the demo warehouse,
poll it to COMPLETED, download a file through the link the API returns (a Bulletin file link: the local bucket)
and compare its sha256 with the manifest's; replay the job_id (same job) and reuse it with another body (409);
delete the job and its files.

The flow run reads its settings from the environment, as in production, so the test sets them there for both."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from bulletin.settings import Settings
from bulletin.store import list_deliveries, migrate, open_store
from bulletin.store.api_keys import create_key
from tests.api.v1_support import serving

BODY = {
    "report_id": "weekly-regional-sales",
    "formats": ["pdf"],
    "recipients": ["rm-emea-north", "rm-apac"],
    "parameters": {"as_of": "2026-10-31"},
    "output": {"prefix": "board-pack/2026-10"},
    "job_id": "e2e-weekly",
}


@pytest.fixture
def api_url(prefect_api: None, bulletin_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("BULLETIN_DATABASE_URL", f"sqlite:///{tmp_path / 'state' / 'bulletin.db'}")
    (tmp_path / "triggers").mkdir()
    monkeypatch.setenv("BULLETIN_TRIGGERS_DIR", str(tmp_path / "triggers"))
    with serving(Settings(), "jobs-e2e") as url:
        yield url


def key(org: str, role: str = "admin") -> str:
    with open_store(Settings().database) as store:
        migrate(store)
        _, made = create_key(store, org=org, role=role, now=datetime.now(UTC))
    return made


def wait_until_finished(http: httpx.Client, job_id: str, seconds: float = 180) -> dict[str, Any]:
    """Poll until the job has finished (a wait, not a timing assertion: the limit only stops a hang)."""
    deadline = time.monotonic() + seconds
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("COMPLETED", "PARTIAL", "FAILED", "CANCELLED") or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def test_a_job_runs_to_completed_and_its_file_downloads_through_the_returned_link(api_url: str) -> None:
    with httpx.Client(base_url=api_url, headers={"x-api-key": key("acme", "member")}, timeout=60) as http:
        submitted = http.post("/v1/jobs", json=BODY)
        assert submitted.status_code == 202, submitted.text
        assert submitted.json() == {"job_id": "e2e-weekly", "status": "QUEUED"}

        replay = http.post("/v1/jobs", json=BODY)
        assert replay.status_code == 200 and replay.json()["job_id"] == "e2e-weekly", replay.text
        clash = http.post("/v1/jobs", json={**BODY, "formats": ["xlsx"]})
        assert clash.status_code == 409 and clash.json()["error"]["field"] == "job_id"

        job = wait_until_finished(http, "e2e-weekly")
        assert job["status"] == "COMPLETED", job
        assert job["parameters"] == {"as_of": "2026-10-31"} and job["started_at"] and job["finished_at"]
        listed = http.get("/v1/jobs?status=COMPLETED").json()
        assert [j["job_id"] for j in listed["jobs"]] == ["e2e-weekly"]

        manifest = http.get("/v1/jobs/e2e-weekly/result").json()
        assert manifest["run_key"].startswith("job-") and manifest["status"] == "COMPLETED"
        assert sorted(d["recipient"] for d in manifest["deliveries"]) == ["rm-apac", "rm-emea-north"]
        delivery = next(d for d in manifest["deliveries"] if d["recipient"] == "rm-emea-north")
        artifact = next(a for a in delivery["artifacts"] if a["channel"] == "s3" and a["format"] == "pdf")
        assert "/acme/board-pack/2026-10/weekly-regional-sales/" in artifact["uri"]  # the job's folder, in its org's

        link = http.get("/v1/jobs/e2e-weekly/download", params={"format": "pdf", "recipient": "rm-emea-north"})
        assert link.status_code == 200, link.text
        url = link.json()["url"]
        assert urlparse(url).path.startswith("/v1/files/") and link.json()["expires_at"]
        with httpx.Client(timeout=60) as anonymous:  # the link alone is the credential
            got = anonymous.get(url)
            assert got.status_code == 200 and got.headers["content-type"] == "application/pdf"
            assert hashlib.sha256(got.content).hexdigest() == artifact["sha256"]
            assert anonymous.get(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")).status_code == 403

        globex = {"x-api-key": key("globex")}
        assert http.get("/v1/jobs/e2e-weekly", headers=globex).status_code == 404

        admin = {"x-api-key": key("acme", "admin")}
        assert http.delete("/v1/jobs/e2e-weekly").status_code == 403  # a member key
        assert http.delete("/v1/jobs/e2e-weekly", headers=admin).status_code == 204
        assert http.get("/v1/jobs/e2e-weekly").status_code == 404
        with httpx.Client(timeout=60) as anonymous:
            assert anonymous.get(url).status_code == 404  # the file went with the job


def _queue_behind_a_held_slot(http: httpx.Client, job_id: str) -> list[str]:
    """Submit ``job_id`` while the caller holds the only report-run slot; poll until its run has started and waits
    (QUEUED with a start time). The statuses seen on the way."""
    body = {**BODY, "job_id": job_id, "recipients": ["rm-apac"]}
    body.pop("output")
    assert http.post("/v1/jobs", json=body).status_code == 202
    deadline = time.monotonic() + 120
    seen: list[str] = []
    while time.monotonic() < deadline:  # a wait, not a timing assertion
        job = http.get(f"/v1/jobs/{job_id}").json()
        seen.append(job["status"])
        if job["status"] == "QUEUED" and job.get("started_at"):
            break
        time.sleep(0.3)
    return seen


def _held() -> AbstractContextManager[object]:
    """The only report-run slot, held here as another report run would hold it."""
    from tasks.delivery.capacity import report_run_slot

    return report_run_slot(1, logger=logging.getLogger("jobs-e2e"))


@pytest.fixture
def one_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client

    from tasks.delivery.capacity import ensure_run_limit

    monkeypatch.setenv("BULLETIN_MAX_CONCURRENT_RUNS", "1")
    with get_client(sync_client=True) as client:
        ensure_run_limit(client, 1)


@pytest.mark.usefixtures("one_slot")
def test_a_job_waiting_under_the_concurrency_cap_is_queued_then_runs(api_url: str) -> None:
    """With BULLETIN_MAX_CONCURRENT_RUNS=1 and the one slot held here (as another report run would), the job's flow
    run waits for it: the API shows QUEUED (not RUNNING) until the slot is free, then the job completes."""
    with httpx.Client(base_url=api_url, headers={"x-api-key": key("acme", "member")}, timeout=60) as http:
        with _held():  # another run holds the only slot
            seen = _queue_behind_a_held_slot(http, "e2e-queued")
            assert seen[-1] == "QUEUED" and "RUNNING" not in seen, seen
        job = wait_until_finished(http, "e2e-queued")
        assert job["status"] == "COMPLETED", job


@pytest.mark.usefixtures("one_slot")
def test_a_queued_job_deleted_before_its_turn_delivers_nothing(api_url: str) -> None:
    admin = {"x-api-key": key("acme", "admin")}
    with httpx.Client(base_url=api_url, headers=admin, timeout=60) as http:
        with _held():
            assert _queue_behind_a_held_slot(http, "e2e-cancelled")[-1] == "QUEUED"
            assert http.delete("/v1/jobs/e2e-cancelled").status_code == 204
        job = wait_until_finished(http, "e2e-cancelled")
        assert job["status"] == "CANCELLED", job
        assert http.get("/v1/jobs/e2e-cancelled/result").status_code == 409  # no manifest: nothing was delivered
    with open_store(Settings().database) as store:
        assert [r for r in list_deliveries(store) if r.run_key.startswith("job-")] == []
