"""The admin listener's API, event stream and page: reads need the viewer or admin role, writes the admin role."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..keys import COMPONENT_WRITES, EVENTS, QUEUE, RELOADER, REPLICATOR, SETTINGS
from ..queue import Job
from ..store.base import ReplicaComponent
from . import audit_api, components_api, executions_api, history_api, page, queries, queue_api
from .auth import Authenticator
from .events import EventHub
from .guard import Sessions, require, session_routes
from .openapi import admin_openapi

COMPONENT_PREFIXES = ("/api/dynamic/components", "/api/v1/admin/components")


def setup_admin(app: web.Application, authenticator: Authenticator) -> None:
    """Add the admin routes, the event stream and the page to the admin listener's app."""
    sessions = Sessions(authenticator)
    read, write = require(sessions, write=False), require(sessions, write=True)
    app[COMPONENT_WRITES] = asyncio.Lock()
    for prefix in COMPONENT_PREFIXES:
        item = prefix + "/{id}"
        app.router.add_get(prefix, read(components_api.list_components))
        app.router.add_post(prefix, write(components_api.create_component))
        app.router.add_get(item, read(components_api.get_component))
        app.router.add_put(item, write(components_api.replace_component))
        app.router.add_delete(item, write(components_api.delete_component))
        app.router.add_post(item + "/validate", write(components_api.validate_component))
        app.router.add_get(item + "/versions", read(history_api.list_versions))
        app.router.add_get(item + "/versions/{version}", read(history_api.get_version))
        app.router.add_get(item + "/diff", read(history_api.diff_versions))
    app.router.add_get("/api/executions", read(executions_api.list_executions))
    app.router.add_get("/api/executions/{id}", read(executions_api.get_execution))
    app.router.add_post("/api/executions/{id}/rerun", write(executions_api.rerun_execution))
    app.router.add_get("/api/pipelines", read(queries.list_pipelines))
    app.router.add_get("/api/queue", read(queue_api.list_queue))
    app.router.add_get("/api/queue/dead", read(queue_api.list_dead))
    app.router.add_post("/api/queue/dead/{id}/retry", write(queue_api.retry_dead))
    app.router.add_get("/api/audit", read(audit_api.list_audit))
    session_routes(app, sessions)
    hub = app[EVENTS] = EventHub(app[SETTINGS].replica_id)
    app.router.add_get("/api/events", read(hub.stream))
    app.router.add_get("/api/openapi.json", admin_openapi)  # no token: it describes the API, it holds no data
    page.add_routes(app)
    app.on_startup.append(_subscribe)
    app.on_shutdown.append(_close_streams)  # before aiohttp waits for open requests: streams never hold a stop


async def _subscribe(app: web.Application) -> None:
    """Feed the event stream: component changes and config reloads, replica reports, dead letters."""
    hub = app[EVENTS]
    app[RELOADER].subscribe(hub.on_component)

    last: list[list[dict[str, object]]] = [[]]

    def reported(entries: list[ReplicaComponent]) -> None:
        components: list[dict[str, object]] = [
            {"id": e.component, "version": e.version, "status": e.status, "error": e.error} for e in entries
        ]
        if components != last[0]:  # every reconcile reports: only a change is news
            last[0] = components
            hub.publish("replica", {"components": components})

    def dead(job: Job, error: str) -> None:
        hub.publish("dead_letter", {"id": job.id, "pipeline": job.pipeline, "error": error})

    app[REPLICATOR].on_report.append(reported)
    app[QUEUE].on_dead.append(dead)


async def _close_streams(app: web.Application) -> None:
    app[EVENTS].close()
