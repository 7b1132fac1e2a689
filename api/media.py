"""Serving stored media from the local storage folder, with the storage's own content types."""

from __future__ import annotations

import os

from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

from jobs.storage import content_type_for

__all__ = ["MediaFiles"]


class MediaFiles(StaticFiles):
    """StaticFiles whose Content-Type comes from `content_type_for` (`audio/wav`, not `audio/x-wav`)."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if response.status_code < 300:
            response.headers["content-type"] = content_type_for(os.fspath(full_path))
        return response
