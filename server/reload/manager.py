"""Build-then-swap for components: load a version off the loop, validate it, swap one reference."""

from __future__ import annotations

import asyncio
import linecache
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Awaitable, Callable

from ..config.loader import compile_config
from ..errors import ComponentError
from ..hooks.lifecycle import LifecycleError, run_hook, run_hook_logged
from ..hooks.registry import Registry, compose_registry
from .isolation import Isolation
from .loader import Component, Source, compile_with, line_in, read_source

if TYPE_CHECKING:
    from ..engine.runner import Engine, State

log = logging.getLogger("workflow.reloader")


# Runs under the manager's lock with the loaded (not yet serving) version, to write it to the store and the
# folder; may return the version number the store gave it.
Persist = Callable[[Component], Awaitable["int | None"]]
# Told, under the lock, of every change that came from the components folder (None: the file went away).
FileChanged = Callable[[str, "Component | None"], Awaitable[None]]


@dataclass(slots=True)
class _Swap:
    """What one change did: the version now serving, the one it replaced, and the states to drain."""

    component: Component | None = None
    old: Component | None = None
    retired: list["State"] = field(default_factory=list)
    removed: bool = False


@dataclass(slots=True)
class Failure:
    """The last refused version of a component file."""

    id: str
    path: str
    error: str
    line: int | None
    sha256: str | None
    origin: str = "file"  # "file" (the folder), "api" (a refused admin call) or "store" (another replica's)
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))


