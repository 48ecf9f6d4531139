"""Watch the components folder and the config file, and reload the config."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import watchfiles

from ..errors import ConfigError
from ..settings import Settings
from ..tasks import cancel_and_wait
from .loader import component_files, is_component_file
from .manager import ComponentManager

log = logging.getLogger("workflow.watcher")

# Told of each changed component file, with when the change was seen (perf_counter).
OnFile = Callable[[Path, float], Awaitable[None]]


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


async def reload_config(manager: ComponentManager, path: Path) -> bool:
    """Re-read the config file; swap it in if it compiles, else keep the running one and log every problem."""
    metrics = manager.engine.metrics
    # Under the manager's lock: the config must be compiled against the registry it goes out with.
    async with manager.lock:
        try:
            text = await asyncio.to_thread(path.read_bytes)
            candidate = await manager.build_config(_text(text, path), str(path))
        except Exception as exc:  # whatever the file holds, the running config stays and the watcher goes on
            problems = _problems(exc, path)
            for problem in problems:
                log.error("config reload refused: %s", problem)
            manager.config_failure = problems
            metrics.child(metrics.module_operations, "config", "reload", "error").inc()
            return False
        manager.commit(candidate)
        manager.config_failure = None
    metrics.child(metrics.module_operations, "config", "reload", "success").inc()
    log.info("config reloaded from %s: %d pipeline(s)", path, len(candidate.state.config.pipelines))
    return True


def _text(data: bytes, path: Path) -> str:
    """The config file's text; a file that is not UTF-8 is a config error at its first bad byte's line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: the config is not UTF-8 text (byte {exc.start})"]) from None


def _problems(exc: Exception, path: Path) -> list[str]:
    """What to report for a refused reload: the config's problems, or the error that stopped the read."""
    if isinstance(exc, ConfigError):
        return exc.problems
    if isinstance(exc, OSError):
        return [f"{path}: cannot read config: {exc.strerror or exc}"]
    log.error("unexpected error while reloading %s", path, exc_info=exc)  # a defect of ours: keep the traceback
    return [f"{path}: the config could not be loaded ({type(exc).__name__}: {exc})"]


@asynccontextmanager
async def watching(
    settings: Settings, on_file: OnFile, on_config: Callable[[], Awaitable[Any]], started: asyncio.Event
) -> AsyncIterator[None]:
    """Watch the components folder and the config file until exit; changes wait until `started` is set.

    Watching begins before the start-up load reads the folder, so a save during start-up is not lost.
    """
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    if settings.watch:
        settings.components_dir.mkdir(parents=True, exist_ok=True)
        tasks.append(asyncio.create_task(_watch_components(settings, on_file, stop, started), name="watch-components"))
        if settings.config_path is not None:
            tasks.append(asyncio.create_task(_watch_config(settings, on_config, stop, started), name="watch-config"))
        await asyncio.sleep(0)  # each task sets up its watch in its first step
    try:
        yield
    finally:
        stop.set()
        await cancel_and_wait(*tasks)


def _watch_options(settings: Settings) -> dict[str, Any]:
    debounce = max(1, int(settings.debounce * 1000))
    # `step` is the quiet time that ends a burst of events: it, not `debounce`, sets the usual latency.
    return {"debounce": debounce, "step": min(10, debounce), "poll_delay_ms": max(10, debounce), "rust_timeout": 1000}


def _changes(
    settings: Settings,
    folder: Path,
    watch_filter: watchfiles.BaseFilter,
    scan: Callable[[], dict[str, tuple[int, int, int]]],
    stop: asyncio.Event,
) -> AsyncIterator[set[str]]:
    """Batches of changed paths in `folder`: from watchfiles, or in polling mode from `scan`."""
    if settings.polling:
        return _poll(scan, max(0.01, settings.debounce), stop)
    return _notified(folder, watch_filter, stop, _watch_options(settings))


async def _notified(
    folder: Path, watch_filter: watchfiles.BaseFilter, stop: asyncio.Event, options: dict[str, Any]
) -> AsyncIterator[set[str]]:
    async for changes in watchfiles.awatch(
        folder, watch_filter=watch_filter, stop_event=stop, recursive=False, **options
    ):
        yield {path for _, path in changes}


async def _poll(
    scan: Callable[[], dict[str, tuple[int, int, int]]], interval: float, stop: asyncio.Event
) -> AsyncIterator[set[str]]:
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


async def _watch_components(settings: Settings, on_file: OnFile, stop: asyncio.Event, started: asyncio.Event) -> None:
    directory = settings.components_dir
    batches = _changes(settings, directory, ComponentFilter(), lambda: _stats(component_files(directory)), stop)
    async for paths in batches:
        seen_at = time.perf_counter()
        await started.wait()
        for path in sorted(paths):
            try:
                await on_file(Path(path), seen_at)
            except Exception:  # the watcher must survive anything a component does
                log.exception("unexpected error while applying %s", path)


async def _watch_config(
    settings: Settings, on_config: Callable[[], Awaitable[Any]], stop: asyncio.Event, started: asyncio.Event
) -> None:
    assert settings.config_path is not None
    path = settings.config_path.resolve()
    async for _ in _changes(settings, path.parent, ConfigFilter(path), lambda: _stats([path]), stop):
        await started.wait()
        if path.exists():
            try:
                await on_config()
            except Exception:  # the watcher must survive anything: the next save is applied as usual
                log.exception("unexpected error after a change of %s", path)
