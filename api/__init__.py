"""StoryMimi's HTTP API."""

from __future__ import annotations

from api.main import create_app

__all__ = ["create_app"]
