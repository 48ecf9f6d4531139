"""The components in service, the last refusal of each, and the one place that builds and swaps the serving state.

Every change to what serves (a component loaded, replaced or removed, a config reloaded) is a Candidate:
`build*` validates it against the state in service, `commit` swaps it in with one assignment, `discard`
drops it. The caller holds `lock` from build to commit, so changes apply one at a time and a candidate is
never committed on top of a state it was not validated against. The manager never calls outward: it
publishes an Event to its subscribers after every commit and refusal.

Lock order (the only locks around component changes): the admin API's write lock, then the replicator's
reconcile lock, then `ComponentManager.lock`. Isolated imports of candidates happen before `lock` is taken.
"""

from __future__ import annotations

import asyncio
import linecache
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..config.loader import AppConfig, compile_config, load_config_text
from ..engine.runner import Engine
from ..engine.state import State
from ..errors import ComponentError, ConfigError
from ..hooks.lifecycle import LifecycleError, run_hook, run_hook_logged
from ..hooks.registry import Registry, compose_registry
from .isolation import Isolation
from .loader import Component, Source, compile_with, line_in

log = logging.getLogger("workflow.reloader")
config_log = logging.getLogger("workflow.config")


@dataclass(slots=True)
class Failure:
    """The last refused version of a component."""

    id: str
    path: str
    error: str
    line: int | None
    sha256: str | None
    origin: str = "file"  # "file" (the folder), "api" (a refused admin call) or "store" (another replica's)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))


@dataclass(eq=False, slots=True)
class Candidate:
    """A validated next serving state, not serving yet: `commit` swaps it in, `discard` drops it."""

    state: State
    operation: str  # load | reload | unregister | config
    seen_at: float
    component_id: str | None = None
    component: Component | None = None  # the new version (load, reload)


@dataclass(frozen=True, slots=True)
class Event:
    """What changed: `committed` (a component version serves), `removed`, `refused`, or `config`."""

    kind: str
    component_id: str | None = None
    component: Component | None = None
    failure: Failure | None = None


Subscriber = Callable[[Event], None]


