"""Defects found by using the API from outside: each answer is a documented 4xx or a JSON 503, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runner.devservers import EmbeddedPostgres, EmbeddedValkey
from runner.resources import Resources
from runner.settings import Settings
from tests.conftest import MakeSettings, api_client

GOOD = {"title": "t", "prompt": "a whale who sings", "user_id": "u1"}


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({**GOOD, "title": "moon\u0000soup"}, "title", "NUL"),
        ({**GOOD, "prompt": "a\u0000b"}, "prompt", "NUL"),
    ],
)
async def test_nul_characters_are_refused_with_422(
    api: httpx.AsyncClient, resources: Resources, body: dict[str, str], field: str, says: str
):
    """Postgres cannot store U+0000 in text: the request is refused naming the field, and nothing is written."""
    before = await resources.db.fetchval("SELECT count(*) FROM stories")
    response = await api.post("/stories/", json=body)
    assert response.status_code == 422, response.text
    assert any(e["loc"][-1] == field and says in e["msg"] for e in response.json()["detail"])
    assert await resources.db.fetchval("SELECT count(*) FROM stories") == before


async def test_a_lone_surrogate_is_refused_with_422(api: httpx.AsyncClient):
    """JSON may carry "\\ud800", which is not storable text: refused, not a 500."""
    body = b'{"title": "t", "prompt": "bad \\ud800 text", "user_id": "u1"}'
    response = await api.post("/stories/", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


async def test_a_nul_in_a_job_id_is_refused_with_422(api: httpx.AsyncClient):
    response = await api.get("/jobs/a%00b")
    assert response.status_code == 422, response.text


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A Postgres of this test's own, so stopping it cannot disturb the session's shared one."""
    with EmbeddedPostgres(tmp_path / "own-pg") as server:
        yield server


async def test_postgres_down_during_post_stories_is_a_json_503_naming_it(
    own_postgres: EmbeddedPostgres, make_settings: MakeSettings
):
    settings: Settings = make_settings(database_url=own_postgres.url)
    async with api_client(settings) as api:
        assert (await api.post("/stories/", json=GOOD)).status_code == 202
        own_postgres.stop()
        for _ in range(2):  # the pool's dead connection, then a refused new one
            response = await api.post("/stories/", json=GOOD)
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/json"
            body = response.json()
            assert body["server"] == "postgres" and "Postgres" in body["detail"]
        own_postgres.start()


async def test_redis_down_is_a_json_503_naming_it(tmp_path: Path, make_settings: MakeSettings):
    with EmbeddedValkey(tmp_path / "own-valkey") as own_redis:
        settings: Settings = make_settings(redis_url=own_redis.url)
        async with api_client(settings) as api:
            own_redis.stop()
            response = await api.post("/stories/", json=GOOD)
            assert response.status_code == 503, response.text
            assert response.json()["server"] == "redis" and "Redis" in response.json()["detail"]
            own_redis.start()


def test_openapi_lists_every_status_the_routes_answer():
    """A schema-driven client sees each status it can get: 404, 409, 400/422 for bodies, 503 when a server is down."""
    from api.main import create_app

    paths = create_app().openapi()["paths"]
    want = {
        ("/stories/", "post"): {"202", "400", "422", "503"},
        ("/stories/{story_id}", "get"): {"200", "404", "422", "503"},
        ("/stories/{story_id}", "delete"): {"200", "404", "422", "503"},
        ("/stories/{story_id}/status", "put"): {"200", "400", "404", "409", "422", "503"},
        ("/users/", "post"): {"201", "409", "422", "503"},
        ("/users/{user_id}", "get"): {"200", "404", "422", "503"},
        ("/stories/{story_id}/status", "get"): {"200", "404", "422", "503"},
        ("/jobs/{job_id}", "get"): {"200", "404", "422", "503"},
        ("/jobs/{job_id}/cancel", "post"): {"202", "404", "409", "422", "503"},
        ("/jobs/{job_id}/retry", "post"): {"202", "404", "409", "422", "503"},
        ("/ready", "get"): {"200", "503"},
    }
    for (path, method), statuses in want.items():
        assert set(paths[path][method]["responses"]) >= statuses, (path, method, paths[path][method]["responses"])
