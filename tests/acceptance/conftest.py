"""Fixtures of the acceptance tier: real fleets of this test's queue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from runner.settings import Settings
from tests.acceptance.fleet import Fleet

MakeFleet = Callable[..., Fleet]


@pytest.fixture
async def fleet(settings: Settings, tmp_path: Path) -> AsyncIterator[MakeFleet]:
    """Make fleets (supervisor and workers) with this test's settings; every one is killed at teardown if
    still running. `fleet.made` lists them."""
    made: list[Fleet] = []

    def make(**env: Any) -> Fleet:
        made.append(Fleet(settings, tmp_path, **env))
        return made[-1]

    make.made = made  # type: ignore[attr-defined]
    yield make
    for f in made:
        f.close()
