"""The fake providers of the tests (tests/fakes/provider_server.py: OpenAI chat completions, image generations
and speech, ElevenLabs text-to-speech, over real HTTP on loopback) in a process of their own, answering every
call after a fixed latency, for the story benches over HTTP. Its own process, so its CPU is counted apart.

    python -m bench.provider_server --latency-ms 50

Prints one JSON line when it listens ({"base_url", "openai_url", "port"}) and, after SIGTERM or SIGINT, one
more with what it answered ({"requests": {route: count}, "max_in_flight", "latency_ms"}).

The latency is the fake's "slow" fault at a rate of 1 with a fixed delay: every unscripted request gets its
route's default answer (a story honouring "exactly N scenes", a visual profile, an image prompt, a PNG as
b64_json, MP3 bytes), sent `--latency-ms` after the request arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections import Counter
from typing import Any

import uvloop

from tests.fakes.provider_server import FakeProviderServer, FaultMix

__all__ = ["serve"]

_TALLY_S = 1.0  # how often the recorded requests are counted and dropped (the fake keeps every one)


async def serve(latency_ms: float) -> dict[str, Any]:
    """Serve until SIGTERM or SIGINT; return what was answered."""
    delay_s = latency_ms / 1000
    faults = FaultMix(slow=1.0, slow_s=(delay_s, delay_s)) if delay_s > 0 else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    requests: Counter[str] = Counter()
    async with FakeProviderServer(faults=faults) as fake:
        print(json.dumps({"base_url": fake.base_url, "openai_url": fake.openai_url, "port": fake.port}), flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _TALLY_S)
            requests.update(recorded.route for recorded in fake.requests)
            fake.requests.clear()
        max_in_flight = fake.max_in_flight
    return {"requests": dict(requests), "max_in_flight": max_in_flight, "latency_ms": latency_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=50, help="each answer waits this long")
    args = parser.parse_args()
    print(json.dumps(uvloop.run(serve(args.latency_ms))), flush=True)


if __name__ == "__main__":
    main()
