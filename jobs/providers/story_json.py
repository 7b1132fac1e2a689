"""Parse what a language model wrote into a StoryDraft or a VisualProfile; pure functions, no I/O.

Models are asked for one JSON object but often wrap it in ```json fences or prose, leave trailing commas,
or stop mid-story at their token limit. These repairs are safe, in this order:

1. the content of the first ``` fence if it holds a brace (an unclosed fence counts: the reply was cut);
2. the outermost {...}: from the first "{" to its matching "}", braces inside strings ignored;
3. trailing commas before "}" or "]" dropped (outside strings); raw control characters in strings allowed;
4. if the text ends before the object closes: cut back to the last complete value (for a story: the last
   whole scene), close what is open, and use that if it validates with at least one scene.

The object may come in the shapes models really write: a scene without a title gets one from its text
(or "Scene N"); the old backend's scenes (`scene_number`, `text`, `image_prompt`, in any order) are put in
`scene_number` order; a scene without an image prompt gets one made from its text; a few common other
names are read (`content` or `narration` for the text, `scene_title`, `imagePrompt`, ...); a story
without a title takes the one asked for, else its first scene's; fields nobody knows are ignored.

Anything else raises StoryJsonError (a ValueError) whose message says what was expected and what came,
including pydantic's validation errors in a compact `field.path: problem` form a model can act on.

ValueError
└── StoryJsonError      no usable JSON object, even after repair
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from jobs.providers.base import MAX_SCENES, StoryDraft, VisualProfile

__all__ = ["StoryJsonError", "describe_validation_error", "parse_story", "parse_visual_profile"]

T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
# A whole JSON string (left untouched), or a comma with only whitespace before a closing bracket.
_TRAILING_COMMA = re.compile(r'"(?:[^"\\]|\\.)*"|,(\s*[}\]])', re.DOTALL)
_MAX_CUTS_TRIED = 40  # each try parses the prefix again; models rarely write more than 20 scenes
_MAX_ERRORS_SHOWN = 8


class StoryJsonError(ValueError):
    """The model's reply holds no usable JSON object, even after repair."""


def parse_story(text: str, *, max_scenes: int = MAX_SCENES, title: str = "") -> StoryDraft:
    """A StoryDraft from a model's reply; scenes beyond `max_scenes` are dropped; `title` is used if the
    model gave the story none."""
    return _parse(text, lambda obj: _story(obj, max_scenes, title), what="story")


def parse_visual_profile(text: str) -> VisualProfile:
    """A VisualProfile from a model's reply; lists and objects in its fields are flattened into text."""
    return _parse(text, _profile, what="visual profile")


def describe_validation_error(exc: ValidationError) -> str:
    """pydantic's errors as `scenes.2.text: Field required; ...` (no URLs, at most a few)."""
    errors = exc.errors(include_url=False)
    shown = [f"{'.'.join(str(part) for part in e['loc']) or '(top level)'}: {e['msg']}" for e in errors]
    more = len(shown) - _MAX_ERRORS_SHOWN
    return "; ".join(shown[:_MAX_ERRORS_SHOWN]) + (f"; and {more} more" if more > 0 else "")


# --- finding and repairing the object ---------------------------------------------------------------


def _parse(text: str, build: Callable[[Any], T], *, what: str) -> T:
    candidate = _candidate(text, what)
    end, cuts = _scan(candidate)
    if end is not None:
        return build(_loads(candidate[:end], what))
    last_error: StoryJsonError | None = None
    for cut, closers in reversed(cuts[-_MAX_CUTS_TRIED:]):
        try:
            return build(_loads(candidate[:cut] + closers, what))
        except StoryJsonError as exc:
            last_error = last_error or exc
    reason = f"; the longest complete part was unusable: {last_error}" if last_error else ""
    raise StoryJsonError(
        f"the {what} JSON object is cut off (it ends with {_tail(candidate)!r} before its closing brace) and "
        f"no complete part of it could be used{reason}. Expected one whole JSON object"
    )


def _candidate(text: str, what: str) -> str:
    """From the first "{" on, inside the first fence that holds one; trailing commas dropped."""
    fenced = _FENCE.search(text)
    if fenced is not None and "{" in fenced.group(1):
        text = fenced.group(1)
    start = text.find("{")
    if start < 0:
        shown = repr(_tail(text, 120)) if text.strip() else "an empty reply"
        raise StoryJsonError(f"expected a JSON object for the {what}, but the reply has no '{{': got {shown}")
    return _TRAILING_COMMA.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(0), text[start:])


def _scan(text: str) -> tuple[int | None, list[tuple[int, str]]]:
    """Walk from the opening brace: (index past its matching close or None, cut points).

    A cut point is (index just past a closed inner value, the closers for what is still open there).
    """
    stack: list[str] = []
    cuts: list[tuple[int, str]] = []
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]":
            if not stack or stack.pop() != char:
                return None, []  # mismatched brackets: nothing safe to cut back to
            if not stack:
                return index + 1, cuts
            cuts.append((index + 1, "".join(reversed(stack))))
    return None, cuts


