"""Text fields as requests may send them: bounded, and storable by Postgres (no NUL, no lone surrogate)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, StringConstraints

__all__ = ["MAX_PROMPT_CHARS", "Email", "Prompt", "ShortText", "Style", "Title", "UserId", "storable_text"]

MAX_PROMPT_CHARS = 4000


def storable_text(value: str) -> str:
    """Text Postgres can store: no NUL character, no lone surrogate (it is refused, not mangled)."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it has a lone surrogate such as \\ud800)") from None
    return value


Title = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(storable_text)]
Prompt = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROMPT_CHARS),
    AfterValidator(storable_text),
]
Style = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100), AfterValidator(storable_text)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(storable_text)]
# Firebase uids (28 characters), UUIDs and the other ids the old backend took.
UserId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@\-]+$"),
]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, max_length=254, pattern=r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"
    ),
]
