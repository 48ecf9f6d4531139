"""Build the two aiohttp applications; reads like a table of contents."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .admin import setup_admin
from .admin.auth import Authenticator
from .cluster.replicator import Replicator, replication_context
from .config.loader import load_config_file, load_config_text
from .engine.runner import Engine, engine_context, mark_draining, mark_ready
from .engine.scheduler import scheduler_context
from .errors import ConfigError
from .hooks.manager import build_plugin_manager
from .hooks.registry import build_registry
from .http.handlers import handle_execution, handle_trigger, handle_webhook
from .http.health import add_health_routes, add_loop_watchdog
from .http.middleware import middleware
from .http.openapi import openapi
from .keys import ENGINE, METRICS, RELOADER, REPLICATOR, SETTINGS
from .logs import install_context_ids
from .metrics.catalog import Metrics
from .reload.manager import ComponentManager
from .reload.watcher import watcher_context
from .settings import Settings
from .store import store_context


@dataclass(frozen=True)
class Apps:
    """The main listener's app, the admin listener's app, and the engine they share."""

    main: web.Application
    admin: web.Application
    engine: Engine


def build_engine(settings: Settings, *, metrics: Metrics | None = None, config_text: str | None = None,
                 entry_points: bool = True) -> Engine:
    """Plugins, then the registry, then the config compiled against it."""
    pm = build_plugin_manager(entry_points=entry_points)
    registry = build_registry(pm)
    # Components load later and may provide missing types: until then those are warnings (503 when used).
    if config_text is not None:
        config = load_config_text(config_text, registry, strict=False)
    elif settings.config_path is not None:
        config = load_config_file(settings.config_path, registry, strict=False)
    else:
        raise ConfigError(["no config file: pass -config FILE or set WORKFLOW_CONFIG"])
    return Engine(settings, metrics or Metrics(), pm, registry, config)


def create_apps(settings: Settings, *, engine: Engine | None = None) -> Apps:
    """The main and admin applications around one engine."""
    install_context_ids()
    engine = engine or build_engine(settings)
    components = ComponentManager(engine, engine.built_in, lifecycle_timeout=settings.lifecycle_timeout,
                                  drain_timeout=settings.drain_timeout)
    replicator = Replicator(components, engine)
    main = _base_app(settings, engine, components, replicator)
    main.cleanup_ctx.append(store_context)  # before the engine: on stop the queue drains, then the recorder
    main.cleanup_ctx.append(engine_context)
    main.cleanup_ctx.append(watcher_context)
    main.cleanup_ctx.append(replication_context)  # after the folder is loaded: the store wins over it
    main.cleanup_ctx.append(scheduler_context)
    main.on_startup.append(mark_ready)
    main.on_shutdown.append(mark_draining)
    main.router.add_get("/openapi.json", openapi)
    main.router.add_get("/executions/{id}", handle_execution)
    main.router.add_route("*", "/webhooks/{tail:.*}", handle_webhook)
    main.router.add_route("*", "/{tail:.*}", handle_trigger)
    admin = _base_app(settings, engine, components, replicator)
    setup_admin(admin, Authenticator(settings))
    add_loop_watchdog(main, admin, engine.metrics)  # puts its cleanup context first in main's
    return Apps(main, admin, engine)


def _base_app(settings: Settings, engine: Engine, components: ComponentManager,
              replicator: Replicator) -> web.Application:
    app = web.Application(middlewares=[middleware],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[METRICS] = engine.metrics
    app[RELOADER] = components
    app[REPLICATOR] = replicator
    add_health_routes(app)
    app.router.add_get("/metrics", engine.metrics.handler())
    return app


