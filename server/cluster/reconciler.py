"""Reconciling: bring this replica's components in line with the store, and keep doing it while the server runs.

Reconciling one component compares three things: the version in service here, the store's row, and the
base (the store version this folder last agreed with). Only the store moved: follow it (write the file,
load it). Only this replica moved (a file saved while the store was unreachable, an offline edit, a first
deploy from files, a deletion the watcher saw): upload it. Both moved: the store wins, and the local file is
kept in `DATA_DIR/conflicts/`. A component missing here is not a move: the store's version is written back.
Reconciles run at start-up (`/readyz` waits for the first), on every change event from another replica
(Redis), after Redis reconnects, and every `reconcile_interval`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..errors import ComponentError, StoreUnavailable
from ..reload.files import unlink, write_atomically
from ..reload.loader import Component, Source
from ..store.base import ComponentRow, ComponentVersion
from ..tasks import cancel_and_wait
from .bases import Synced
from .bus import CHANNEL, ReloadBus
from .ledger import Ledger

log = logging.getLogger("workflow.replication")

Stored = ComponentRow | ComponentVersion  # a store row, with its source or without


class Reconciler(Ledger):
    """Follows the store and uploads what only moved here; `deleted_here` names deletions still to upload."""

    async def reconcile(self, only: str | None = None) -> None:
        """Bring one component (or all) in line with the store; raises when the store is unreachable."""
        async with self._lock:
            rows: dict[str, Stored | None]
            if only is not None:
                rows = {only: await self._store(self.store.get_component(only))}
            else:
                # Versions only: sources are read for the components that need them (see _follow).
                rows = {r.id: r for r in await self._store(self.store.component_versions())}
                known_here = (
                    set(self.manager.components) | set(self.manager.failures) | set(self.synced) | self.deleted_here
                )
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
        failed = cid in self.manager.failures
        if local_sha == store_sha and not failed and cid not in self.deleted_here:
            if local is not None and row is not None:
                local.version = row.version  # loaded from a file before the store was asked
            self._agree(cid, row)
            return
        if row is not None and base is not None and row.version < base.version:
            return  # read before a change this replica has since agreed with: stale, compare next time
        if local is None and cid in self.deleted_here and (row is None or row.deleted):
            self.deleted_here.discard(cid)  # deleted here, and the store has nothing live: nothing to tell
            self._agree(cid, row)
            return
        store_moved = row is not None and (base is None or base.version != row.version)
        # A missing file is never a deletion; only one the watcher saw is (deleted_here).
        local_moved = (local is not None and (base is None or base.sha256 != local_sha)) or cid in self.deleted_here
        if row is None or (local_moved and not store_moved):
            if local is not None or (cid in self.deleted_here and row is not None and not row.deleted):
                await self._upload(cid, row.version if row is not None else None)
            return
        if store_moved or (local is None and not failed and not row.deleted):
            await self._follow(cid, row, conflict=local_moved and local is not None, expected=local, base=base)

    async def _upload(self, cid: str, expected: int | None) -> None:
        """Record this replica's version (or its deletion) in the store, if the store still holds `expected`."""
        who = f"replica@{self.replica}"
        async with self.manager.lock:  # so no file change swaps in between reading and storing
            # Decided on a listing that may be old by now: another replica's write since then is not ours to
            # overwrite. The next reconcile compares again (and keeps the local file as a conflict if both moved).
            now = await self._store(self.store.get_component(cid))
            if (now.version if now is not None else None) != expected:
                return
            local = self.manager.components.get(cid)
            if local is not None:
                row: ComponentRow | None = await self._store(
                    self.store.put_component(cid, local.text, local.sha256, who)
                )
                assert row is not None
                local.version = row.version
            else:
                row = await self._store(self.store.delete_component(cid, who))
            self.deleted_here.discard(cid)
            self._agree(cid, row)
        log.info(
            "replication: uploaded %s %s",
            cid,
            "deletion" if local is None else local.sha256[:12],
            extra={"component": cid},
        )
        # The reconcile that called this saves the bases and reports once, for all its uploads.
        await self._announce(cid, row, who=who, client="", action="component.upload")

    async def _follow(
        self, cid: str, row: Stored, *, conflict: bool, expected: Component | None, base: Synced | None
    ) -> None:
        """Serve the store's version (or its deletion) here and write it to the folder.

        `expected` and `base` are what the decision was made against (the version serving, the last agreement):
        if either has changed by the time the lock is ours, a newer change won and this one is dropped.
        """
        path = self._path(cid)
        if conflict:
            await self._keep_local(cid, path)
        if row.deleted:
            await self._follow_deletion(cid, row, expected, base)
            return
        failure = self.manager.failures.get(cid)
        if failure is not None and failure.sha256 == row.sha256:
            return  # this replica already refused that version; the error is in the listing
        if not isinstance(row, ComponentRow):  # only its version was listed: read the source now
            full = await self._store(self.store.get_component(cid))
            if full is None or (full.version, full.deleted) != (row.version, row.deleted):
                return  # it changed meanwhile: that change's event, or the next reconcile, brings it here
            row = full
        source = Source.from_text(cid, str(path), row.source)
        await self.manager.precheck(source)  # isolated, before the lock
        async with self.manager.lock:
            if self.manager.components.get(cid) is not expected or self.synced.get(cid) != base:
                return  # another change went in meanwhile: the next reconcile compares again
            try:
                candidate = await self.manager.build(source, origin="store")
            except ComponentError as exc:
                log.error(
                    "replication: version %d of %s from the store is refused here: %s",
                    row.version,
                    cid,
                    exc.message,
                    extra={"component": cid},
                )
                return
            try:
                await asyncio.to_thread(write_atomically, path, row.source)
            except BaseException as exc:
                await self.manager.discard(candidate)  # its startup ran: its shutdown must too
                if not isinstance(exc, OSError):
                    raise
                log.error("replication: cannot write %s: %s", path, exc.strerror or exc, extra={"component": cid})
                return
            self.manager.commit(candidate, version=row.version)
            self.deleted_here.discard(cid)
            self._agree(cid, row)

    async def _follow_deletion(self, cid: str, row: Stored, expected: Component | None, base: Synced | None) -> None:
        """The store deleted `cid`: take it out of service here and remove its file."""
        async with self.manager.lock:
            if self.manager.components.get(cid) is not expected or self.synced.get(cid) != base:
                return  # put back or changed meanwhile: the next reconcile compares again
            try:
                candidate = await self.manager.build_removal(cid)
                await asyncio.to_thread(unlink, self._path(cid))
            except (ComponentError, OSError) as exc:
                log.error("replication: cannot follow the deletion of %s: %s", cid, exc, extra={"component": cid})
                return
            if candidate is not None:
                self.manager.commit(candidate)
            self.manager.clear_failure(cid)
            self.deleted_here.discard(cid)
            self._agree(cid, row)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Reconcile until the first one succeeds (then ready), then every `reconcile_interval`."""
        delay = 0.1
        while True:
            try:
                await self.reconcile()
            except Exception as exc:  # the store, or the folder (a full disk): keep trying, never stop following
                self.last_error = exc.message if isinstance(exc, StoreUnavailable) else f"{type(exc).__name__}: {exc}"
                log.warning("replication: reconcile failed: %s", self.last_error)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.settings.reconcile_interval)
                continue
            if not self.ready.is_set():
                self.ready.set()  # file changes reach the store from now on
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

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Reconcile now and then periodically, and listen on Redis when configured; stop on exit."""
        settings = self.settings
        if settings.redis_addr is not None:
            # Deployments sharing a Redis but not a database must not wake each other.
            db = settings.db
            channel = CHANNEL if db is None else f"{CHANNEL}:{db.host}:{db.port}/{db.name}/{db.schema or 'default'}"
            self.bus = ReloadBus(settings.redis_addr, self.replica, self.on_event, self.on_connect, channel=channel)
        task = asyncio.create_task(self.run(), name="replication")
        try:
            # Usually done in milliseconds, so the listener opens ready; a store that does not answer yet
            # must not hold start-up (liveness would fail): /readyz says why until it does.
            await asyncio.wait_for(asyncio.shield(self.ready.wait()), timeout=2.0)
        except TimeoutError:
            log.warning("replication: the first reconcile has not finished; not ready until it has")
        try:
            yield
        finally:
            await cancel_and_wait(task)
            await self.drain()
            if self.bus is not None:
                await self.bus.stop()
