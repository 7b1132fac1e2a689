"""The other systems' virtual environments for `make bench-jobs`: one each (bench/.venv-<name>), made from
bench/requirements-<name>.txt with the package index, once, and remade when that file changes.  Each peer
needs its own: Celery 5.7's kombu wants redis-py >= 6.4 while arq 0.28 (this project's venv) wants < 6, and
no peer's dependencies should decide another's versions.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def venv_dir(name: str) -> Path:
    return BENCH / f".venv-{name}"


def requirements(name: str) -> Path:
    return BENCH / f"requirements-{name}.txt"


def ensure_venv(name: str) -> Path:
    """bench/.venv-<name> with bench/requirements-<name>.txt installed (reinstalled when that file changes);
    returns its python."""
    venv, reqs = venv_dir(name), requirements(name)
    python = venv / "bin" / "python"
    stamp = venv / f".installed-{hashlib.sha256(reqs.read_bytes()).hexdigest()[:12]}"
    if stamp.exists() and python.exists():
        return python
    base = shutil.which("python3.11") or sys.executable
    print(f"bench: installing {reqs.relative_to(ROOT)} into {venv.relative_to(ROOT)}", file=sys.stderr)
    if not python.exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                    str(reqs)], check=True)  # fmt: skip
    for old in venv.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return python


def ensure_celery_venv() -> Path:
    return ensure_venv("celery")


def ensure_venvs(names: list[str]) -> dict[str, Path | None]:
    """Each named venv's python, made side by side (pip waits on the network and disk, not the CPU); None
    for one that could not be made, saying why on stderr, so its system's cells show 'error'."""

    def make(name: str) -> Path | None:
        try:
            return ensure_venv(name)
        except (subprocess.CalledProcessError, OSError) as error:
            print(f"bench: no {name} environment ({error}); its cells will show 'error'", file=sys.stderr)
            return None

    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return dict(zip(names, pool.map(make, names), strict=True))
