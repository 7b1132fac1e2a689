"""A Celery task message, as kombu's Redis transport stores it, read without ever unpickling.

The list item is JSON: `{"body": <base64>, "content-type", "content-encoding", "headers": {"task", "id",
"eta", "expires", "retries", "compression", ...}, "properties": {"priority", "body_encoding", ...}}`. The
body (Celery protocol 2) is `[args, kwargs, embed]`, zlib-compressed when `compression` is gzip (what
`task_compression='gzip'` writes). Anything else, a pickle above all, is refused with a reason.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["CeleryTask", "RefusedMessage", "parse_message"]

_JSON = "application/json"
# kombu's "gzip" (application/x-gzip) is zlib data; zlib's 32 + MAX_WBITS reads zlib and gzip framing alike.
_COMPRESSIONS = frozenset({"application/x-gzip", "application/x-zlib", "gzip", "zlib"})


class RefusedMessage(ValueError):
    """A message the runner will not run; `task_id` (when it could be read) says where to report it."""

    def __init__(self, reason: str, *, task_id: str | None = None, exc_type: str = "ContentDisallowed") -> None:
        super().__init__(reason)
        self.task_id = task_id
        self.exc_type = exc_type


@dataclass(frozen=True, slots=True)
class CeleryTask:
    task_id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    eta: datetime | None  # apply_async(countdown=...) or eta=...
    expires: datetime | None
    retries: int
    priority: int
    has_workflow: bool  # callbacks, errbacks, chain or chord: canvas, which the runner does not run


def parse_message(raw: bytes) -> CeleryTask:
    """Read one list item; raise RefusedMessage saying what is wrong with it."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RefusedMessage(f"not a kombu message (not JSON); first bytes: {raw[:40]!r}") from None
    if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
        raise RefusedMessage("not a Celery protocol 2 message: no headers object")
    headers: dict[str, Any] = message["headers"]
    task_id, name = headers.get("id"), headers.get("task")
    if not isinstance(task_id, str) or not task_id:
        raise RefusedMessage("not a Celery protocol 2 message: no task id in its headers")
    if not isinstance(name, str) or not name:
        raise RefusedMessage("the message names no task", task_id=task_id)
    content_type = message.get("content-type")
    if content_type != _JSON:
        raise RefusedMessage(
            f"task {name} was sent as {content_type!r}; this runner accepts JSON only and never unpickles: "
            "set task_serializer='json' on the sender",
            task_id=task_id,
        )
    body = _body(message, headers, task_id)
    if not (isinstance(body, list) and len(body) == 3 and isinstance(body[0], list) and isinstance(body[1], dict)):
        raise RefusedMessage("the body is not Celery protocol 2's [args, kwargs, embed]", task_id=task_id)
    embed = body[2] if isinstance(body[2], dict) else {}
    properties = message.get("properties") if isinstance(message.get("properties"), dict) else {}
    priority = properties.get("priority") if isinstance(properties, dict) else 0
    retries = headers.get("retries")
    return CeleryTask(
        task_id=task_id, name=name, args=body[0], kwargs=body[1],
        eta=_when(headers.get("eta"), "eta", task_id), expires=_when(headers.get("expires"), "expires", task_id),
        retries=retries if isinstance(retries, int) else 0,
        priority=priority if isinstance(priority, int) else 0,
        has_workflow=any(embed.get(k) for k in ("callbacks", "errbacks", "chain", "chord")),
    )  # fmt: skip


def _body(message: dict[str, Any], headers: dict[str, Any], task_id: str) -> Any:
    raw = message.get("body")
    if not isinstance(raw, str):
        raise RefusedMessage("the message has no body", task_id=task_id)
    data: bytes
    if (message.get("properties") or {}).get("body_encoding") == "base64":
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise RefusedMessage("the body is not valid base64", task_id=task_id) from None
    else:
        data = raw.encode()
    compression = headers.get("compression")
    if compression:
        if compression not in _COMPRESSIONS:
            raise RefusedMessage(f"unsupported compression {compression!r} (gzip and zlib are)", task_id=task_id)
        try:
            data = zlib.decompress(data, 32 + zlib.MAX_WBITS)
        except zlib.error as exc:
            raise RefusedMessage(f"the body does not decompress as {compression}: {exc}", task_id=task_id) from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise RefusedMessage(f"the body is not JSON; first bytes: {data[:40]!r}", task_id=task_id) from None


def _when(value: Any, field: str, task_id: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise RefusedMessage(f"header {field}={value!r} is not an ISO 8601 time", task_id=task_id) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
