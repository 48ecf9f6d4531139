"""The admin listener's API and page: every API route requires a JWT with the admin role."""

from __future__ import annotations

import asyncio
from importlib import resources

from aiohttp import web

from ..keys import COMPONENT_WRITES
from . import components_api, queries, queue_api
from .auth import Authenticator, require_admin
from .openapi import admin_openapi

COMPONENT_PREFIXES = ("/api/dynamic/components", "/api/v1/admin/components")
_PAGE = resources.files(__package__).joinpath("index.html").read_bytes()


async def admin_page(request: web.Request) -> web.Response:
    """The admin UI; it holds no data itself and calls the API with the token the user pastes."""
    return web.Response(
        body=_PAGE,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
        },
    )


def setup_admin(app: web.Application, authenticator: Authenticator) -> None:
    """Add the admin routes to the admin listener's app."""
    admin = require_admin(authenticator)
    app[COMPONENT_WRITES] = asyncio.Lock()
    for prefix in COMPONENT_PREFIXES:
        app.router.add_get(prefix, admin(components_api.list_components))
        app.router.add_post(prefix, admin(components_api.create_component))
        app.router.add_get(prefix + "/{id}", admin(components_api.get_component))
        app.router.add_put(prefix + "/{id}", admin(components_api.replace_component))
        app.router.add_delete(prefix + "/{id}", admin(components_api.delete_component))
    app.router.add_get("/api/executions", admin(queries.list_executions))
    app.router.add_get("/api/executions/{id}", admin(queries.get_execution))
    app.router.add_get("/api/pipelines", admin(queries.list_pipelines))
    app.router.add_get("/api/queue", admin(queue_api.list_queue))
    app.router.add_get("/api/queue/dead", admin(queue_api.list_dead))
    app.router.add_post("/api/queue/dead/{id}/retry", admin(queue_api.retry_dead))
    app.router.add_get("/api/openapi.json", admin_openapi)  # no token: it describes the API, it holds no data
    app.router.add_get("/", admin_page)
