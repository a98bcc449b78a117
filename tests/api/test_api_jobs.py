"""The jobs API in-process: the pure status mapping and link signing, validation (400 naming the field, nothing
recorded), idempotency in the store, org isolation (404), keyset pagination. No Prefect API is needed here: no
test starts a run (tests/api/test_api_jobs_e2e.py does, on uvicorn)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulletin.edge.api.file_links import FileLink, sign_link, verify_link
from bulletin.edge.api.job_service import check_prefix, local_key, manifest_path
from bulletin.edge.api.job_status import JobStatus, job_status
from bulletin.errors import ConflictError, ForbiddenError, GoneError, RequestError, StorageError
from bulletin.models import ChannelName, Manifest, RunStatus
from bulletin.settings import PROJECT_ROOT, Settings
from bulletin.store.jobs import Job, create_job, list_jobs
from tasks.delivery.registry import CHANNELS
from tests.api.v1_support import Api, bearer, running_api

REPORT = "weekly-regional-sales"
NOW = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


@pytest.fixture
def api(tmp_path: Path, demo_warehouse: Path) -> Iterator[Api]:
    with running_api(tmp_path, demo_warehouse) as running:
        yield running


# --- the pure parts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "name", "waiting", "expected"),
    [
        (None, None, False, JobStatus.QUEUED),
        ("SCHEDULED", "Scheduled", False, JobStatus.QUEUED),
        ("PENDING", "Pending", False, JobStatus.QUEUED),
        ("RUNNING", "Running", True, JobStatus.QUEUED),
        ("RUNNING", "Running", False, JobStatus.RUNNING),
        ("COMPLETED", "Completed", False, JobStatus.COMPLETED),
        ("COMPLETED", "Partial", False, JobStatus.PARTIAL),
        ("FAILED", "Failed", False, JobStatus.FAILED),
        ("CRASHED", "Crashed", False, JobStatus.FAILED),
        ("CANCELLED", "Cancelled", False, JobStatus.CANCELLED),
        ("CANCELLED", "Missed", False, JobStatus.CANCELLED),
        ("CANCELLING", "Cancelling", False, JobStatus.CANCELLED),
    ],
)
def test_job_status_follows_the_flow_run_state(
    state: str | None, name: str | None, waiting: bool, expected: JobStatus
) -> None:
    assert job_status(state, name, waiting_for_slot=waiting) is expected


SECRET = b"s" * 32
LINK = FileLink(key="reports/acme/r/2026/11/02/ana/r-x.pdf", org="acme", expires_at=NOW + timedelta(minutes=5))


def test_a_signed_link_verifies_until_it_expires() -> None:
    token = sign_link(SECRET, LINK)
    assert verify_link(SECRET, token, now=NOW) == LINK
    with pytest.raises(GoneError):
        verify_link(SECRET, token, now=LINK.expires_at)


@pytest.mark.parametrize(
    "breaks",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # the MAC
        lambda t: "x" + t,  # the body
        lambda t: t.replace(".", ""),
        lambda t: t + ".x",
        lambda t: "",
        lambda t: "../../etc/passwd.abc",
    ],
)
def test_a_tampered_link_is_refused(breaks: Any) -> None:
    with pytest.raises(ForbiddenError):
        verify_link(SECRET, breaks(sign_link(SECRET, LINK)), now=NOW)


def test_a_link_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(ForbiddenError):
        verify_link(b"t" * 32, sign_link(SECRET, LINK), now=NOW)


@pytest.mark.parametrize("prefix", ["../x", "/abs", "a//b", "a/", "a\\b", "a/../b", "ok/\x00", "é", "x" * 300])
def test_an_unsafe_output_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(RequestError) as caught:
        check_prefix(prefix)
    assert caught.value.field == "output.prefix"


def test_a_local_uri_outside_the_bucket_has_no_key(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    assert local_key(root, (root / "a" / "b.pdf").as_uri()) == "a/b.pdf"
    for uri in ((tmp_path / "other.pdf").as_uri(), (root / ".." / "x.pdf").as_uri(), "s3://b/k"):
        with pytest.raises(StorageError):
            local_key(root, uri)


def job_of_run(flow_run_id: str) -> Job:
    return Job(
        id="j1",
        org="acme",
        job_id="j1",
        key_id="k",
        report_id=REPORT,
        request={},
        request_digest="d",
        flow_run_id=flow_run_id,
        created_at=NOW,
        updated_at=NOW,
        error=None,
    )


def test_a_jobs_manifest_is_named_by_its_whole_flow_run_id(tmp_path: Path) -> None:
    # Prefect's UUIDv7 ids of runs made in one millisecond share their first 12 hex digits.
    first, second = "01a24abd-a9f5-7000-8000-000000000001", "01a24abd-a9f5-7000-8000-000000000002"
    settings = Settings(home=tmp_path)
    assert manifest_path(settings, job_of_run(first)) == settings.manifests_dir / REPORT / f"{first}.json"
    assert manifest_path(settings, job_of_run(first)) != manifest_path(settings, job_of_run(second))
    # A manifest saved before runs were named by their whole id (its first 12 hex digits) is still found.
    legacy = settings.manifests_dir / REPORT / "01a24abda9f5.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text("{}")
    assert manifest_path(settings, job_of_run(first)) == legacy


def test_the_api_reads_a_jobs_manifest_where_the_flow_saved_it(tmp_path: Path) -> None:
    from tasks.delivery.manifest import manifest_file, save_manifest

    run = "01a24abd-a9f5-7000-8000-000000000003"
    settings = Settings(home=tmp_path)
    saved = save_manifest(
        settings.manifests_dir,
        Manifest(report_id=REPORT, run_id=run, started_at=NOW, finished_at=NOW, status=RunStatus.COMPLETED),
    )
    assert saved == manifest_file(settings.manifests_dir, REPORT, run) == manifest_path(settings, job_of_run(run))


# --- the store -------------------------------------------------------------------------------------------------


def test_a_job_id_is_an_idempotency_key_per_organisation(api: Api) -> None:
    body = {"report_id": REPORT, "formats": ["pdf"]}
    first, made = create_job(api.store, org="acme", key_id="k", job_id="j1", report_id=REPORT, request=body, now=NOW)
    again, made_again = create_job(
        api.store, org="acme", key_id="k2", job_id="j1", report_id=REPORT, request=dict(body), now=NOW
    )
    assert made and not made_again and again == first
    with pytest.raises(ConflictError) as caught:
        create_job(
            api.store,
            org="acme",
            key_id="k",
            job_id="j1",
            report_id=REPORT,
            request={**body, "formats": ["xlsx"]},
            now=NOW,
        )
    assert caught.value.status_code == 409 and caught.value.field == "job_id"
    other, made_other = create_job(
        api.store, org="globex", key_id="k", job_id="j1", report_id=REPORT, request=body, now=NOW
    )
    assert made_other and other.id != first.id and other.run_key != first.run_key


# --- validation: 400 naming the field, nothing recorded -----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"report_id": "no-such-report"}, "report_id"),
        ({"report_id": "../etc"}, "report_id"),
        ({"formats": ["csv"]}, "formats"),
        ({"formats": ["docx"]}, "body.formats.0"),
        ({"formats": []}, "body.formats"),
        ({"parameters": {"nope": 1}}, "parameters"),
        ({"parameters": {"as_of": "not a date"}}, "parameters.as_of"),
        ({"output": {"prefix": "../up"}}, "output.prefix"),
        ({"recipients": ["rm-apac-2"]}, "recipients.0"),  # globex's recipient: not in acme's audience
        ({"recipients": ["nobody"]}, "recipients.0"),
        ({"job_id": "bad id!"}, "body.job_id"),
        ({"surprise": True}, "body.surprise"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field_and_records_nothing(
    api: Api, change: dict[str, Any], field: str
) -> None:
    body = {"report_id": REPORT, "formats": ["pdf"], "parameters": {"as_of": "2026-10-31"}, **change}
    answer = api.client.post("/v1/jobs", json=body, headers=bearer(api.key(role="member")))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field
    assert list_jobs(api.store, org="acme") == []


def test_a_report_naming_a_channel_this_server_cannot_deliver_on_is_a_400_and_records_nothing(
    tmp_path: Path, demo_warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = tmp_path / "reports"
    shutil.copytree(PROJECT_ROOT / "deployments" / "reports", reports)
    definition = reports / f"{REPORT}.yaml"
    definition.write_text(definition.read_text().replace("channels: [s3, email]", "channels: [s3, sftp]"))
    monkeypatch.delitem(CHANNELS, ChannelName.SFTP, raising=False)  # whatever this branch registers
    with running_api(tmp_path, demo_warehouse, reports_dir=reports) as api:
        body = {"report_id": REPORT, "formats": ["pdf"], "parameters": {"as_of": "2026-10-31"}}
        answer = api.client.post("/v1/jobs", json=body, headers=bearer(api.key(role="member")))
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"] == "report_id"
        assert "channels.1: 'sftp' is not a channel this server can deliver on" in answer.text
        assert list_jobs(api.store, org="acme") == []


def test_jobs_need_an_api_key_and_deleting_needs_an_admin(api: Api) -> None:
    assert api.client.get("/v1/jobs").status_code == 401
    member = bearer(api.key(role="member"))
    create_job(api.store, org="acme", key_id="k", job_id="j1", report_id=REPORT, request={}, now=NOW)
    assert api.client.get("/v1/jobs/j1", headers=member).status_code == 200
    assert api.client.request("DELETE", "/v1/jobs/j1", headers=member).status_code == 403


# --- org isolation and pagination ------------------------------------------------------------------------------


def test_another_organisations_job_is_a_404_like_a_missing_one(api: Api) -> None:
    create_job(api.store, org="acme", key_id="k", job_id="mine", report_id=REPORT, request={}, now=NOW)
    globex = bearer(api.key(org="globex"))
    for path in ("/v1/jobs/mine", "/v1/jobs/mine/result", "/v1/jobs/mine/download?format=pdf&recipient=x"):
        theirs = api.client.get(path, headers=globex)
        missing = api.client.get(path.replace("mine", "none"), headers=globex)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["error"]["message"].replace("mine", "none") == missing.json()["error"]["message"]
    assert api.client.request("DELETE", "/v1/jobs/mine", headers=globex).status_code == 404
    assert api.client.get("/v1/jobs", headers=globex).json() == {"jobs": [], "next_page_token": None}


def test_a_job_not_started_yet_is_queued_and_has_no_result(api: Api) -> None:
    create_job(
        api.store,
        org="acme",
        key_id="k",
        job_id="j1",
        report_id=REPORT,
        request={"parameters": {"as_of": "2026-10-31"}},
        now=NOW,
    )
    key = bearer(api.key())
    job = api.client.get("/v1/jobs/j1", headers=key).json()
    assert (job["status"], job["parameters"], job["error"]) == ("QUEUED", {"as_of": "2026-10-31"}, None)
    result = api.client.get("/v1/jobs/j1/result", headers=key)
    assert result.status_code == 409 and "QUEUED" in result.json()["error"]["message"]


def test_pages_are_stable_while_jobs_are_added(api: Api) -> None:
    for n in range(7):
        create_job(
            api.store,
            org="acme",
            key_id="k",
            job_id=f"j{n}",
            report_id=REPORT,
            request={},
            now=NOW + timedelta(seconds=n // 2),
        )
    create_job(api.store, org="acme", key_id="k", job_id="other", report_id="daily-account-orders", request={}, now=NOW)
    key = bearer(api.key())
    seen: list[str] = []
    token = None
    while True:
        query = f"/v1/jobs?report_id={REPORT}&limit=3" + (f"&page_token={token}" if token else "")
        page = api.client.get(query, headers=key).json()
        seen += [j["job_id"] for j in page["jobs"]]
        if len(seen) == 3:  # a newer job arrives between pages: it is not on the later pages
            create_job(
                api.store,
                org="acme",
                key_id="k",
                job_id="new",
                report_id=REPORT,
                request={},
                now=NOW + timedelta(hours=1),
            )
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == ["j6", "j5", "j4", "j3", "j2", "j1", "j0"]
    queued = api.client.get("/v1/jobs?status=QUEUED&limit=2", headers=key).json()
    assert [j["job_id"] for j in queued["jobs"]] == ["new", "j6"] and queued["next_page_token"]
    assert api.client.get("/v1/jobs?status=COMPLETED", headers=key).json() == {"jobs": [], "next_page_token": None}
    bad = api.client.get("/v1/jobs?page_token=nonsense", headers=key)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "page_token"
