"""Celery messages are read as kombu's Redis transport writes them, and anything but JSON is refused unread."""

from __future__ import annotations

import base64
import pickle
import zlib
from typing import Any

import orjson
import pytest

from runner.intake.celery_message import RefusedMessage, parse_message


def message(body: bytes, *, content_type: str = "application/json", compression: str | None = None,
            **headers: Any) -> bytes:  # fmt: skip
    head = {"lang": "py", "task": "story_task.generate", "id": "t-1", "eta": None, "expires": None, "retries": 0,
            **({"compression": compression} if compression else {}), **headers}  # fmt: skip
    return orjson.dumps({"body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
                         "content-type": content_type, "headers": head,
                         "properties": {"body_encoding": "base64", "priority": 3}})  # fmt: skip


BODY = orjson.dumps([["sid", {"title": "T"}, "u1"], {}, {"callbacks": None, "errbacks": None, "chain": None}])


def test_a_plain_and_a_compressed_message_read_the_same():
    """task_compression='gzip' writes zlib data (kombu's gzip is zlib.compress)."""
    plain = parse_message(message(BODY))
    packed = parse_message(message(zlib.compress(BODY), compression="application/x-gzip"))
    assert plain == packed
    assert (plain.task_id, plain.name, plain.args, plain.kwargs, plain.priority) == (
        "t-1", "story_task.generate", ["sid", {"title": "T"}, "u1"], {}, 3)  # fmt: skip
    assert not plain.has_workflow


def test_eta_and_expires_are_read_as_aware_times():
    task = parse_message(message(BODY, eta="2030-01-02T03:04:05.000006+00:00", expires="2030-01-03T00:00:00"))
    assert task.eta is not None and task.eta.year == 2030 and task.eta.tzinfo is not None
    assert task.expires is not None and task.expires.tzinfo is not None


@pytest.mark.parametrize(
    ("raw", "says", "task_id"),
    [
        (message(pickle.dumps([["x"], {}, {}]), content_type="application/x-python-serialize"),
         "JSON only and never unpickles", "t-1"),
        (b"\x80\x04\x95garbage", "not a kombu message", None),
        (orjson.dumps({"headers": {"task": "x"}}), "no task id", None),
        (message(b"not json"), "the body is not JSON", "t-1"),
        (message(b"\x00\x01", compression="application/x-gzip"), "does not decompress", "t-1"),
        (message(BODY, compression="application/x-brotli"), "unsupported compression", "t-1"),
        (message(orjson.dumps({"args": []})), "[args, kwargs, embed]", "t-1"),
        (message(BODY, eta="tomorrow"), "not an ISO 8601 time", "t-1"),
    ],
)  # fmt: skip
def test_what_cannot_run_is_refused_with_a_reason(raw: bytes, says: str, task_id: str | None):
    with pytest.raises(RefusedMessage) as refused:
        parse_message(raw)
    assert says in str(refused.value) and refused.value.task_id == task_id


def test_canvas_is_noticed():
    body = orjson.dumps([[1], {}, {"callbacks": [{"task": "next"}], "errbacks": None, "chain": None, "chord": None}])
    assert parse_message(message(body)).has_workflow
