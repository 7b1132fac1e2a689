"""structlog and httpx imported without rich and pygments, so no process of the fleet loads them.

Both libraries import them eagerly whenever they are installed: structlog rich, for its console renderer's
pretty tracebacks; httpx both, for its own command-line tool. They are installed for our CLI's tables (and
pytest's colours), but the supervisor, the API and the workers never use them, and they are a fifth of each
process's memory. Hidden while the two import, the libraries take their fallbacks (plain tracebacks in the
dev console renderer; JSON logs are unchanged), and both stay importable afterwards. Imported first by
`runner/__init__.py`, so it runs before anything else imports either library."""

from __future__ import annotations

import sys

_HIDDEN = ("rich", "pygments")


def _import_without_extras() -> None:
    if any(name in sys.modules for name in (*_HIDDEN, "httpx", "structlog")):
        return  # too late to matter: something imported them first
    for name in _HIDDEN:
        sys.modules[name] = None  # type: ignore[assignment]  # `import rich` raises ImportError meanwhile
    try:
        import httpx  # noqa: F401
        import structlog  # noqa: F401
    finally:
        for name in _HIDDEN:
            del sys.modules[name]


_import_without_extras()
