"""The API documentation page (`/docs`), served with Swagger UI from the installed package: FastAPI's own
loads it from a CDN, which fails wherever there is no internet (and leaks every visit to a third party)."""

from __future__ import annotations

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["install_docs"]


def install_docs(app: FastAPI) -> None:
    """Mount Swagger UI's files and the `/docs` page (build the app with `docs_url=None, redoc_url=None`)."""
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/static/favicon/favicon.svg",
        )
