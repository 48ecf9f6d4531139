"""Every typed application and request key: what both apps share, each set once in `app.py`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .admin.auth import Identity
    from .admin.events import EventHub
    from .cluster.replicator import Replicator
    from .databases import Databases
    from .engine.runner import Engine
    from .engine.watchdog import LoopWatchdog
    from .metrics.catalog import Metrics
    from .queue import Workers
    from .reload.manager import ComponentManager
    from .settings import Settings
    from .store.base import Store
    from .store.recorder import Recorder

ENGINE: web.AppKey[Engine] = web.AppKey("engine")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
RELOADER: web.AppKey[ComponentManager] = web.AppKey("reloader")
STORE: web.AppKey[Store] = web.AppKey("store")
RECORDER: web.AppKey[Recorder] = web.AppKey("recorder")
REPLICATOR: web.AppKey[Replicator] = web.AppKey("replicator")
DATABASES: web.AppKey[Databases] = web.AppKey("databases")
# Set when a start-up running in the background fails: the command line then exits non-zero.
STARTUP_FAILED: web.AppKey[asyncio.Event] = web.AppKey("startup_failed", asyncio.Event)
WATCHDOG: web.AppKey[LoopWatchdog] = web.AppKey("watchdog")
QUEUE: web.AppKey[Workers] = web.AppKey("queue")
# The admin listener's event stream (admin/events.py).
EVENTS: web.AppKey[EventHub] = web.AppKey("events")

# Held by every admin write from its existence check to its store record: two calls for one id must not
# interleave (two POSTs both creating, or two PUTs renaming their files in another order than they served).
COMPONENT_WRITES: web.AppKey[asyncio.Lock] = web.AppKey("component_writes", asyncio.Lock)

# Who made an admin call, from the verified token (set by the admin API's auth middleware).
IDENTITY: web.RequestKey[Identity] = web.RequestKey("identity")
# The route template a dispatcher matched, for the metrics `path` label.
ROUTE_LABEL: web.RequestKey[str] = web.RequestKey("route_label", str)
