"""The old backend's clients, replayed field for field (its web pages' main.js and the Flutter app's
bodies, from the old backend's routes and models): every route exists and answers the old shapes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jobs import registry
from runner.devservers import free_port
from runner.resources import Resources
from runner.settings import Settings
from tests.conftest import RunWorker, api_client
from tests.integration.test_story_flow import until_story

FUID = "xHyXCebE7pdl8xPJ7g5n1jmS5WP2"  # a Firebase uid, as the app sends
STORY_RESPONSE = {"status", "title", "error", "story_id", "user_id", "cover_image_url", "created_at", "updated_at"}
STORY_DETAIL = {"story_id", "title", "status", "scenes", "user_id", "cover_image_url", "created_at", "updated_at"}
SCENE = {"scene_id", "story_id", "sequence", "title", "text", "image_prompt", "audio_prompt", "image_url",
         "audio_url", "created_at", "updated_at"}  # fmt: skip
STORY_ROW = {"story_id", "title", "prompt", "status", "created_at", "updated_at", "story_metadata", "source",
             "user_id", "updated_by", "cover_image_url"}  # fmt: skip
USER_RESPONSE = {"user_id", "email", "display_name", "created_at", "firebase_uid", "profile_source", "is_active",
                 "updated_at", "cover_image_url", "metadata"}  # fmt: skip
FLUTTER_USER = {"user_id": FUID, "email": "CursorDemo249@gmail.com", "display_name": "",
                "created_at": "2025-06-21T08:00:29.129451", "firebase_uid": FUID, "profile_source": "firebase_auth",
                "is_active": True, "metadata": {"additional_info": "any custom data"}}  # fmt: skip


def web_form_story(user_id: str = FUID, **overrides: Any) -> dict[str, Any]:
    """What main.js's submitStoryForm sends."""
    return {"title": "My Story", "prompt": "A magical adventure", "style": "fantasy", "num_scenes": 3,
            "user_id": user_id, **overrides}  # fmt: skip


async def test_the_web_form_story_is_accepted_and_its_style_and_scene_count_honoured(
    api: httpx.AsyncClient, resources: Resources, run_worker: RunWorker
):
    await run_worker(registry)
    response = await api.post("/stories/", json={**web_form_story(num_scenes=2), "colour": "ignored"})
    assert response.status_code == 202, response.text
    created = response.json()
    assert set(created) >= STORY_RESPONSE and created["status"] == "pending" and created["user_id"] == FUID
    story = await until_story(api, created["story_id"], "completed", "failed")
    assert story["status"] == "completed", story
    assert set(story) >= STORY_DETAIL and len(story["scenes"]) == 2  # num_scenes, not STORY_SCENES (5)
    assert set(story["scenes"][0]) >= SCENE
    profile = await resources.db.fetchval("SELECT visual_profile FROM stories WHERE story_id = $1",
                                          uuid.UUID(created["story_id"]))  # fmt: skip
    assert orjson.loads(profile)["base_style"].startswith("fantasy style")  # the style hint leads the images
    status = (await api.get(f"/stories/{created['story_id']}/status")).json()
    assert (status["story_id"], status["status"]) == (created["story_id"], "completed")


@pytest.mark.parametrize("user_id", [FUID, str(uuid.uuid4())])
async def test_firebase_ids_and_uuids_are_both_users(api: httpx.AsyncClient, user_id: str):
    body = {"title": "My Story", "prompt": "A magical adventure", "user_id": user_id}  # the Flutter example
    response = await api.post("/stories/", json=body)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("num_scenes", [0, 21, "many"])
async def test_a_scene_count_out_of_bounds_is_refused(api: httpx.AsyncClient, num_scenes: Any):
    response = await api.post("/stories/", json=web_form_story(num_scenes=num_scenes))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "num_scenes"]


async def test_put_status_moves_a_story_only_forwards(api: httpx.AsyncClient):
    story_id = (await api.post("/stories/", json=web_form_story())).json()["story_id"]
    path = f"/stories/{story_id}/status"
    missing = await api.put(path, json={"state": "failed"})
    assert (missing.status_code, missing.json()["detail"]) == (400, "Missing status field in request")
    invalid = await api.put(path, json={"status": "COMPLETE"})
    assert invalid.status_code == 400 and "Valid values" in invalid.json()["detail"]
    moved = await api.put(path, json={"status": "failed"})
    assert (moved.status_code, moved.json()) == (200, {"success": True})
    assert (await api.put(path, json={"status": "failed"})).status_code == 200  # already so: no-op
    back = await api.put(path, json={"status": "processing"})
    assert back.status_code == 409 and "failed" in back.json()["detail"]
    assert (await api.put(f"/stories/{uuid.uuid4()}/status", json={"status": "failed"})).status_code == 404


