"""Redis refusing a command, told apart from Redis being down, and said as what it is: one classification.

A lost connection or a timeout means the server is down: wait and try again (runner.worker.outage). An
error reply means the server is up and said no, and most such refusals do not pass by waiting:

    kind       transient  what it means                                      what to do
    WRONGTYPE  no         one of our keys holds another type (someone else   RENAME it away, or another QUEUE_NAME
                          wrote it)
    OOM        no         maxmemory reached, nothing can be evicted          raise maxmemory, free memory
    MISCONF    no         an RDB snapshot or AOF write fails: writes refused the server's log: disk space, permissions
    NOSCRIPT   no         the script cache forgets our script as soon as it  nothing may flush it; no proxy between
                          is loaded (checked only after the reload)
    NOPERM     no         the ACL user lacks a command or key                grant it
    ERR        no         any other error reply                              its message says
    READONLY   yes        a replica: just after a failover, or a wrong URL   point REDIS_URL at the primary
    BUSY       yes        a script runs too long and blocks the server       it ends, or SCRIPT KILL
    LOADING    yes        still loading its data set after a restart         wait

A script's error names its sha and line, not the key: `explain` (on the error path only) runs TYPE on the
keys the failed operation touched and names those that hold another type than the runner keeps there.
`lua.run_many` does it for every pipelined script, so its callers get a `RedisRefusedError` that says it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.exceptions import (
    BusyLoadingError,
    ExecAbortError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)

from runner.broker.connection import RedisClient
from runner.broker.keys import expected_type

__all__ = [
    "RedisRefusedError",
    "Refusal",
    "RefusalKind",
    "RefusalLog",
    "WrongKey",
    "classify",
    "explain",
    "explain_replies",
    "wrong_keys",
]


class RefusalKind(StrEnum):
    WRONGTYPE = "WRONGTYPE"
    OOM = "OOM"
    READONLY = "READONLY"
    NOSCRIPT = "NOSCRIPT"
    MISCONF = "MISCONF"
    BUSY = "BUSY"
    LOADING = "LOADING"
    NOPERM = "NOPERM"
    ERR = "ERR"


@dataclass(frozen=True, slots=True)
class _About:
    transient: bool
    what: str
    advice: str


_ABOUT = {
    RefusalKind.WRONGTYPE: _About(
        False,
        "a key this operation uses holds another type than the runner keeps there (TYPE on the queue's "
        "runner:{<queue>}:* keys finds it)",
        "something else wrote to this key; move it away (RENAME) or use another QUEUE_NAME",
    ),
    RefusalKind.OOM: _About(
        False,
        "Redis's memory is full (maxmemory reached, nothing it may evict) and it refuses writes",
        "raise maxmemory or free memory; keep maxmemory-policy noeviction or a volatile-* policy (the runner's "
        "queue keys have no TTL and must never be evicted)",
    ),
    RefusalKind.READONLY: _About(
        True,
        "the server at REDIS_URL is a read-only replica",
        "just after a failover this passes once REDIS_URL reaches the new primary; if it stays, REDIS_URL names "
        "a replica: point it at the primary",
    ),
    RefusalKind.NOSCRIPT: _About(
        False,
        "Redis forgot the runner's Lua script again right after it was loaded",
        "something keeps flushing the script cache (SCRIPT FLUSH), or a proxy sends SCRIPT LOAD and EVALSHA to "
        "different servers: stop it, or point REDIS_URL at the server itself",
    ),
    RefusalKind.MISCONF: _About(
        False,
        "Redis cannot persist (an RDB snapshot or AOF write fails) and refuses writes",
        "the server's log says why: free disk space or fix its data directory's permissions",
    ),
    RefusalKind.BUSY: _About(
        True,
        "a Lua script or function has run too long and blocks the server",
        "it passes when the script ends; SCRIPT KILL (FUNCTION KILL) stops one that has not written",
    ),
    RefusalKind.LOADING: _About(True, "Redis is still loading its data set", "wait: it answers once loaded"),
    RefusalKind.NOPERM: _About(
        False,
        "the Redis user of REDIS_URL lacks a permission (ACL)",
        "grant it the runner's commands and keys (runner:* and the SLOT_PREFIX keys)",
    ),
    RefusalKind.ERR: _About(
        False,
        "Redis answered with an error the runner does not expect",
        "read the server's message; check that the server is Redis 6.2+ or Valkey and what else writes to it",
    ),
}

_TYPE_NAMES = {"zset": "sorted set"}  # TYPE's other answers (list, set, string, hash, stream) read as they are


@dataclass(frozen=True, slots=True)
class WrongKey:
    """A runner key that holds another type than the runner keeps there."""

    key: str
    holds: str  # as TYPE names it: "list", "hash", ...
    expected: str

    def __str__(self) -> str:
        holds, expected = (_TYPE_NAMES.get(t, t) for t in (self.holds, self.expected))
        return f"key {self.key} holds a {holds}, not the {expected} the runner keeps there"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Redis refused a command: its kind, the server's own words, and the keys of a wrong type if known."""

    kind: RefusalKind
    server_message: str
    wrong_keys: tuple[WrongKey, ...] = ()

    @property
    def transient(self) -> bool:
        """Whether waiting may fix it (LOADING, BUSY, READONLY just after a failover)."""
        return _ABOUT[self.kind].transient

    @property
    def advice(self) -> str:
        """What to do about it."""
        if len(self.wrong_keys) > 1:
            return "something else wrote to these keys; move them away (RENAME) or use another QUEUE_NAME"
        return _ABOUT[self.kind].advice

    @property
    def keys(self) -> list[str]:
        return [wrong.key for wrong in self.wrong_keys]

    def describe(self) -> str:
        """One line for an operator: the kind, what it means (which key) and what to do."""
        what = "; ".join(map(str, self.wrong_keys)) or _ABOUT[self.kind].what
        if self.kind is RefusalKind.ERR:
            what = f"{what}: {self.server_message}"
        return f"{self.kind} {what}: {self.advice}"

    def log_fields(self) -> dict[str, Any]:
        """The fields of a `redis_refused` log line."""
        return {"kind": str(self.kind), "keys": self.keys, "server_message": self.server_message,
                "advice": self.advice, "transient": self.transient, "detail": self.describe()}  # fmt: skip


