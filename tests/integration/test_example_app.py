"""The example project (tests/example_app) tested as a user would: its own pytest run, in its own folder, with
only the runner's pytest plugin (no conftest of ours) and embedded servers the plugin starts itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import Servers

EXAMPLE_APP = Path(__file__).resolve().parents[1] / "example_app"
EXPECTED_TESTS = 7  # tests/example_app/test_example_jobs.py


def _user_env(**extra: str) -> dict[str, str]:
    """This environment as a user's shell would have it: no servers given, no options of our pytest run."""
    dropped = ("REDIS_", "DATABASE_", "PYTEST_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(dropped)}, **extra}


def _pytest(tmp_path: Path, *args: str, env: dict[str, str], wait_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'inner'}", *args],
        cwd=EXAMPLE_APP, env=env, capture_output=True, text=True, timeout=wait_s, check=False,
    )  # fmt: skip


@pytest.mark.timeout(240)
def test_the_example_apps_own_suite_passes(tmp_path: Path):
    """`python -m pytest` in tests/example_app runs all its tests, and they pass."""
    report = tmp_path / "junit.xml"
    run = _pytest(tmp_path, f"--junitxml={report}", env=_user_env(), wait_s=200)
    output = f"the example app's pytest exited {run.returncode}; its output ends:\n{(run.stdout + run.stderr)[-6000:]}"
    assert report.exists(), output
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None, output
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": EXPECTED_TESTS, "failures": 0, "errors": 0, "skipped": 0}, output
    assert run.returncode == 0, output


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param([], {}, id="entry-point"),
        pytest.param(["-p", "runner.testing.plugin"], {}, id="entry-point-and-p"),
        pytest.param(
            ["-p", "pytest_asyncio.plugin", "-p", "pytest_timeout", "-p", "runner.testing.plugin"],  # asyncio first
            {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
            id="p-alone",
        ),
    ],
)
def test_the_plugin_loads_by_entry_point_or_by_p(tmp_path: Path, args: list[str], env: dict[str, str]):
    """The fixtures are there whether the plugin comes from its entry point, from `-p`, or both at once."""
    run = _pytest(tmp_path, *args, "--fixtures", env=_user_env(**env), wait_s=60)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    for fixture in ("job_runner ", "job_runner_process ", "runner_registry ", "runner_settings_overrides "):
        assert fixture in run.stdout, run.stdout[-3000:]


def test_the_plugin_imports_nothing_heavy_and_starts_nothing():
    """Loaded in every pytest run of the venv, the plugin module imports neither the worker, the client nor the
    embedded servers' code (each fixture imports what it needs when used)."""
    probe = (
        "import sys, runner.testing.plugin; "
        "print(sorted(m for m in sys.modules if m.startswith(('runner.worker', 'runner.client', "
        "'runner.devservers', 'runner.testing.', 'prometheus_client'))))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert run.stdout.strip() == "['runner.testing.plugin']", run.stdout + run.stderr


@pytest.mark.timeout(120)
async def test_a_database_with_real_jobs_is_refused_before_any_write(tmp_path: Path, servers: Servers):
    """A DATABASE_URL left set for a real server (here: a database whose runner_jobs hold a `storymimi` job)
    stops the run before the plugin migrates or writes there, saying why; the database is left as it was."""
    admin = await asyncpg.connect(servers.postgres.url)
    try:
        await admin.execute("DROP DATABASE IF EXISTS looks_live")
        await admin.execute("CREATE DATABASE looks_live")
    finally:
        await admin.close()
    url = servers.postgres.url.rsplit("/", 1)[0] + "/looks_live"
    live = await asyncpg.connect(url)
    try:
        await live.execute("CREATE TABLE runner_jobs (job_id text PRIMARY KEY, queue text NOT NULL)")
        await live.execute("INSERT INTO runner_jobs VALUES ('story_task.generate:1', 'storymimi')")
        run = await asyncio.to_thread(
            _pytest, tmp_path, "-x", env=_user_env(DATABASE_URL=url, REDIS_URL=servers.redis.url), wait_s=100
        )
        output = (run.stdout + run.stderr)[-3000:]
        assert run.returncode == 1, output
        assert "names a database with jobs of queue 'storymimi', not a test database" in output, output
        tables = await live.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert [t["tablename"] for t in tables] == ["runner_jobs"], "the plugin migrated the live database"
        assert await live.fetchval("SELECT count(*) FROM runner_jobs") == 1
    finally:
        await live.close()
