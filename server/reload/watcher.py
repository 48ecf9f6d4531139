"""Watch the components folder and the config file; start-up loading; all as one cleanup context."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import AsyncIterator, Callable, Iterable

import watchfiles
from aiohttp import web

from ..config.loader import load_config_text
from ..errors import ConfigError
from ..keys import ENGINE, RELOADER
from .loader import component_files, is_component_file

log = logging.getLogger("workflow.watcher")


class ComponentFilter(watchfiles.DefaultFilter):
    """Only `*.py` files directly in the folder; hidden, `_`-prefixed and editor temp files are ignored."""

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        return is_component_file(Path(path).name) and super().__call__(change, path)


class ConfigFilter(watchfiles.DefaultFilter):
    """Only the config file itself (its folder is watched, so atomic renames are seen)."""

    def __init__(self, config_path: Path) -> None:
        super().__init__()
        self.name = config_path.name

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        return Path(path).name == self.name


async def load_all(app: web.Application) -> None:
    """Load every component file at start-up; a failing one is logged and skipped, never fatal."""
    manager = app[RELOADER]
    directory = app[ENGINE].settings.components_dir
    started = time.perf_counter()
    paths = await asyncio.to_thread(component_files, directory)
    await manager.isolation.precheck_paths(paths, app[ENGINE].config, manager.components)  # isolation: in parallel
    for path in paths:
        await manager.sync_path(path)
    log.info("loaded %d component(s) from %s in %.0f ms (%d refused)", len(manager.components), directory,
             (time.perf_counter() - started) * 1000, len(manager.failures))


async def reload_config(app: web.Application) -> bool:
    """Re-read the config file; swap it in if it compiles, else keep the running one and log every problem."""
    engine = app[ENGINE]
    path = engine.settings.config_path
    if path is None:
        return False
    metrics = engine.metrics
    # Under the components' lock: a component swap compiles the config in service, so a config swapped
    # in meanwhile would be undone, and this config must be compiled against the registry it goes out with.
    async with app[RELOADER].lock:
        registry = engine.registry
        try:
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            config = await asyncio.to_thread(load_config_text, text, registry, source=str(path), strict=False)
        except (OSError, ConfigError) as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [f"{path}: {exc}"]
            for problem in problems:
                log.error("config reload refused: %s", problem)
            metrics.child(metrics.module_operations, "config", "reload", "error").inc()
            return False
        engine.swap(engine.state_for(registry, config))
    metrics.child(metrics.module_operations, "config", "reload", "success").inc()
    log.info("config reloaded from %s: %d pipeline(s)", path, len(config.pipelines))
    # A component refused because the old config did not compile with it may fit the new one.
    await app[RELOADER].retry_failures()
    return True


async def watcher_context(app: web.Application) -> AsyncIterator[None]:
    """Load the components, then watch them and the config file until shutdown."""
    engine = app[ENGINE]
    settings = engine.settings
    stop, loaded = asyncio.Event(), asyncio.Event()
    tasks = []
    if settings.watch:
        settings.components_dir.mkdir(parents=True, exist_ok=True)
        # Watch before loading, so a save during start-up is not lost; changes wait for the first load.
        tasks.append(asyncio.create_task(_watch_components(app, stop, loaded), name="watch-components"))
        if settings.config_path is not None:
            tasks.append(asyncio.create_task(_watch_config(app, stop, loaded), name="watch-config"))
        await asyncio.sleep(0)  # each task sets up its watch in its first step
    try:
        await load_all(app)
    except BaseException:
        await _stop(tasks, stop)
        raise
    loaded.set()
    yield
    await _stop(tasks, stop)
    await app[RELOADER].close()


async def _stop(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _watch_options(app: web.Application) -> dict:
    settings = app[ENGINE].settings
    debounce = max(1, int(settings.debounce * 1000))
    # `step` is the quiet time that ends a burst of events: it, not `debounce`, sets the usual latency.
    return {"debounce": debounce, "step": min(10, debounce), "poll_delay_ms": max(10, debounce),
            "rust_timeout": 1000}


def _changes(app: web.Application, folder: Path, watch_filter: watchfiles.BaseFilter,
             scan: Callable[[], dict[str, tuple[int, int, int]]], stop: asyncio.Event) -> AsyncIterator[set[str]]:
    """Batches of changed paths in `folder`: from watchfiles, or in polling mode from `scan`."""
    settings = app[ENGINE].settings
    if settings.polling:
        return _poll(scan, max(0.01, settings.debounce), stop)
    return _notified(folder, watch_filter, stop, _watch_options(app))


async def _notified(folder: Path, watch_filter: watchfiles.BaseFilter, stop: asyncio.Event,
                    options: dict) -> AsyncIterator[set[str]]:
    async for changes in watchfiles.awatch(folder, watch_filter=watch_filter, stop_event=stop, recursive=False,
                                           **options):
        yield {path for _, path in changes}


async def _poll(scan: Callable[[], dict[str, tuple[int, int, int]]], interval: float,
                stop: asyncio.Event) -> AsyncIterator[set[str]]:
    """Polling mode: compare each file's stat every `interval`; yield what changed once a burst is over.

    Not watchfiles' poller: it compares whole-second mtimes, so a save in the same second as the
    previous change (or an atomic rename over it) would never be seen.
    """
    seen = scan()  # now, in the task's first step: before the start-up load reads any file
    changed: set[str] = set()
    while not stop.is_set():
        await asyncio.sleep(interval)
        current = await asyncio.to_thread(scan)
        fresh = {path for path in seen.keys() | current.keys() if seen.get(path) != current.get(path)}
        seen, changed = current, changed | fresh
        if changed and not fresh:  # quiet for one interval: the burst of writes is over
            yield changed
            changed = set()


def _stats(paths: Iterable[Path]) -> dict[str, tuple[int, int, int]]:
    """What polling compares per file: mtime in nanoseconds, size, and inode (an atomic save changes it)."""
    stats = {}
    for path in paths:
        try:
            st = path.stat()
        except OSError:  # gone between listing and stat: absent
            continue
        stats[str(path)] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return stats


async def _watch_components(app: web.Application, stop: asyncio.Event, loaded: asyncio.Event) -> None:
    manager = app[RELOADER]
    directory = app[ENGINE].settings.components_dir
    batches = _changes(app, directory, ComponentFilter(), lambda: _stats(component_files(directory)), stop)
    async for paths in batches:
        seen_at = time.perf_counter()
        await loaded.wait()
        for path in sorted(paths):
            try:
                await manager.sync_path(path, seen_at=seen_at)
            except Exception:  # the watcher must survive anything a component does
                log.exception("unexpected error while applying %s", path)


async def _watch_config(app: web.Application, stop: asyncio.Event, loaded: asyncio.Event) -> None:
    path = app[ENGINE].settings.config_path.resolve()
    async for _ in _changes(app, path.parent, ConfigFilter(path), lambda: _stats([path]), stop):
        await loaded.wait()
        if path.exists():
            await reload_config(app)
