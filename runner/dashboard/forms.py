"""What a dashboard form posts: small `application/x-www-form-urlencoded` bodies (the browser's and
htmx's default), read without a multipart parser. Filters travel in the action URL's query, so a body
holds at most the count the operator confirmed."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import HTTPException, Request

__all__ = ["confirmed_count", "posted"]

MAX_BODY = 16 * 1024


async def posted(request: Request) -> dict[str, str]:
    """The posted fields (the first value of each); 413 for a body larger than any form of ours."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"a dashboard form is under {MAX_BODY} bytes")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


async def confirmed_count(request: Request) -> int:
    """The count the operator saw and confirmed (`confirm`); 400 when it is missing or not a count."""
    text = (await posted(request)).get("confirm", "")
    if not text.isdigit():
        raise HTTPException(400, f"confirm must be the count you were shown (a whole number), not {text!r}")
    return int(text)
