"""API keys at the HTTP edge (bulletin.edge.api.auth): Bearer or x-api-key, 401 with a challenge for a missing, unknown
or revoked key, 403 for a member where an admin is needed, and one structured access log line per request that
names the organisation and key id but never the key."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import Depends

from bulletin.edge.api.auth import Principal, principal, require_admin, require_cluster_admin
from bulletin.errors import ForbiddenError
from bulletin.store.api_keys import list_keys, revoke_key
from tests.api.v1_support import Api, bearer, running_api


@pytest.fixture
def api(tmp_path: Path, demo_warehouse: Path) -> Iterator[Api]:
    with running_api(tmp_path, demo_warehouse) as running:
        yield running


def test_bearer_and_x_api_key_both_authenticate(api: Api) -> None:
    key = api.key("acme", role="member")
    assert api.client.get("/v1/webhook-endpoints", headers=bearer(key)).status_code == 200
    assert api.client.get("/v1/webhook-endpoints", headers={"x-api-key": key}).status_code == 200
    assert api.client.get("/v1/webhook-endpoints", headers={"authorization": f"bearer   {key} "}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer"},
        {"authorization": "Bearer "},
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"x-api-key": ""},
        {"authorization": "Bearer bk_unknown-key-0123456789"},
        {"authorization": "Bearer not-even-our-format"},
        {"x-api-key": "bk_" + "x" * 5000},
    ],
)
def test_a_missing_or_unknown_key_is_401_with_a_challenge(api: Api, headers: dict[str, str]) -> None:
    response = api.client.get("/v1/webhook-endpoints", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="bulletin"')
    assert response.json()["error"]["code"] == "unauthorized"
    assert "x" * 50 not in response.text


def test_a_revoked_key_is_401_at_once(api: Api) -> None:
    key = api.key("acme")
    assert api.client.get("/v1/triggers", headers=bearer(key)).status_code == 200
    (row,) = list_keys(api.store, org="acme")
    revoke_key(api.store, row.id, now=datetime.now(UTC))
    response = api.client.get("/v1/triggers", headers=bearer(key))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert key not in response.text


def test_two_credentials_at_once_are_refused(api: Api) -> None:
    key = api.key("acme")
    response = api.client.get("/v1/triggers", headers={**bearer(key), "x-api-key": key})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "authorization"


def test_a_member_reads_but_only_an_admin_changes(api: Api) -> None:
    member, admin = api.key("acme", role="member"), api.key("acme", role="admin")
    body = {"url": "https://hooks.example.com/x", "event_types": ["*"]}
    refused = api.client.post("/v1/webhook-endpoints", json=body, headers=bearer(member))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert "admin" in refused.json()["error"]["message"]
    assert api.client.get("/v1/webhook-endpoints", headers=bearer(member)).json() == {"endpoints": []}
    assert api.client.post("/v1/webhook-endpoints", json=body, headers=bearer(admin)).status_code == 201
    assert len(api.client.get("/v1/webhook-endpoints", headers=bearer(member)).json()["endpoints"]) == 1


def test_authentication_comes_before_the_body_is_looked_at(api: Api) -> None:
    response = api.client.post("/v1/webhook-endpoints", content=b"{not json")
    assert response.status_code == 401


def test_the_helpers_as_dependencies_and_as_calls(api: Api) -> None:
    app = api.client.app

    @app.get("/test-cluster")
    async def cluster(p: Principal = Depends(require_cluster_admin)) -> dict[str, str]:
        return {"org": p.org}

    @app.get("/test-whoami")
    async def whoami(p: Principal = Depends(principal)) -> dict[str, object]:
        return {"org": p.org, "role": p.role, "cluster_admin": p.cluster_admin, "key_id": p.key_id}

    root = api.key("ops", cluster_admin=True)
    admin = api.key("acme", role="admin")
    assert api.client.get("/test-cluster", headers=bearer(root)).json() == {"org": "ops"}
    refused = api.client.get("/test-cluster", headers=bearer(admin))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    me = api.client.get("/test-whoami", headers=bearer(admin)).json()
    assert me["org"] == "acme" and me["role"] == "admin" and me["cluster_admin"] is False
    assert me["key_id"].startswith("key_")
    member = Principal(key_id="key_1", org="acme", role="member", cluster_admin=False)
    with pytest.raises(ForbiddenError):
        require_admin(member)
    assert require_admin(Principal("key_2", "acme", "admin", False)).org == "acme"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_access_log_names_the_org_and_key_but_never_a_credential(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    key = api.key("acme", role="member")
    access = logging.getLogger("bulletin.api.access")
    collect, level = Collect(), access.level
    # Its own handler: `bulletin serve` stops this logger propagating, so caplog's root handler may not see it.
    access.addHandler(collect)
    access.setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.DEBUG):
            api.client.get("/v1/webhook-endpoints?token=sekrit-query-value", headers=bearer(key))
            api.client.get("/v1/triggers", headers={"x-api-key": "bk_wrong-key-abcdef"})
            api.client.get("/healthz")
    finally:
        access.removeHandler(collect)
        access.setLevel(level)
    lines = [json.loads(r.getMessage()) for r in collect.records]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("GET", "/v1/webhook-endpoints", 200),
        ("GET", "/v1/triggers", 401),
        ("GET", "/healthz", 200),
    ]
    (row,) = list_keys(api.store, org="acme")
    assert lines[0]["org"] == "acme" and lines[0]["key_id"] == row.id
    assert lines[1]["org"] is None and lines[1]["key_id"] is None
    assert all(isinstance(line["duration_ms"], float) and line["time"] for line in lines)
    assert collect.records[0].access["org"] == "acme"  # type: ignore[attr-defined]
    text = caplog.text + "\n".join(r.getMessage() for r in collect.records)
    for secret in (key, "bk_wrong-key-abcdef", "sekrit-query-value", key[:20]):
        assert secret not in text
