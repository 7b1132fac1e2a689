"""The runner's Lua scripts (`lua/*.lua`, one per script), loaded by name, and run many at once.

Each file's header names every KEYS and ARGV entry, and its first lines unpack them into named locals.
Every key a script touches comes in KEYS or is built from a prefix passed in ARGV (see keys.py).

Running one script many times in one round trip: redis-py's pipelined `Script` sends `SCRIPT EXISTS`
before every pipeline, a second round trip per batch. Here the batch goes out as plain EVALSHA calls,
and only if Redis answers NOSCRIPT (it was restarted or its script cache flushed) is the script loaded
and the calls that were refused sent again: a refused call did not run, so sending it again runs it once.
Any other error reply comes back as a `server_errors.RedisRefusedError` saying what it is (and, for a
WRONGTYPE, which of the call's keys holds another type).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

from runner.broker import server_errors
from runner.broker.connection import RedisClient

__all__ = ["Call", "register", "run_many", "source"]

Call = tuple[Sequence[Any], Sequence[Any]]  # (keys, args)


@functools.cache
def source(name: str) -> str:
    """The text of `lua/<name>.lua`."""
    return resources.files("runner.broker").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def register(redis: RedisClient, name: str) -> AsyncScript:
    """The script `name` bound to `redis` (loaded on first use, reloaded if Redis forgot it)."""
    # redis-py types a script's client as Redis; the cluster client runs it too (routed by its first key).
    script: AsyncScript = redis.register_script(source(name))  # type: ignore[misc]
    return script


async def run_many(redis: RedisClient, script: AsyncScript, calls: Sequence[Call]) -> list[Any]:
    """Run `script` once per (keys, args) call, in order, in one round trip; return each call's reply
    or the exception it raised (a per-call error does not stop the others; a connection error raises)."""
    if len(calls) == 1:  # no pipeline needed; the Script object handles NOSCRIPT itself
        keys, args = calls[0]
        try:
            return [await script(keys=keys, args=args)]
        except Exception as exc:
            if _is_connection_error(exc):
                raise
            replies: list[Any] = [exc]
    else:
        replies = await _evalsha_all(redis, script.sha, calls)
        refused = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if refused:
            script.sha = await redis.script_load(script.script)
            again = await _evalsha_all(redis, script.sha, [calls[i] for i in refused])
            for i, reply in zip(refused, again, strict=True):
                replies[i] = reply
    if any(isinstance(reply, ResponseError) for reply in replies):  # refused: say what, and which key
        replies = await server_errors.explain_replies(redis, [keys for keys, _ in calls], replies)
    return replies


async def _evalsha_all(redis: RedisClient, sha: str, calls: Sequence[Call]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            # As a plain command: redis-py's cluster pipeline refuses its evalsha() (it cannot tell a script's
            # keys), yet routes EVALSHA by the keys it names, as every call of ours names its queue's keys.
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    for reply in replies:
        if _is_connection_error(reply):
            raise reply
    return replies


def _is_connection_error(value: object) -> bool:
    return isinstance(value, ConnectionError | TimeoutError | OSError)
