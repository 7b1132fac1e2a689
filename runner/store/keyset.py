"""Keyset paging: a page ends at its last row's (created_at, id), and the next page starts after it.

A cursor is that pair, opaque to clients (URL-safe base64). Paging this way costs the same on page 1,000
as on page 1, and rows inserted meanwhile do not shift the pages (an offset would skip or repeat them).
Used by every list: the operators' job lists (runner.ops) and the domain's (jobs).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Cursor", "CursorError", "contains_pattern"]


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
        refused = CursorError(f"cursor {text[:40]!r} was not given out by this list; use a page's next cursor")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            when, _, ident = raw.partition("|")
            created_at = datetime.fromisoformat(when)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise refused from None
        if not ident or created_at.tzinfo is None:
            raise refused
        return cls(created_at, ident)


def contains_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, its own % and _ taken literally (default ESCAPE \\)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
