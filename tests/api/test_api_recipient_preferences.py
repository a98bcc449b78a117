"""One person's preferences over HTTP (bulletin.edge.api.recipient_preferences): set, read and clear each level
with an organisation's key; another organisation's recipient is a 404 like an unknown one; members read, admins
write; bad bodies are 400s that change nothing; the routes are in the OpenAPI document with descriptions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.v1_support import Api, bearer, running_api

ACME = "rm-emea-north"  # acme's, in the demo report audiences (bulletin/demo_data.py)
GLOBEX = "rm-apac-2"
URL = "/v1/recipients/{}/preferences"


@pytest.fixture
def api(tmp_path: Path, demo_warehouse: Path) -> Iterator[Api]:
    with running_api(tmp_path, demo_warehouse) as running:
        yield running


def test_set_read_and_clear_each_level(api: Api) -> None:
    key = api.key("acme")
    url = URL.format(ACME)
    assert api.client.get(url, headers=bearer(key)).json() == {"recipient": ACME, "org": "acme", "preferences": []}
    every = api.client.request("PUT", url, json={"channels": ["S3", "EMAIL", "S3"]}, headers=bearer(key))
    assert every.status_code == 200, every.text
    one = api.client.request(
        "PUT", url, json={"report_id": "weekly-regional-sales", "channels": []}, headers=bearer(key)
    )
    levels = [(p["report_id"], p["channels"]) for p in one.json()["preferences"]]
    assert levels == [(None, ["EMAIL", "S3"]), ("weekly-regional-sales", [])]
    cleared = api.client.request("DELETE", url, params={"report_id": "weekly-regional-sales"}, headers=bearer(key))
    assert [p["report_id"] for p in cleared.json()["preferences"]] == [None]
    assert api.client.request("DELETE", url, headers=bearer(key)).json()["preferences"] == []
    assert api.client.request("DELETE", url, headers=bearer(key)).status_code == 200, "removing nothing is not an error"


def test_another_organisations_recipient_is_a_404_like_an_unknown_one(api: Api) -> None:
    key = api.key("acme")
    for ref in (GLOBEX, "nobody-at-all"):
        for method, kwargs in (("GET", {}), ("PUT", {"json": {"channels": []}}), ("DELETE", {})):
            answer = api.client.request(method, URL.format(ref), headers=bearer(key), **kwargs)
            assert answer.status_code == 404, (ref, method, answer.text)
            assert answer.json()["error"]["message"] == f"no recipient {ref!r} in your organisation's report audiences"
    other = api.key("globex")
    assert api.client.get(URL.format(GLOBEX), headers=bearer(other)).status_code == 200


def test_members_read_admins_write_and_no_key_is_a_401(api: Api) -> None:
    member = api.key("acme", role="member")
    assert api.client.get(URL.format(ACME), headers=bearer(member)).status_code == 200
    assert api.client.request("PUT", URL.format(ACME), json={"channels": []}, headers=bearer(member)).status_code == 403
    assert api.client.get(URL.format(ACME)).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"channels": ["FAX"]},
        {},
        {"channels": [], "report_id": "no-such-report"},
        {"channels": [], "report_id": "../etc"},
        {"channels": [], "extra": 1},
    ],
)
def test_a_bad_body_is_a_400_and_changes_nothing(api: Api, body: dict[str, object]) -> None:
    key = api.key("acme")
    answer = api.client.request("PUT", URL.format(ACME), json=body, headers=bearer(key))
    assert answer.status_code == 400, answer.text
    assert api.client.get(URL.format(ACME), headers=bearer(key)).json()["preferences"] == []


def test_the_routes_are_described_in_openapi(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    ops = doc["paths"]["/v1/recipients/{ref}/preferences"]
    assert set(ops) >= {"get", "put", "delete"}
    assert all(ops[m].get("description") for m in ("get", "put", "delete"))
    unsubscribe = doc["paths"]["/v1/unsubscribe/{token}"]
    assert set(unsubscribe) >= {"get", "post"} and "security" not in unsubscribe["post"]


def test_the_search_shows_the_people_it_names_and_only_then(api: Api) -> None:
    key = api.key("acme")
    api.client.request(
        "PUT", URL.format(ACME), json={"report_id": "weekly-regional-sales", "channels": []}, headers=bearer(key)
    )
    search = "/v1/preferences/communication-channels/search"
    plain = api.client.post(search, json={}, headers=bearer(key)).json()
    assert "recipient_preferences" not in plain, "a search that names nobody answers as before"
    found = api.client.post(search, json={"recipient_preferences": [ACME]}, headers=bearer(key)).json()
    (ann,) = found["recipient_preferences"]
    assert (ann["recipient"], ann["org"]) == (ACME, "acme")
    assert [(p["report_id"], p["channels"]) for p in ann["preferences"]] == [("weekly-regional-sales", [])]
    other = api.client.post(search, json={"recipient_preferences": [GLOBEX]}, headers=bearer(key))
    assert other.status_code == 404
    thoughtspot = "/api/rest/2.0/system/preferences/communication-channels/search"
    assert "recipient_preferences" not in api.client.post(thoughtspot, json={}, headers=bearer(key)).json()