class RedisRefusedError(ResponseError):
    """Redis refused a runner operation; `refusal` says what (a ResponseError still, for existing handlers)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"{refusal.describe()} (Redis said: {refusal.server_message})")
        self.refusal = refusal


# The error code starts the message, or, from an older server's script error, follows "@user_script:N: ".
_CODE = re.compile(r"(?:^|: )(WRONGTYPE|OOM|READONLY|NOSCRIPT|MISCONF|BUSY|LOADING|NOPERM)(?= |$)")
_STARTS_WITH_CODE = re.compile(r"^[A-Z]+ ")
# redis-py strips these codes from the messages of the classes it maps them to (and "ERR" from every message).
_BY_CLASS: tuple[tuple[type[RedisError], RefusalKind], ...] = (
    (BusyLoadingError, RefusalKind.LOADING),
    (NoScriptError, RefusalKind.NOSCRIPT),
    (OutOfMemoryError, RefusalKind.OOM),
    (ReadOnlyError, RefusalKind.READONLY),
    (NoPermissionError, RefusalKind.NOPERM),
)


def classify(exc: BaseException) -> Refusal | None:
    """The refusal `exc` is, or None: not a Redis error reply (a lost connection or a timeout is the
    server being down, not refusing; LOADING, which redis-py raises as a ConnectionError, is a refusal)."""
    if isinstance(exc, RedisRefusedError):
        return exc.refusal
    message = str(exc)
    for cls, kind in _BY_CLASS:
        if isinstance(exc, cls):
            return Refusal(kind, message if _CODE.match(message) else f"{kind} {message}")
    if not isinstance(exc, ResponseError):
        return None
    if not _STARTS_WITH_CODE.match(message):  # give the server's words back their code
        message = f"{'EXECABORT' if isinstance(exc, ExecAbortError) else 'ERR'} {message}"
    found = _CODE.search(message)
    return Refusal(RefusalKind(found.group(1)) if found else RefusalKind.ERR, message)


def wrong_keys(types: Mapping[str, str]) -> tuple[WrongKey, ...]:
    """Of {key: its TYPE}, the runner keys holding another type than the runner keeps there (absent is fine)."""
    wrong = []
    for key, holds in types.items():
        expected = expected_type(key)
        if expected is not None and holds not in ("none", expected):
            wrong.append(WrongKey(key, holds, expected))
    return tuple(wrong)


async def explain(exc: BaseException, redis: RedisClient, keys: Iterable[str]) -> Refusal | None:
    """`classify(exc)`, naming for a WRONGTYPE the `keys` (those the failed operation touched) that hold
    another type (one TYPE round trip). For the error path only."""
    refusal = classify(exc)
    if refusal is None or refusal.kind is not RefusalKind.WRONGTYPE or refusal.wrong_keys:
        return refusal
    wrong = wrong_keys(await _types(redis, keys))
    return Refusal(refusal.kind, refusal.server_message, wrong) if wrong else refusal


async def explain_replies(redis: RedisClient, keys_per_call: Sequence[Sequence[str]], replies: list[Any]) -> list[Any]:
    """`replies` (one per call, as `lua.run_many` has them) with each error reply replaced by a
    RedisRefusedError saying what it is; a WRONGTYPE names its call's keys of the wrong type (one TYPE
    round trip for the whole batch)."""
    refusals = [classify(reply) if isinstance(reply, ResponseError) else None for reply in replies]
    suspects = [key for keys, r in zip(keys_per_call, refusals, strict=True)
                if r is not None and r.kind is RefusalKind.WRONGTYPE for key in keys]  # fmt: skip
    types = await _types(redis, suspects) if suspects else {}
    out = list(replies)
    for i, refusal in enumerate(refusals):
        if refusal is None or isinstance(replies[i], RedisRefusedError):
            continue
        if refusal.kind is RefusalKind.WRONGTYPE:
            wrong = wrong_keys({key: types[key] for key in keys_per_call[i] if key in types})
            refusal = Refusal(refusal.kind, refusal.server_message, wrong)
        error = RedisRefusedError(refusal)
        error.__cause__ = replies[i]
        out[i] = error
    return out


_TYPE_TIMEOUT_S = 2.0


async def _types(redis: RedisClient, keys: Iterable[str]) -> dict[str, str]:
    """TYPE of each runner key among `keys`, in one round trip; {} if that fails too."""
    checked = [key for key in dict.fromkeys(keys) if expected_type(key) is not None]
    if not checked:
        return {}
    try:
        async with asyncio.timeout(_TYPE_TIMEOUT_S), redis.pipeline(transaction=False) as pipe:
            for key in checked:
                pipe.type(key)
            replies = await pipe.execute(raise_on_error=False)
    except (RedisError, OSError, TimeoutError):
        return {}
    return {key: _text(t) for key, t in zip(checked, replies, strict=True) if isinstance(t, bytes | str)}


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class RefusalLog:
    """When a refusal that keeps coming back is worth a log line: the first time, whenever it changes
    (another kind, other keys, another ERR), and then every `every_s` while it lasts; not on every retry."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last: tuple[object, ...] | None = None
        self._at = 0.0
        self.since: float | None = None  # when the refusals began (clock time), None while none

    def due(self, refusal: Refusal) -> bool:
        """Record one occurrence of `refusal`; whether to log it."""
        now = self._clock()
        same = (refusal.kind, refusal.wrong_keys, refusal.server_message if refusal.kind is RefusalKind.ERR else "")
        if self.since is None:
            self.since = now
        if same != self._last or now - self._at >= self._every_s:
            self._last, self._at = same, now
            return True
        return False

    def clear(self) -> float | None:
        """The refusals are over: how long they lasted (s), or None if there were none."""
        if self.since is None:
            return None
        lasted, self.since, self._last = self._clock() - self.since, None, None
        return lasted