def _loads(text: str, what: str) -> Any:
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        near = text[max(0, exc.pos - 40) : exc.pos + 40]
        raise StoryJsonError(
            f"the {what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (near {near!r})"
        ) from exc


def _tail(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "…" + text[-limit:]


# --- building the models ----------------------------------------------------------------------------


def _validated(model: type[T], obj: dict[str, Any], what: str) -> T:
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise StoryJsonError(f"the {what} JSON does not match the schema: {describe_validation_error(exc)}") from exc


def _object(obj: Any, what: str, key: str) -> dict[str, Any]:
    """The object itself, or the one object it wraps (`{"story": {...}}`) if only that one has `key`."""
    if not isinstance(obj, dict):
        raise StoryJsonError(f"expected a JSON object for the {what}, got a JSON {type(obj).__name__}")
    if key not in obj and len(obj) == 1:
        (inner,) = obj.values()
        if isinstance(inner, dict) and key in inner:
            return inner
    return obj


def _story(obj: Any, max_scenes: int, title: str) -> StoryDraft:
    found = _object(obj, "story", "scenes")
    scenes = found.get("scenes")
    if isinstance(scenes, list):
        scenes = [_scene(scene, n) for n, scene in enumerate(_in_order(scenes)[:max_scenes], start=1)]
    story_title = _field(found, _STORY_TITLE_KEYS)
    if _blank(story_title):
        first = scenes[0] if isinstance(scenes, list) and scenes else None
        story_title = title or (first.get("title") if isinstance(first, dict) else None)
    story = {"title": story_title, "scenes": scenes}
    return _validated(StoryDraft, {key: value for key, value in story.items() if value is not None}, "story")


_STORY_TITLE_KEYS = ("title", "story_title", "name")
_SCENE_TITLE_KEYS = ("title", "scene_title", "heading", "name")
_SCENE_TEXT_KEYS = ("text", "content", "narration", "scene_text", "story_text", "body")
_SCENE_PROMPT_KEYS = ("image_prompt", "imagePrompt", "image_description", "illustration", "illustration_prompt")
_TITLE_WORDS_CHARS = 60  # a title made from a scene's text: its first sentence, at most this long
_PROMPT_FROM_TEXT_CHARS = 600  # an image prompt made from a scene's text: at most this much of it
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s")


def _scene(raw: Any, position: int) -> Any:
    """A scene in our shape, from the shapes models write; anything not an object is left to validation."""
    if not isinstance(raw, dict):
        return raw
    text = _field(raw, _SCENE_TEXT_KEYS)
    title = _field(raw, _SCENE_TITLE_KEYS)
    prompt = _field(raw, _SCENE_PROMPT_KEYS)
    if _blank(title):
        title = _title_from(text) or f"Scene {_number(raw) or position}"
    if _blank(prompt) and isinstance(text, str) and text.strip():
        prompt = "An illustration of this moment of the story: " + _words(text, _PROMPT_FROM_TEXT_CHARS)
    scene = {"title": title, "text": text, "image_prompt": prompt}
    return {key: value for key, value in scene.items() if value is not None}


def _in_order(scenes: list[Any]) -> list[Any]:
    """The scenes in `scene_number` order when every one has a distinct number (the old backend's shape)."""
    numbered: dict[int, Any] = {}
    for scene in scenes:
        number = _number(scene) if isinstance(scene, dict) else None
        if number is None or number in numbered:
            return scenes
        numbered[number] = scene
    return [numbered[number] for number in sorted(numbered)]


def _number(scene: dict[str, Any]) -> int | None:
    value = scene.get("scene_number", scene.get("number"))
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.strip().isdigit() else None


def _field(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """The first of `keys` that holds something; a list of strings (paragraphs) is joined into one."""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            value = " ".join(item.strip() for item in value)
        if not _blank(value):
            return value
    return None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _title_from(text: Any) -> str | None:
    """A scene title from its text: the first sentence, cut at a word, without its full stop."""
    if not isinstance(text, str) or not text.strip():
        return None
    sentence = _SENTENCE_END.split(" ".join(text.split()), maxsplit=1)[0]
    return _words(sentence, _TITLE_WORDS_CHARS).rstrip(".!?,;: ") or None


def _words(text: str, limit: int) -> str:
    """`text` on one line, cut at a word boundary to at most `limit` characters (marked with "…")."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] or text[: limit - 1]
    return cut.rstrip(" ,.;:") + "…"


def _profile(obj: Any) -> VisualProfile:
    profile = {key: _flatten(value) for key, value in _object(obj, "visual profile", "base_style").items()}
    return _validated(VisualProfile, profile, "visual profile")


def _flatten(value: Any) -> Any:
    """Lists and objects of strings as one line of text ("fox: red coat; owl: glasses"); others unchanged."""
    if isinstance(value, list) and all(isinstance(item, str | dict) for item in value):
        return "; ".join(str(_flatten(item)) for item in value)
    if isinstance(value, dict) and all(isinstance(item, str | int | float) for item in value.values()):
        return "; ".join(f"{key}: {item}" for key, item in value.items())
    return value
