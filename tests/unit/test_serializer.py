"""Payloads are JSON in arq's envelope; anything else is refused with a reason."""

from __future__ import annotations

import pickle
import re

import orjson
import pytest

from runner.envelope import decode_job, deserialize, serialize
from runner.errors import PayloadError


def test_round_trip_of_arq_envelope():
    """A job envelope survives encoding and is decoded into its parts."""
    data = serialize({"t": None, "f": "story_task.generate", "a": [], "k": {"story_id": "s1"}, "et": 5})
    job = decode_job(data)
    assert (job.name, job.args, job.kwargs, job.enqueue_try, job.enqueue_time_ms) == (
        "story_task.generate", (), {"story_id": "s1"}, None, 5,
    )  # fmt: skip


def test_pickle_is_named_as_such_and_never_loaded():
    """A pickle is recognised by its protocol byte and refused without being unpickled."""
    with pytest.raises(PayloadError, match="pickle, refused unread"):
        deserialize(pickle.dumps({"f": "x"}))


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"", "not valid JSON"),
        (b"{oops", "not valid JSON"),
        (b'"text"', "must be a JSON object, got str"),
        (orjson.dumps({"a": []}), "needs a job name"),
        (orjson.dumps({"f": "j", "a": {}}), "'a' (positional arguments) must be a list"),
        (orjson.dumps({"f": "j", "k": []}), "'k' (keyword arguments) must be an object"),
        (orjson.dumps({"f": "j", "t": "2"}), "'t' (try) must be an integer"),
        (orjson.dumps({"f": "j", "et": 1.5}), "'et' (enqueue time, ms) must be an integer"),
    ],
)
def test_malformed_envelopes_say_what_is_wrong(payload: bytes, says: str):
    """Each malformed envelope is refused with a message naming the problem."""
    with pytest.raises(PayloadError, match=re.escape(says)):
        decode_job(payload)


def test_exceptions_in_results_become_text_and_other_objects_are_refused():
    """A failed result's exception is kept as text; a non-JSON object is a clear error."""
    assert orjson.loads(serialize({"r": ValueError("bad")})) == {"r": "ValueError: bad"}
    with pytest.raises(TypeError, match="must be JSON"):
        serialize({"r": object()})
