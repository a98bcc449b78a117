"""Communication-channel preferences over HTTP (bulletin.edge.api.preferences): ThoughtSpot's documented request
examples, with our paths and event types, give its answers; roles; organisation isolation; validation that changes
nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bulletin.store.api_keys import create_key
from tests.api.v1_support import Api, bearer, running_api

CONFIGURE = "/v1/preferences/communication-channels/configure"
SEARCH = "/v1/preferences/communication-channels/search"


@pytest.fixture
def api(tmp_path: Path, demo_warehouse: Path) -> Iterator[Api]:
    with running_api(tmp_path, demo_warehouse) as running:
        yield running


def key(api: Api, org: str, name: str | None = None, role: str = "admin", cluster_admin: bool = False) -> str:
    _, made = create_key(
        api.store, org=org, org_name=name, role=role, cluster_admin=cluster_admin, now=datetime.now(UTC)
    )
    return made


def configure(api: Api, key: str, body: dict[str, Any]) -> httpx.Response:
    return api.client.post(CONFIGURE, json=body, headers=bearer(key))


def search(api: Api, key: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = api.client.post(SEARCH, json=body or {}, headers=bearer(key))
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def pref(event_type: str, *channels: str) -> dict[str, Any]:
    return {"event_type": event_type, "channels": list(channels)}


def test_thoughtspots_examples_give_its_answers(api: Api) -> None:
    """ThoughtSpot's example orgs (Primary, testOrg, testOrg1, by id and name) and requests; LIVEBOARD_SCHEDULE is
    ours."""
    cluster_admin = key(api, "0", "Primary", cluster_admin=True)
    key(api, "1532970882", "testOrg")
    key(api, "2100019165", "testOrg1")
    org_example = {
        "org_preferences": [
            {"org_identifier": "testOrg1", "operation": "REPLACE", "preferences": [pref("REPORT_SCHEDULE", "WEBHOOK")]}
        ]
    }
    answer = configure(api, cluster_admin, org_example)
    assert (answer.status_code, answer.content) == (204, b"")
    test_org = {
        "org_identifier": "testOrg",
        "operation": "REPLACE",
        "preferences": [pref("REPORT_SCHEDULE", "EMAIL", "WEBHOOK")],
    }
    assert configure(api, cluster_admin, {"org_preferences": [test_org]}).status_code == 204

    assert search(api, cluster_admin, {"cluster_preferences": ["REPORT_SCHEDULE"]}) == {
        "cluster_preferences": [],
        "org_preferences": [
            {"org": {"id": "0", "name": "Primary"}, "preferences": []},
            {
                "org": {"id": "1532970882", "name": "testOrg"},
                "preferences": [pref("REPORT_SCHEDULE", "EMAIL", "WEBHOOK")],
            },
            {"org": {"id": "2100019165", "name": "testOrg1"}, "preferences": [pref("REPORT_SCHEDULE", "WEBHOOK")]},
        ],
    }
    one_org = {"org_preferences": [{"org_identifier": "testOrg1", "event_types": ["REPORT_SCHEDULE"]}]}
    assert search(api, cluster_admin, one_org) == {
        "cluster_preferences": [],
        "org_preferences": [
            {"org": {"id": "2100019165", "name": "testOrg1"}, "preferences": [pref("REPORT_SCHEDULE", "WEBHOOK")]}
        ],
    }

    cluster_example = {"cluster_preferences": [pref("REPORT_SCHEDULE", "WEBHOOK")]}
    assert configure(api, cluster_admin, cluster_example).status_code == 204
    assert search(api, cluster_admin, {"cluster_preferences": ["REPORT_SCHEDULE"]})["cluster_preferences"] == [
        pref("REPORT_SCHEDULE", "WEBHOOK")
    ]


def test_org_and_cluster_preferences_side_by_side_and_reset(api: Api) -> None:
    root = key(api, "root", cluster_admin=True)
    acme = key(api, "acme")
    cluster = [pref("REPORT_SCHEDULE", "EMAIL", "S3"), pref("REPORT_JOB", "EMAIL")]
    assert configure(api, root, {"cluster_preferences": cluster}).status_code == 204
    both = [pref("REPORT_JOB", "S3", "S3"), pref("REPORT_SCHEDULE", "WEBHOOK")]
    assert (
        configure(api, acme, {"org_preferences": [{"org_identifier": "acme", "preferences": both}]}).status_code == 204
    )
    assert search(api, acme) == {
        "cluster_preferences": cluster,
        "org_preferences": [
            {
                "org": {"id": "acme", "name": "acme"},
                "preferences": [pref("REPORT_SCHEDULE", "WEBHOOK"), pref("REPORT_JOB", "S3")],
            }
        ],
    }
    reset_job = {"org_identifier": "acme", "operation": "RESET", "reset_events": ["REPORT_JOB"]}
    assert configure(api, acme, {"org_preferences": [reset_job]}).status_code == 204
    assert search(api, acme)["org_preferences"][0]["preferences"] == [pref("REPORT_SCHEDULE", "WEBHOOK")]
    reset_all = {"org_identifier": "acme", "operation": "RESET"}
    assert configure(api, acme, {"org_preferences": [reset_all]}).status_code == 204
    assert search(api, acme)["org_preferences"][0]["preferences"] == []
    assert search(api, acme)["cluster_preferences"] == cluster, "a reset leaves the cluster's preferences"


def test_roles(api: Api) -> None:
    member = key(api, "acme", role="member")
    admin = key(api, "acme")
    mine = {"org_preferences": [{"org_identifier": "acme", "preferences": [pref("REPORT_JOB", "S3")]}]}
    refused = configure(api, member, mine)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    cluster_and_mine = {"cluster_preferences": [pref("REPORT_JOB", "EMAIL")], **mine}
    refused = configure(api, admin, cluster_and_mine)
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "cluster_preferences"
    assert search(api, member) == {
        "cluster_preferences": [],
        "org_preferences": [{"org": {"id": "acme", "name": "acme"}, "preferences": []}],
    }, "a refused request changed nothing; members may read"
    unauthenticated = api.client.post(SEARCH, json={})
    assert unauthenticated.status_code == 401 and "www-authenticate" in unauthenticated.headers


def test_another_organisation_is_invisible(api: Api) -> None:
    acme = key(api, "acme")
    globex = key(api, "globex", "Globex Corp")
    theirs = {"org_preferences": [{"org_identifier": "globex", "preferences": [pref("REPORT_JOB", "EMAIL")]}]}
    assert configure(api, globex, theirs).status_code == 204
    answers = {}
    for identifier in ("globex", "Globex Corp", "no-such-org"):
        attempt = {"org_preferences": [{"org_identifier": identifier, "preferences": [pref("REPORT_JOB", "S3")]}]}
        answer = configure(api, acme, attempt)
        answers[identifier] = (answer.status_code, answer.json()["error"]["message"].replace(repr(identifier), "X"))
        looked = api.client.post(
            SEARCH, json={"org_preferences": [{"org_identifier": identifier}]}, headers=bearer(acme)
        )
        assert looked.status_code == 404
        assert looked.json()["error"]["field"] == "org_preferences.0.org_identifier"
    assert set(answers.values()) == {(404, "no organisation X")}, "another organisation answers as a missing one"
    assert [o["org"]["id"] for o in search(api, acme)["org_preferences"]] == ["acme"]
    assert search(api, globex)["org_preferences"][0]["preferences"] == [pref("REPORT_JOB", "EMAIL")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cluster_preferences": [pref("LIVEBOARD_SCHEDULE", "EMAIL")]}, "body.cluster_preferences.0.event_type"),
        ({"cluster_preferences": [pref("REPORT_JOB", "SMS")]}, "body.cluster_preferences.0.channels.0"),
        ({"cluster_preferences": [pref("REPORT_JOB")]}, "body.cluster_preferences.0.channels"),
        (
            {"cluster_preferences": [pref("REPORT_JOB", "S3"), pref("REPORT_JOB", "EMAIL")]},
            "cluster_preferences.1.event_type",
        ),
        ({"org_preferences": [{"org_identifier": "acme", "operation": "MERGE"}]}, "body.org_preferences.0.operation"),
        ({"org_preferences": [{"org_identifier": "acme"}]}, "org_preferences.0.preferences"),
        (
            {
                "org_preferences": [
                    {"org_identifier": "acme", "operation": "RESET", "preferences": [pref("REPORT_JOB", "S3")]}
                ]
            },
            "org_preferences.0.preferences",
        ),
        (
            {
                "org_preferences": [
                    {
                        "org_identifier": "acme",
                        "preferences": [pref("REPORT_JOB", "S3")],
                        "reset_events": ["REPORT_JOB"],
                    }
                ]
            },
            "org_preferences.0.reset_events",
        ),
        (
            {"org_preferences": [{"org_identifier": "acme", "operation": "RESET", "reset_events": ["NOPE"]}]},
            "body.org_preferences.0.reset_events.0",
        ),
        ({"org_preferences": [{"org_identifier": "", "operation": "RESET"}]}, "body.org_preferences.0.org_identifier"),
        (
            {"org_preferences": [{"org_identifier": "a\nb", "operation": "RESET"}]},
            "body.org_preferences.0.org_identifier",
        ),
        (
            {"org_preferences": [{"org_identifier": "acme", "operation": "RESET"}] * 2},
            "org_preferences.1.org_identifier",
        ),
        ({"org_preference": []}, "body.org_preference"),
        ({}, "cluster_preferences"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(api: Api, body: dict[str, Any], field: str) -> None:
    root = key(api, "acme", cluster_admin=True)
    before_body = {
        "cluster_preferences": [pref("REPORT_SCHEDULE", "EMAIL")],
        "org_preferences": [{"org_identifier": "acme", "preferences": [pref("REPORT_JOB", "WEBHOOK")]}],
    }
    assert configure(api, root, before_body).status_code == 204
    before = search(api, root)
    # With org entries, a valid cluster change rides along: it must not be written either.
    extra = {"cluster_preferences": [pref("REPORT_JOB", "S3")]} if "org_preferences" in body else {}
    answer = configure(api, root, {**body, **extra})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field
    assert search(api, root) == before


def test_search_validates_its_filters(api: Api) -> None:
    admin = key(api, "acme")
    for body, field in (
        ({"cluster_preferences": ["LIVEBOARD_SCHEDULE"]}, "body.cluster_preferences.0"),
        (
            {"org_preferences": [{"org_identifier": "acme", "event_types": ["X"]}]},
            "body.org_preferences.0.event_types.0",
        ),
        ({"org_preferences": [{"event_types": ["REPORT_JOB"]}]}, "body.org_preferences.0.org_identifier"),
    ):
        answer = api.client.post(SEARCH, json=body, headers=bearer(admin))
        assert answer.status_code == 400 and answer.json()["error"]["field"] == field, answer.text
    no_body = api.client.post(SEARCH, headers=bearer(admin))
    assert no_body.status_code == 200 and no_body.json()["org_preferences"][0]["org"]["id"] == "acme"
