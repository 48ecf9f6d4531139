"""`GET /api/openapi.json` on the admin listener: an OpenAPI 3.1 document of the admin API (it needs no token).

The API's own paths are in `openapi_paths.py`; here are the page's: the session, the event stream, the page and
its files, and the document's assembly.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from aiohttp import web

from ..http.middleware import json_response
from ..http.openapi_schema import components, error, fixed_paths, ok_json
from . import page
from .guard import COOKIE, CSRF_HEADER
from .openapi_paths import component_paths, other_paths
from .openapi_schemas import CSRF_PARAMETER, NULLABLE_STRING, STRING, json_body, obj, op, path, query

_SESSION = obj(
    ["subject", "roles", "expires_at", "csrf"],
    subject=STRING,
    roles={"type": "array", "items": {"enum": ["admin", "viewer"]}},
    expires_at={"type": ["number", "null"], "description": "when the session ends (Unix seconds); null with a token"},
    csrf={**NULLABLE_STRING, "description": f"what a cookie write sends in `{CSRF_HEADER}`; null with a token"},
)
_SET_COOKIE = {
    "Set-Cookie": {
        "schema": STRING,
        "description": f"`{COOKIE}`: HttpOnly, SameSite=Strict, Secure over HTTPS, at most an hour",
    }
}
_TOKEN_BODY = {
    "type": "object",
    "required": ["token"],
    "properties": {"token": {"type": "string", "minLength": 1, "description": "a JWT with the admin or viewer role"}},
}
_NO_KEY = (503, "the admin API is disabled (no key)")


def _session_path() -> dict[str, Any]:
    signed_in = ok_json("signed in: the session (the token itself is never kept)", _SESSION)
    signed_in["headers"] = _SET_COOKIE
    return {
        "post": {
            "summary": "Sign in: exchange a token for the page's session cookie",
            "security": [],
            "requestBody": json_body(_TOKEN_BODY),
            "responses": {
                "200": signed_in,
                "400": error("no token in the body"),
                "401": error("the token does not verify"),
                "403": error("the token has neither the admin nor the viewer role"),
                "413": error("the body is over the limit"),
                "503": error(_NO_KEY[1]),
            },
        },
        "get": {
            "summary": "Who is signed in: the cookie's session, or the bearer token's subject and roles",
            "responses": {
                "200": ok_json("the session", _SESSION),
                "401": error("no token or cookie, or one that is not valid (any more)"),
                "503": error(_NO_KEY[1]),
            },
        },
        "delete": {
            "summary": "Sign out: the cookie is cleared",
            "security": [],
            "responses": {"204": {"description": "signed out", "headers": _SET_COOKIE}},
        },
    }


def _events_path() -> dict[str, Any]:
    stream = {
        "description": "Server-Sent Events: `id`, `event` (`component`, `config`, `replica`, `dead_letter`, `reset`) "
        "and JSON `data` with `at` and `replica`; a comment line every 15 s",
        "content": {"text/event-stream": {"schema": STRING}},
    }
    resume = {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "resume after this event: what was missed, or `reset` when it is no longer kept",
        "schema": STRING,
    }
    parameters = [
        resume,
        query("last_id", "as `Last-Event-ID`, for a client that cannot send the header"),
        query("recent", "on a first connection, any value: replay the events kept (the last 500)"),
    ]
    return {"get": op("The event stream (it stays open)", {"200": stream}, parameters=parameters)}


def _page_paths() -> dict[str, dict[str, Any]]:
    """The page and its files: no token (they hold no data)."""
    html = {"description": "the admin page", "content": {"text/html": {"schema": STRING}}}
    files = {"description": "the file", "content": {kind: {"schema": STRING} for kind in _static_types()}}
    name = path("name", "app.js", {"type": "string", "minLength": 1, "description": "a file name (it may hold `/`)"})
    return {
        "/": {
            "get": {
                "summary": "The admin page (it signs in with a token you paste, and calls the API)",
                "security": [],
                "responses": {"200": html, "404": error("the page is not installed")},
            }
        },
        "/static/{name}": {
            "get": {
                "summary": "The page's script, style and vendored editor",
                "security": [],
                "parameters": [name],
                "responses": {"200": files, "404": error("no such file")},
            }
        },
    }


def _static_types() -> list[str]:
    """The media types the page's files are served with (by their names, as `page.static` does)."""
    found: set[str] = set()
    folders = [page.STATIC]
    while folders:
        for entry in folders.pop().iterdir():
            if entry.is_dir():
                folders.append(entry)
            elif not entry.name.startswith("."):
                found.add(mimetypes.guess_type(entry.name)[0] or "application/octet-stream")
    return sorted(found)


def document() -> dict[str, Any]:
    """The admin API's OpenAPI document (static: the routes do not depend on the config)."""
    paths: dict[str, dict[str, Any]] = {}
    for prefix in ("/api/dynamic/components", "/api/v1/admin/components"):
        paths.update(component_paths(prefix))
    paths.update(other_paths())
    paths["/api/session"] = _session_path()
    paths["/api/events"] = _events_path()
    paths.update(_page_paths())
    paths["/api/openapi.json"] = {
        "get": {"summary": "This document", "security": [], "responses": {"200": ok_json("ok")}}
    }
    paths.update(fixed_paths())
    bearer = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    session = {
        "type": "apiKey",
        "in": "cookie",
        "name": COOKIE,
        "description": f"the page's session (`POST /api/session`); a write with it also sends `{CSRF_HEADER}`",
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "workflow-server admin API", "version": "1"},
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": components(
            securitySchemes={"bearer": bearer, "session": session}, parameters={"CsrfToken": CSRF_PARAMETER}
        ),
    }


_DOCUMENT = document()


async def admin_openapi(request: web.Request) -> web.Response:
    """The admin API's document."""
    return json_response(_DOCUMENT)
