"""Run the `startup` and `shutdown` hooks of a plugin manager, each bounded by a timeout."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pluggy

log = logging.getLogger("workflow.lifecycle")


def plugin_logger(plugin_name: str) -> logging.Logger:
    """The logger handed to a plugin: `workflow.plugin.NAME` (components: `workflow.component.ID`)."""
    kind, _, name = plugin_name.partition(":")
    return logging.getLogger(
        f"workflow.component.{name}" if kind == "component" and name else f"workflow.plugin.{plugin_name}"
    )


async def run_hook(pm: pluggy.PluginManager, name: str, timeout: float, **kwargs: Any) -> None:
    """Call hook `name` of every plugin in `pm`, awaiting async ones; raise the first failure.

    Each implementation gets only the arguments it declares, plus a logger named after its plugin.
    """
    for impl in getattr(pm.hook, name).get_hookimpls():
        arguments = {**kwargs, "logger": plugin_logger(impl.plugin_name)}
        try:
            async with asyncio.timeout(timeout):
                result = impl.function(**{a: arguments[a] for a in impl.argnames})
                if inspect.isawaitable(result):
                    await result
        except TimeoutError:
            raise LifecycleError(f"{name} hook of {impl.plugin_name} did not finish within {timeout:g}s") from None
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the caller is being cancelled: not the hook's failure
                raise
            raise LifecycleError(f"{name} hook of {impl.plugin_name} failed: CancelledError") from exc
        except BaseException as exc:  # SystemExit, KeyboardInterrupt... from a plugin must not stop the server
            raise LifecycleError(f"{name} hook of {impl.plugin_name} failed: {type(exc).__name__}: {exc}") from exc


async def run_hook_logged(pm: pluggy.PluginManager, name: str, timeout: float, **kwargs: Any) -> bool:
    """Like run_hook, but log a failure instead of raising it; return whether all succeeded."""
    try:
        await run_hook(pm, name, timeout, **kwargs)
    except LifecycleError as exc:
        log.error("%s", exc)
        return False
    return True


class LifecycleError(Exception):
    """A lifecycle hook failed or ran out of time."""
