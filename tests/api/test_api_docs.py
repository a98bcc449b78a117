"""The API documents itself with no internet: /docs and /redoc load only this server's assets, and /openapi.json
declares how each route is authenticated and speaks of the product."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.v1_support import Api, running_api

#: What each local asset must be served as.
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, demo_warehouse: Path) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("docs"), demo_warehouse) as running:
        yield running


def referenced_urls(html: str) -> list[str]:
    """Every URL a page loads: src= and href= attributes, Swagger UI's `url:` and ReDoc's spec-url."""
    attributes = re.findall(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']""", html)
    return attributes + re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", html)


@pytest.mark.parametrize(("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_the_docs_pages_load_only_local_assets(api: Api, page: str, script: str) -> None:
    response = api.client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text and "https://" not in response.text  # no CDN, no web fonts
    urls = referenced_urls(response.text)
    assert any(url.endswith(script) for url in urls), urls
    assert "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
        asset = api.client.get(url)
        assert asset.status_code == 200, url
        wanted = CONTENT_TYPES[Path(url).suffix]
        assert asset.headers["content-type"].startswith(wanted), (url, asset.headers["content-type"])
        assert len(asset.content) > 1000 or url.endswith(".png")


def openapi(api: Api) -> dict[str, Any]:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


def test_openapi_declares_the_api_key_and_the_data_token(api: Api) -> None:
    spec = openapi(api)
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKeyBearer"]["type"] == "http" and schemes["ApiKeyBearer"]["scheme"] == "bearer"
    assert schemes["ApiKeyHeader"] == {**schemes["ApiKeyHeader"], "type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schemes["DataToken"] == {**schemes["DataToken"], "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    either_key = [{"ApiKeyBearer": []}, {"ApiKeyHeader": []}]
    operations = {(m.upper(), p): op for p, ops in spec["paths"].items() for m, op in ops.items()}
    assert operations["POST", "/v1/query"]["security"] == [{"DataToken": []}]
    for route in [("GET", "/v1/webhook-endpoints"), ("POST", "/v1/jobs"), ("POST", "/v1/scheduled-events")]:
        assert operations[route]["security"] == either_key, route
    # Every /v1 route but the signed webhooks, the signed file links and the signed unsubscribe links takes a
    # credential.
    unauthenticated = {path for (_, path), op in operations.items() if "security" not in op}
    assert unauthenticated == {
        "/v1/hooks/{trigger_id}",
        "/v1/files/{name}",
        "/v1/unsubscribe/{token}",
        "/healthz",
        "/readyz",
    }


def test_openapi_speaks_of_the_product(api: Api) -> None:
    text = api.client.get("/openapi.json").text
    assert "seed" not in text.lower()
    spec = openapi(api)
    assert "Hasura-style" in spec["info"]["description"]
