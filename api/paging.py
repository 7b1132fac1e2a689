"""Keyset cursors in query strings: a bad one is a 400 that says so."""

from __future__ import annotations

from fastapi import HTTPException

from runner.store.keyset import Cursor, CursorError

__all__ = ["cursor_param"]


def cursor_param(value: str | None) -> Cursor | None:
    if value is None:
        return None
    try:
        return Cursor.decode(value)
    except CursorError as exc:
        raise HTTPException(400, str(exc)) from None
