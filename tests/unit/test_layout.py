"""The layout keeps its promises: imports point one way, and production never loads the dev servers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_production_path_never_imports_the_dev_servers():
    """The API, a worker and the launcher with both URLs set load nothing from runner.devservers."""
    code = (
        "import sys, api.main, runner.worker.worker, runner.fleet.launcher as l, jobs; "
        "from runner.settings import Settings; "
        "s = Settings(_env_file=None, redis_url='redis://x', database_url='postgresql://x'); "
        "cm = l.embedded_servers(s); cm.__enter__(); cm.__exit__(None, None, None); "
        "print(sorted(m for m in sys.modules if m.startswith('runner.devservers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add((str(path.relative_to(ROOT)), node.module.split(".")[0]))
            elif isinstance(node, ast.Import):
                found.update((str(path.relative_to(ROOT)), a.name.split(".")[0]) for a in node.names)
    return found


def test_imports_point_one_way():
    """runner never imports jobs or api; jobs never imports api."""
    assert [f for f, top in _imports("runner") if top in ("jobs", "api")] == []
    assert [f for f, top in _imports("jobs") if top == "api"] == []


def test_the_api_has_no_sql():
    """HTTP only: SQL lives in jobs/ and runner/store/."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "api").rglob("*.py")
        if any(word in p.read_text() for word in ("SELECT ", "INSERT ", "UPDATE ", "DELETE FROM"))
    ]
    assert offenders == []
