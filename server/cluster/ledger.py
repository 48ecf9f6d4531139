"""What a replica keeps about its agreement with the store: bases, audit, announcements, reports and health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreUnavailable
from ..reload.manager import ComponentManager
from ..settings import Settings
from ..store.base import ComponentRow, ComponentVersion, ReplicaComponent, Store
from .bases import Synced, keep_conflict, load_bases, save_bases
from .bus import ReloadBus

log = logging.getLogger("workflow.replication")
T = TypeVar("T")

STORE_TIMEOUT = 5.0


class Ledger:
    """The bookkeeping shared by the reconciler and the writes: one replica's view of its agreement."""

    def __init__(self, manager: ComponentManager, settings: Settings, store: Store) -> None:
        self.manager, self.settings, self.store = manager, settings, store
        self.replica = settings.replica_id
        self.synced: dict[str, Synced] = {}
        # Files the watcher saw deleted while the store could not be told: uploaded as deletions later, and
        # kept in the folder's record so a restart in between does not write them back.
        self.deleted_here: set[str] = set()
        self.ready = asyncio.Event()
        self.bus: ReloadBus | None = None
        self.reconciles = 0
        self.last_error: str | None = None
        # Called with what this replica serves after each report reaches the store (the admin event stream).
        self.on_report: list[Callable[[list[ReplicaComponent]], None]] = []
        self._lock = asyncio.Lock()  # one reconcile at a time
        # One write of the folder's record at a time, each from a snapshot taken in turn, so an older snapshot
        # never lands after a newer one. Separate from the reconcile lock: an admin call must not wait for a
        # reconcile that is waiting for the store.
        self._saving = asyncio.Lock()
        self._tasks: set[asyncio.Future[Any]] = set()

    async def _settled(self, cid: str, row: ComponentRow | None, *, who: str, client: str, action: str) -> None:
        """After a change reached the store: remember it, audit it, announce it, report what serves here."""
        if row is not None:
            self._agree(cid, row)
        await self._save_synced()
        await self._announce(cid, row, who=who, client=client, action=action)
        await self.report()

    def _agree(self, cid: str, row: ComponentRow | ComponentVersion | None) -> None:
        """This folder now agrees with `row` (None: the store has nothing for `cid`)."""
        if row is None:
            self.synced.pop(cid, None)
        else:
            self.synced[cid] = Synced(row.version, None if row.deleted else row.sha256)

    async def _announce(self, cid: str, row: ComponentRow | None, *, who: str, client: str, action: str) -> None:
        """Audit a change that reached the store, and tell the other replicas about it."""
        try:
            detail = None if row is None else {"version": row.version, "sha256": None if row.deleted else row.sha256}
            await self._store(self.store.audit(who, action, cid, client or None, detail))
        except StoreUnavailable as exc:
            log.warning("replication: could not audit %s of %s: %s", action, cid, exc.message)
        if self.bus is not None and row is not None:
            await self.bus.publish(cid, row.version, None if row.deleted else row.sha256)

    async def report(self) -> None:
        """Tell the store what this replica serves (for the admin listing of every replica)."""
        failures = self.manager.failures
        entries = [
            ReplicaComponent(
                self.replica,
                cid,
                self.synced[cid].version if cid in self.synced else None,
                c.sha256,
                "error" if cid in failures else "serving",
                failures[cid].error if cid in failures else None,
            )
            for cid, c in self.manager.components.items()
        ]
        entries += [
            ReplicaComponent(self.replica, cid, None, f.sha256, "error", f.error)
            for cid, f in failures.items()
            if cid not in self.manager.components
        ]
        try:
            await self._store(self.store.report_replica(self.replica, entries))
        except StoreUnavailable as exc:
            log.debug("replication: report skipped: %s", exc.message)
            return
        for listener in self.on_report:
            listener(entries)

    async def replicas(self) -> list[ReplicaComponent]:
        """What each replica that reported within three reconcile intervals serves."""
        window = timedelta(seconds=3 * self.settings.reconcile_interval + 10)
        return await self._store(self.store.list_replicas(since=datetime.now(UTC) - window))

    async def load_synced(self) -> None:
        """Read the bases kept in the components folder."""
        self.synced, self.deleted_here = await asyncio.to_thread(load_bases, self.settings.components_dir)

    async def save_now(self) -> None:
        """Write the folder's record now."""
        await self._save_synced()

    async def _save_synced(self) -> None:
        async with self._saving:
            synced, pending = dict(self.synced), set(self.deleted_here)
            await asyncio.to_thread(save_bases, self.settings.components_dir, synced, pending)

    async def _keep_local(self, cid: str, path: Path) -> None:
        """Both moved and the store wins: copy the local file to DATA_DIR/conflicts first."""
        kept = await asyncio.to_thread(keep_conflict, self.settings.data_dir / "conflicts", cid, path)
        if kept is not None:
            log.warning(
                "replication: %s differs from the store's version, which wins; the local file is kept as %s",
                path,
                kept,
                extra={"component": cid},
            )

    async def _store(self, call: Awaitable[T]) -> T:
        """A store call bounded in time; any failure becomes StoreUnavailable."""
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                return await call
        except Exception as exc:
            raise StoreUnavailable(
                f"the store is unavailable ({' '.join(str(exc).split()) or type(exc).__name__}); nothing was changed"
            ) from exc

    def _path(self, cid: str) -> Path:
        return self.settings.components_dir / f"{cid}.py"

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for announcements, reports and retries still under way."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def health(self) -> dict[str, Any]:
        """The replication check of /healthz."""
        check: dict[str, Any] = {
            "status": "ok",
            "replica": self.replica,
            "reconciles": self.reconciles,
            "ready": self.ready.is_set(),
        }
        if self.last_error is not None:
            check.update(status="degraded", error=self.last_error)
        if self.bus is not None:
            check["redis"] = "connected" if self.bus.connected else "disconnected"
            if not self.bus.connected:
                check["status"] = "degraded"
                check.setdefault("error", self.bus.last_error or "not connected yet")
        return check
