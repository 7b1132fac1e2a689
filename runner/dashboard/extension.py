"""What a host app adds to the dashboard without the dashboard knowing its domain: pages of its own
(routes rendered in the dashboard's layout, under its mount point and its security), templates for them,
entries in the navigation, and links from a job argument's value to one of those pages (for StoryMimi:
`story_id` -> the story page)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter

if TYPE_CHECKING:
    from runner.dashboard.dashboard import Dashboard

__all__ = ["Extension", "FieldLink", "NavLink"]


@dataclass(frozen=True, slots=True)
class NavLink:
    """A navigation entry: its label and the page (route name without the dashboard's prefix) it opens."""

    label: str
    page: str


@dataclass(frozen=True, slots=True)
class FieldLink:
    """A job argument whose value names something with a page: `field`'s value becomes `page`'s `param`."""

    field: str
    page: str
    param: str


@dataclass(frozen=True)
class Extension:
    """`routes(dashboard)` returns the extra pages' router: name each route `dashboard.route(page)` and
    render with `dashboard.render(...)`. `templates` is a directory searched before the dashboard's own
    (extend "base.html"; give your templates names of their own)."""

    routes: Callable[[Dashboard], APIRouter] | None = None
    templates: Path | None = None
    nav: tuple[NavLink, ...] = ()
    field_links: tuple[FieldLink, ...] = ()
