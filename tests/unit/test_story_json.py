"""Story JSON parsing: clean JSON, safe repairs (fences, prose, trailing commas, a cut-off last scene), clear errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobs.providers.story_json import StoryJsonError, parse_story, parse_visual_profile


def story(scene_count: int = 3, **extra: Any) -> dict[str, Any]:
    scenes = [
        {"title": f"Scene {n}", "text": f"Text of scene {n}.", "image_prompt": f"picture {n}"}
        for n in range(1, scene_count + 1)
    ]
    return {"title": "The Fox", "scenes": scenes, **extra}


def text_of(value: Any) -> str:
    return json.dumps(value, indent=2)


def test_clean_json_parses() -> None:
    """A plain JSON object becomes a StoryDraft with every scene."""
    draft = parse_story(text_of(story(3)))
    assert draft.title == "The Fox"
    assert [s.title for s in draft.scenes] == ["Scene 1", "Scene 2", "Scene 3"]
    assert draft.scenes[1].image_prompt == "picture 2"


def test_fenced_json_with_prose_parses() -> None:
    """```json fences and the prose around them are dropped."""
    reply = f"Sure! Here is your story:\n```json\n{text_of(story(2))}\n```\nI hope you like it {{really}}."
    assert len(parse_story(reply).scenes) == 2


def test_unlabelled_fence_and_unclosed_fence_parse() -> None:
    """A fence without a language, or one whose closing fence never came, still yields the object."""
    assert len(parse_story(f"```\n{text_of(story(2))}\n```").scenes) == 2
    assert len(parse_story(f"```json\n{text_of(story(2))}").scenes) == 2


def test_prose_around_bare_object_is_dropped() -> None:
    """Text before the first brace and after the matching one is ignored."""
    reply = f"Here you go: {text_of(story(2))} -- enjoy! }} stray"
    assert len(parse_story(reply).scenes) == 2


def test_trailing_commas_are_dropped_but_commas_in_strings_kept() -> None:
    """`,}` and `,]` outside strings are repaired; text containing ",}" survives."""
    reply = '{"title": "Odd ,} title", "scenes": [{"title": "A", "text": "Hi, ] there.", "image_prompt": "p",},],}'
    draft = parse_story(reply)
    assert draft.title == "Odd ,} title"
    assert draft.scenes[0].text == "Hi, ] there."


def test_raw_newlines_inside_strings_are_accepted() -> None:
    """Models sometimes put literal newlines inside strings; json strict=False allows them."""
    reply = '{"title": "T", "scenes": [{"title": "A", "text": "line one\nline two", "image_prompt": "p"}]}'
    assert parse_story(reply).scenes[0].text == "line one\nline two"


def test_truncated_last_scene_is_dropped() -> None:
    """A reply cut off inside its last scene keeps the complete scenes before it."""
    full = text_of(story(3))
    cut = full[: full.index("Text of scene 3") + 6]
    draft = parse_story(cut)
    assert [s.title for s in draft.scenes] == ["Scene 1", "Scene 2"]


def test_truncated_in_fence_after_complete_scenes_is_repaired() -> None:
    """Truncation inside an unclosed fence, right after a scene's closing brace, keeps all whole scenes."""
    full = text_of(story(3))
    cut = full[: full.rindex("}", 0, full.rindex("]")) + 1]  # ends just after scene 3's brace
    assert len(parse_story("```json\n" + cut).scenes) == 3


def test_truncated_before_any_whole_scene_fails_clearly() -> None:
    """With no complete scene there is nothing safe to keep: the error says the object is cut off."""
    with pytest.raises(StoryJsonError, match="cut off"):
        parse_story('{"title": "T", "scenes": [{"title": "A", "text": "Once upon')


def test_schema_error_carries_pydantic_message() -> None:
    """A missing field names its path and pydantic's message, without documentation URLs."""
    bad = story(2)
    del bad["scenes"][1]["text"]
    with pytest.raises(StoryJsonError) as caught:
        parse_story(text_of(bad))
    message = str(caught.value)
    assert "does not match the schema" in message
    assert "scenes.1.text: Field required" in message
    assert "errors.pydantic.dev" not in message


def test_empty_scenes_rejected() -> None:
    """A story needs at least one scene."""
    with pytest.raises(StoryJsonError, match="scenes"):
        parse_story('{"title": "T", "scenes": []}')


def test_no_object_and_empty_reply_fail_clearly() -> None:
    """No brace at all: the error says a JSON object was expected and shows what came."""
    with pytest.raises(StoryJsonError, match=r"no .\{.*I cannot write that"):
        parse_story("I cannot write that story.")
    with pytest.raises(StoryJsonError, match="empty reply"):
        parse_story("  ")


def test_invalid_json_reports_position() -> None:
    """Unrepairable syntax names the JSON error and where it is."""
    with pytest.raises(StoryJsonError, match=r"not valid JSON: .* line 1 column"):
        parse_story('{"title": "T" "scenes": []}')


def test_non_object_is_rejected() -> None:
    """A top-level array is not a story."""
    with pytest.raises(StoryJsonError, match="no '\\{'"):
        parse_story('["a", "b"]')


def test_extra_scenes_are_cut_to_max() -> None:
    """More scenes than asked for: the first `max_scenes` are kept."""
    assert len(parse_story(text_of(story(5)), max_scenes=3).scenes) == 3