class ComponentManager:
    """The components in service, the last failure of each file, and the only code that swaps them."""

    def __init__(self, engine: "Engine", built_in: Registry, *, lifecycle_timeout: float = 10.0,
                 drain_timeout: float = 30.0) -> None:
        self.engine = engine
        self.built_in = built_in
        self.components: dict[str, Component] = {}
        self.failures: dict[str, Failure] = {}
        self.lifecycle_timeout = lifecycle_timeout
        self.drain_timeout = drain_timeout
        self.file_changed: FileChanged | None = None
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        # Isolation: checks each version in a disposable process (before the lock), loads it bounded (under it).
        self.isolation = Isolation.from_settings(engine.settings)

    # ------------------------------------------------------------------ changes
    #
    # Every change happens under one lock, from reading what is in service to swapping the next state and
    # persisting it (the file, the store): so changes from the watcher, the admin API and other replicas are
    # applied one at a time, and a file read before another change is never compared with what came after.

    async def sync_path(self, path: str | Path, *, seen_at: float | None = None) -> Component | None:
        """Bring the component at `path` in line with the file: load, reload, or remove it."""
        seen_at = time.perf_counter() if seen_at is None else seen_at
        self._count("file_change", "success")
        await self.isolation.precheck_path(path, self.engine.config, self.components)  # isolation: unlocked
        async with self._lock:
            swap = await self._sync_locked(Path(path), seen_at)
        return await self._finish(swap)

    async def apply(self, source: Source, *, seen_at: float | None = None, persist: Persist | None = None,
                    origin: str = "api") -> Component:
        """Load `source` as the next version of its component, or raise ComponentError and change nothing.

        `persist(component)` runs once the version has loaded and before it goes into service: an
        exception from it refuses the version (as is) and changes nothing.
        """
        seen_at = time.perf_counter() if seen_at is None else seen_at
        await self.isolation.precheck(source, self.engine.config, self.components)  # isolation: unlocked
        async with self._lock:
            swap = await self._apply_locked(source, seen_at, persist, origin=origin)
        await self._finish(swap)
        return swap.component  # type: ignore[return-value]

    async def remove(self, component_id: str, *, persist: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Take a component out of service; its pipelines answer 503 until a provider returns.

        `persist()` runs before the swap; an exception from it leaves the component in service.
        """
        async with self._lock:
            swap = await self._remove_locked(component_id, persist)
        await self._finish(swap)
        return swap.old is not None

    async def retry_failures(self) -> None:
        """Try every refused file again: what refused it (a clash, the config) may have changed."""
        for failure in list(self.failures.values()):
            if failure.origin == "file":  # a refused API call or store version is not in the file
                await self.sync_path(failure.path)

    async def _sync_locked(self, path: Path, seen_at: float) -> _Swap:
        cid = path.stem.lower()
        try:
            source = await asyncio.to_thread(read_source, path)
        except (FileNotFoundError, IsADirectoryError):  # no longer a file: as at start-up, not a component
            return await self._remove_locked(cid, None, from_file=True)
        except ComponentError as exc:
            self._refused(cid, str(path), exc, None, "load", seen_at)
            return _Swap()
        except OSError as exc:  # unreadable (permissions, I/O): refused like a broken file, never fatal
            error = ComponentError(f"cannot read: {exc.strerror or exc}", file=str(path))
            self._refused(cid, str(path), error, None, "load", seen_at)
            return _Swap()
        current = self.components.get(source.id)
        if current is not None and current.sha256 == source.sha256:
            failure = self.failures.get(source.id)
            if failure is not None and failure.origin == "file":
                del self.failures[source.id]  # a save that restores the serving version clears its error
            return _Swap(current)
        try:
            return await self._apply_locked(source, seen_at, None, origin="file")
        except ComponentError:
            return _Swap()

    async def _apply_locked(self, source: Source, seen_at: float, persist: Persist | None, *,
                            origin: str) -> _Swap:
        operation = "reload" if source.id in self.components else "load"
        try:
            component, state = await self._build(source)
        except ComponentError as exc:
            self._refused(source.id, source.path, exc, source.sha256, operation, seen_at, origin)
            raise
        persisted = None
        if persist is not None:
            try:
                persisted = await persist(component)
            except BaseException:
                await run_hook_logged(component.plugin_manager, "shutdown", self.lifecycle_timeout)
                raise
        old = self.components.get(source.id)
        component.version = persisted or (old.version + 1 if old else 1)
        self.components[source.id] = component
        self.failures.pop(source.id, None)
        retired = self.engine.swap(state)
        elapsed = time.perf_counter() - seen_at
        self._count(operation, "success")
        self._count("register", "success")
        self.engine.metrics.reload_seconds.observe(elapsed)
        log.info("%s %s: %s in %.1f ms, steps %s", operation, source.path, source.sha256[:12],
                 elapsed * 1000, ", ".join(sorted(component.steps)) or "-",
                 extra={"component": source.id, "sha256": source.sha256[:12], "result": "success",
                        "duration_ms": round(elapsed * 1000, 3)})
        if origin == "file" and self.file_changed is not None:  # counted and logged first: it awaits the store
            await self.file_changed(source.id, component)
        return _Swap(component, old, retired)

    async def _remove_locked(self, component_id: str, persist: Callable[[], Awaitable[None]] | None, *,
                             from_file: bool = False) -> _Swap:
        old = self.components.get(component_id)
        if old is None:
            if persist is not None:
                await persist()
            self.failures.pop(component_id, None)
            return _Swap()
        registry = self._compose(exclude=component_id)
        config = compile_config(self.engine.config.document, registry, source=self.engine.config.source,
                                strict=False)
        if persist is not None:
            await persist()
        self.failures.pop(component_id, None)
        del self.components[component_id]
        retired = self.engine.swap(self.engine.state_for(registry, config))
        linecache.cache.pop(old.path, None)  # the source kept for tracebacks goes with the component
        self._count("unregister", "success")
        log.info("unregister %s: steps %s", old.path, ", ".join(sorted(old.steps)) or "-",
                 extra={"component": component_id, "result": "success"})
        if from_file and self.file_changed is not None:
            await self.file_changed(component_id, None)
        return _Swap(None, old, retired, removed=True)

    async def _finish(self, swap: _Swap) -> Component | None:
        """After a swap, outside the lock: retire the old version and retry what its removal may unblock."""
        self.engine.metrics.dynamic_components.set(len(self.components))
        if swap.old is not None and swap.old is not swap.component:
            self._retire(swap.old, swap.retired)
        if swap.removed:
            # A file refused because this one owned its step type may load now.
            await self.retry_failures()
        return swap.component

    # ------------------------------------------------------------------ building

    async def _build(self, source: Source) -> tuple[Component, "State"]:
        # isolation: the candidate's verdict (pre-checked outside the lock), then the bounded in-server load
        await self.isolation.check(source, self.engine.config)
        base = self._compose(exclude=source.id)
        component = await self.isolation.load(source, base)
        registry = compose_registry(base, (component.steps, component.endpoints))
        config = compile_with(self.engine.config.document, registry, config_source=self.engine.config.source,
                              source=source)  # isolation: catches BaseException from a `prepare` too
        try:
            await run_hook(component.plugin_manager, "startup", self.lifecycle_timeout,
                           services=self.engine.services)
        except LifecycleError as exc:  # the line of a raising hook is in the cause's traceback
            cause = exc.__cause__
            raise ComponentError(str(exc), file=source.path,
                                 line=line_in(cause, source.path) if cause else None) from None
        return component, self.engine.state_for(registry, config)

    @property
    def lock(self) -> asyncio.Lock:
        """Held from reading the state in service to swapping the next one (a config reload takes it too)."""
        return self._lock

    def _compose(self, exclude: str | None = None) -> Registry:
        return compose_registry(self.built_in, *((c.steps, c.endpoints) for cid, c in self.components.items()
                                                 if cid != exclude))

    # ------------------------------------------------------------------ retiring

    def _retire(self, old: Component, retired: list["State"]) -> None:
        """Stop `old` once the executions that may still use it have finished (bounded)."""
        task = asyncio.create_task(self._stop_after_drain(old, retired), name=f"retire-{old.id}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _stop_after_drain(self, old: Component, retired: list["State"]) -> None:
        if not await self.engine.drain(retired, self.drain_timeout):
            log.warning("stopping %s v%d while executions still use it (waited %.0fs)",
                        old.id, old.version, self.drain_timeout, extra={"component": old.id})
        await run_hook_logged(old.plugin_manager, "shutdown", self.lifecycle_timeout)
        for plugin in list(old.plugin_manager.get_plugins()):
            old.plugin_manager.unregister(plugin)

    async def close(self) -> None:
        """Wait for retiring versions, then stop every component in service."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        for component in self.components.values():
            await run_hook_logged(component.plugin_manager, "shutdown", self.lifecycle_timeout)
        await self.isolation.aclose()  # isolation: the helper process stops with the manager

    # ------------------------------------------------------------------ reporting

    def _refused(self, component_id: str, path: str, exc: ComponentError, sha256: str | None,
                 operation: str, seen_at: float, origin: str = "file") -> None:
        self.failures[component_id] = Failure(component_id, path, exc.message, exc.details.get("line"), sha256,
                                              origin)
        self._count(operation, "error")
        elapsed = time.perf_counter() - seen_at
        log.error("%s refused in %.1f ms: %s", operation, elapsed * 1000, exc.message,
                  extra={"component": component_id, "sha256": (sha256 or "")[:12], "result": "error",
                         "duration_ms": round(elapsed * 1000, 3)})

    def _count(self, operation: str, status: str) -> None:
        self.engine.metrics.child(self.engine.metrics.module_operations, "dynamic", operation, status).inc()

    def steps_by_component(self) -> MappingProxyType:
        """Step type names per component id, for listings."""
        return MappingProxyType({cid: sorted(c.steps) for cid, c in self.components.items()})