async def test_delete_answers_the_old_body(api: httpx.AsyncClient):
    story_id = (await api.post("/stories/", json=web_form_story())).json()["story_id"]
    deleted = await api.delete(f"/stories/{story_id}")
    assert (deleted.status_code, deleted.json()) == (200, {"success": True})
    assert (await api.get(f"/stories/{story_id}")).status_code == 404


async def test_search_and_recent_return_story_rows_in_keyset_pages(api: httpx.AsyncClient):
    tag = uuid.uuid4().hex[:8]
    made = [(await api.post("/stories/", json=web_form_story(prompt=f"dragon {tag} {n}"))).json()["story_id"]
            for n in range(3)]  # fmt: skip
    await api.post("/stories/", json=web_form_story(prompt="100% true_story"))
    first = await api.get("/stories/search/", params={"q": tag, "limit": 2})
    assert first.status_code == 200
    assert [r["story_id"] for r in first.json()] == made[::-1][:2] and set(first.json()[0]) >= STORY_ROW
    second = await api.get("/stories/search", params={"q": tag, "limit": 2, "cursor": first.headers["x-next-cursor"]})
    assert [r["story_id"] for r in second.json()] == made[:1] and "x-next-cursor" not in second.headers
    assert (await api.get("/stories/search/", params={"q": "0% t"})).json()[0]["prompt"] == "100% true_story"
    assert (await api.get("/stories/search/", params={"q": "%"})).json()[0]["prompt"] == "100% true_story"
    recent = await api.get("/stories/recent/", params={"limit": 1})
    assert recent.status_code == 200 and len(recent.json()) == 1 and set(recent.json()[0]) >= STORY_ROW
    bad = await api.get("/stories/recent/", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and "cursor" in bad.json()["detail"]
    assert (await api.get("/stories/search/")).status_code == 422  # q is required, as before


async def test_users_as_the_app_creates_reads_and_updates_them(api: httpx.AsyncClient):
    user = {**FLUTTER_USER, "user_id": (uid := f"u{uuid.uuid4().hex[:27]}"), "firebase_uid": uid,
            "email": f"{uid}@Example.com"}  # fmt: skip
    created = await api.post("/users/", json=user)
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == USER_RESPONSE
    assert (body["email"], body["display_name"], body["updated_at"]) == (f"{uid}@example.com".lower(), uid, None)
    assert (await api.post("/users/", json=user)).status_code == 409
    assert (await api.get(f"/users/{uid}")).json() == body
    assert (await api.get("/users/nobody-here")).status_code == 404
    patched = await api.patch(f"/users/{uid}", json={"email": f"new-{uid}@example.com", "username": "newname"})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["email"], patched.json()["display_name"]) == (f"new-{uid}@example.com", "newname")
    old_model = {**user, "email": None, "username": None, "is_active": False}  # the old UserUpdateModel body
    assert (await api.patch(f"/users/{uid}", json=old_model)).json()["is_active"] is False
    assert (await api.patch("/users/nobody-here", json={"display_name": "x"})).status_code == 404


async def test_the_old_web_page_user_body_creates_a_user(api: httpx.AsyncClient):
    response = await api.post("/users/", json={"email": f"{uuid.uuid4().hex}@example.com", "username": "kim"})
    assert response.status_code == 201, response.text
    assert response.json()["display_name"] == "kim" and response.json()["user_id"]


