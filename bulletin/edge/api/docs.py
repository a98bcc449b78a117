"""``/docs`` (Swagger UI) and ``/redoc``, served with no internet: their scripts, style sheet and icon come from this
server (``/docs-assets/``), not from a CDN as FastAPI's defaults do, so the API documents itself on an isolated
network too.

The assets are the ones the ``fastapi-offline`` package ships (Swagger UI and ReDoc bundles, MIT); only its files are
used. Were the package missing, the pages answer 503 naming it rather than an empty page.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from bulletin.errors import TransientError

logger = logging.getLogger(__name__)

ASSETS_URL = "/docs-assets"
_PACKAGE = "fastapi_offline"


def assets_dir() -> Path | None:
    """The folder holding ``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js`` and ``favicon.png``,
    or None when the package that ships them is not installed."""
    if find_spec(_PACKAGE) is None:
        return None
    return Path(str(files(_PACKAGE) / "static"))


def add_docs(app: FastAPI) -> None:
    """Mount the assets and the two pages (left out of the OpenAPI document, like FastAPI's own)."""
    folder = assets_dir()
    if folder is None:
        logger.warning("the %s package is not installed: /docs and /redoc answer 503", _PACKAGE)
    else:
        app.mount(ASSETS_URL, StaticFiles(directory=folder), name="docs-assets")
    title = f"{app.title} API"

    def urls(request: Request) -> tuple[str, str]:
        if folder is None:
            raise TransientError(f"the API documentation pages need the {_PACKAGE} package, which is not installed")
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return f"{root}{app.openapi_url}", f"{root}{ASSETS_URL}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        spec, assets = urls(request)
        return get_swagger_ui_html(
            openapi_url=spec,
            title=title,
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            oauth2_redirect_url=None,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        spec, assets = urls(request)
        return get_redoc_html(
            openapi_url=spec,
            title=title,
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )
