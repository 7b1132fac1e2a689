"""The media clean-up job, `media_task.cleanup`: removes the stored media of stories that no longer exist.

Deleting a story removes its rows and then its folder (`stories/<story_id>/`), but media can outlive it:
a scene's media job that was already making its image when the story was deleted stores its files after
the folder went (a cancel reaches a running job only at the worker's next abort poll), and a process that
dies between the row delete and the folder delete leaves the whole folder. Nothing else ever removes them.

Run on MEDIA_CLEANUP_CRON (nightly by default) by every worker's schedule, once per tick across the
fleet. A run lists the story folders, oldest first, asks Postgres which of their stories still exist, and
removes at most MEDIA_CLEANUP_BATCH folders of stories that do not; a folder changed in the last
MEDIA_CLEANUP_MIN_AGE_S is left for a later run (a write may be under way). Re-running it is harmless:
a removed folder is simply not listed again, and the rest waits for the next run.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from jobs.repository import StoryRepository
from jobs.services import StoryServices
from jobs.settings import story_settings
from jobs.storage import MediaStorage
from runner.context import JobContext
from runner.registry import job
from runner.settings import Settings

__all__ = ["MEDIA_CLEANUP_JOB", "CleanupReport", "clean_orphaned_media", "remove_orphaned_media"]

log = structlog.get_logger("jobs.cleanup")

MEDIA_CLEANUP_JOB = "media_task.cleanup"
STORIES_FOLDER = "stories"  # media keys are stories/<story_id>/scene-NN.<ext> (jobs/media.py)
_LOOKUP_CHUNK = 1000  # story ids per existence query


@dataclass
class CleanupReport:
    """What one run did."""

    folders: int = 0  # story folders found
    recent: int = 0  # left alone: changed within the minimum age
    removed: list[str] = field(default_factory=list)  # story ids whose folder was removed
    files: int = 0  # files removed with them
    more: bool = False  # the batch was full: more orphaned folders may wait for the next run
    failed: list[str] = field(default_factory=list)  # folders that could not be removed (logged), tried next run
    foreign: list[str] = field(default_factory=list)  # folders not named by a story id: never touched


async def remove_orphaned_media(
    storage: MediaStorage, stories: StoryRepository, *, batch: int, min_age_s: float
) -> CleanupReport:
    """Remove up to `batch` folders of stories without a row, oldest first; see the module docstring."""
    report = CleanupReport()
    folders = sorted(await storage.folders(STORIES_FOLDER), key=lambda f: f[1])
    report.folders = len(folders)
    settled_before = time.time() - min_age_s
    candidates: list[uuid.UUID] = []
    for name, changed in folders:
        story_id = _story_id(name)
        if story_id is None:
            report.foreign.append(name)
        elif changed > settled_before:
            report.recent += 1
        else:
            candidates.append(story_id)
    orphans: list[uuid.UUID] = []
    for start in range(0, len(candidates), _LOOKUP_CHUNK):  # stop asking once a batch is found
        chunk = candidates[start : start + _LOOKUP_CHUNK]
        existing = await stories.existing(chunk)
        orphans.extend(story_id for story_id in chunk if story_id not in existing)
        if len(orphans) > batch:
            break
    report.more = len(orphans) > batch
    for story_id in orphans[:batch]:
        await _remove(storage, story_id, report)
    return report


async def _remove(storage: MediaStorage, story_id: uuid.UUID, report: CleanupReport) -> None:
    try:
        report.files += await storage.delete_prefix(f"{STORIES_FOLDER}/{story_id}")
    except OSError as exc:  # e.g. a late write racing the removal; the next run tries again
        log.warning("orphaned_media_not_removed", story_id=str(story_id), error=repr(exc))
        report.failed.append(str(story_id))
        return
    report.removed.append(str(story_id))


def _story_id(name: str) -> uuid.UUID | None:
    try:
        story_id = uuid.UUID(name)
    except ValueError:
        return None
    return story_id if str(story_id) == name else None  # only the canonical spelling media keys use


def _schedule(settings: Settings) -> str | None:
    return story_settings(settings).media_cleanup_cron or None


@job(MEDIA_CLEANUP_JOB, cron=_schedule)
async def clean_orphaned_media(ctx: JobContext) -> dict[str, Any]:
    """Remove the media of deleted stories, a batch a run (the report is the job's result)."""
    services: StoryServices = ctx.services
    settings = services.settings
    report = await remove_orphaned_media(
        services.storage, services.stories, batch=settings.media_cleanup_batch,
        min_age_s=settings.media_cleanup_min_age_s,
    )  # fmt: skip
    ctx.log.info(
        "orphaned_media_removed", folders=report.folders, removed=len(report.removed), files=report.files,
        recent=report.recent, more=report.more, failed=len(report.failed), foreign=len(report.foreign),
    )  # fmt: skip
    return asdict(report)