async def test_my_creations_pages_with_cursors_and_counts(api: httpx.AsyncClient):
    uid = f"c{uuid.uuid4().hex[:27]}"
    await api.post("/users/", json={**FLUTTER_USER, "user_id": uid, "firebase_uid": uid, "email": f"{uid}@x.io"})
    ids = [(await api.post("/stories/", json=web_form_story(uid))).json()["story_id"] for _ in range(3)]
    first = (await api.get(f"/users/{uid}/creations", params={"limit": 2})).json()
    assert [s["story_id"] for s in first["stories"]] == ids[::-1][:2]
    assert first["pagination"] | {"next_cursor": None} == {
        "current_page": 1, "total_pages": 2, "total_stories": 3, "stories_per_page": 2, "has_next_page": True,
        "has_previous_page": False, "next_cursor": None}  # fmt: skip
    assert first["stories"][0]["is_processing"] is False and first["stories"][0]["progress_percentage"] == 0
    assert set(first) == {"stories", "pagination", "user_info", "filters"}
    by_cursor = (
        await api.get(
            f"/users/{uid}/creations", params={"limit": 2, "page": 2, "cursor": first["pagination"]["next_cursor"]}
        )
    ).json()
    by_page = (await api.get(f"/users/{uid}/creations", params={"limit": 2, "page": 2})).json()  # the old way
    assert [s["story_id"] for s in by_cursor["stories"]] == [s["story_id"] for s in by_page["stories"]] == ids[:1]
    assert (await api.get(f"/users/{uid}/creations", params={"status_filter": "done"})).status_code == 422
    assert (await api.get("/users/nobody-here/creations")).status_code == 404
    stories = await api.get(f"/users/{uid}/stories")
    assert [r["story_id"] for r in stories.json()] == ids[::-1] and set(stories.json()[0]) >= STORY_ROW
    stats = (await api.get(f"/users/{uid}/creations/stats")).json()
    assert stats["overview"]["total_creations"] == 3 and stats["overview"]["pending_stories"] == 3
    assert stats["activity"]["recent_creations"] == 3 and stats["activity"]["most_active_day"] is not None


async def test_delete_account_checks_the_email_and_takes_the_stories_with_it(api: httpx.AsyncClient):
    uid = f"d{uuid.uuid4().hex[:27]}"
    await api.post("/users/", json={**FLUTTER_USER, "user_id": uid, "firebase_uid": uid, "email": f"{uid}@x.io"})
    story_id = (await api.post("/stories/", json=web_form_story(uid))).json()["story_id"]
    wrong = await api.delete("/users/delete-account", params={"user_id": uid, "email": "someone@else.io"})
    assert (wrong.status_code, wrong.json()["detail"]) == (400, "Invalid user credentials")
    done = await api.delete("/users/delete-account", params={"user_id": uid, "email": f"{uid}@X.IO"})  # any case
    assert done.status_code == 200, done.text
    assert done.json() == {"message": "Account and all associated data successfully deleted", "stories_deleted": 1}
    assert (await api.get(f"/users/{uid}")).status_code == 404
    assert (await api.get(f"/stories/{story_id}")).status_code == 404


async def insert_public(resources: Resources, title: str, category: str, **values: Any) -> str:
    story_id = uuid.uuid4()
    scenes = orjson.dumps([{"sequence": 0, "text": "Once", "image_url": None, "audio_url": None}]).decode()
    await resources.db.execute(
        "INSERT INTO public_stories (id, title, category, tags, featured, scenes, created_at) "
        "VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb, now() + make_interval(secs => $7))",
        story_id, title, category, orjson.dumps(values.get("tags", [])).decode(), values.get("featured", False),
        scenes, values.get("offset_s", 0.0),
    )  # fmt: skip
    return str(story_id)


async def test_public_stories_categorized_listed_and_shown(api: httpx.AsyncClient, resources: Resources):
    await resources.db.execute("DELETE FROM public_stories")
    forest = await insert_public(resources, "The Magical Forest", "adventure", tags=["magic"], featured=True)
    moon = await insert_public(resources, "Moon Friends", "friendship", offset_s=1)
    grouped = (await api.get("/stories/public/categorized")).json()
    assert grouped["categories"] == ["friendship", "adventure"]
    assert [s["id"] for s in grouped["stories"]["adventure"]] == [forest]
    listed = await api.get("/stories/public", params={"category": "adventure", "featured": "true"})
    assert listed.status_code == 200 and [s["id"] for s in listed.json()] == [forest]  # no longer shadowed
    assert [s["id"] for s in (await api.get("/stories/public", params={"tags": "magic"})).json()] == [forest]
    page = await api.get("/stories/public/", params={"limit": 1})
    assert [s["id"] for s in page.json()] == [moon] and page.headers["x-next-cursor"]
    detail = (await api.get(f"/stories/public/{forest}")).json()
    assert detail["scenes"] == [{"sequence": 0, "text": "Once", "image_url": None, "audio_url": None}]
    assert detail["published"] is True
    missing = await api.get(f"/stories/public/{uuid.uuid4()}")
    assert missing.status_code == 404  # the old backend answered a 500 saying 404


