"""One worker (`python -m runner worker --registry jobs:registry`) whose cProfile is switched on by SIGUSR1 and
off by SIGUSR2 (which writes the stats to --out), so a profile covers the measured run and not the start-up.

    python -m bench.profiled_worker --out worker.prof      # with the fleet's REDIS_URL and DATABASE_URL

Only the main thread (the event loop) is profiled, in its CPU time (time.thread_time, so the time it waits for
a core on a busy machine is not charged to whatever function it was in). bench.stories_http starts it with
`--profile-worker FILE`.
"""

from __future__ import annotations

import argparse
import cProfile
import runpy
import signal
import sys
import time
from pathlib import Path
from types import FrameType

__all__ = ["main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where SIGUSR2 writes the stats")
    args = parser.parse_args()
    profiler = cProfile.Profile(time.thread_time)  # CPU time: a worker waiting for a core is not charged

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(str(args.out))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["runner", "worker", "--registry", "jobs:registry"]
    runpy.run_module("runner", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
