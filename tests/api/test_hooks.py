"""POST /v1/hooks/{trigger_id} in-process (AppClient) against the session's real Prefect API: each scheme's valid
request starts exactly one real flow run; every bad request is refused with a 4xx and starts nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bulletin.settings import PROJECT_ROOT
from tests.api.conftest import (
    DBT_SECRET,
    DRY_REPORT,
    GITHUB_SECRET,
    REFRESH_NOTHING,
    AppClient,
    Clock,
    Keys,
    dbt_request,
    flow_runs,
    run_completed,
    standard_request,
    write_trigger,
)

Serve = Callable[..., AppClient]

#: dbt Cloud's documented "completed run" example (docs.getdbt.com, Webhooks for your jobs), byte for byte.
DBT_DOC_SAMPLE = b"""{
  "accountId": 1,
  "eventId": "wev_2L6ZDoilyiWzKkSA59Gmc2d7FDD",
  "timestamp": "2023-01-31T19:29:35.789265936Z",
  "eventType": "job.run.completed",
  "webhookName": "test",
  "data": {
    "jobId": "123",
    "jobName": "Daily Job (dbt build)",
    "runId": "12345",
    "environmentId": "1234",
    "environmentName": "Production",
    "dbtVersion": "",
    "projectName": "Snowflake Github Demo",
    "runReason": "",
    "runStartedAt": "2023-01-31T19:28:07Z",
    "runFinishedAt": "2023-01-31T19:29:32Z",
    "runStatus": "Success",
    "runStatusMessage": "None"
  }
}"""
DBT_SAMPLE_TIME = datetime(2023, 1, 31, 19, 29, 40, tzinfo=UTC)
#: GitHub's published example ("Validating webhook deliveries").
GITHUB_VECTOR_BODY = b"Hello, World!"
GITHUB_VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
DBT_CONDITIONS: list[dict[str, Any]] = [
    {"path": "data.runStatus", "op": "==", "value": "Success"},
    {"path": "data.jobId", "op": "in", "value": ["123", "456"]},
]
RUN_COMPLETED: list[dict[str, Any]] = [{"path": "type", "op": "==", "value": "run.completed"}]


def post(client: AppClient, trigger_id: str, body: bytes, headers: dict[str, str]):
    return client.post(f"/v1/hooks/{trigger_id}", content=body, headers=headers)


def assert_refused(response, status: int, *, started: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    assert "Traceback" not in response.text
    if started is not None:
        assert flow_runs(started) == []


def started_run(response, trigger_id: str, flow_name: str) -> dict:
    """The one run the request started: answered at once, and the only run of that trigger in Prefect."""
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["status"] == "started"
    (run, name), *others = flow_runs(trigger_id)
    assert not others
    assert str(run.id) == answer["flow_run_id"]
    assert name == flow_name
    assert {"webhook", f"trigger:{trigger_id}"} <= set(run.tags)
    return run.parameters


# --- each scheme: a valid request starts exactly one run; its replay starts nothing ---


def test_standard_webhooks_starts_one_refresh_run(serve: Serve, triggers_dir: Path) -> None:
    trigger = write_trigger(triggers_dir, "standard-webhooks", REFRESH_NOTHING, RUN_COMPLETED)
    client = serve()
    body = run_completed("weekly-regional-sales")
    headers = standard_request(body)
    params = started_run(post(client, trigger, body, headers), trigger, "refresh-dependents")
    assert params == {"report_id": "weekly-regional-sales", "dry_run": True}
    replay = post(client, trigger, body, headers)
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    assert len(flow_runs(trigger)) == 1


def test_the_documented_dbt_cloud_sample_with_its_hmac(
    serve: Serve, triggers_dir: Path, clock: Clock, bulletin_env: Path
) -> None:
    action = {**DRY_REPORT, "parameters": {"as_of": "2023-01-31"}}
    trigger = write_trigger(triggers_dir, "dbt-cloud", action, DBT_CONDITIONS)
    clock.now = DBT_SAMPLE_TIME
    client = serve()
    # dbt's documented recipe: hex HMAC-SHA256 of the raw body, keyed with the secret.
    signature = hmac.new(DBT_SECRET.encode(), DBT_DOC_SAMPLE, hashlib.sha256).hexdigest()
    assert dbt_request(DBT_DOC_SAMPLE)["authorization"] == signature
    response = post(client, trigger, DBT_DOC_SAMPLE, {"Authorization": signature, "Content-Type": "application/json"})
    params = started_run(response, trigger, "deliver-report")
    assert params == {
        "report_id": "daily-account-orders",
        "parameters": {"as_of": "2023-01-31"},
        "dry_run": True,
        "recipients": ["am-acc-0001"],
        "run_key": f"hook:{trigger}:wev_2L6ZDoilyiWzKkSA59Gmc2d7FDD",
    }
    assert response.json()["message_id"] == "wev_2L6ZDoilyiWzKkSA59Gmc2d7FDD"
    replay = post(client, trigger, DBT_DOC_SAMPLE, {"Authorization": signature})
    assert replay.json()["status"] == "duplicate"
    # Past max_age (3600 s by default) the same signed body is refused: dbt signs no timestamp header.
    clock.now = DBT_SAMPLE_TIME + timedelta(hours=2)
    assert_refused(post(client, trigger, DBT_DOC_SAMPLE, {"Authorization": signature}), 401)
    assert len(flow_runs(trigger)) == 1


def test_github_published_test_vector_verifies(serve: Serve, triggers_dir: Path) -> None:
    trigger = write_trigger(triggers_dir, "github", DRY_REPORT)
    client = serve()
    headers = {"X-Hub-Signature-256": GITHUB_VECTOR_SIGNATURE, "X-GitHub-Delivery": str(uuid.uuid4())}
    # The signature verifies; only then is the body read, and "Hello, World!" is not a JSON object: 400, not 401.
    response = post(client, trigger, GITHUB_VECTOR_BODY, headers)
    assert_refused(response, 400, started=trigger)
    assert "JSON" in response.json()["error"]["message"]
    wrong = {**headers, "X-Hub-Signature-256": GITHUB_VECTOR_SIGNATURE[:-1] + "f"}
    assert_refused(post(client, trigger, GITHUB_VECTOR_BODY, wrong), 401, started=trigger)


def test_github_valid_delivery_starts_one_run(serve: Serve, triggers_dir: Path) -> None:
    conditions = [{"path": "action", "op": "==", "value": "published"}]
    trigger = write_trigger(triggers_dir, "github", DRY_REPORT, conditions)
    client = serve()
    body = json.dumps({"action": "published", "release": {"tag_name": "v1.2.0"}}).encode()
    signature = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": str(uuid.uuid4()), "X-GitHub-Event": "release"}
    params = started_run(post(client, trigger, body, headers), trigger, "deliver-report")
    assert params["run_key"] == f"hook:{trigger}:{headers['X-GitHub-Delivery']}"
    assert post(client, trigger, body, headers).json()["status"] == "duplicate"
    assert len(flow_runs(trigger)) == 1


def test_jwt_es256_body_starts_one_run(serve: Serve, triggers_dir: Path, keys: Keys) -> None:
    action = {
        "flow": "refresh",
        "parameters": {"report_id": "{{ payload.report }}", "upstream_run_id": "{{ payload.run }}"},
    }
    trigger = write_trigger(triggers_dir, "jwt-es256", action, audience="bulletin-hooks")
    client = serve()
    now = int(time.time())
    claims = {
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 60,
        "aud": "bulletin-hooks",
        "report": "weekly-regional-sales",
        "run": "r1",
    }
    token = keys.token(claims)
    params = started_run(
        post(client, trigger, token, {"Content-Type": "application/jwt"}), trigger, "refresh-dependents"
    )
    assert params == {"report_id": "weekly-regional-sales", "upstream_run_id": "r1"}
    assert post(client, trigger, token, {}).json()["status"] == "duplicate"
    assert_refused(post(client, trigger, keys.token({**claims, "aud": "someone-else", "jti": "j2"}), {}), 401)
    assert_refused(post(client, trigger, keys.token({**claims, "iat": now - 3600, "exp": None, "jti": "j3"}), {}), 401)
    other = Keys()
    assert_refused(post(client, trigger, other.token({**claims, "jti": "j4"}), {}), 401)
    assert_refused(post(client, trigger, b"not.a.jwt", {}), 400)
    assert_refused(post(client, trigger, b"\xff\xfe.\x00.x", {}), 400)
    assert len(flow_runs(trigger)) == 1


def test_a_named_deployment_is_started_through_run_deployment(serve: Serve, triggers_dir: Path) -> None:
    from prefect.client.orchestration import get_client

    from flows.refresh import refresh_dependents

    name = f"hooks-test-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as prefect:
        flow_id = prefect.create_flow_from_name(refresh_dependents.name)
        prefect.create_deployment(flow_id=flow_id, name=name)
    action = {"deployment": f"refresh-dependents/{name}", "parameters": {"dataset": "{{ payload.data.report_id }}"}}
    trigger = write_trigger(triggers_dir, "standard-webhooks", action, RUN_COMPLETED)
    client = serve()
    body = run_completed("orders")
    params = started_run(post(client, trigger, body, standard_request(body)), trigger, "refresh-dependents")
    assert params == {"dataset": "orders"}
    # The same message under a new id is a new message (no deduplication by content) ...
    assert post(client, trigger, body, standard_request(body)).status_code == 202
    assert len(flow_runs(trigger)) == 2


# --- refused, and nothing started ---


@pytest.fixture
def standard(serve: Serve, triggers_dir: Path) -> Iterator[tuple[AppClient, str]]:
    trigger = write_trigger(triggers_dir, "standard-webhooks", REFRESH_NOTHING, RUN_COMPLETED)
    yield serve(api_max_body_bytes=4096), trigger
    assert flow_runs(trigger) == [], "a refused or ignored request started a run"


def test_wrong_signature_stale_and_future_timestamps(standard: tuple[AppClient, str]) -> None:
    client, trigger = standard
    body = run_completed()
    headers = standard_request(body)
    assert_refused(post(client, trigger, body + b" ", headers), 401)
    assert_refused(post(client, trigger, body, {**headers, "webhook-id": "msg_other"}), 401)
    stale = standard_request(body, timestamp=int(time.time()) - 301)
    assert_refused(post(client, trigger, body, stale), 401)
    future = standard_request(body, timestamp=int(time.time()) + 301)
    assert_refused(post(client, trigger, body, future), 401)


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [
        ("webhook-timestamp", "yesterday", 400),
        ("webhook-timestamp", "", 401),
        ("webhook-id", "has spaces in it", 400),
        ("webhook-id", "", 401),
        ("webhook-signature", "v1,not base64!", 401),
        ("webhook-signature", "v2," + "A" * 44, 401),
        ("webhook-signature", "v1,x " * 2000, 400),
        ("webhook-signature", "", 401),
    ],
)
def test_each_malformed_or_missing_header(
    standard: tuple[AppClient, str], header: str, value: str, status: int
) -> None:
    client, trigger = standard
    body = run_completed()
    headers = standard_request(body)
    if value:
        headers[header] = value
    else:
        del headers[header]
    assert_refused(post(client, trigger, body, headers), status)


def test_a_repeated_signature_header_is_refused(standard: tuple[AppClient, str]) -> None:
    client, trigger = standard
    body = run_completed()
    headers = standard_request(body)
    raw = [(k.encode(), v.encode()) for k, v in headers.items()] + [(b"webhook-signature", b"v1,AAAA")]
    response = client.post(f"/v1/hooks/{trigger}", content=body, headers=raw)
    assert_refused(response, 400)


def test_oversized_body_with_and_without_content_length(standard: tuple[AppClient, str]) -> None:
    client, trigger = standard
    body = b'{"type": "run.completed", "pad": "' + b"x" * 5000 + b'"}'
    headers = standard_request(body)
    response = post(client, trigger, body, headers)
    assert_refused(response, 413)
    assert response.json()["error"]["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    chunked = client.post(f"/v1/hooks/{trigger}", content=chunks(), headers=headers)
    assert_refused(chunked, 413)


def test_content_length_that_is_not_a_number(standard: tuple[AppClient, str]) -> None:
    client, trigger = standard
    body = run_completed()
    raw = [(k.encode(), v.encode()) for k, v in standard_request(body).items()] + [(b"content-length", b"12abc")]
    assert_refused(client.post(f"/v1/hooks/{trigger}", content=body, headers=raw), 400)


@pytest.mark.parametrize(
    "body",
    [
        b'{"type": "run.completed", "name": "\xff\xfe"}',
        b"[1, 2]",
        b'{"type": 1, "type": 2}',
        b"{nope",
        b'{"x": NaN}',
        b"[" * 3000,
        b'{"a":' * 100 + b"1" + b"}" * 100,
    ],
)
def test_a_signed_but_malformed_body_is_400(standard: tuple[AppClient, str], body: bytes) -> None:
    client, trigger = standard
    assert_refused(post(client, trigger, body, standard_request(body)), 400)


def test_conditions_not_matching_are_acknowledged_and_ignored(standard: tuple[AppClient, str]) -> None:
    client, trigger = standard
    body = json.dumps({"type": "report.delivered", "data": {}}).encode()
    response = post(client, trigger, body, standard_request(body))
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert "type is 'report.delivered', not == 'run.completed'" in response.json()["reason"]


def test_a_payload_without_the_templated_field_is_400(standard: tuple[AppClient, str]) -> None:
    client, trigger = standard
    body = json.dumps({"type": "run.completed", "data": {"run_id": "x"}}).encode()
    response = post(client, trigger, body, standard_request(body))
    assert_refused(response, 400)
    assert "payload.data.report_id" in response.json()["error"]["message"]


def test_unknown_trigger_is_404_before_reading_the_body(standard: tuple[AppClient, str]) -> None:
    client, _ = standard
    assert_refused(post(client, "no-such-trigger", b"{}", {}), 404)
    assert_refused(post(client, "../../etc/passwd", b"{}", {}), 404)
    assert_refused(client.get("/v1/hooks/anything"), 405)


def test_dbt_malformed_requests(serve: Serve, triggers_dir: Path, clock: Clock) -> None:
    trigger = write_trigger(triggers_dir, "dbt-cloud", DRY_REPORT, DBT_CONDITIONS)
    clock.now = DBT_SAMPLE_TIME
    client = serve()
    assert_refused(post(client, trigger, DBT_DOC_SAMPLE, {}), 401)
    assert_refused(post(client, trigger, DBT_DOC_SAMPLE, {"Authorization": "not-hex"}), 401)
    assert_refused(post(client, trigger, DBT_DOC_SAMPLE, {"Authorization": "0" * 64}), 401)
    no_event = DBT_DOC_SAMPLE.replace(b'"eventId"', b'"eventID"')
    assert_refused(post(client, trigger, no_event, dbt_request(no_event)), 400)
    bad_time = DBT_DOC_SAMPLE.replace(b"2023-01-31T19:29:35.789265936Z", b"last tuesday")
    assert_refused(post(client, trigger, bad_time, dbt_request(bad_time)), 400)
    errored = DBT_DOC_SAMPLE.replace(b'"Success"', b'"Error"')
    response = post(client, trigger, errored, dbt_request(errored))
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert flow_runs(trigger) == []


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"X-Hub-Signature-256": "sha1=" + GITHUB_VECTOR_SIGNATURE[7:]}, 401),
        ({"X-Hub-Signature-256": "sha256=zz"}, 401),
        ({"X-Hub-Signature-256": None}, 401),
        ({"X-GitHub-Delivery": None}, 400),
        ({"X-GitHub-Delivery": "two words"}, 400),
    ],
)
def test_github_malformed_or_missing_headers(
    serve: Serve, triggers_dir: Path, change: dict[str, Any], status: int
) -> None:
    trigger = write_trigger(triggers_dir, "github", DRY_REPORT)
    client = serve()
    body = b'{"action": "published"}'
    signature = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": str(uuid.uuid4()), **change}
    assert_refused(post(client, trigger, body, {k: v for k, v in headers.items() if v is not None}), status)
    raw = [(b"x-hub-signature-256", signature.encode()), (b"x-hub-signature-256", b"sha256=" + b"0" * 64)]
    assert_refused(client.post(f"/v1/hooks/{trigger}", content=body, headers=raw), 400, started=trigger)


def test_jwt_algorithms_other_than_es256_are_refused(serve: Serve, triggers_dir: Path) -> None:
    import base64

    import jwt

    trigger = write_trigger(triggers_dir, "jwt-es256", REFRESH_NOTHING)
    client = serve()
    claims = {"jti": uuid.uuid4().hex, "iat": int(time.time()), "data": {"report_id": "x"}}

    def b64(data: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    unsigned = b64({"alg": "none", "typ": "JWT"}) + b"." + b64(claims) + b"."
    assert post(client, trigger, unsigned, {}).status_code in {400, 401}
    assert_refused(post(client, trigger, unsigned + b"c2ln", {}), 401)
    hs256 = jwt.encode(claims, "shared-secret-of-32-bytes-or-more!!", algorithm="HS256").encode()
    assert_refused(post(client, trigger, hs256, {}), 401, started=trigger)


def test_missing_secret_is_503_not_configured_and_names_no_variable(
    serve: Serve, triggers_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = write_trigger(triggers_dir, "github", DRY_REPORT)
    monkeypatch.delenv("TEST_HOOK_GITHUB_SECRET")
    client = serve()
    headers = {"X-Hub-Signature-256": GITHUB_VECTOR_SIGNATURE, "X-GitHub-Delivery": "d1"}
    response = post(client, trigger, GITHUB_VECTOR_BODY, headers)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "trigger_not_configured"
    assert response.json()["error"]["message"] == f"trigger {trigger!r} has no secret configured"
    assert "TEST_HOOK" not in response.text


def test_the_shipped_dbt_trigger_delivers_the_orders_report(
    serve: Serve, triggers_dir: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deployments/triggers/dbt-job-completed.yaml as shipped, the documented sample: the daily orders report is
    delivered, with a ledger key carrying dbt's event id."""
    from bulletin.settings import Settings
    from bulletin.store import list_deliveries, open_store

    shipped = PROJECT_ROOT / "deployments" / "triggers" / "dbt-job-completed.yaml"
    triggers_dir.mkdir()
    (triggers_dir / shipped.name).write_text(shipped.read_text())
    monkeypatch.setenv("DBT_WEBHOOK_SECRET", DBT_SECRET)
    clock.now = DBT_SAMPLE_TIME
    client = serve()
    assert_refused(post(client, "dbt-job-completed", DBT_DOC_SAMPLE, {"Authorization": "0" * 64}), 401)
    response = post(client, "dbt-job-completed", DBT_DOC_SAMPLE, dbt_request(DBT_DOC_SAMPLE))
    params = started_run(response, "dbt-job-completed", "deliver-report")
    assert params["report_id"] == "daily-account-orders"
    assert params["run_key"].startswith("hook:dbt-job-completed:")
    client.close()  # waits for the run started in the app's pool
    with open_store(Settings().database) as store:
        rows = list_deliveries(store, report_id="daily-account-orders", limit=100)
    assert rows and {r.run_key for r in rows} == {params["run_key"]}
    assert {r.status.value for r in rows} == {"sent"}