async def test_root_sends_browsers_to_the_web_pages(api: httpx.AsyncClient):
    response = await api.get("/", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (307, "/static/index.html")
    assert (await api.get("/static/index.html")).status_code == 200


async def test_conversation_tracking_answers_the_old_shape_and_can_make_a_story(api: httpx.AsyncClient):
    body = {"user_id": FUID, "conversation_id": f"conv_{uuid.uuid4().hex}", "completed_at": "2025-06-21T10:05:05",
            "user_type": "authenticated", "platform": "flutter_app",
            "metrics": {"duration_seconds": 175, "duration_minutes": 2, "total_messages": 21,
                        "agent_id": "agent_01jy5rtdqtec3vtc4xtjbqkjrv"},
            "firebase_uid": FUID, "user_email": "cursordemo249@gmail.com"}  # fmt: skip
    tracked = await api.post("/stories/conversation-tracking", json=body)
    assert tracked.status_code == 200, tracked.text
    assert tracked.json() | {"story_id": None, "story_creation": None} == {
        "status": "tracked", "conversation_id": body["conversation_id"], "user_id": FUID,
        "completed_at": body["completed_at"], "metrics": body["metrics"],
        "message": "Conversation completion tracked successfully", "story_creation": None,
        "story_id": None}  # fmt: skip
    made = (await api.post("/stories/conversation-tracking", json={**body, "create_story": True})).json()
    assert made["story_creation"] == "scheduled"
    story = (await api.get(f"/stories/{made['story_id']}")).json()
    assert story["title"] == f"Conversation Story - {body['conversation_id'][:8]}"
    missing = await api.post("/stories/conversation-tracking", json={"user_id": FUID})
    assert (missing.status_code, missing.json()["detail"]) == (
        400,
        "Missing required fields: user_id, conversation_id, completed_at",
    )


@pytest.fixture
async def convai() -> AsyncIterator[tuple[str, list[Request]]]:
    """A local server speaking ElevenLabs' ConvAI `GET /v1/convai/conversations/{id}`."""
    seen: list[Request] = []

    async def conversation(request: Request) -> JSONResponse:
        seen.append(request)
        turns = [{"role": "user", "message": "Tell me about a turtle who flies", "time_in_call_secs": 1},
                 {"role": "agent", "message": "A turtle named Tam built wings of leaves.", "time_in_call_secs": 4},
                 {"role": "agent", "message": None, "time_in_call_secs": 6}]  # fmt: skip
        return JSONResponse({"conversation_id": request.path_params["id"], "status": "done", "transcript": turns})

    port = free_port()
    app = Starlette(routes=[Route("/v1/convai/conversations/{id}", conversation)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn has no started event to wait on
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    await task


async def test_a_conversation_becomes_a_story_written_from_its_transcript(
    settings: Settings, convai: tuple[str, list[Request]], run_worker: RunWorker
):
    base_url, seen = convai
    settings = settings.model_copy(update={"conversations_base_url": base_url, "conversations_api_key": "xi-conv"})
    await run_worker(registry, settings)
    body = {"conversation_id": (conv := f"conv_{uuid.uuid4().hex}"), "user_id": FUID,
            "agent_id": "agent_01jy5rtdqtec3vtc4xtjbqkjrv", "fetch_transcript": True,
            "story_title": "My Conversation Story"}  # fmt: skip
    async with api_client(settings) as api:
        response = await api.post("/stories/conversation-to-story", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert {k: answer[k] for k in ("status", "conversation_id", "user_id", "fetch_transcript")} == {
            "status": "processing",
            "conversation_id": conv,
            "user_id": FUID,
            "fetch_transcript": True,
        }
        assert answer["elevenlabs_available"] is True
        again = await api.post("/stories/conversation-to-story", json=body)
        assert again.json()["story_id"] == answer["story_id"]  # one story per conversation
        story = await until_story(api, answer["story_id"], "completed", "failed")
        assert story["status"] == "completed" and story["title"]
        rows = (await api.get(f"/users/{FUID}/stories", params={"limit": 200})).json()
        prompt = next(r["prompt"] for r in rows if r["story_id"] == answer["story_id"])
        missing = await api.post("/stories/conversation-to-story", json={"user_id": FUID})
        assert (missing.status_code, missing.json()["detail"]) == (
            400,
            "Missing required fields: conversation_id, user_id",
        )
    assert "User: Tell me about a turtle who flies\nAgent: A turtle named Tam built wings of leaves." in prompt
    assert [r.headers["xi-api-key"] for r in seen] == ["xi-conv"]
