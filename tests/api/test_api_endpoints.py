"""Webhook endpoints, messages and triggers over HTTP (bulletin.edge.api.endpoints, bulletin.edge.api.triggers): the
CLI's store functions, scoped by organisation. Another organisation's endpoint or message is a 404 exactly like a
missing one; secrets appear in the answer of a create or a rotation only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from bulletin.edge.api.endpoints import EventType
from bulletin.store import webhooks as wh
from bulletin.store.webhook_schema import check_secret
from tests.api.v1_support import Api, bearer, running_api

URL = "https://hooks.example.com/bulletin"


@pytest.fixture
def api(tmp_path: Path, demo_warehouse: Path) -> Iterator[Api]:
    with running_api(tmp_path, demo_warehouse) as running:
        yield running


def create(api: Api, key: str, **body: Any) -> dict[str, Any]:
    response = api.client.post(
        "/v1/webhook-endpoints", json={"url": URL, "event_types": ["run.completed"], **body}, headers=bearer(key)
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def failed_message(api: Api, endpoint_id: str) -> str:
    """A message of the endpoint that has exhausted its retries, as the dispatcher would leave it."""
    now = datetime.now(UTC)
    (message,) = wh.enqueue(
        api.store, event_type="run.completed", payload={"x": 1}, now=now, endpoint_ids=[endpoint_id]
    )
    claim = wh.claim_message(api.store, message.id, lease_seconds=60, now=now)
    assert claim is not None
    wh.record_attempt(
        api.store, claim, attempted_at=now, status_code=500, duration_ms=7, response_body="boom", error=None,
        outcome="failed", message_status=wh.MessageStatus.FAILED, next_attempt_at=None, now=now,
    )  # fmt: skip
    return message.id


def test_create_shows_the_secret_once_and_list_never(api: Api) -> None:
    admin = api.key("acme")
    created = create(api, admin, description="ops channel", style="dbt")
    assert created["id"].startswith("ep_") and created["style"] == "dbt" and created["enabled"] is True
    check_secret(created["secret"])
    listed = api.client.get("/v1/webhook-endpoints", headers=bearer(admin)).json()["endpoints"]
    assert [e["id"] for e in listed] == [created["id"]]
    one = api.client.get(f"/v1/webhook-endpoints/{created['id']}", headers=bearer(admin))
    assert one.status_code == 200 and one.json()["description"] == "ops channel"
    for text in (str(listed), one.text):
        assert created["secret"] not in text and "secret" not in text.replace("previous_secret_expires_at", "")
    assert wh.get_endpoint(api.store, created["id"]).org == "acme"


def test_a_given_secret_is_used(api: Api) -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert create(api, api.key("acme"), secret=secret)["secret"] == secret


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x"}, "body.url"),
        ({"url": "https://user:pw@example.com/x"}, "body.url"),
        ({"url": "https://example.com:99999/x"}, "url"),
        ({"event_types": ["nope"]}, "body.event_types.0"),
        ({"event_types": []}, "body.event_types"),
        ({"secret": "whsec_short"}, "secret"),
        ({"secret": "not-a-whsec"}, "secret"),
        ({"style": "svix"}, "body.style"),
        ({"unknown": 1}, "body.unknown"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_stores_nothing(api: Api, body: dict[str, Any], field: str) -> None:
    admin = api.key("acme")
    response = api.client.post(
        "/v1/webhook-endpoints", json={"url": URL, "event_types": ["*"], **body}, headers=bearer(admin)
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field
    assert wh.list_endpoints(api.store) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://0177.0.0.1/x",  # octal
        "http://[::ffff:a00:7]/x",  # 10.0.0.7, IPv4-mapped
        "http://[64:ff9b::a9fe:a9fe]/x",  # 169.254.169.254 through NAT64
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:8080/x",  # a name that resolves to loopback
    ],
)
def test_an_internal_target_is_refused_at_registration(api: Api, url: str) -> None:
    response = api.client.post(
        "/v1/webhook-endpoints", json={"url": url, "event_types": ["*"]}, headers=bearer(api.key("acme"))
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == "url" and "internal address" in error["message"]
    assert wh.list_endpoints(api.store) == []


def test_the_allowlist_opens_an_internal_target_and_a_name_not_resolving_yet_is_accepted(
    tmp_path: Path, demo_warehouse: Path
) -> None:
    with running_api(tmp_path, demo_warehouse, webhook_allowed_networks=["127.0.0.0/8"]) as api:
        admin = api.key("acme")
        for url in ("http://127.0.0.1:9/x", "https://receiver.invalid/x"):
            response = api.client.post(
                "/v1/webhook-endpoints", json={"url": url, "event_types": ["*"]}, headers=bearer(admin)
            )
            assert response.status_code == 201, response.text
        assert len(wh.list_endpoints(api.store)) == 2


def test_the_documented_event_types_are_the_stores() -> None:
    assert set(get_args(EventType)) == {*wh.EVENT_TYPES, wh.ALL_EVENTS}


def test_https_only_refuses_http(tmp_path: Path, demo_warehouse: Path) -> None:
    with running_api(tmp_path, demo_warehouse, webhook_https_only=True) as api:
        response = api.client.post(
            "/v1/webhook-endpoints",
            json={"url": "http://hooks.example.com/x", "event_types": ["*"]},
            headers=bearer(api.key("acme")),
        )
    assert response.status_code == 400 and response.json()["error"]["field"] == "url"


def test_another_organisations_objects_are_404_like_missing_ones(api: Api) -> None:
    acme, globex = api.key("acme"), api.key("globex")
    endpoint = create(api, acme)
    message_id = failed_message(api, endpoint["id"])
    cli_made, _ = wh.add_endpoint(api.store, url=URL, event_types=["*"], now=datetime.now(UTC))  # no organisation
    assert api.client.get("/v1/webhook-endpoints", headers=bearer(globex)).json() == {"endpoints": []}
    for endpoint_id in (endpoint["id"], cli_made.id, "ep_does_not_exist"):
        answers = [
            api.client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=bearer(globex)),
            api.client.request("DELETE", f"/v1/webhook-endpoints/{endpoint_id}", headers=bearer(globex)),
            api.client.post(f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", headers=bearer(globex)),
            api.client.get(f"/v1/webhook-endpoints/{endpoint_id}/messages", headers=bearer(globex)),
        ]
        for answer in answers:
            assert answer.status_code == 404
            assert answer.json()["error"] == {
                "code": "not_found",
                "message": f"no webhook endpoint {endpoint_id!r}",
                "field": "endpoint_id",
            }
    for message in (message_id, "msg_does_not_exist"):
        for answer in (
            api.client.get(f"/v1/webhook-messages/{message}/attempts", headers=bearer(globex)),
            api.client.post(f"/v1/webhook-messages/{message}/redeliver", headers=bearer(globex)),
        ):
            assert answer.status_code == 404
            assert answer.json()["error"]["message"] == f"no webhook message {message!r}"
    # Nothing of acme's was changed by globex's attempts.
    kept = wh.get_endpoint(api.store, endpoint["id"])
    assert kept.secret.get_secret_value() == endpoint["secret"]
    assert wh.get_message(api.store, message_id).status is wh.MessageStatus.FAILED


def test_delete_removes_the_endpoint(api: Api) -> None:
    admin = api.key("acme")
    endpoint = create(api, admin)
    response = api.client.request("DELETE", f"/v1/webhook-endpoints/{endpoint['id']}", headers=bearer(admin))
    assert response.status_code == 204 and response.content == b""
    assert api.client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=bearer(admin)).status_code == 404


def test_rotate_secret_returns_the_new_one_and_keeps_the_old_signing(api: Api) -> None:
    admin = api.key("acme")
    endpoint = create(api, admin)
    response = api.client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", json={"grace_seconds": 600}, headers=bearer(admin)
    )
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["secret"] != endpoint["secret"] and rotated["previous_secret_expires_at"]
    signing = wh.signing_secrets(wh.get_endpoint(api.store, endpoint["id"]), datetime.now(UTC))
    assert signing == [rotated["secret"], endpoint["secret"]]
    bare = api.client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=bearer(admin))
    assert bare.status_code == 200 and bare.json()["secret"] not in (endpoint["secret"], rotated["secret"])
    negative = api.client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", json={"grace_seconds": -1}, headers=bearer(admin)
    )
    assert negative.status_code == 400 and negative.json()["error"]["field"] == "body.grace_seconds"


def test_messages_attempts_and_redeliver(api: Api) -> None:
    admin, member = api.key("acme"), api.key("acme", role="member")
    endpoint = create(api, admin)
    message_id = failed_message(api, endpoint["id"])
    messages = api.client.get(f"/v1/webhook-endpoints/{endpoint['id']}/messages", headers=bearer(member)).json()
    assert [(m["id"], m["status"]) for m in messages["messages"]] == [(message_id, "failed")]
    assert "payload" not in messages["messages"][0]
    attempts = api.client.get(f"/v1/webhook-messages/{message_id}/attempts", headers=bearer(member)).json()
    assert attempts["message_id"] == message_id
    assert [(a["status_code"], a["outcome"], a["response_body"]) for a in attempts["attempts"]] == [
        (500, "failed", "boom")
    ]
    assert api.client.post(f"/v1/webhook-messages/{message_id}/redeliver", headers=bearer(member)).status_code == 403
    requeued = api.client.post(f"/v1/webhook-messages/{message_id}/redeliver", headers=bearer(admin))
    assert requeued.status_code == 202
    assert requeued.json()["status"] == "pending" and requeued.json()["attempts"] == 0
    again = api.client.post(f"/v1/webhook-messages/{message_id}/redeliver", headers=bearer(admin))
    assert again.status_code == 409 and "only a finished one" in again.json()["error"]["message"]
    filtered = api.client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/messages?status=failed", headers=bearer(member)
    ).json()
    assert filtered == {"messages": []}


def test_redelivering_to_a_disabled_endpoint_is_a_400_not_a_500(api: Api) -> None:
    admin = api.key("acme")
    endpoint = create(api, admin)
    message_id = failed_message(api, endpoint["id"])
    wh.disable_endpoint(api.store, endpoint["id"], reason="test", now=datetime.now(UTC))
    response = api.client.post(f"/v1/webhook-messages/{message_id}/redeliver", headers=bearer(admin))
    assert response.status_code == 400 and "disabled" in response.json()["error"]["message"]


def test_triggers_are_listed_without_where_their_secrets_live(tmp_path: Path, demo_warehouse: Path) -> None:
    folder = tmp_path / "triggers"
    folder.mkdir()
    trigger = {
        "id": "dbt-done",
        "description": "dbt finished",
        "verify": {"scheme": "dbt-cloud", "secret_env": "SOME_SECRET_ENV_NAME"},
        "conditions": [{"path": "data.runStatus", "op": "==", "value": "Success"}],
        "action": {"flow": "refresh", "parameters": {"report_id": "{{ payload.data.report_id }}"}},
    }
    (folder / "dbt-done.yaml").write_text(yaml.safe_dump(trigger))
    with running_api(tmp_path, demo_warehouse) as api:
        assert api.client.get("/v1/triggers").status_code == 401
        response = api.client.get("/v1/triggers", headers=bearer(api.key("acme", role="member")))
    assert response.status_code == 200
    assert response.json() == {
        "triggers": [
            {
                "id": "dbt-done",
                "description": "dbt finished",
                "path": "/v1/hooks/dbt-done",
                "scheme": "dbt-cloud",
                "conditions": [{"path": "data.runStatus", "op": "==", "value": "Success"}],
                "action": {"flow": "refresh"},
            }
        ]
    }
    assert "SOME_SECRET_ENV_NAME" not in response.text
