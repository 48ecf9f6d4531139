"""The store is the source of truth for components: this replica follows it and feeds it its own changes.

Each replica remembers, in a hidden file in its components folder, the store version its folder last
agreed with (the base). Reconciling one component compares three things: the version in service here,
the store's row and that base. Only the store moved: follow it (write the file, load it). Only this
replica moved (a file saved or deleted while the store was unreachable, or a first deploy from files):
upload it. Both moved: the store wins, and the local file is kept in `DATA_DIR/conflicts/`.
Reconciles run at start-up (`/readyz` waits for the first), on every change event from another replica
(Redis), after Redis reconnects, and every `reconcile_interval`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from ..errors import ComponentError, StoreUnavailable
from ..keys import REPLICATOR
from ..reload.files import unlink, write_temp
from ..reload.loader import Component, Source
from ..store.base import ComponentRow, ComponentVersion, ReplicaComponent
from .bases import Synced, keep_conflict, load_bases, save_bases
from .bus import CHANNEL, ReloadBus

if TYPE_CHECKING:
    from ..engine.runner import Engine
    from ..reload.manager import ComponentManager
    from ..store.base import Store

log = logging.getLogger("workflow.replication")
T = TypeVar("T")

_STORE_TIMEOUT = 5.0
Stored = ComponentRow | ComponentVersion  # a store row, with its source or without



class _Superseded(Exception):
    """Another change went into service while a store version was loading: that one stands."""


class Replicator:
    """Keeps this replica's components in line with the store, and announces its changes to the others."""

    def __init__(self, manager: ComponentManager, engine: Engine) -> None:
        self.manager, self.engine, self.settings = manager, engine, engine.settings
        self.replica = self.settings.replica_id
        self.synced: dict[str, Synced] = {}
        self.ready = asyncio.Event()
        self.bus: ReloadBus | None = None
        self.reconciles = 0
        self.last_error: str | None = None
        self._lock = asyncio.Lock()  # one reconcile at a time
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def store(self) -> Store:
        """The engine's store (opened by the store's cleanup context, before this one starts)."""
        if self.engine.store is None:
            raise StoreUnavailable("no store is open")
        return self.engine.store

    # ------------------------------------------------------------------ admin API writes

    async def put(self, cid: str, text: str, *, who: str, client: str, action: str) -> Component:
        """Store, write and serve a new version (ComponentError or StoreUnavailable: nothing changed)."""
        path = self._path(cid)
        temp = await asyncio.to_thread(write_temp, path, text)
        rows: list[ComponentRow] = []

        async def persist(component: Component) -> int:
            rows.append(await self._store(self.store.put_component(cid, text, component.sha256, who)))
            await asyncio.to_thread(os.replace, temp, path)
            return rows[0].version

        try:
            component = await self.manager.apply(Source.from_text(cid, str(path), text), persist=persist)
        except BaseException:
            await asyncio.to_thread(unlink, temp)
            raise
        await self._settled(cid, rows[0], who=who, client=client, action=f"component.{action}")
        return component

    async def delete(self, cid: str, *, who: str, client: str) -> None:
        """Delete in the store, take out of service and remove the file (StoreUnavailable: nothing changed)."""
        rows: list[ComponentRow | None] = []

        async def persist() -> None:
            rows.append(await self._store(self.store.delete_component(cid, who)))
            await asyncio.to_thread(unlink, self._path(cid))

        await self.manager.remove(cid, persist=persist)
        await self._settled(cid, rows[0], who=who, client=client, action="component.delete")

    # ------------------------------------------------------------------ changes from the folder

    async def file_changed(self, cid: str, component: Component | None) -> None:
        """Under the manager's lock: a file change went into service here; record it in the store."""
        who = f"file@{self.replica}"
        try:
            if component is not None:
                row = await self._store(self.store.put_component(cid, component.text, component.sha256, who))
                component.version = row.version
            else:
                row = await self._store(self.store.delete_component(cid, who))
        except StoreUnavailable as exc:  # the next reconcile uploads it
            log.warning("replication: %s changed on disk but %s; it will be uploaded later", cid, exc.message)
            return
        self._spawn(self._settled(cid, row, who=who, client="", action="component.file"))

    # ------------------------------------------------------------------ reconciling

    async def reconcile(self, only: str | None = None) -> None:
        """Bring one component (or all) in line with the store; raises when the store is unreachable."""
        async with self._lock:
            if only is not None:
                rows = {only: await self._store(self.store.get_component(only))}
            else:
                # Versions only: sources are read for the components that need them (see _follow).
                rows = {r.id: r for r in await self._store(self.store.component_versions())}
                known_here = set(self.manager.components) | set(self.manager.failures) | set(self.synced)
                rows.update(dict.fromkeys(known_here - set(rows)))
            for cid in sorted(rows):
                await self._reconcile_one(cid, rows[cid])
            await self._save_synced()
        self.reconciles += 1
        self._spawn(self.report())

    async def _reconcile_one(self, cid: str, row: Stored | None) -> None:
        local = self.manager.components.get(cid)
        local_sha = local.sha256 if local is not None else None
        store_sha = row.sha256 if row is not None and not row.deleted else None
        base = self.synced.get(cid)
        if local_sha == store_sha and cid not in self.manager.failures:
            self._agree(cid, row)
            return
        store_moved = row is not None and (base is None or base.version != row.version)
        local_moved = base is None or base.sha256 != local_sha
        if cid in self.manager.failures and local is None:
            local_moved = False  # a file in error is not a deletion to spread
        if row is None or (local_moved and not store_moved):
            if local is not None or (row is not None and not row.deleted):
                await self._upload(cid)
            return
        if store_moved:
            await self._follow(cid, row, conflict=local_moved and local is not None)

    async def _upload(self, cid: str) -> None:
        """Record this replica's version (or its deletion) in the store."""
        who = f"replica@{self.replica}"
        async with self.manager.lock:  # so no file change swaps in between reading and storing
            local = self.manager.components.get(cid)
            if local is not None:
                row: ComponentRow | None = await self._store(
                    self.store.put_component(cid, local.text, local.sha256, who))
                local.version = row.version  # type: ignore[union-attr]
            else:
                row = await self._store(self.store.delete_component(cid, who))
        log.info("replication: uploaded %s %s", cid, "deletion" if local is None else local.sha256[:12],
                 extra={"component": cid})
        if row is not None:
            self._agree(cid, row)
        # The reconcile that called this saves the bases and reports once, for all its uploads.
        await self._announce(cid, row, who=who, client="", action="component.upload")

    async def _follow(self, cid: str, row: Stored, *, conflict: bool) -> None:
        """Serve the store's version (or its deletion) here and write it to the folder."""
        path = self._path(cid)
        if row.deleted:
            if conflict:
                await self._keep_local(cid, path)
            await self.manager.remove(cid, persist=lambda: asyncio.to_thread(unlink, path))
            self._agree(cid, row)
            return
        failure = self.manager.failures.get(cid)
        if failure is not None and failure.sha256 == row.sha256:
            return  # this replica already refused that version; the error is in the listing
        if not isinstance(row, ComponentRow):  # only its version was listed: read the source now
            full = await self._store(self.store.get_component(cid))
            if full is None or (full.version, full.deleted) != (row.version, row.deleted):
                return  # it changed meanwhile: that change's event, or the next reconcile, brings it here
            row = full
        if conflict:
            await self._keep_local(cid, path)
        expected = self.manager.components.get(cid)
        temp = await asyncio.to_thread(write_temp, path, row.source)

        async def persist(component: Component) -> int:
            if self.manager.components.get(cid) is not expected:
                raise _Superseded
            await asyncio.to_thread(os.replace, temp, path)
            return row.version

        try:
            await self.manager.apply(Source.from_text(cid, str(path), row.source), persist=persist,
                                     origin="store")
        except (ComponentError, _Superseded) as exc:
            await asyncio.to_thread(unlink, temp)
            if isinstance(exc, ComponentError):
                log.error("replication: version %d of %s from the store is refused here: %s", row.version, cid,
                          exc.message, extra={"component": cid})
            return
        self._agree(cid, row)

    async def _keep_local(self, cid: str, path: Path) -> None:
        """Both moved and the store wins: copy the local file to DATA_DIR/conflicts first."""
        kept = await asyncio.to_thread(keep_conflict, self.settings.data_dir / "conflicts", cid, path)
        if kept is not None:
            log.warning("replication: %s differs from the store's version, which wins; the local file is "
                        "kept as %s", path, kept, extra={"component": cid})

    def _agree(self, cid: str, row: Stored | None) -> None:
        if row is None:
            self.synced.pop(cid, None)
        else:
            self.synced[cid] = Synced(row.version, None if row.deleted else row.sha256)

    # ------------------------------------------------------------------ bookkeeping

    async def _settled(self, cid: str, row: ComponentRow | None, *, who: str, client: str, action: str) -> None:
        """After a change reached the store: remember it, audit it, announce it, report what serves here."""
        if row is not None:
            self._agree(cid, row)
        async with self._lock:
            await self._save_synced()
        await self._announce(cid, row, who=who, client=client, action=action)
        await self.report()

    async def _announce(self, cid: str, row: ComponentRow | None, *, who: str, client: str, action: str) -> None:
        """Audit a change that reached the store, and tell the other replicas about it."""
        try:
            await self._store(self.store.audit(who, action, cid, client or None))
        except StoreUnavailable as exc:
            log.warning("replication: could not audit %s of %s: %s", action, cid, exc.message)
        if self.bus is not None and row is not None:
            await self.bus.publish(cid, row.version, None if row.deleted else row.sha256)

    async def report(self) -> None:
        """Tell the store what this replica serves (for the admin listing of every replica)."""
        failures = self.manager.failures
        entries = [ReplicaComponent(self.replica, cid, self.synced[cid].version if cid in self.synced else None,
                                    c.sha256, "error" if cid in failures else "serving",
                                    failures[cid].error if cid in failures else None)
                   for cid, c in self.manager.components.items()]
        entries += [ReplicaComponent(self.replica, cid, None, f.sha256, "error", f.error)
                    for cid, f in failures.items() if cid not in self.manager.components]
        try:
            await self._store(self.store.report_replica(self.replica, entries))
        except StoreUnavailable as exc:
            log.debug("replication: report skipped: %s", exc.message)

    async def replicas(self) -> list[ReplicaComponent]:
        """What each replica that reported within three reconcile intervals serves."""
        window = timedelta(seconds=3 * self.settings.reconcile_interval + 10)
        return await self._store(self.store.list_replicas(since=datetime.now(UTC) - window))

    async def load_synced(self) -> None:
        """Read the bases kept in the components folder."""
        self.synced = await asyncio.to_thread(load_bases, self.settings.components_dir)

    async def _save_synced(self) -> None:
        await asyncio.to_thread(save_bases, self.settings.components_dir, dict(self.synced))

    async def _store(self, call: Awaitable[T]) -> T:
        """A store call bounded in time; any failure becomes StoreUnavailable."""
        try:
            async with asyncio.timeout(_STORE_TIMEOUT):
                return await call
        except Exception as exc:
            raise StoreUnavailable(f"the store is unavailable ({' '.join(str(exc).split()) or type(exc).__name__});"
                                   " nothing was changed") from exc

    def _path(self, cid: str) -> Path:
        return self.settings.components_dir / f"{cid}.py"

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Reconcile until the first one succeeds (then ready), then every `reconcile_interval`."""
        delay = 0.1
        while True:
            try:
                await self.reconcile()
            except StoreUnavailable as exc:
                self.last_error = exc.message
                log.warning("replication: reconcile failed: %s", exc.message)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.settings.reconcile_interval)
                continue
            if not self.ready.is_set():
                self.ready.set()
                self.manager.file_changed = self.file_changed  # file changes reach the store from now on
                if self.bus is not None:
                    self.bus.start()
            self.last_error, delay = None, 0.1
            await asyncio.sleep(self.settings.reconcile_interval)

    async def on_event(self, event: dict[str, Any]) -> None:
        """Another replica changed a component: follow the store for that one."""
        if self.ready.is_set():
            await self.reconcile(only=event["id"])

    async def on_connect(self) -> None:
        """(Re)subscribed to Redis: events sent meanwhile are lost, so compare everything."""
        try:
            await self.reconcile()
        except StoreUnavailable as exc:
            log.warning("replication: reconcile after connecting failed: %s", exc.message)

    async def drain(self) -> None:
        """Wait for announcements and reports still under way."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def health(self) -> dict[str, Any]:
        """The replication check of /healthz."""
        check: dict[str, Any] = {"status": "ok", "replica": self.replica, "reconciles": self.reconciles,
                                 "ready": self.ready.is_set()}
        if self.last_error is not None:
            check.update(status="degraded", error=self.last_error)
        if self.bus is not None:
            check["redis"] = "connected" if self.bus.connected else "disconnected"
            if not self.bus.connected:
                check["status"] = "degraded"
                check.setdefault("error", self.bus.last_error or "not connected yet")
        return check


async def replication_context(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: the replicator (after the store and the components are loaded) and Redis."""
    replicator = app[REPLICATOR]
    settings = replicator.settings
    await replicator.load_synced()
    if settings.redis_addr is not None:
        # Deployments sharing a Redis but not a database must not wake each other.
        db = settings.db
        channel = CHANNEL if db is None else f"{CHANNEL}:{db.host}:{db.port}/{db.name}/{db.schema or 'default'}"
        replicator.bus = ReloadBus(settings.redis_addr, replicator.replica, replicator.on_event,
                                   replicator.on_connect, channel=channel)
    task = asyncio.create_task(replicator.run(), name="replication")
    try:
        # Usually done in milliseconds, so the listener opens ready; a store that does not answer yet
        # must not hold start-up (liveness would fail): /readyz says "starting" until it does.
        await asyncio.wait_for(asyncio.shield(replicator.ready.wait()), timeout=2.0)
    except TimeoutError:
        log.warning("replication: the first reconcile has not finished; not ready until it has")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    replicator.manager.file_changed = None
    await replicator.drain()
    if replicator.bus is not None:
        await replicator.bus.stop()
