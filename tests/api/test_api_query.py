"""POST /v1/query (bulletin.edge.api.query): the query engine over HTTP with a data token, against the demo warehouse.

The token's scope is enforced exactly as in ``bulletin query``: ANDed with the body's filters, allowlists checked,
an empty scope refused. One request goes through uvicorn on loopback, end to end."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bulletin.edge.api.query import QueryResult, choose_format
from bulletin.errors import NotAcceptableError
from tests.api.v1_support import Api, api_settings, bearer, region, running_api, serving

EMEA = [region("EMEA-North")]


@pytest.fixture
def api(tmp_path: Path, demo_warehouse: Path) -> Iterator[Api]:
    with running_api(tmp_path, demo_warehouse, api_query_max_rows=500) as running:
        yield running


def query(api: Api, token: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return api.client.post("/v1/query", json={"dataset": "sales", **body}, headers={**bearer(token), **headers})


def test_json_rows_within_the_token_scope(api: Api) -> None:
    response = query(api, api.token(EMEA), {"columns": ["order_id", "region", "amount"], "limit": 50})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    result = response.json()
    QueryResult.model_validate(result)  # the documented shape
    assert result["dataset"] == "sales" and result["columns"] == ["order_id", "region", "amount"]
    assert result["row_count"] == len(result["rows"]) == 50 and result["truncated"] is True
    assert {row["region"] for row in result["rows"]} == {"EMEA-North"}
    ids = [row["order_id"] for row in result["rows"]]
    assert ids == sorted(ids)  # the dataset's default order


def test_the_body_filters_narrow_the_scope_and_never_widen_it(api: Api) -> None:
    token = api.token(EMEA)
    other = query(api, token, {"filters": [region("APAC")], "columns": ["region"]}).json()
    assert other["rows"] == [] and other["truncated"] is False
    either = query(api, token, {"filters": [region(["APAC", "EMEA-North"], "is_one_of")], "columns": ["region"]})
    assert {row["region"] for row in either.json()["rows"]} == {"EMEA-North"}
    narrower = query(
        api,
        token,
        {"filters": [{"field": "quantity", "op": ">=", "value": 3}], "columns": ["region", "quantity"], "limit": 20},
    ).json()
    assert narrower["rows"] and all(r["quantity"] >= 3 and r["region"] == "EMEA-North" for r in narrower["rows"])


def test_csv_by_accept_with_the_truncation_row(api: Api) -> None:
    response = query(
        api, api.token(EMEA), {"columns": ["order_date", "region", "amount"], "limit": 5}, accept="text/csv"
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["order_date", "region", "amount"]
    assert [r[1] for r in rows[1:6]] == ["EMEA-North"] * 5
    assert rows[6] == ["# truncated: first 5 rows shown", "", ""]
    datetime.strptime(rows[1][0], "%Y-%m-%d")


def test_without_a_limit_the_setting_caps_the_rows_and_a_larger_limit_is_refused(api: Api) -> None:
    token = api.token(EMEA)
    capped = query(api, token, {"columns": ["order_id"]}).json()
    assert capped["row_count"] == 500 and capped["truncated"] is True
    refused = query(api, token, {"columns": ["order_id"], "limit": 501})
    assert refused.status_code == 400
    assert refused.json()["error"] == {"code": "query", "message": "limit is at most 500", "field": "limit"}


@pytest.mark.parametrize(
    ("filters", "body", "status", "code", "field"),
    [
        (EMEA, {"columns": ["no_such_column"]}, 400, "query", "no_such_column"),
        (EMEA, {"filters": [{"field": "amount", "op": "=", "value": 1}]}, 400, "query", "amount"),
        (EMEA, {"filters": [{"field": "unit_price", "op": ">", "value": 1}]}, 400, "query", "unit_price"),
        (EMEA, {"filters": [{"field": "order_date", "op": ">=", "value": "not a date"}]}, 400, "query", "order_date"),
        (EMEA, {"order": [{"field": "nope"}]}, 400, "query", "nope"),
        (EMEA, {"filters": [{"field": "region", "op": "LIKE", "value": "%"}]}, 400, "bad_request", None),
        (EMEA, {"columns": ["region; DROP TABLE sales"]}, 400, "bad_request", None),
        (EMEA, {"limit": 0}, 400, "bad_request", "body.limit"),
        (EMEA, {"dataset": "no-such-dataset"}, 404, "not_found", None),
        (None, {}, 403, "scope", None),
    ],
)
def test_what_the_engine_refuses_is_refused_with_its_status(
    api: Api, filters: Any, body: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    response = query(api, api.token(filters), body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field


def test_a_token_for_another_dataset_is_403(api: Api) -> None:
    response = query(api, api.token(EMEA, datasets=["orders"]), {})
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "the token does not grant dataset 'sales'"


def test_bad_tokens_are_401_with_a_challenge_and_never_echoed(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    good = api.token(EMEA)
    expired = api.token(EMEA, now=datetime.now(UTC) - timedelta(hours=1))
    foreign = api.token(EMEA, issuer="someone-else")
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    api_key = api.key("acme")
    cases = [(expired, "token has expired"), (foreign, "token issuer is wrong"), (tampered, None), (api_key, None)]
    with caplog.at_level(logging.DEBUG):
        for token, message in cases:
            response = query(api, token, {})
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"].startswith('Bearer realm="bulletin-query"')
            assert token not in response.text
            if message is not None:
                assert response.json()["error"]["message"] == message
        missing = api.client.post("/v1/query", json={"dataset": "sales"})
        basic = api.client.post("/v1/query", json={"dataset": "sales"}, headers={"authorization": "Basic abc"})
    assert missing.status_code == basic.status_code == 401
    for token, _ in cases:
        assert token not in caplog.text and token[-30:] not in caplog.text


def test_not_acceptable_and_content_negotiation(api: Api) -> None:
    response = query(api, api.token(EMEA), {"limit": 1}, accept="text/html")
    assert response.status_code == 406 and response.json()["error"]["field"] == "accept"
    assert choose_format(None) == choose_format("*/*") == choose_format("application/json, text/csv") == "json"
    assert choose_format("text/csv") == choose_format("application/json;q=0.5, text/csv") == "csv"
    assert choose_format("text/*, application/json;q=0.1") == "csv"
    with pytest.raises(NotAcceptableError):
        choose_format("application/json;q=0, text/csv;q=0")


def test_body_cap_applies_to_every_route(tmp_path: Path, demo_warehouse: Path) -> None:
    with running_api(tmp_path, demo_warehouse, api_max_body_bytes=2048) as api:
        token = api.token(EMEA)
        big = {"dataset": "sales", "filters": [region("x" * 4000)]}
        declared = api.client.post("/v1/query", json=big, headers=bearer(token))

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap counts what arrives
            yield b'{"dataset": "sales", "columns": ['
            for _ in range(400):
                yield b'"region",'
            yield b'"amount"]}'

        headers = {**bearer(token), "content-type": "application/json"}
        streamed = api.client.post("/v1/query", content=chunks(), headers=headers)
        endpoint = api.client.post(
            "/v1/webhook-endpoints",
            json={"url": "https://example.com/" + "a" * 3000, "event_types": ["*"]},
            headers=bearer(api.key("acme")),
        )
    for response in (declared, streamed, endpoint):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large"


def test_malformed_json_is_400(api: Api) -> None:
    response = api.client.post(
        "/v1/query", content=b"{nope", headers={**bearer(api.token(EMEA)), "content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


def test_a_missing_keyset_is_503_without_a_server_path(tmp_path: Path, demo_warehouse: Path) -> None:
    with running_api(tmp_path, demo_warehouse, signing_keys=None, keys_file=tmp_path / "nowhere.json") as api:
        token = api.token(EMEA)  # signed with the test keyset, which this server does not have
        response = query(api, token, {})
    assert response.status_code == 503
    assert str(tmp_path) not in response.text


def test_end_to_end_through_uvicorn_on_loopback(tmp_path: Path, demo_warehouse: Path) -> None:
    settings = api_settings(tmp_path, demo_warehouse)
    token = Api(client=None, settings=settings).token(EMEA)  # type: ignore[arg-type]
    body = {"dataset": "sales", "columns": ["region", "amount"], "filters": [region("APAC", "!=")], "limit": 3}
    with serving(settings, "query-e2e") as url, httpx.Client(base_url=url, timeout=30) as http:
        as_json = http.post("/v1/query", json=body, headers=bearer(token))
        as_csv = http.post("/v1/query", json=body, headers={**bearer(token), "accept": "text/csv"})
        unauthorised = http.post("/v1/query", json=body)
    assert as_json.status_code == 200 and as_json.json()["row_count"] == 3
    assert {row["region"] for row in as_json.json()["rows"]} == {"EMEA-North"}
    csv_rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert csv_rows[0] == ["region", "amount"] and len(csv_rows) == 5
    amounts = [float(r["amount"]) for r in as_json.json()["rows"]]
    assert [float(r[1]) for r in csv_rows[1:4]] == amounts
    assert unauthorised.status_code == 401
