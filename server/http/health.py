"""Liveness, readiness, health with named checks, and the metrics, on both listeners."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from ..engine.watchdog import LoopWatchdog
from ..keys import ENGINE, METRICS, QUEUE, RELOADER, REPLICATOR, STORE, WATCHDOG
from ..metrics.catalog import Metrics
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
    components = request.app[RELOADER]
    # Degraded only while the folder or the store holds something that does not serve; a refused API call
    # changed nothing, so it shows only as that component's last_error in the admin API.
    failing = {cid: f.error for cid, f in sorted(components.failures.items()) if f.origin != "api"}
    stuck = components.isolation.stuck_loads()  # imports abandoned after the timeout, still running
    checks: dict[str, dict[str, Any]] = {
        "config": _config_check(engine.config.source, len(engine.config.pipelines), components.config_failure),
        "plugins": {
            "status": "ok",
            "step_types": len(engine.registry.steps),
            "providers": len(engine.registry.providers()),
        },
        "queue": request.app[QUEUE].health(),
        "components": {
            "status": "degraded" if failing or stuck else "ok",
            "in_service": len(components.components),
            "failing": len(failing),
            "failing_ids": list(failing),
            "errors": failing,
            "stuck_loads": stuck,
        },
        "store": _store_check(request),
        "replication": request.app[REPLICATOR].health(),
        "lifecycle": {
            "status": "ok" if engine.ready and not engine.draining else "unavailable",
            "ready": engine.ready,
            "draining": engine.draining,
        },
        "loop": request.app[WATCHDOG].health(),
    }
    statuses = {check["status"] for check in checks.values()}
    # A failing component or a lagging loop is degraded, not down: its previous version (if any) keeps serving.
    if statuses <= {"ok"}:
        return json_response({"status": "ok", "checks": checks})
    if statuses <= {"ok", "degraded"}:
        return json_response({"status": "degraded", "checks": checks})
    return json_response({"status": "unhealthy", "checks": checks}, 503)


def _config_check(source: str, pipelines: int, refused: list[str] | None) -> dict[str, Any]:
    """Degraded while the last save of the config file was refused: the previous config keeps serving."""
    check: dict[str, Any] = {"status": "degraded" if refused else "ok", "pipelines": pipelines, "source": source}
    if refused:
        check["refused"] = refused
    return check


def _store_check(request: web.Request) -> dict[str, Any]:
    """Degraded while the recorder cannot write (executions wait in its buffer); synchronous work goes on."""
    store, recorder = request.app[STORE], request.app[ENGINE].recorder
    if recorder is None:  # not started yet, or not recording executions
        return {"status": "ok", "kind": store.kind}
    check = {
        "status": "ok" if recorder.healthy else "degraded",
        "kind": store.kind,
        "pending": recorder.pending,
        "dropped": recorder.dropped,
    }
    if not recorder.healthy:
        check["error"] = recorder.last_error or "writes are failing"
    return check


def add_metrics_route(app: web.Application) -> None:
    """`GET /metrics`: prometheus-client's own aiohttp handler (it gets the content type right)."""
    app.router.add_get("/metrics", make_aiohttp_handler(app[METRICS].registry))


def add_health_routes(app: web.Application) -> None:
    """The health paths and their short aliases."""
    for path, handler in (
        ("/healthz", healthz),
        ("/readyz", readyz),
        ("/livez", livez),
        ("/health", healthz),
        ("/ready", readyz),
        ("/live", livez),
    ):
        app.router.add_get(path, handler, allow_head=True)


def add_loop_watchdog(main: web.Application, admin: web.Application, metrics: Metrics) -> None:
    """One loop watchdog for both listeners, timing the loop from the first start-up step to the last shutdown one."""
    watchdog = LoopWatchdog(metrics.loop_lag.labels().observe, metrics.loop_lag_max.labels().set)
    main[WATCHDOG] = admin[WATCHDOG] = watchdog
    # First in, last out: it also catches a component's `startup` or `shutdown` hook blocking the loop.
    main.cleanup_ctx.insert(0, _watch_loop)


async def _watch_loop(app: web.Application) -> AsyncIterator[None]:
    """Start the watchdog on the running loop; stop it once everything else has shut down."""
    watchdog = app[WATCHDOG]
    watchdog.start(asyncio.get_running_loop())
    try:
        yield
    finally:
        watchdog.stop()
