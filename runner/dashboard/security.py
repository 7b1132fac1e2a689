"""Safe by default: who may look (authentication), what may act (same-origin writes, the read-only
switch), and what a page may load (a Content-Security-Policy with a fresh nonce per response).

- Authentication is a dependency the host supplies (`Authenticate`); `http_basic(settings)` is the one
  used out of the box: `OPS_USERNAME` / `OPS_PASSWORD`, and without a password every page is a 401 that
  says to set one (or `OPS_ALLOW_NO_AUTH=true`, for local use).
- Unsafe methods (POST, ...) are refused unless the browser says the request comes from this origin
  (`Sec-Fetch-Site: same-origin`, Sidekiq 8.1's check). A client that sends no Sec-Fetch-Site (curl, a
  script, an old browser) is refused only when its `Origin` names another origin. No tokens, no cookies.
- Scripts run only with the response's nonce (no 'self': nothing served from this origin, such as a
  stored media file, can become a script), never inline handlers or eval; frames are refused.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

from runner.settings import Settings

__all__ = [
    "Authenticate",
    "http_basic",
    "is_unsafe",
    "new_nonce",
    "page_headers",
    "read_only_guard",
    "same_origin_guard",
]

# A dependency the host app supplies: return to let the request in, raise HTTPException (401, 403) to refuse.
Authenticate = Callable[[Request], Awaitable[None]]

REALM = 'Basic realm="StoryMimi operations", charset="UTF-8"'
NO_PASSWORD = (
    "The operations dashboard has no password: set OPS_PASSWORD (and OPS_USERNAME, default 'admin') to open it "
    "with HTTP Basic, or OPS_ALLOW_NO_AUTH=true for local use only."
)
BAD_CREDENTIALS = "Wrong or missing OPS_USERNAME / OPS_PASSWORD (HTTP Basic)."
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def http_basic(settings: Settings) -> Authenticate:
    """HTTP Basic against OPS_USERNAME / OPS_PASSWORD; everything refused (401) while no password is set,
    unless OPS_ALLOW_NO_AUTH is true. Both parts are compared in constant time, whatever the first gives."""
    username = settings.ops_username.encode()
    password = settings.ops_password.get_secret_value().encode() if settings.ops_password else b""
    open_to_all = not password and settings.ops_allow_no_auth

    async def authenticate(request: Request) -> None:
        if open_to_all:
            return
        if not password:
            raise HTTPException(401, NO_PASSWORD, headers={"WWW-Authenticate": REALM})
        given_user, given_password = _basic_credentials(request.headers.get("authorization"))
        user_ok = secrets.compare_digest(given_user, username)
        password_ok = secrets.compare_digest(given_password, password)
        if not (user_ok and password_ok):
            raise HTTPException(401, BAD_CREDENTIALS, headers={"WWW-Authenticate": REALM})

    return authenticate


def _basic_credentials(header: str | None) -> tuple[bytes, bytes]:
    """(user, password) of an `Authorization: Basic ...` header; empty ones when absent or malformed."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return b"", b""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"", b""
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else (b"", b"")


def is_unsafe(request: Request) -> bool:
    return request.method not in _SAFE_METHODS


async def same_origin_guard(request: Request) -> None:
    """Refuse (403) a write that a page of another origin made the browser send."""
    if not is_unsafe(request):
        return
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site != "same-origin":
            raise HTTPException(403, f"Refused: a {request.method} from another site (Sec-Fetch-Site: {site}); "
                                     "use the dashboard's own buttons")  # fmt: skip
        return
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin is not None and origin != own:
        raise HTTPException(403, f"Refused: a {request.method} from origin {origin!r}, not {own!r}")


def read_only_guard(read_only: bool) -> Callable[[Request], Awaitable[None]]:
    async def guard(request: Request) -> None:
        if read_only and is_unsafe(request):
            raise HTTPException(403, "The dashboard is read-only (OPS_READ_ONLY=true): no action is taken")

    return guard


def page_headers(nonce: str) -> dict[str, str]:
    """A page's security headers: only its own nonce's scripts, styles and images from here, no framing."""
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


def new_nonce() -> str:
    return secrets.token_urlsafe(18)
