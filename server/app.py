"""Build the two aiohttp applications and run the start-up sequence; reads like a table of contents."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from .admin import setup_admin
from .admin.auth import Authenticator
from .cluster.replicator import Replicator
from .config.loader import load_config_file, load_config_text
from .databases import Databases
from .engine.context import Services
from .engine.runner import Engine
from .engine.scheduler import scheduling
from .errors import ConfigError
from .hooks.lifecycle import run_hook, run_hook_logged
from .hooks.manager import build_plugin_manager
from .hooks.registry import build_registry
from .http.handlers import handle_execution, handle_trigger, handle_webhook, refuse_other_methods
from .http.health import add_health_routes, add_loop_watchdog, add_metrics_route
from .http.middleware import PROTOCOL_LOG, middleware
from .http.openapi import openapi
from .keys import DATABASES, ENGINE, METRICS, QUEUE, RECORDER, RELOADER, REPLICATOR, SETTINGS, STARTUP_FAILED, STORE
from .logs import install_context_ids
from .metrics.catalog import Metrics
from .queue import Workers, open_queue
from .reload.manager import ComponentManager
from .reload.watcher import reload_config, watching
from .settings import Settings
from .store import Recorder, Store, open_store, running_store
from .store.detail import DetailPolicy
from .tasks import cancel_and_wait

log = logging.getLogger("workflow.server")


@dataclass(frozen=True)
class Apps:
    """The main listener's app, the admin listener's app, and the engine they share."""

    main: web.Application
    admin: web.Application
    engine: Engine


def build_engine(
    settings: Settings, *, metrics: Metrics | None = None, config_text: str | None = None, entry_points: bool = True
) -> Engine:
    """The built-in plugins and the config, checked against them (ConfigError before anything is bound).

    Step types that components provide are not loaded yet, so warnings wait for the compile of start-up
    step 5; until then nothing runs (the triggers answer 503).
    """
    pm = build_plugin_manager(entry_points=entry_points)
    registry = build_registry(pm)
    if config_text is not None:
        config = load_config_text(
            config_text, registry, strict=False, log_warnings=False, max_depth=settings.max_json_depth
        )
    elif settings.config_path is not None:
        config = load_config_file(
            settings.config_path, registry, strict=False, log_warnings=False, max_depth=settings.max_json_depth
        )
    else:
        raise ConfigError(["no config file: pass -config FILE or set WORKFLOW_CONFIG"])
    return Engine(settings, metrics or Metrics(), pm, registry, config)


def create_apps(settings: Settings, *, engine: Engine | None = None, background_start: bool = False) -> Apps:
    """The main and admin applications around one engine.

    With `background_start` (the command line) both listeners answer at once, `/livez` included, while the
    start-up sequence runs; otherwise (tests, embedding) the apps start only once it has finished.
    """
    install_context_ids()
    engine = engine or build_engine(settings)
    store = open_store(settings)
    components = ComponentManager(
        engine, engine.built_in, lifecycle_timeout=settings.lifecycle_timeout, drain_timeout=settings.drain_timeout
    )
    shared = _Shared(
        settings,
        engine,
        store,
        Recorder(store, details=DetailPolicy(settings.redact_keys, settings.detail_max_bytes, components.versions_of)),
        Databases(settings),
        components,
        Replicator(components, engine, store),
        asyncio.Event(),
        Workers(open_queue(settings), engine, settings),
    )
    main = _base_app(shared)
    main.cleanup_ctx.append(_running(background_start))
    main.router.add_get("/openapi.json", openapi)
    main.router.add_get("/executions/{id}", handle_execution)
    main.router.add_route("*", "/webhooks/{tail:.*}", handle_webhook)
    main.router.add_route("*", "/{tail:.*}", handle_trigger)
    refuse_other_methods(main)
    admin = _base_app(shared)
    setup_admin(admin, Authenticator(settings))
    add_loop_watchdog(main, admin, engine.metrics)  # puts its cleanup context first in main's
    return Apps(main, admin, engine)


@dataclass(frozen=True)
class _Shared:
    """What both apps hold under their keys (see keys.py)."""

    settings: Settings
    engine: Engine
    store: Store
    recorder: Recorder
    databases: Databases
    components: ComponentManager
    replicator: Replicator
    startup_failed: asyncio.Event
    queue: Workers


def _base_app(shared: _Shared) -> web.Application:
    app = web.Application(
        middlewares=[middleware],
        client_max_size=shared.settings.max_body_bytes,
        handler_args={"logger": PROTOCOL_LOG},  # a request aiohttp's parser refuses is one log line
    )
    app[SETTINGS], app[ENGINE], app[METRICS] = shared.settings, shared.engine, shared.engine.metrics
    app[STORE], app[RECORDER], app[DATABASES] = shared.store, shared.recorder, shared.databases
    app[RELOADER], app[REPLICATOR], app[STARTUP_FAILED] = shared.components, shared.replicator, shared.startup_failed
    app[QUEUE] = shared.queue
    add_health_routes(app)
    add_metrics_route(app)
    return app


def _running(background: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """The main app's one cleanup context: the start-up sequence, in the foreground or the background."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if not background:
                await startup(app, stack)
                yield
                app[ENGINE].ready, app[ENGINE].draining = False, True
                return
            task = asyncio.create_task(startup(app, stack), name="startup")
            task.add_done_callback(_startup_done(app))
            yield
            app[ENGINE].ready, app[ENGINE].draining = False, True
            await cancel_and_wait(task)

    return context


