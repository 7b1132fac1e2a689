"""JSON on the wire, never pickle: arq's job and result envelopes encoded with orjson.

arq stores a job as `{"t": try, "f": name, "a": args, "k": kwargs, "et": enqueue_ms}` and a result as the
same plus `s`, `r`, `st`, `ft`, `q`, `id`. We keep that shape so arq's own `Job.status()`/`Job.result()`
work, but the bytes are JSON; anything else (a pickle placed in the queue, garbage) is refused unread.
Our own enqueues add `m`, string metadata that arq ignores: the job that enqueued this one (`parent`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from runner.errors import PayloadError

__all__ = ["JobPayload", "decode_job", "deserialize", "encode_job", "serialize"]

_PICKLE_PROTOCOL_MARK = 0x80


def serialize(obj: Any) -> bytes:
    """Encode to JSON; exceptions (in failed results) become their text so no result is lost."""
    try:
        return orjson.dumps(obj, default=_encode_fallback)
    except orjson.JSONEncodeError as exc:
        raise TypeError(
            f"{exc}: job arguments and results must be JSON (str, int, float, bool, None, list, dict)"
        ) from None


def deserialize(data: bytes) -> Any:
    """Decode JSON, refusing anything else with a reason (arq wraps this in DeserializationError)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(_describe_non_json(data, exc)) from None


@dataclass(frozen=True, slots=True)
class JobPayload:
    """A decoded and shape-checked arq job envelope."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    enqueue_try: int | None
    enqueue_time_ms: int
    meta: dict[str, str]  # the enqueuer's `m` (see the module docstring); empty from other producers


def encode_job(
    name: str, kwargs: dict[str, Any], *, enqueue_ms: int, first_try: int | None = None, meta: dict[str, str] | None
) -> bytes:
    """A job envelope in arq's shape (keyword arguments only), with our metadata when there is any."""
    job: dict[str, Any] = {"t": first_try, "f": name, "a": [], "k": kwargs, "et": enqueue_ms}
    if meta:
        job["m"] = meta
    return serialize(job)


def decode_job(data: bytes) -> JobPayload:
    """Decode a job payload from Redis; raise PayloadError saying what is wrong with it."""
    obj = deserialize(data)
    if not isinstance(obj, dict):
        raise PayloadError(f"job payload must be a JSON object, got {type(obj).__name__}")
    name, args, kwargs = obj.get("f"), obj.get("a", []), obj.get("k", {})
    enqueue_try, enqueue_ms = obj.get("t"), obj.get("et", 0)
    if not isinstance(name, str) or not name:
        raise PayloadError(f"job payload needs a job name string in 'f', got {name!r}")
    if not isinstance(args, list):
        raise PayloadError(f"job payload 'a' (positional arguments) must be a list, got {args!r}")
    if not isinstance(kwargs, dict):
        raise PayloadError(f"job payload 'k' (keyword arguments) must be an object, got {kwargs!r}")
    if enqueue_try is not None and not isinstance(enqueue_try, int):
        raise PayloadError(f"job payload 't' (try) must be an integer or null, got {enqueue_try!r}")
    if not isinstance(enqueue_ms, int):
        raise PayloadError(f"job payload 'et' (enqueue time, ms) must be an integer, got {enqueue_ms!r}")
    meta = obj.get("m")
    if not isinstance(meta, dict):  # absent, or another producer's field: metadata is optional, never fatal
        meta = {}
    return JobPayload(name, tuple(args), kwargs, enqueue_try, enqueue_ms,
                      {str(k): v for k, v in meta.items() if isinstance(v, str)})  # fmt: skip


def _encode_fallback(obj: Any) -> Any:
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(type(obj).__name__)


def _describe_non_json(data: bytes, exc: orjson.JSONDecodeError) -> str:
    if data[:1] and data[0] == _PICKLE_PROTOCOL_MARK:
        return "job payload is a pickle, refused unread: this runner accepts JSON payloads only"
    return f"job payload is not valid JSON ({exc}); first bytes: {data[:40]!r}"
