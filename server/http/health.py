"""Liveness, readiness and health with named checks, on both listeners."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..keys import ENGINE, RELOADER, REPLICATOR
from .middleware import json_response


async def livez(request: web.Request) -> web.Response:
    """The process is up and its event loop answers."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready once plugins and config are loaded and until shutdown begins."""
    engine = request.app[ENGINE]
    synced = request.app[REPLICATOR].ready.is_set()
    if engine.ready and synced and not engine.draining:
        return json_response({"status": "ready"})
    reason = "draining" if engine.draining else "starting" if engine.ready is False else "reconciling with the store"
    return json_response({"status": "not ready", "reason": reason}, 503)


async def healthz(request: web.Request) -> web.Response:
    """Overall health with one entry per check; 503 when any check fails."""
    engine = request.app[ENGINE]
    queue = engine.queue
    components = request.app[RELOADER]
    failing = sorted(components.failures)
    stuck = components.isolation.stuck_loads()  # imports abandoned after the timeout, still running
    checks = {
        "config": {"status": "ok", "pipelines": len(engine.config.pipelines), "source": engine.config.source},
        "plugins": {"status": "ok", "step_types": len(engine.registry.steps),
                    "providers": len(engine.registry.providers())},
        "queue": {"status": "ok" if queue.depth < engine.settings.async_queue_size else "full",
                  "depth": queue.depth, "capacity": engine.settings.async_queue_size},
        "components": {"status": "degraded" if failing or stuck else "ok", "in_service": len(components.components),
                       "failing": len(failing), "failing_ids": failing, "stuck_loads": stuck},
        "store": _store_check(request),
        "replication": request.app[REPLICATOR].health(),
        "lifecycle": {"status": "ok" if engine.ready and not engine.draining else "unavailable",
                      "ready": engine.ready, "draining": engine.draining},
    }
    statuses = {check["status"] for check in checks.values()}
    # A failing component is degraded, not down: its previous version (if any) keeps serving.
    if statuses <= {"ok"}:
        return json_response({"status": "ok", "checks": checks})
    if statuses <= {"ok", "degraded"}:
        return json_response({"status": "degraded", "checks": checks})
    return json_response({"status": "unhealthy", "checks": checks}, 503)


def _store_check(request: web.Request) -> dict[str, Any]:
    """Degraded while the recorder cannot write (executions wait in its buffer); synchronous work goes on."""
    store, recorder = request.app[ENGINE].store, request.app[ENGINE].recorder
    if store is None or recorder is None:
        return {"status": "ok" if store is not None else "unavailable", "kind": getattr(store, "kind", None)}
    check = {"status": "ok" if recorder.healthy else "degraded", "kind": store.kind, "pending": recorder.pending,
             "dropped": recorder.dropped}
    if not recorder.healthy:
        check["error"] = recorder.last_error or "writes are failing"
    return check


def add_health_routes(app: web.Application) -> None:
    """The health paths and their short aliases."""
    for path, handler in (("/healthz", healthz), ("/readyz", readyz), ("/livez", livez),
                          ("/health", healthz), ("/ready", readyz), ("/live", livez)):
        app.router.add_get(path, handler, allow_head=True)