def _startup_done(app: web.Application) -> Callable[[asyncio.Task[None]], None]:
    """A background start-up that fails ends the process (SIGTERM to itself): it would never be ready."""

    def done(task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("start-up failed: %s", getattr(error, "message", None) or f"{type(error).__name__}: {error}")
        app[STARTUP_FAILED].set()

    return done


async def startup(app: web.Application, stack: AsyncExitStack) -> None:
    """CONTRACT §10 after binding: store, restore, components, config, workers, ready; `stack` undoes each."""
    settings, engine = app[SETTINGS], app[ENGINE]
    manager, replicator = app[RELOADER], app[REPLICATOR]
    # 2. The store (and its recorder); it closes last, after the queue has drained.
    await stack.enter_async_context(running_store(app[STORE], app[RECORDER], settings))
    # The durable queue, on the store's database (migrated by it); from here on submitting stores jobs.
    workers = app[QUEUE]
    await workers.queue.open()
    stack.push_async_callback(workers.queue.close)
    engine.use_queue(workers)
    stack.callback(engine.use_queue, None)
    # The resources steps share, and the built-in plugins' startup hooks (their shutdown runs before these close).
    services = await stack.enter_async_context(_services(app))
    engine.use(services, app[RECORDER] if settings.record_executions else None)
    # 3. Restore missing component files from the store (a missing file is never a deletion).
    await replicator.restore()
    # 4. Load the components, each in isolation first; watching starts before, so no save is lost.
    started = asyncio.Event()
    # Pushed before watching starts, so on the way down the watcher stops first and no file loads after this.
    stack.push_async_callback(manager.close)
    # Both looked up per change, not bound once: what a change calls is the replicator's at that moment.
    await stack.enter_async_context(
        watching(
            settings,
            lambda path, seen_at: replicator.file_changed(path, seen_at),
            lambda: reload_config_file(app),
            started,
        )
    )
    loading = time.perf_counter()
    await replicator.load_folder()
    log.info(
        "loaded %d component(s) from %s in %.0f ms (%d refused)",
        len(manager.components),
        settings.components_dir,
        (time.perf_counter() - loading) * 1000,
        len(manager.failures),
    )
    # 5. Compile the config once, against every step type now loaded.
    async with manager.lock:
        manager.commit(manager.compiled())
    started.set()
    # 6. Reconcile with the store and listen to the other replicas; the queue workers and schedules; ready.
    await stack.enter_async_context(replicator.running())
    stack.push_async_callback(engine.stop)
    workers.start()
    # On the way down the workers drain first (running jobs finish, bounded; unstarted ones stay stored).
    stack.push_async_callback(workers.stop, settings.shutdown_timeout)
    await stack.enter_async_context(scheduling(engine))
    engine.ready = True
    log.info("ready: %d pipeline(s), %d component(s)", len(engine.config.pipelines), len(manager.components))


@asynccontextmanager
async def _services(app: web.Application) -> AsyncIterator[Services]:
    """The HTTP client and databases steps share, and the built-in plugins' startup and shutdown hooks."""
    engine, timeout = app[ENGINE], app[SETTINGS].lifecycle_timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, app[DATABASES] as databases:
        services = Services(
            http=session,
            publish=engine.publish,
            run_pipeline=engine.run_by_name,
            databases=databases,
            chat=engine.chat,
        )
        await run_hook(engine.plugin_manager, "startup", timeout, services=services)
        try:
            yield services
        finally:
            await run_hook_logged(engine.plugin_manager, "shutdown", timeout)


async def reload_config_file(app: web.Application) -> bool:
    """The config file changed (or SIGHUP): swap in the new config if it compiles."""
    path = app[SETTINGS].config_path
    if path is None or not await reload_config(app[RELOADER], path):
        return False
    await app[REPLICATOR].drain()  # the files a new config may let load again (see Replicator.retry_failures)
    return True
