"""Build the plugin manager: hook specs, the built-in plugins, then entry-point plugins."""

from __future__ import annotations

import importlib
import logging

import pluggy

from . import hookspecs

log = logging.getLogger("workflow.plugins")

ENTRY_POINT_GROUP = "workflow.plugins"

# Built-in behaviour is plugins too, registered through the same hooks a component uses.
DEFAULT_PLUGINS = (
    "plugins.core",
    "plugins.control",
    "plugins.http_steps",
    "plugins.db_steps",
    "plugins.chat.reply",
    "plugins.chat.slack",
    "plugins.chat.twilio",
    "plugins.chat.telegram",
    "plugins.chat.generic",
)


def build_plugin_manager(*, entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager holding the specs, the built-in plugins and installed plugin packages."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if entry_points:
        loaded = pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        if loaded:
            log.info("loaded %d plugin package(s) from entry points", loaded)
    return pm
