"""The shared metrics folder of one fleet. Kept apart from runner.fleet.metrics because it must be set up
before anything imports prometheus-client, which reads PROMETHEUS_MULTIPROC_DIR once, at import."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["MULTIPROC_ENV", "prepare_multiprocess_dir"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """A fresh metrics folder for one supervisor's children (old files would count dead processes)."""
    path = (data_dir / "metrics" / str(os.getpid())).resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
