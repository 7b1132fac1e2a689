"""QUEUES: the queues a worker serves and their weights, each error naming the bad entry and what to do."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from runner.priority import check_priority, due_of, score
from runner.registry import job
from runner.settings import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_unset_means_queue_name_alone() -> None:
    assert settings(queue_name="stories").worker_queues == [("stories", 1)]
    assert settings(queue_name="stories", queues="  ").worker_queues == [("stories", 1)]


def test_the_queues_watched_start_with_queue_name_even_when_queues_leave_it_out() -> None:
    """/metrics, /ready, status and doctor look at QUEUE_NAME (where the intakes and jobs without a queue of
    their own enqueue) first, then the other served queues."""
    assert settings(queue_name="storymimi").queue_names == ["storymimi"]
    assert settings(queue_name="storymimi", queues="media:1,storymimi:3").queue_names == ["storymimi", "media"]
    assert settings(queue_name="storymimi", queues="media").queue_names == ["storymimi", "media"]


def test_weights_default_to_one_and_a_name_may_hold_colons() -> None:
    assert settings(queues="storymimi:3, media").worker_queues == [("storymimi", 3), ("media", 1)]
    assert settings(queues="test:ab12:2,test:cd34").worker_queues == [("test:ab12", 2), ("test:cd34", 1)]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("storymimi:0", "'storymimi:0' is not"),
        ("storymimi,,media", "'' is not"),
        ("{tagged}:2", "'{tagged}:2' is not"),
        ("media:2,media:1", "names the queue 'media' twice"),
    ],
)
def test_bad_entries_are_named(value: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        settings(queues=value)


def test_a_cluster_worker_serves_one_queue() -> None:
    with pytest.raises(ValidationError, match=r"REDIS_CLUSTER_NODES a worker serves one: .* run a fleet per queue"):
        settings(redis_cluster_nodes="10.0.0.1:6379", queues="a:1,b:1")
    assert settings(redis_cluster_nodes="10.0.0.1:6379", queues="a:5").worker_queues == [("a", 5)]


def test_priorities_are_0_to_9_and_their_head_start_comes_back_out() -> None:
    now = 1_780_000_000_123
    for p in range(10):
        assert due_of(float(score(now, now, p))) == now
    assert float(score(now, now, 9)) < float(score(now, now, 1)) < float(score(now, now, 0))
    assert score(now + 5000, now, 9) == str(now + 5000), "a deferred job gets no head start"
    for bad in (-1, 10, True, 2.5):
        with pytest.raises(ValueError, match="priority must be an int 0-9"):
            check_priority(bad)  # type: ignore[arg-type]

    async def some_job(ctx: object) -> None: ...

    with pytest.raises(ValueError, match="priority must be an int 0-9"):
        job("x.y", priority=11)(some_job)
