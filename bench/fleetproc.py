"""`python -m runner run ...` with its children forked from the zygote (`fork`, what `make run` does) or
exec'd as before it (`exec`), for benchmarks that compare the two:

    python -m bench.fleetproc fork --no-api      # the same as: python -m runner run --no-api
    python -m bench.fleetproc exec --no-api      # every child a fresh `python -m runner ...` process
"""

from __future__ import annotations

import sys
from typing import Any

import runner.fleet.launcher as launcher
from runner.cli import main as runner_main


def main(argv: list[str]) -> int:
    mode, *rest = argv or ["fork"]
    if mode not in ("fork", "exec"):
        raise SystemExit(f"expected fork or exec, got {mode!r}")
    if mode == "exec":
        launch = launcher.launch

        def without_zygote(settings: Any, plan: Any, *, entry: Any = None) -> int:
            return launch(settings, plan)

        launcher.launch = without_zygote  # runner.cli.processes imports it at call time
    return runner_main(["run", *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
