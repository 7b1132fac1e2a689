"""One mounted dashboard: where its resources come from, how its pages render (Jinja2, with the
response's nonce), and how its URLs are made: always from the mount point, by route name, so the same
router works under any prefix and behind any root path."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from runner.dashboard.extension import Extension, FieldLink, NavLink
from runner.dashboard.formatting import FILTERS
from runner.dashboard.security import new_nonce, page_headers
from runner.resources import Resources

__all__ = ["TEMPLATES", "Dashboard", "Query", "ResourcesOf"]

TEMPLATES = Path(__file__).parent / "templates"
# How the dashboard reaches the process's pools: the host app says (the dashboard knows no app state).
ResourcesOf = Callable[[Request], Resources]
Query = Mapping[str, str | Sequence[str]]
NAV = (NavLink("Overview", "overview"), NavLink("Workers", "workers"), NavLink("Jobs", "jobs"))


class Dashboard:
    """What every page of one mounted dashboard shares. `name` prefixes its route names, so two
    dashboards can live in one app."""

    def __init__(
        self, resources_of: ResourcesOf, *, name: str, read_only: bool, extensions: Sequence[Extension] = ()
    ) -> None:
        self.name = name
        self.read_only = read_only
        self.nav = NAV + tuple(link for e in extensions for link in e.nav)
        self._resources_of = resources_of
        self._field_links: dict[str, FieldLink] = {f.field: f for e in extensions for f in e.field_links}
        own = [e.templates for e in extensions if e.templates is not None]
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader([*own, TEMPLATES]), autoescape=True, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
        )  # fmt: skip
        self._templates.filters.update(FILTERS)

    def resources(self, request: Request) -> Resources:
        return self._resources_of(request)

    def queue(self, request: Request) -> str:
        return self.resources(request).settings.queue_name

    def route(self, page: str) -> str:
        """The route name of one of this dashboard's pages."""
        return f"{self.name}.{page}"

    def url(self, request: Request, page: str, query: Query | None = None, /, **params: Any) -> str:
        """The page's path (the mount point and root path included), its parameters percent-encoded."""
        quoted = {key: quote(str(value), safe=":@") for key, value in params.items()}
        path = request.url_for(self.route(page), **quoted).path
        query_string = urlencode(query, doseq=True) if query else ""
        return f"{path}?{query_string}" if query_string else path

    def field_link(self, request: Request, field: str, value: Any) -> str | None:
        """The page an argument's value names (an extension's field link), if any."""
        link = self._field_links.get(field)
        if link is None or not isinstance(value, str | int) or value == "":
            return None
        return self.url(request, link.page, **{link.param: value})

    def is_htmx(self, request: Request) -> bool:
        """An htmx request (it swaps a fragment of the page) rather than a full page load."""
        return request.headers.get("hx-request") == "true"

    def render(self, request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
        """`template` rendered with the page helpers, answered with a fresh nonce and its policy."""
        nonce = new_nonce()
        route = request.scope.get("route")
        current = getattr(route, "name", "") or ""
        html = self._templates.get_template(template).render(
            request=request, nonce=nonce, read_only=self.read_only, nav=self.nav,
            current=current.removeprefix(f"{self.name}."), url=partial(self.url, request),
            field_link=partial(self.field_link, request), **context,
        )  # fmt: skip
        headers = page_headers(nonce) | {"Vary": "HX-Request"}
        return HTMLResponse(html, status_code=status_code, headers=headers)
