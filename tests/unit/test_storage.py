"""LocalMediaStorage: key validation, atomic writes, idempotent overwrites and prefix deletion."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from jobs.storage import LocalMediaStorage, content_type_for, validate_key

KEY = "stories/0b3c9a1e-5f7d-4c2a-9e8b-1d2f3a4b5c6d/scene-01.png"


@pytest.fixture
def storage(tmp_path: Path) -> LocalMediaStorage:
    return LocalMediaStorage(tmp_path / "media")


def all_files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


async def test_put_then_read_round_trips(storage: LocalMediaStorage) -> None:
    assert await storage.put(KEY, b"png bytes", "image/png") == KEY
    path = await storage.get_path(KEY)
    assert path is not None
    assert path.read_bytes() == b"png bytes"
    assert path == storage.root / KEY


async def test_get_path_of_missing_key_is_none(storage: LocalMediaStorage) -> None:
    assert await storage.get_path("stories/nope/scene-01.png") is None


async def test_put_same_key_twice_leaves_one_file_and_no_temp_files(storage: LocalMediaStorage) -> None:
    await storage.put(KEY, b"first", "image/png")
    await storage.put(KEY, b"second", "image/png")
    assert all_files(storage.root) == [KEY]
    assert (storage.root / KEY).read_bytes() == b"second"


async def test_overwrite_is_atomic_for_concurrent_readers(storage: LocalMediaStorage) -> None:
    old, new = b"a" * 200_000, b"b" * 300_000
    await storage.put(KEY, old, "image/png")
    path = storage.root / KEY
    seen: set[bytes] = set()
    stop = asyncio.Event()

    def read_until_stopped() -> None:
        while not stop.is_set():
            seen.add(path.read_bytes())

    reader = asyncio.create_task(asyncio.to_thread(read_until_stopped))
    for data in (new, old) * 10:
        await storage.put(KEY, data, "image/png")
    stop.set()
    await reader
    assert seen <= {old, new}  # never a half-written or empty file
    assert all_files(storage.root) == [KEY]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("stories/../secret.png", "'..'"),
        ("..", "'..'"),
        ("stories/./a.png", "'.'"),
        ("stories\\a.png", "backslash"),
        ("stories//a.png", "empty part"),
        ("stories/a.png/", "empty part"),
        ("stories/.hidden", "unsafe part"),
        ("stories/a b.png", "unsafe part"),
        ("stories/a\x00.png", "unsafe part"),
        ("stories/ä.png", "unsafe part"),
        ("stories/" + "a" * 129, "unsafe part"),
        ("a/" * 300, "longer than"),
    ],
)
async def test_bad_keys_are_rejected(storage: LocalMediaStorage, key: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_key(key)
    with pytest.raises(ValueError, match=reason):
        await storage.put(key, b"x", "image/png")
    with pytest.raises(ValueError, match=reason):
        await storage.get_path(key)
    assert not storage.root.exists() or all_files(storage.root) == []


async def test_symlink_out_of_root_is_rejected(storage: LocalMediaStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    storage.root.mkdir(parents=True)
    (storage.root / "stories").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the storage root"):
        await storage.put("stories/a.png", b"x", "image/png")
    with pytest.raises(ValueError, match="outside the storage root"):
        await storage.delete_prefix("stories")
    assert list(outside.iterdir()) == []


async def test_a_folder_removed_or_swapped_after_a_write_is_made_again_or_refused(
    storage: LocalMediaStorage, tmp_path: Path
) -> None:
    """A story's folder is made once, then remembered: one deleted since is made again, and one replaced by
    a symlink out of the root since is still refused."""
    await storage.put("stories/one/scene-01.png", b"1", "image/png")
    assert await storage.delete_prefix("stories/one") == 1
    await storage.put("stories/one/scene-02.png", b"2", "image/png")
    assert all_files(storage.root) == ["stories/one/scene-02.png"]
    assert await storage.delete_prefix("stories/one") == 1
    outside = tmp_path / "outside"
    outside.mkdir()
    (storage.root / "stories" / "one").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the storage root"):
        await storage.put("stories/one/scene-03.png", b"3", "image/png")
    assert list(outside.iterdir()) == []


async def test_delete_prefix_removes_the_tree_only(storage: LocalMediaStorage) -> None:
    await storage.put("stories/one/scene-01.png", b"1", "image/png")
    await storage.put("stories/one/scene-01.wav", b"1", "audio/wav")
    await storage.put("stories/one/extra/x.bin", b"1", "application/octet-stream")
    await storage.put("stories/two/scene-01.png", b"2", "image/png")
    assert await storage.delete_prefix("stories/one/") == 3
    assert not (storage.root / "stories" / "one").exists()
    assert all_files(storage.root) == ["stories/two/scene-01.png"]
    assert await storage.delete_prefix("stories/one") == 0


@pytest.mark.parametrize(("prefix", "reason"), [("", "empty"), ("/", "empty"), ("..", "'..'"), ("../media", "'..'")])
async def test_delete_prefix_rejects_unsafe_prefixes(storage: LocalMediaStorage, prefix: str, reason: str) -> None:
    await storage.put(KEY, b"x", "image/png")
    with pytest.raises(ValueError, match=reason):
        await storage.delete_prefix(prefix)
    assert all_files(storage.root) == [KEY]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a/b.png", "image/png"),
        ("a/b.PNG", "image/png"),
        ("a/b.wav", "audio/wav"),
        ("a/b.mp3", "audio/mpeg"),
        ("a/b.jpg", "image/jpeg"),
        ("a/b.jpeg", "image/jpeg"),
        ("a/b.webp", "image/webp"),
        ("a/b.txt", "application/octet-stream"),
        ("a/noext", "application/octet-stream"),
    ],
)
def test_content_type_for(key: str, expected: str) -> None:
    assert content_type_for(key) == expected


async def test_folders_lists_the_folders_under_a_prefix_with_their_change_time(storage: LocalMediaStorage) -> None:
    """Folders only (files beside them are not listed), each with its mtime; a missing prefix has none."""
    await storage.put("stories/one/scene-01.png", b"x", "image/png")
    await storage.put("stories/two/scene-01.png", b"x", "image/png")
    await storage.put("stories/loose.png", b"x", "image/png")
    os.utime(storage.root / "stories" / "one", (1_000_000, 1_000_000))
    assert sorted(await storage.folders("stories")) == [
        ("one", 1_000_000),
        ("two", (storage.root / "stories" / "two").stat().st_mtime),
    ]
    assert await storage.folders("nothing/here") == []
