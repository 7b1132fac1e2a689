"""StoryMimi users (Firebase-authenticated people and the ones made by hand), in Postgres.

Emails are stored lower-cased and are unique; a second user with the same id or email is refused
(`UserExistsError`), not written over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

__all__ = ["NewUser", "UserExistsError", "UserRecord", "UserRepository"]

_UPDATABLE = ("email", "display_name", "firebase_uid", "profile_source", "is_active", "cover_image_url", "metadata")


class UserExistsError(ValueError):
    """A user with this id or email exists already."""


@dataclass(frozen=True, slots=True)
class NewUser:
    user_id: str
    email: str
    display_name: str | None
    created_at: datetime
    firebase_uid: str
    profile_source: str
    is_active: bool = True
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class UserRecord:
    user_id: str
    email: str
    display_name: str | None
    created_at: datetime
    firebase_uid: str
    profile_source: str
    is_active: bool
    updated_at: datetime | None
    cover_image_url: str | None
    metadata: dict[str, Any]

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> UserRecord:
        values = dict(r)
        values["metadata"] = orjson.loads(values["metadata"])
        return cls(**values)


class UserRepository:
    """Borrows the pool (or a caller's connection, for a transaction)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, user: NewUser) -> UserRecord:
        """Insert the user; the display name defaults to the email's local part (as the old backend did)."""
        try:
            record = await self._pool.fetchrow(
                "INSERT INTO users (user_id, email, display_name, created_at, firebase_uid, profile_source, "
                "is_active, metadata) VALUES ($1, lower($2), $3, $4, $5, $6, $7, $8::jsonb) RETURNING *",
                user.user_id, user.email, user.display_name or user.email.split("@", 1)[0], user.created_at,
                user.firebase_uid, user.profile_source, user.is_active, orjson.dumps(user.metadata or {}).decode(),
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            which = "email" if "email" in (exc.constraint_name or "") else "user_id"
            raise UserExistsError(f"a user with this {which} exists already") from None
        assert record is not None
        return UserRecord.from_record(record)

    async def get(self, user_id: str) -> UserRecord | None:
        record = await self._pool.fetchrow("SELECT * FROM users WHERE user_id = $1", user_id)
        return UserRecord.from_record(record) if record is not None else None

    async def update(self, user_id: str, changes: dict[str, Any]) -> UserRecord | None:
        """Apply the given fields (only known ones); None if there is no such user."""
        fields = [name for name in _UPDATABLE if name in changes]
        if not fields:
            return await self.get(user_id)
        values = [orjson.dumps(changes[f]).decode() if f == "metadata" else changes[f] for f in fields]
        sets = ", ".join(
            f"{f} = " + ("lower($%d)" if f == "email" else "$%d::jsonb" if f == "metadata" else "$%d") % (i + 2)
            for i, f in enumerate(fields)
        )
        try:
            record = await self._pool.fetchrow(
                f"UPDATE users SET {sets}, updated_at = now() WHERE user_id = $1 RETURNING *", user_id, *values
            )
        except asyncpg.UniqueViolationError:
            raise UserExistsError("another user has this email already") from None
        return UserRecord.from_record(record) if record is not None else None

    async def delete(self, user_id: str) -> bool:
        return bool(await self._pool.execute("DELETE FROM users WHERE user_id = $1", user_id) == "DELETE 1")
