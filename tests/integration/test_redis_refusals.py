"""Redis up but refusing (WRONGTYPE, OOM, READONLY) is reported as what it is: one `redis_refused` log line
naming the key and the error, a metric, /ready and the API's 503 saying which; never "Redis is unavailable".
OOM and READONLY are made on a Valkey of each test's own, never on the session's shared one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from structlog.testing import capture_logs

from jobs import registry
from runner.broker.enqueue import Enqueuer
from runner.broker.keys import QueueKeys
from runner.broker.server_errors import RedisRefusedError
from runner.devservers import EmbeddedValkey, free_port
from runner.resources import Resources
from runner.settings import Settings
from tests.conftest import MakeSettings, RunWorker, api_client, wait_for
from tests.integration.test_story_flow import post_story, until_story

STORY = {"title": "Moon Soup", "prompt": "a chef who cooks soup on the moon"}


def refusals(kind: str) -> float:
    return REGISTRY.get_sample_value("runner_redis_refusals_total", {"kind": kind}) or 0.0


async def stories_of(resources: Resources, user_id: str) -> int:
    count: int = await resources.db.fetchval("SELECT count(*) FROM stories WHERE user_id = $1", user_id)
    return count


async def test_a_foreign_list_at_the_queue_key_is_named_by_the_worker_ready_and_the_api(
    settings: Settings, resources: Resources, run_worker: RunWorker, api: httpx.AsyncClient
):
    """A list written at runner:{q}:queue: the worker logs one `redis_refused` naming that key and WRONGTYPE
    (not one per retry), counts each, keeps running and takes jobs again once the key is gone; /ready and
    POST /stories/ answer 503 naming WRONGTYPE and the key, and nothing of the story is kept."""
    keys = QueueKeys.of(settings.queue_name)
    before = refusals("WRONGTYPE")
    with capture_logs() as logs:
        worker = await run_worker(registry)
        await resources.redis.rpush(keys.jobs, b'{"body": "a Celery message"}')
        await resources.redis.lpush(keys.wake, 1)  # the idle worker claims now, not at its next poll

        async def refused_twice() -> bool:  # the claim was retried: one log line must cover both
            return refusals("WRONGTYPE") >= before + 2

        await wait_for(refused_twice, timeout=10)

        ready = await api.get("/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["redis"] == (
            f"refused: WRONGTYPE key {keys.jobs} holds a list, not the sorted set the runner keeps there: "
            "something else wrote to this key; move it away (RENAME) or use another QUEUE_NAME"
        )
        assert ready.json()["checks"]["postgres"] == "ok"

        response = await api.post("/stories/", json={**STORY, "user_id": "wrongtype-user"})
        assert response.status_code == 503, response.text
        body = response.json()
        assert (body["server"], body["error"], body["keys"]) == ("redis", "WRONGTYPE", [keys.jobs])
        assert f"key {keys.jobs} holds a list" in body["detail"] and "RENAME" in body["advice"]
        assert "unavailable" not in body["detail"]
        assert await stories_of(resources, "wrongtype-user") == 0

        await resources.redis.delete(keys.jobs)
        story = await until_story(api, (await post_story(api))["story_id"], "completed", "failed", timeout=30)
        assert story["status"] == "completed", story
    refused = [e for e in logs if e["event"] == "redis_refused" and e["what"] == "claim"]
    assert len(refused) == 1, refused
    assert (refused[0]["kind"], refused[0]["keys"], refused[0]["log_level"]) == ("WRONGTYPE", [keys.jobs], "error")
    assert refused[0]["server_message"].startswith("WRONGTYPE Operation against a key holding the wrong kind")
    assert "RENAME" in refused[0]["advice"]
    assert not [e for e in logs if e["event"] == "claim_failed"], "a refusal is not an outage"
    assert [e for e in logs if e["event"] == "redis_refusal_over"]
    assert [e for e in logs if e["event"] == "redis_refused" and e["what"] == "request"]
    assert not worker._stopping.is_set()
    metrics = (await api.get("/metrics")).text
    assert 'runner_redis_refusals_total{kind="WRONGTYPE"}' in metrics


async def test_enqueues_sent_together_each_name_the_key_of_the_wrong_type(resources: Resources, settings: Settings):
    """Pipelined enqueues (one round trip) refused by WRONGTYPE each raise a RedisRefusedError naming the key."""
    keys = QueueKeys.of(settings.queue_name)
    await resources.redis.set(keys.wake, b"not a list")
    enqueuer = Enqueuer(resources.redis)
    results = await asyncio.gather(
        *(enqueuer.enqueue(settings.queue_name, f"j{n}", "probe.record", {"tag": "x"}) for n in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, RedisRefusedError) for r in results), results
    assert {tuple(r.refusal.keys) for r in results if isinstance(r, RedisRefusedError)} == {(keys.wake,)}


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedValkey, Redis]]:
    """A Valkey of this test's own (to fill up or demote), with a client to configure it."""
    with EmbeddedValkey(tmp_path / "own-valkey") as server:
        client = Redis.from_url(server.url)
        try:
            yield server, client
        finally:
            await client.aclose()


async def test_oom_is_said_by_ready_and_the_503(
    own_redis: tuple[EmbeddedValkey, Redis], make_settings: MakeSettings, resources: Resources
):
    """maxmemory reached with noeviction: /ready and POST /stories/ say OOM and what to do; ready again after."""
    server, client = own_redis
    async with api_client(make_settings(redis_url=server.url)) as api:
        assert (await api.get("/ready")).status_code == 200
        before = refusals("OOM")
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", 1)
        try:
            ready = await api.get("/ready")
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["redis"].startswith("refused: OOM Redis's memory is full")
            assert "raise maxmemory" in ready.json()["checks"]["redis"]
            response = await api.post("/stories/", json={**STORY, "user_id": "oom-user"})
            assert response.status_code == 503, response.text
            body = response.json()
            assert (body["server"], body["error"]) == ("redis", "OOM")
            assert "maxmemory" in body["advice"] and "unavailable" not in body["detail"]
            assert refusals("OOM") == before + 1
            assert await stories_of(resources, "oom-user") == 0
        finally:
            await client.config_set("maxmemory", 0)
        assert (await api.get("/ready")).status_code == 200


async def test_readonly_is_said_by_ready_with_the_advice(
    own_redis: tuple[EmbeddedValkey, Redis], make_settings: MakeSettings
):
    """The server made a replica (of an address nobody answers on): /ready and the 503 say READONLY and to
    point REDIS_URL at the primary; ready again once it is a primary."""
    server, client = own_redis
    async with api_client(make_settings(redis_url=server.url)) as api:
        await client.replicaof("127.0.0.1", free_port())
        try:
            ready = await api.get("/ready")
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["redis"].startswith(
                "refused: READONLY the server at REDIS_URL is a read-only replica: "
            )
            assert "point it at the primary" in ready.json()["checks"]["redis"]
            response = await api.post("/stories/", json={**STORY, "user_id": "readonly-user"})
            assert response.status_code == 503, response.text
            assert (response.json()["error"], response.headers["retry-after"]) == ("READONLY", "5")
        finally:
            await client.execute_command("REPLICAOF", "NO", "ONE")
        assert (await api.get("/ready")).status_code == 200
