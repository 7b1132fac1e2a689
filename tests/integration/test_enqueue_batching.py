"""Enqueues in flight together share a round trip, and each still gets its own answer."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import ConnectionError, ResponseError

from runner.broker.enqueue import Enqueuer
from runner.broker.keys import QueueKeys
from runner.broker.lua import run_many
from runner.resources import Resources
from runner.settings import Settings


async def test_concurrent_enqueues_share_round_trips_and_keep_their_answers(resources: Resources, settings: Settings):
    enqueuer = Enqueuer(resources.redis)
    queue = settings.queue_name
    ids = [f"{queue}:{n}" for n in range(200)] + [f"{queue}:0", f"{queue}:1"]  # two repeats must be refused
    answers = await asyncio.gather(*(enqueuer.enqueue(queue, i, "x.job", {"n": 1}) for i in ids))
    assert answers[:200] == [True] * 200
    assert answers[200:] == [False, False]
    assert await resources.redis.zcard(QueueKeys.of(queue).jobs) == 200


async def test_batched_enqueues_use_far_fewer_requests_than_jobs(resources: Resources, settings: Settings):
    """A burst of 500 goes out as a handful of round trips (the first alone, the rest together), not 500."""
    enqueuer = Enqueuer(resources.redis)
    sends = 0
    original = enqueuer._send

    async def counting_send() -> None:
        nonlocal sends
        sends += 1
        await original()

    enqueuer._send = counting_send  # type: ignore[method-assign]
    await asyncio.gather(
        *(enqueuer.enqueue(settings.queue_name, f"{settings.queue_name}:{n}", "x.job", {}) for n in range(500))
    )
    assert await resources.redis.zcard(QueueKeys.of(settings.queue_name).jobs) == 500
    assert sends <= 3, f"500 concurrent enqueues took {sends} round trips"


async def test_a_failed_connection_fails_every_enqueue_of_the_batch(settings: Settings):
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    enqueuer = Enqueuer(dead)  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(enqueuer.enqueue(settings.queue_name, f"{settings.queue_name}:{n}", "x.job", {}) for n in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, ConnectionError) for r in results), results
    await dead.aclose()


async def test_a_flushed_script_cache_is_reloaded_and_each_call_runs_once(resources: Resources, settings: Settings):
    counter = f"{settings.queue_name}:count"
    script = resources.redis.register_script("return redis.call('INCR', KEYS[1] .. ARGV[1])")
    await resources.redis.script_flush()
    replies = await run_many(resources.redis, script, [([counter], [str(n)]) for n in range(3)])
    assert replies == [1, 1, 1]
    await resources.redis.script_flush()
    assert await run_many(resources.redis, script, [([counter], ["0"])]) == [2]


async def test_a_script_error_is_that_calls_answer_only(resources: Resources, settings: Settings):
    script = resources.redis.register_script(
        "if ARGV[1] == 'bad' then return redis.error_reply('refused') end return 1"
    )
    replies = await run_many(resources.redis, script, [([settings.queue_name], [a]) for a in ("ok", "bad", "ok")])
    assert replies[0] == 1 and replies[2] == 1
    assert isinstance(replies[1], ResponseError) and "refused" in str(replies[1])
