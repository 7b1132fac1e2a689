"""Bad requests get a 4xx that says what is wrong, and leave nothing behind."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from runner.resources import Resources

GOOD = {"title": "t", "prompt": "a whale who sings", "user_id": "u1"}


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({**GOOD, "prompt": ""}, "prompt", "at least 1 character"),
        ({**GOOD, "prompt": "   "}, "prompt", "at least 1 character"),
        ({**GOOD, "prompt": "x" * 4001}, "prompt", "at most 4000 characters"),
        ({k: v for k, v in GOOD.items() if k != "prompt"}, "prompt", "Field required"),
        ({**GOOD, "user_id": ""}, "user_id", "at least 1 character"),
        ({**GOOD, "user_id": "bad id with spaces"}, "user_id", "should match pattern"),
        ({**GOOD, "title": "x" * 201}, "title", "at most 200 characters"),
        ({**GOOD, "prompt": 42}, "prompt", "valid string"),
    ],
)
async def test_bad_story_bodies_get_422_naming_the_field(
    api: httpx.AsyncClient, resources: Resources, body: dict[str, Any], field: str, says: str
):
    """Each bad body names the field and the rule it broke, and no story row is written."""
    before = await resources.db.fetchval("SELECT count(*) FROM stories")
    response = await api.post("/stories/", json=body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(e["loc"][-1] == field and says in e["msg"] for e in errors), errors
    assert await resources.db.fetchval("SELECT count(*) FROM stories") == before


async def test_body_that_is_not_json_gets_422(api: httpx.AsyncClient):
    """A body that is not JSON is refused with a parse error."""
    response = await api.post("/stories/", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("path", ["/stories/not-a-uuid", "/stories/123/status"])
async def test_bad_story_ids_get_422(api: httpx.AsyncClient, path: str):
    """A story id that is not a UUID is refused and the error says so."""
    response = await api.get(path)
    assert response.status_code == 422
    assert "UUID" in response.json()["detail"][0]["msg"]


async def test_unknown_story_and_job_get_404(api: httpx.AsyncClient):
    """Unknown ids are 404 with a message naming them."""
    story_id = uuid.uuid4()
    for path in (f"/stories/{story_id}", f"/stories/{story_id}/status"):
        response = await api.get(path)
        assert (response.status_code, response.json()["detail"]) == (404, f"Story with ID {story_id} not found")
    response = await api.get("/jobs/nope")
    assert (response.status_code, response.json()["detail"]) == (404, "job 'nope' not found")


async def test_health_and_ready(api: httpx.AsyncClient):
    """/health answers; /ready checks both servers."""
    assert (await api.get("/health")).json() == {"status": "ok"}
    ready = await api.get("/ready")
    assert (ready.status_code, ready.json()["checks"]) == (200, {"redis": "ok", "postgres": "ok"})
