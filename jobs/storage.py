"""Media storage: where generated images and narration live, addressed by relative POSIX keys.

Keys look like "stories/<uuid>/scene-01.png". The local backend writes each file atomically (temp file
in the same directory, then os.replace), so a reader never sees a half-written file and re-running a
job simply overwrites. Disk work runs in a thread so it never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import secrets
import shutil
from pathlib import Path, PurePosixPath
from typing import Protocol

__all__ = ["LocalMediaStorage", "MediaStorage", "content_type_for", "validate_key"]

MAX_KEY_LENGTH = 512
# One path part: starts with a letter or digit (so no hidden files or "-flag" names), then a
# conservative set that is safe in URLs and on every filesystem.
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TEMP_PREFIX = ".tmp-"  # cannot collide with a key part, which must start with a letter or digit
_TEMP_NUMBERS = itertools.count()  # a temp file's name: see _write_atomic
_MADE_FOLDERS_KEPT = 10_000

_CONTENT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
}


def content_type_for(key: str) -> str:
    """The MIME type for a key, by its extension (case-insensitive)."""
    suffix = PurePosixPath(key).suffix.lower().lstrip(".")
    return _CONTENT_TYPES.get(suffix, "application/octet-stream")


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative POSIX path; raise ValueError saying what is wrong."""
    if not key:
        raise ValueError("storage key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"storage key is longer than {MAX_KEY_LENGTH} characters")
    if "\\" in key:
        raise ValueError(f"storage key {key!r} contains a backslash; use '/' between parts")
    if key.startswith("/"):
        raise ValueError(f"storage key {key!r} is absolute; keys are relative to the storage root")
    for part in key.split("/"):
        if not part:
            raise ValueError(f"storage key {key!r} has an empty part (leading, trailing or double '/')")
        if part in (".", ".."):
            raise ValueError(f"storage key {key!r} contains a {part!r} part")
        if not _PART.fullmatch(part):
            raise ValueError(
                f"storage key {key!r} has an unsafe part {part!r}: parts must start with a letter or "
                "digit and use only letters, digits, '.', '_' and '-' (at most 128 characters)"
            )
    return key


class MediaStorage(Protocol):
    """Where job output goes. Keys are validated relative POSIX paths."""

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store `data` under `key` (replacing any previous value) and return the key."""
        ...

    async def get_path(self, key: str) -> Path | None:
        """A local file to serve for `key`, or None if there is none."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove everything under the directory `prefix`; return how many files were removed."""
        ...

    async def folders(self, prefix: str) -> list[tuple[str, float]]:
        """The folders directly under the directory `prefix`, each with when it last changed (epoch s)."""
        ...


class LocalMediaStorage:
    """MediaStorage on the local filesystem under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self._real_root: Path | None = None
        # Folders already made: a story's files share one, so only its first file pays for the mkdir.
        self._made_folders: set[Path] = set()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        # content_type is not stored locally: serving derives it from the extension (content_type_for).
        path = self._path(key)
        await asyncio.to_thread(self._write, path, data)
        return key

    def _write(self, path: Path, data: bytes) -> None:
        # The folder is checked before mkdir, so a symlink cannot make us create directories outside, and
        # before each write, so one swapped in since cannot make us write outside. The file itself needs no
        # check: os.replace over a symlink replaces the link, it does not write through it.
        folder = path.parent
        self._check_folder(folder)
        if folder not in self._made_folders:
            self._make(folder)
        try:
            _write_atomic(path, data)
        except FileNotFoundError:  # the folder was removed since (its story deleted, say): make it again
            self._check_folder(folder)
            self._make(folder)
            _write_atomic(path, data)

    def _check_folder(self, folder: Path) -> None:
        if self._real_root is None:
            self._real_root = self.root.resolve()
        _check_inside(self.root, folder, self._real_root)

    def _make(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if len(self._made_folders) > _MADE_FOLDERS_KEPT:
            self._made_folders.clear()
        self._made_folders.add(folder)

    async def get_path(self, key: str) -> Path | None:
        return await asyncio.to_thread(_existing_file, self.root, self._path(key))

    async def delete_prefix(self, prefix: str) -> int:
        return await asyncio.to_thread(_delete_tree, self.root, self._path(prefix.rstrip("/")))

    async def folders(self, prefix: str) -> list[tuple[str, float]]:
        return await asyncio.to_thread(_folders, self.root, self._path(prefix.rstrip("/")))


def _check_inside(root: Path, path: Path, real_root: Path | None = None) -> None:
    """Keys cannot contain "..", but a symlinked directory could still point outside the root (`real_root`:
    the root already resolved)."""
    if not path.resolve().is_relative_to(real_root or root.resolve()):
        raise ValueError(f"storage path {path} resolves outside the storage root {root}")


def _existing_file(root: Path, path: Path) -> Path | None:
    _check_inside(root, path)
    return path if path.is_file() else None


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename over it: readers see old or new, never half."""
    # The pid and a counter keep this process's writers apart, the random part other hosts' (a shared volume)
    # and a temp file a killed writer with the same pid left behind.
    temp = path.with_name(f"{_TEMP_PREFIX}{path.name}.{os.getpid()}.{next(_TEMP_NUMBERS)}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            os.fchmod(fd, 0o644)  # whatever the umask: the server may run as another user
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _folders(root: Path, path: Path) -> list[tuple[str, float]]:
    _check_inside(root, path)
    if not path.is_dir():
        return []
    with os.scandir(path) as entries:  # a folder's mtime moves when a file is added, replaced or removed
        return [(e.name, e.stat(follow_symlinks=False).st_mtime) for e in entries if e.is_dir(follow_symlinks=False)]


def _delete_tree(root: Path, path: Path) -> int:
    """Remove the file or directory tree at `path`; return the number of files removed."""
    _check_inside(root, path)
    if path.is_symlink() or path.is_file():
        path.unlink()
        return 1
    if not path.is_dir():
        return 0
    count = sum(1 for entry in path.rglob("*") if not entry.is_dir() or entry.is_symlink())
    # rmtree refuses to follow symlinks out of the tree, so a stray link cannot delete outside root.
    shutil.rmtree(path)
    return count
