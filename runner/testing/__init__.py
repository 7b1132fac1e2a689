"""Testing jobs against the real queue: a pytest plugin (runner.testing.plugin, loaded through its `pytest11`
entry point) and the harness its fixtures give (`JobRunnerHarness`).

Nothing is imported until used, so the plugin stays cheap to load in every pytest run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.testing.harness import JobRunnerHarness, harness_settings
    from runner.testing.servers import RunnerServers, open_servers
    from runner.testing.worker_process import WorkerProcess

__all__ = ["JobRunnerHarness", "RunnerServers", "WorkerProcess", "harness_settings", "open_servers"]

_LAZY = {
    "JobRunnerHarness": "runner.testing.harness",
    "harness_settings": "runner.testing.harness",
    "RunnerServers": "runner.testing.servers",
    "open_servers": "runner.testing.servers",
    "WorkerProcess": "runner.testing.worker_process",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'runner.testing' has no attribute {name!r}")
