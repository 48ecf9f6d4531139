"""The one orchestrator of component writes: admin API calls, file changes and store changes all go through it.

Every write has the same shape: build a candidate (isolated first, then under the manager's lock), record it
in the store, write the folder, commit. A write the store refuses changes nothing; a file saved while the
store is unreachable serves here and is uploaded by the next reconcile.

The store is the source of truth. Each replica remembers, in a hidden file in its components folder, the
store version its folder last agreed with (the base), and reconciling compares three things: the version in
service here, the store's row and that base (see `Reconciler`). Only a deliberate act removes a component:
a DELETE through the API, or the watcher seeing a file deleted while the server runs. A file missing at
start-up is written back from the store (`restore`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from ..engine.runner import Engine
from ..errors import ComponentError, StoreUnavailable
from ..reload.files import unlink, write_atomically
from ..reload.loader import Component, Source, component_files, component_id, read_source
from ..reload.manager import ComponentManager, Event
from ..store.base import Store
from .bases import StoredVersion, restore_folder
from .reconciler import Reconciler

log = logging.getLogger("workflow.replication")
T = TypeVar("T")


class Replicator(Reconciler):
    """Applies every component change here and in the store, and keeps this replica in line with the store."""

    def __init__(self, manager: ComponentManager, engine: Engine, store: Store) -> None:
        super().__init__(manager, engine.settings, store)
        self.engine = engine
        manager.subscribe(self._on_change)

    # ------------------------------------------------------------------ admin API

    async def put(self, cid: str, text: str, *, who: str, client: str, action: str) -> Component:
        """Store, write and serve a new version (ComponentError or StoreUnavailable: nothing changed)."""
        path = self._path(cid)
        source = Source.from_text(cid, str(path), text)
        await self.manager.precheck(source)  # isolated, before the lock (the admin API already did, usually)
        async with self.manager.lock:
            current = self.manager.components.get(cid)
            if current is not None and current.sha256 == source.sha256:
                return await self._put_serving(current, text, who=who, client=client, action=action)
            candidate = await self.manager.build(source, origin="api")
            try:
                row = await self._store(self.store.put_component(cid, text, source.sha256, who))
                await asyncio.to_thread(write_atomically, path, text)
            except BaseException:
                await self.manager.discard(candidate)
                raise
            component = self.manager.commit(candidate, version=row.version)
            self.deleted_here.discard(cid)
            self._agree(cid, row)  # under the lock: a reconcile that read the store before this must not undo it
        assert component is not None
        await self._settled(cid, row, who=who, client=client, action=f"component.{action}")
        return component

    async def _put_serving(self, current: Component, text: str, *, who: str, client: str, action: str) -> Component:
        """Under the lock: a PUT of the version this replica serves. Not a new version, unless the store moved on.

        The store is asked, not this replica's memory of it: another replica may have stored a newer version
        whose event has not arrived yet, and putting this one back is then a real change (a revert).
        """
        cid = current.id
        row = await self._store(self.store.get_component(cid))
        await asyncio.to_thread(write_atomically, self._path(cid), text)  # the file may hold a broken edit
        self.manager.clear_failure(cid)
        if row is not None and not row.deleted and row.sha256 == current.sha256:
            return current
        row = await self._store(self.store.put_component(cid, text, current.sha256, who))
        current.version = row.version
        self.deleted_here.discard(cid)
        self._agree(cid, row)
        self._spawn(self._settled(cid, row, who=who, client=client, action=f"component.{action}"))
        return current

    async def delete(self, cid: str, *, who: str, client: str) -> None:
        """Delete in the store, take out of service and remove the file (StoreUnavailable: nothing changed)."""
        async with self.manager.lock:
            candidate = await self.manager.build_removal(cid)
            row = await self._store(self.store.delete_component(cid, who))
            await asyncio.to_thread(unlink, self._path(cid))
            if candidate is not None:
                self.manager.commit(candidate)
            self.manager.clear_failure(cid)
            self.deleted_here.discard(cid)
            self._agree(cid, row)
        await self._settled(cid, row, who=who, client=client, action="component.delete")

    # ------------------------------------------------------------------ the folder

    async def file_changed(self, path: Path, seen_at: float | None = None) -> None:
        """The watcher (or the start-up load) saw `path` change: load, reload or remove its component."""
        seen_at = time.perf_counter() if seen_at is None else seen_at
        self.manager.count("file_change", "success")
        try:
            source = await asyncio.to_thread(read_source, path)
        except (FileNotFoundError, IsADirectoryError):  # no longer a file: deleted while running
            await self._file_removed(path)
            return
        except (ComponentError, OSError) as exc:  # unreadable, not UTF-8, or a name that is no id
            error = (
                exc
                if isinstance(exc, ComponentError)
                else ComponentError(f"cannot read: {exc.strerror or exc}", file=str(path))
            )
            self.manager.refuse(path.stem.lower(), str(path), error, None, "load", seen_at)
            return
        if self._serves(source):
            self.manager.clear_failure(source.id, origin="file")  # a save that restores the serving version
            return
        await self.manager.precheck(source)  # isolated, before the lock: a hang here blocks no other change
        async with self.manager.lock:
            # Read again under the lock: a write that went in meanwhile (an API call, the store) must not be
            # undone by this older read; the newer content's own event follows.
            try:
                if await asyncio.to_thread(read_source, path) != source:
                    return
            except (ComponentError, OSError):
                return
            if self._serves(source):
                return
            try:
                candidate = await self.manager.build(source, seen_at=seen_at, origin="file")
            except ComponentError:
                return
            stored, row = await self._try_store(
                lambda: self.store.put_component(source.id, source.text, source.sha256, f"file@{self.replica}"),
                source.id,
            )
            base = self.synced.get(source.id)
            known = base.version if base is not None and base.sha256 == source.sha256 else None
            self.manager.commit(candidate, version=row.version if row else known)
            self.deleted_here.discard(source.id)
            if stored:
                self._agree(source.id, row)
        if row is not None:
            self._spawn(self._settled(source.id, row, who=f"file@{self.replica}", client="", action="component.file"))

    async def _file_removed(self, path: Path) -> None:
        """A component file was deleted while the server runs: a deliberate removal, spread to every replica.

        That holds for a component refused here too (its file was broken): the others serve it, and the
        deletion is meant for them as well.
        """
        cid = path.stem.lower()
        async with self.manager.lock:
            if await asyncio.to_thread(path.exists):
                return  # put back meanwhile (an atomic save): its own event loads it
            failure = self.manager.failures.get(cid)
            refused_file = failure is not None and failure.origin == "file"
            self.manager.clear_failure(cid, origin="file")
            try:
                candidate = await self.manager.build_removal(cid)
            except ComponentError as exc:
                log.error("cannot take %s out of service: %s", cid, exc.message, extra={"component": cid})
                return
            if candidate is None and not refused_file:
                return  # not a component here (a file this replica removed itself, say)
            stored, row = await self._try_store(lambda: self.store.delete_component(cid, f"file@{self.replica}"), cid)
            if not stored:
                self.deleted_here.add(cid)
                self._spawn(self.save_now())  # a restart before the next reconcile must not write it back
            else:
                self._agree(cid, row)
            if candidate is not None:
                self.manager.commit(candidate)
        if row is not None:
            self._spawn(self._settled(cid, row, who=f"file@{self.replica}", client="", action="component.file"))

    async def _try_store(self, write: Callable[[], Awaitable[T]], cid: str) -> tuple[bool, T | None]:
        """A store write for a file change: (False, None) when the store is not reachable (or not synced yet)."""
        if not self.ready.is_set():  # before the first reconcile, which uploads what changed
            return False, None
        try:
            return True, await self._store(write())
        except StoreUnavailable as exc:
            log.warning("replication: %s changed on disk but %s; it will be uploaded later", cid, exc.message)
            return False, None

    def _serves(self, source: Source) -> bool:
        current = self.manager.components.get(source.id)
        return current is not None and current.sha256 == source.sha256

    def _on_change(self, event: Event) -> None:
        """A removal or a new config may let a refused file load (a clash gone, a step type back): retry them."""
        if event.kind in ("removed", "config"):
            self._spawn(self.retry_failures())

    async def retry_failures(self) -> None:
        """Try every refused file again (a refused API call or store version is not in the file)."""
        for failure in list(self.manager.failures.values()):
            if failure.origin == "file":
                await self.file_changed(Path(failure.path))

    # ------------------------------------------------------------------ start-up

    async def load_folder(self) -> None:
        """Start-up step 4: every file in the folder, checked in isolation all at once, then loaded one by one."""
        manager = self.manager
        paths = await asyncio.to_thread(component_files, self.settings.components_dir)
        await manager.isolation.precheck_paths(paths, manager.engine.config, manager.components)
        for path in paths:
            await self.file_changed(path)

    async def restore(self) -> None:
        """Before the folder loads: write back files the store has and the folder lacks or is behind on."""
        await self.load_synced()
        try:
            rows = await self._store(self.store.list_components(include_deleted=True))
        except StoreUnavailable as exc:
            log.warning("replication: cannot restore the components folder yet: %s", exc.message)
            return
        versions = [
            StoredVersion(r.id, r.version, r.sha256, r.source, r.deleted) for r in rows if component_id(r.id) == r.id
        ]
        done = await asyncio.to_thread(
            restore_folder,
            self.settings.components_dir,
            versions,
            self.synced,
            self.settings.data_dir / "conflicts",
            self.deleted_here,
        )
        for cid, action in sorted(done.items()):
            log.info("replication: %s %s from the store", action, cid, extra={"component": cid})
        await self._save_synced()
