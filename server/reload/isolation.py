"""Candidate isolation, the server's side: check each component version in a disposable process, then load it.

Before a version is imported into the server, `Isolation.check` has the helper process
(`server.reload.forkserver`) fork a child that imports it, calls its `register_*` hooks and compiles the
config against it, under CPU, memory and time limits. A crash, an exit, any exception or a hang there refuses
the version with its reason. The import into the server that follows (`Isolation.load`) runs in a daemon
thread bounded by the same timeout, so a version that hangs only in the server is abandoned, never awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.loader import AppConfig
from ..errors import ComponentError
from ..hooks.registry import Registry, compose_registry
from ..settings import Settings
from .helper import CandidateHelper, HelperGone
from .loader import Component, Source, build_module, collect, component_files, describe, read_source

VERDICTS_KEPT = 10_000  # pre-checked verdicts waiting for their `check` (a start-up pre-checks every file)
VERDICT_TTL = 60.0  # a pre-checked verdict nobody asked for (the change was refused otherwise) is not reused later


@dataclass(frozen=True, slots=True)
class StuckLoad:
    """An in-server import that ran past the timeout; its daemon thread was abandoned."""

    id: str
    path: str
    started: float
    thread: threading.Thread


class Isolation:
    """Checks candidate versions in the helper and loads passed ones into the server, both bounded in time."""

    def __init__(
        self, *, enabled: bool = True, timeout: float = 10.0, memory_mb: int = 1024, preload: tuple[str, ...] = ()
    ) -> None:
        self.enabled = enabled
        self.timeout = timeout
        self.memory = memory_mb << 20
        self.helper = CandidateHelper(preload)
        # (id, path, sha256) -> (the config document it was checked against, when, the refusal or None)
        self._verdicts: OrderedDict[tuple[str, str, str], tuple[object, float, ComponentError | None]] = OrderedDict()
        self._stuck: list[StuckLoad] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Isolation:
        """An isolation configured by WORKFLOW_ISOLATE_COMPONENTS, _IMPORT_TIMEOUT, _IMPORT_MEMORY_MB, _PRELOAD."""
        return cls(
            enabled=settings.isolate_components,
            timeout=settings.import_timeout,
            memory_mb=settings.import_memory_mb,
            preload=settings.isolation_preload,
        )

    async def __aenter__(self) -> Isolation:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the helper process (idempotent)."""
        await self.helper.aclose()

    # ------------------------------------------------------------------ the candidate process

    async def verdict(self, source: Source, config: AppConfig | None) -> ComponentError | None:
        """Check `source` in a disposable process, compiling `config` against it: the refusal, or None."""
        if not self.enabled:
            return None
        payload = {
            "source": source,
            "document": config.document if config is not None else None,
            "config_source": config.source if config is not None else "",
            "timeout": self.timeout,
            "memory": self.memory,
        }
        try:
            answer = await self.helper.request(payload, budget=self.timeout)
        except HelperGone as exc:
            return ComponentError(f"cannot check this version in isolation: {exc}", file=source.path)
        if answer.get("ok") is True:
            return None
        return ComponentError(str(answer.get("error")), file=source.path, line=answer.get("line"))

    async def precheck(
        self, source: Source, config: AppConfig | None, serving: Mapping[str, Component] | None = None
    ) -> None:
        """Check `source` now, before the caller takes the component lock; `check` then only reads the verdict.

        Nothing is checked when `serving` (the components in service) already runs this very version.
        """
        current = serving.get(source.id) if serving is not None else None
        if not self.enabled or (current is not None and current.sha256 == source.sha256):
            return
        if self._kept(source, config, pop=False) is not None:  # checked already (the API pre-checks before its lock)
            return
        verdict = await self.verdict(source, config)
        self._verdicts[_key(source)] = (config.document if config is not None else None, time.monotonic(), verdict)
        while len(self._verdicts) > VERDICTS_KEPT:  # verdicts never asked for (another change came first)
            self._verdicts.popitem(last=False)

    async def precheck_path(
        self, path: str | Path, config: AppConfig | None, serving: Mapping[str, Component] | None = None
    ) -> None:
        """`precheck` the file at `path`, if it can be read (otherwise the locked sync reports why)."""
        if not self.enabled:
            return
        try:
            source = await asyncio.to_thread(read_source, path)
        except (ComponentError, OSError):
            return
        await self.precheck(source, config, serving)

    async def precheck_paths(
        self, paths: Iterable[str | Path], config: AppConfig | None, serving: Mapping[str, Component] | None = None
    ) -> None:
        """`precheck_path` many files at once (start-up): the fork server checks them in parallel."""
        if not self.enabled:
            return
        slots = asyncio.Semaphore(2 * (os.cpu_count() or 1))  # enough to keep every CPU busy, no flood of forks

        async def one(path: str | Path) -> None:
            async with slots:
                await self.precheck_path(path, config, serving)

        await asyncio.gather(*(one(path) for path in paths))

    async def check(self, source: Source, config: AppConfig | None) -> None:
        """Raise the refusal of `source` against `config`: the pre-checked verdict, else a check now."""
        kept = self._kept(source, config, pop=True)
        verdict = kept[0] if kept is not None else await self.verdict(source, config)
        if verdict is not None:
            raise verdict

    def _kept(self, source: Source, config: AppConfig | None, *, pop: bool) -> tuple[ComponentError | None] | None:
        """The pre-checked verdict on `source`, if it is recent and about this very config."""
        entry = self._verdicts.pop(_key(source), None) if pop else self._verdicts.get(_key(source))
        document = config.document if config is not None else None
        # The config may have been swapped since the pre-check: that verdict is about another config.
        if entry is None or entry[0] is not document or time.monotonic() - entry[1] > VERDICT_TTL:
            return None
        return (entry[2],)

    # ------------------------------------------------------------------ the in-server import

    async def load(self, source: Source, base: Registry) -> Component:
        """Import `source` into the server and collect what it registers on top of `base`, bounded by the timeout.

        Runs in a daemon thread, not the default executor, whose threads would keep a stuck import from ever
        letting the process exit; on timeout the thread is abandoned and listed by `stuck_loads`.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[Component | None, BaseException | None]] = loop.create_future()

        def work() -> None:
            outcome: tuple[Component | None, BaseException | None]
            try:
                outcome = (collect(build_module(source), source, base), None)
            except BaseException as exc:  # the loader turns a component's exceptions into ComponentError
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed while this import was stuck
                loop.call_soon_threadsafe(_settle, done, outcome)

        thread = threading.Thread(target=work, name=f"load-{source.id}", daemon=True)
        started = time.monotonic()
        thread.start()
        try:
            component, error = await asyncio.wait_for(asyncio.shield(done), self.timeout)
        except TimeoutError:
            self._stuck.append(StuckLoad(source.id, source.path, started, thread))
            raise ComponentError(
                f"import did not finish in {self.timeout:g} s in the server (its thread is abandoned)", file=source.path
            ) from None
        if isinstance(error, ComponentError):
            raise error
        if error is not None or component is None:
            raise ComponentError(f"failed to load: {describe(error or RuntimeError())}", file=source.path)
        return component

    def stuck_loads(self) -> list[dict[str, Any]]:
        """In-server imports still running past their timeout: component id, path and seconds since they began."""
        self._stuck = [stuck for stuck in self._stuck if stuck.thread.is_alive()]
        now = time.monotonic()
        return [{"id": s.id, "path": s.path, "seconds": round(now - s.started, 1)} for s in self._stuck]


def _key(source: Source) -> tuple[str, str, str]:
    return (source.id, source.path, source.sha256)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if not future.done():
        future.set_result(outcome)


async def load_folder(
    base: Registry, directory: Path, isolation: Isolation, config: AppConfig | None
) -> tuple[Registry, list[str]]:
    """Load every component in `directory` on top of `base` as the server does, each checked in isolation first.

    For `validate`: returns the combined registry and one `file[:line]: message` per component refused.
    """
    read: list[Source | ComponentError] = []
    for path in await asyncio.to_thread(component_files, directory):
        try:
            read.append(await asyncio.to_thread(read_source, path))
        except ComponentError as exc:
            read.append(exc)
        except OSError as exc:
            read.append(ComponentError(f"cannot read: {exc.strerror or exc}", file=str(path)))
    # The candidates are independent: check them all at once (the helper runs them in parallel).
    verdicts = await asyncio.gather(*(isolation.verdict(item, config) for item in read if isinstance(item, Source)))
    registry, problems, checked = base, [], iter(verdicts)
    for item in read:
        refusal = item if isinstance(item, ComponentError) else next(checked)
        if refusal is None and isinstance(item, Source):
            try:
                component = await isolation.load(item, registry)
            except ComponentError as exc:
                refusal = exc
            else:
                registry = compose_registry(registry, (component.steps, component.endpoints))
        if refusal is not None:
            problems.append(refusal.message)
    return registry, problems
