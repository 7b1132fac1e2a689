"""Running one Lua script many times in one round trip.

redis-py's pipelined `Script` sends `SCRIPT EXISTS` before every pipeline, a second round trip per
batch. Here the batch goes out as plain EVALSHA calls, and only if Redis answers NOSCRIPT (it was
restarted or its script cache flushed) is the script loaded and the calls that were refused sent again:
a refused call did not run, so sending it again runs it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

__all__ = ["Call", "run_many"]

Call = tuple[Sequence[Any], Sequence[Any]]  # (keys, args)


async def run_many(redis: Redis, script: AsyncScript, calls: Sequence[Call]) -> list[Any]:
    """Run `script` once per (keys, args) call, in order, in one round trip; return each call's reply
    or the exception it raised (a per-call error does not stop the others; a connection error raises)."""
    if len(calls) == 1:  # no pipeline needed; the Script object handles NOSCRIPT itself
        keys, args = calls[0]
        try:
            return [await script(keys=keys, args=args)]
        except Exception as exc:
            if _is_connection_error(exc):
                raise
            return [exc]
    replies = await _evalsha_all(redis, script.sha, calls)
    refused = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if refused:
        script.sha = await redis.script_load(script.script)
        again = await _evalsha_all(redis, script.sha, [calls[i] for i in refused])
        for i, reply in zip(refused, again, strict=True):
            replies[i] = reply
    return replies


async def _evalsha_all(redis: Redis, sha: str, calls: Sequence[Call]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    for reply in replies:
        if _is_connection_error(reply):
            raise reply
    return replies


def _is_connection_error(value: object) -> bool:
    return isinstance(value, ConnectionError | TimeoutError | OSError)
