"""The admin page: one HTML file, its script and style, and the vendored editor, served with a strict CSP.

Everything comes from this package (no CDN, no build step); the page holds no data and calls the API.
"""

from __future__ import annotations

import mimetypes
from importlib import resources

from aiohttp import web

from ..errors import NotFound

STATIC = resources.files(__package__).joinpath("static")
# No inline script or style anywhere, nothing from another origin, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CSP,
}


def _read(name: str) -> bytes | None:
    """A file of the static folder (subfolders allowed, never `..`), or None."""
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    target = STATIC
    for part in parts:
        target = target.joinpath(part)
    try:
        return target.read_bytes() if target.is_file() else None
    except OSError:  # a name the file system refuses (over 255 bytes: ENAMETOOLONG) is no file of ours
        return None


async def index(request: web.Request) -> web.Response:
    """`GET /`: the page."""
    body = _read("index.html")
    if body is None:  # a broken installation, not the client's fault
        raise NotFound("the admin page is not installed")
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=_HEADERS)


async def static(request: web.Request) -> web.Response:
    """`GET /static/{name}`: the page's script, style and vendored editor."""
    name = request.match_info["name"]
    body = _read(name)
    if body is None:
        raise NotFound(f"no file {name[:128]!r}")
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return web.Response(body=body, content_type=kind, headers=_HEADERS)


def add_routes(app: web.Application) -> None:
    """Serve the page at `/` and its files under `/static/`."""
    app.router.add_get("/", index)
    app.router.add_get("/static/{name:.+}", static)
