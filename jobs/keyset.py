"""Keyset paging: a page ends at its last row's (created_at, id), and the next page starts after it.

A cursor is that pair, opaque to clients (URL-safe base64). Paging this way costs the same on page 1,000
as on page 1, and rows inserted meanwhile do not shift the pages (an offset would skip or repeat them).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Cursor", "CursorError"]


class CursorError(ValueError):
    """A cursor this API did not give out (or one damaged on the way)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            when, _, ident = raw.partition("|")
            created_at = datetime.fromisoformat(when)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise CursorError(
                f"cursor {text[:40]!r} is not one this API gave out; use the next_cursor of a page"
            ) from None
        if not ident or created_at.tzinfo is None:
            raise CursorError(f"cursor {text[:40]!r} is not one this API gave out; use the next_cursor of a page")
        return cls(created_at, ident)