def test_wrapped_story_is_unwrapped() -> None:
    """{"story": {...}} is accepted as the story it wraps."""
    assert parse_story(text_of({"story": story(2)})).title == "The Fox"


def test_mismatched_brackets_fail() -> None:
    """A bracket closing the wrong thing is not repaired by guessing."""
    with pytest.raises(StoryJsonError):
        parse_story('{"title": "T", "scenes": [{"title": "A", "text": "x", "image_prompt": "p"}}')


def test_visual_profile_parses_and_flattens() -> None:
    """Profile fields given as lists or objects become one line of text."""
    reply = text_of(
        {
            "characters": [{"name": "Fox", "look": "red coat"}, "Owl with glasses"],
            "setting": {"place": "forest", "time": "night"},
            "base_style": "watercolour",
        }
    )
    profile = parse_visual_profile(f"```json\n{reply}\n```")
    assert profile.characters == "name: Fox; look: red coat; Owl with glasses"
    assert profile.setting == "place: forest; time: night"
    assert profile.base_style == "watercolour"


def test_visual_profile_missing_field_fails() -> None:
    with pytest.raises(StoryJsonError, match="base_style: Field required"):
        parse_visual_profile('{"characters": "a fox", "setting": "woods"}')


# --- the shapes models really write -----------------------------------------------------------------


def test_scene_without_title_gets_one_from_its_text() -> None:
    """A missing or empty scene title becomes the text's first sentence, cut at a word."""
    reply = text_of(
        {
            "title": "T",
            "scenes": [
                {"text": "The fox found a lantern in the snow. It glowed softly.", "image_prompt": "p"},
                {"title": "  ", "text": "Far away, over the hills and the rivers and the forests, a light was " * 3,
                 "image_prompt": "p"},
            ],
        }
    )  # fmt: skip
    first, second = parse_story(reply).scenes
    assert first.title == "The fox found a lantern in the snow"
    assert second.title.endswith("…")
    assert len(second.title) <= 60
    assert second.title.startswith("Far away, over the hills")


def test_old_backend_scene_shape_is_accepted_in_scene_number_order() -> None:
    """`scene_number`, `text`, `image_prompt` (no title), out of order: ordered, titled, kept."""
    scenes = [
        {"scene_number": 2, "text": "Second part.", "image_prompt": "picture two"},
        {"scene_number": 1, "text": "First part.", "image_prompt": "picture one"},
    ]
    draft = parse_story(text_of({"title": "Old", "scenes": scenes}))
    assert [(s.title, s.text, s.image_prompt) for s in draft.scenes] == [
        ("First part", "First part.", "picture one"),
        ("Second part", "Second part.", "picture two"),
    ]


def test_missing_image_prompt_is_made_from_the_text() -> None:
    """Old LLMs sometimes leave out image_prompt: one is made from the scene's text."""
    draft = parse_story(text_of({"title": "T", "scenes": [{"scene_number": 1, "text": "A fox in the snow."}]}))
    assert draft.scenes[0].image_prompt == "An illustration of this moment of the story: A fox in the snow."
    long_text = "word " * 700
    long_prompt = parse_story(text_of({"title": "T", "scenes": [{"text": long_text}]})).scenes[0].image_prompt
    assert len(long_prompt) <= 2000
    assert long_prompt.endswith("word…")


def test_a_scene_with_no_text_at_all_is_numbered_but_still_needs_text() -> None:
    """With no text there is nothing to title or draw: the title falls back to the number, and the
    missing text is reported (so the model is asked again)."""
    with pytest.raises(StoryJsonError, match=r"scenes\.0\.text: Field required") as caught:
        parse_story(text_of({"title": "T", "scenes": [{"scene_number": 4}]}))
    assert "title" not in str(caught.value)


def test_unknown_fields_are_ignored_and_common_other_names_read() -> None:
    """Fields nobody knows are dropped; `content`, `scene_title`, `imagePrompt` and paragraph lists are read."""
    reply = text_of(
        {
            "title": "T",
            "moral": "be kind",
            "scenes": [
                {"scene_title": "A", "content": ["One.", "Two."], "imagePrompt": "p", "mood": "calm", "id": 7},
            ],
        }
    )
    (scene,) = parse_story(reply).scenes
    assert (scene.title, scene.text, scene.image_prompt) == ("A", "One. Two.", "p")


def test_story_without_a_title_takes_the_asked_one_or_its_first_scenes() -> None:
    """No story title: the title asked for, else the first scene's."""
    untitled = text_of({"scenes": [{"title": "Snow", "text": "It snowed.", "image_prompt": "p"}]})
    assert parse_story(untitled, title="The Fox").title == "The Fox"
    assert parse_story(untitled).title == "Snow"


def test_old_shape_cut_off_keeps_the_whole_scenes() -> None:
    """The repairs still work on the old shape: a reply cut inside its last scene keeps the others."""
    scenes = [{"scene_number": n, "text": f"Part {n} of the night."} for n in (1, 2, 3)]
    full = text_of({"title": "T", "scenes": scenes})
    draft = parse_story(full[: full.index("Part 3") + 3])
    assert [s.text for s in draft.scenes] == ["Part 1 of the night.", "Part 2 of the night."]