class ComponentManager:
    """Builds candidates against the state in service and commits them; holds the components and failures."""

    def __init__(
        self, engine: Engine, built_in: Registry, *, lifecycle_timeout: float = 10.0, drain_timeout: float = 30.0
    ) -> None:
        self.engine = engine
        self.built_in = built_in
        self.components: dict[str, Component] = {}
        self.failures: dict[str, Failure] = {}
        self.config_failure: list[str] | None = None  # why the last config save was refused, until a good one
        self.lifecycle_timeout = lifecycle_timeout
        self.drain_timeout = drain_timeout
        self.lock = asyncio.Lock()
        # Checks each version in a disposable process before `lock` is taken, and bounds the in-server load.
        self.isolation = Isolation.from_settings(engine.settings)
        self._subscribers: list[Subscriber] = []
        self._retiring: set[asyncio.Task[None]] = set()

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber(event)` after every commit and refusal (synchronously: it must not block)."""
        self._subscribers.append(subscriber)

    # ------------------------------------------------------------------ building (hold `lock`)

    async def build(self, source: Source, *, seen_at: float | None = None, origin: str = "file") -> Candidate:
        """Load `source` as the next version of its component; ComponentError (recorded) if it cannot serve."""
        seen_at = time.perf_counter() if seen_at is None else seen_at
        operation = "reload" if source.id in self.components else "load"
        try:
            return await self._build(source, operation, seen_at)
        except ComponentError as exc:
            self.refuse(source.id, source.path, exc, source.sha256, operation, seen_at, origin)
            raise

    async def precheck(self, source: Source) -> None:
        """Import `source` in a disposable process first (no lock held): a hang or a crash costs nothing here.

        The verdict is kept for `build`, which raises it (refusing the version) or goes on to the in-server load.
        """
        await self.isolation.precheck(source, self.engine.config, self.components)

    async def _build(self, source: Source, operation: str, seen_at: float) -> Candidate:
        await self.isolation.check(source, self.engine.config)  # the candidate's verdict, or a check now
        base = self._compose(exclude=source.id)
        component = await self.isolation.load(source, base)  # in a daemon thread, bounded by the import timeout
        registry = compose_registry(base, (component.steps, component.endpoints))
        config = self._compile(registry, source)
        try:
            await run_hook(component.plugin_manager, "startup", self.lifecycle_timeout, services=self.engine.services)
        except LifecycleError as exc:  # the line of a raising hook is in the cause's traceback
            cause = exc.__cause__
            raise ComponentError(
                str(exc), file=source.path, line=line_in(cause, source.path) if cause else None
            ) from None
        return Candidate(State(registry, config), operation, seen_at, source.id, component)

    async def dry_run(self, source: Source) -> Component:
        """Every check a save makes, changing nothing (the admin API's validate): ComponentError if it would fail.

        The candidate process, the in-server import and registration, clashes with what serves, and the config
        compiled against the would-be registry. No `startup` hook runs, nothing is recorded or swapped, and the
        loaded module is dropped.
        """
        verdict = await self.isolation.verdict(source, self.engine.config)
        if verdict is not None:
            raise verdict
        base = self._compose(exclude=source.id)
        component = await self.isolation.load(source, base)
        try:
            self._compile(compose_registry(base, (component.steps, component.endpoints)), source)
        finally:
            for plugin in list(component.plugin_manager.get_plugins()):
                component.plugin_manager.unregister(plugin)
        return component

    def _compile(self, registry: Registry, source: Source | str) -> AppConfig:
        """The config in service compiled against `registry`; a failure refuses the version (`source`, or a path)."""
        config = self.engine.config
        if isinstance(source, Source):  # catches BaseException from a component's `prepare` too
            return compile_with(config.document, registry, config_source=config.source, source=source)
        try:
            return compile_config(config.document, registry, source=config.source, strict=False)
        except ConfigError as exc:
            raise ComponentError(
                "the config does not compile without this component: " + "; ".join(exc.problems), file=source
            ) from None

    async def build_removal(self, component_id: str) -> Candidate | None:
        """The serving state without `component_id` (None when it is not in service)."""
        old = self.components.get(component_id)
        if old is None:
            return None
        registry = self._compose(exclude=component_id)
        config = self._compile(registry, old.path)
        return Candidate(State(registry, config), "unregister", time.perf_counter(), component_id)

    async def build_config(self, text: str, source: str) -> Candidate:
        """The config `text` compiled against the registry in service (ConfigError lists every problem)."""
        registry = self.engine.registry
        depth = self.engine.settings.max_json_depth
        config = await asyncio.to_thread(load_config_text, text, registry, source=source, strict=False, max_depth=depth)
        return Candidate(State(registry, config), "config", time.perf_counter())

    def compiled(self) -> Candidate:
        """The config in service compiled once more against everything loaded (start-up, after the components)."""
        registry = self.engine.registry
        config = self.engine.config
        final = compile_config(config.document, registry, source=config.source, strict=False)
        for warning in final.warnings:
            config_log.warning("%s", warning)
        return Candidate(State(registry, final), "config", time.perf_counter())

    # ------------------------------------------------------------------ committing (hold `lock`)

    def commit(self, candidate: Candidate, *, version: int | None = None) -> Component | None:
        """Put `candidate` in service in one swap; `version` is the store's number for a new component version."""
        cid, component = candidate.component_id, candidate.component
        old = self.components.get(cid) if cid is not None else None
        retired = self.engine.swap(candidate.state)
        if candidate.operation == "config":
            self._publish(Event("config"))
            return None
        assert cid is not None
        self.failures.pop(cid, None)
        if component is None:
            assert old is not None  # build_removal only builds for a component in service
            del self.components[cid]
            linecache.cache.pop(old.path, None)  # its source, kept for tracebacks, goes with it
            self.count("unregister", "success")
            log.info(
                "unregister %s: steps %s",
                old.path,
                ", ".join(sorted(old.steps)) or "-",
                extra={"component": cid, "result": "success"},
            )
        else:
            component.version = version or (old.version + 1 if old else 1)
            self.components[cid] = component
            self._served(candidate, component)
        self.engine.metrics.dynamic_components.set(len(self.components))
        if old is not None:
            self._retire(old, retired)
        self._publish(Event("committed" if component else "removed", cid, component))
        return component

    def _served(self, candidate: Candidate, component: Component) -> None:
        elapsed = time.perf_counter() - candidate.seen_at
        self.count(candidate.operation, "success")
        self.count("register", "success")
        self.engine.metrics.reload_seconds.observe(elapsed)
        log.info(
            "%s %s: %s in %.1f ms, steps %s",
            candidate.operation,
            component.path,
            component.sha256[:12],
            elapsed * 1000,
            ", ".join(sorted(component.steps)) or "-",
            extra={
                "component": component.id,
                "sha256": component.sha256[:12],
                "result": "success",
                "duration_ms": round(elapsed * 1000, 3),
            },
        )

    async def discard(self, candidate: Candidate) -> None:
        """Drop a candidate that will not serve (its persisting failed): stop the version it started."""
        if candidate.component is not None:
            await run_hook_logged(candidate.component.plugin_manager, "shutdown", self.lifecycle_timeout)

    # ------------------------------------------------------------------ failures

    def refuse(
        self,
        component_id: str,
        path: str,
        exc: ComponentError,
        sha256: str | None,
        operation: str,
        seen_at: float,
        origin: str = "file",
    ) -> None:
        """Record a refused version: the failure, one log line and the metric; the version in service stays."""
        failure = Failure(component_id, path, exc.message, exc.details.get("line"), sha256, origin)
        self.failures[component_id] = failure
        self.count(operation, "error")
        elapsed = time.perf_counter() - seen_at
        log.error(
            "%s refused in %.1f ms: %s",
            operation,
            elapsed * 1000,
            exc.message,
            extra={
                "component": component_id,
                "sha256": (sha256 or "")[:12],
                "result": "error",
                "duration_ms": round(elapsed * 1000, 3),
            },
        )
        self._publish(Event("refused", component_id, failure=failure))

    def clear_failure(self, component_id: str, *, origin: str | None = None) -> None:
        """Forget a refusal (only one from `origin`, when given): what it refused is no longer pending."""
        failure = self.failures.get(component_id)
        if failure is not None and origin in (None, failure.origin):
            del self.failures[component_id]

    # ------------------------------------------------------------------ retiring

    def _retire(self, old: Component, retired: list[State]) -> None:
        """Stop `old` once the executions that may still use it have finished (bounded)."""
        task = asyncio.create_task(self._stop_after_drain(old, retired), name=f"retire-{old.id}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _stop_after_drain(self, old: Component, retired: list[State]) -> None:
        if not await self.engine.drain(retired, self.drain_timeout):
            log.warning(
                "stopping %s v%d while executions still use it (waited %.0fs)",
                old.id,
                old.version,
                self.drain_timeout,
                extra={"component": old.id},
            )
        await run_hook_logged(old.plugin_manager, "shutdown", self.lifecycle_timeout)
        for plugin in list(old.plugin_manager.get_plugins()):
            old.plugin_manager.unregister(plugin)

    async def close(self) -> None:
        """Wait for retiring versions, then stop every component in service."""
        try:
            if self._retiring:
                await asyncio.gather(*self._retiring, return_exceptions=True)
            for component in list(self.components.values()):
                await run_hook_logged(component.plugin_manager, "shutdown", self.lifecycle_timeout)
        finally:
            await self.isolation.aclose()  # the candidate helper process stops with the manager, always

    # ------------------------------------------------------------------ helpers

    def _compose(self, exclude: str | None = None) -> Registry:
        return compose_registry(
            self.built_in, *((c.steps, c.endpoints) for cid, c in self.components.items() if cid != exclude)
        )

    def _publish(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:  # a subscriber's bug must not undo a committed swap
                log.exception("component event subscriber failed on %s", event.kind)

    def versions_of(self, step_types: Iterable[str]) -> dict[str, int]:
        """The components (id: version) in service now that provide any of `step_types`."""
        steps, found = self.engine.registry.steps, {}
        for name in step_types:
            step = steps.get(name)
            component = self.components.get(step.provider.removeprefix("component:")) if step is not None else None
            if component is not None:
                found[component.id] = component.version
        return found

    def count(self, operation: str, status: str) -> None:
        """Count one component operation in `module_operations_total{module="dynamic"}`."""
        self.engine.metrics.child(self.engine.metrics.module_operations, "dynamic", operation, status).inc()
