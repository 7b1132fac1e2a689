"""The operators' web dashboard: a FastAPI router the host app mounts under any prefix, server-rendered
with Jinja2 and htmx (vendored), over the runner.ops service layer only (no SQL or Redis of its own).

    router.py      ops_router(): the pages behind the guards, plus the host's extensions
    dashboard.py   one mounted dashboard: its resources, rendering (nonce and policy), URLs by route name
    security.py    HTTP Basic from settings, same-origin writes, the read-only switch, the CSP headers
    extension.py   what a host adds: pages, templates, navigation entries, links from job arguments
    overview.py    the queue's numbers and live workers, refreshed in place
    workers.py     each worker's state, jobs, memory, loop lag and heartbeat; Drain
    jobs.py        jobs by filter with keyset pages; Retry all matching (count, then confirm)
    job.py         one job: arguments, result, attempts with tracebacks, children; Retry, Cancel
    events.py      a job's changes as Server-Sent Events, while it runs
    purge.py       purge the queue (count, then confirm)
    json_api.py    the pages' JSON twins, for scripts
    job_query.py   the jobs filters as URL parameters
    forms.py       the small url-encoded bodies the forms post
    formatting.py  times, ages, durations and JSON as the pages show them
    assets.py      static/: the stylesheet, our script, htmx
"""

from __future__ import annotations

from runner.dashboard.dashboard import Dashboard, ResourcesOf
from runner.dashboard.extension import Extension, FieldLink, NavLink
from runner.dashboard.router import ops_router
from runner.dashboard.security import Authenticate, http_basic

__all__ = ["Authenticate", "Dashboard", "Extension", "FieldLink", "NavLink", "ResourcesOf", "http_basic", "ops_router"]
