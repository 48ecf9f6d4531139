"""The hooks a plugin or component implements: each docstring is the contract."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pluggy

PROJECT = "workflow"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# A `register` callback: register(name, handler, **options).
Register = Callable[..., None]


# --------------------------------------------------------------------------- registration


@hookspec
def register_steps(register: Register) -> None:
    """Register step types.

    Called once for each built-in plugin and entry-point plugin at start-up, and each time
    a component file is loaded.

    :param register: call ``register(type_name, fn, **options)`` once per step type.
        ``type_name`` is a dotted lower-case name such as ``"step.greet"``. ``fn`` takes one
        :class:`server.StepContext` and returns a dict (merged into the pipeline data),
        ``None`` or a :class:`server.StepResult`; ``async def`` functions run on the event
        loop, plain ``def`` functions in a worker thread. Options:
        ``prepare(config) -> Any`` runs once when a pipeline using the type is loaded, may
        raise ``ValueError`` to reject the step's config, and its result reaches the step as
        ``ctx.prepared``; ``routes(config) -> list[str]`` names the steps the type may jump
        to (so the loader can check them and plan the join); ``timeout`` (seconds) is the
        default time limit of the type; ``description`` is shown in listings.
    :return: nothing; what is registered is validated by the server, which raises
        :class:`server.RegistrationError` naming both providers when a type is taken.
    """


@hookspec
def register_webhooks(register: Register) -> None:
    """Register HTTP endpoints under ``/webhooks/`` on the main listener.

    Called at the same moments as :func:`register_steps`.

    :param register: call ``register(method, path, handler)``; ``path`` starts with
        ``/webhooks/`` and may hold ``{name}`` segments; ``handler`` is an aiohttp handler
        ``async def handler(request) -> web.StreamResponse``. Endpoints are dispatched
        through the server's swappable registry, never aiohttp's frozen router.
    :return: nothing.
    """


# --------------------------------------------------------------------------- lifecycle


@hookspec
def startup(services: Any, logger: logging.Logger) -> Awaitable[None] | None:
    """Start what the plugin needs before it serves.

    Called once per plugin when it goes into service: for built-in and entry-point plugins
    when the server starts; for a component, each time a new version has loaded and
    registered cleanly, before it is swapped in. May be ``async``; it runs under the
    server's lifecycle timeout, and for a component a failure or a timeout refuses the new
    version (the old one keeps serving).

    :param services: a :class:`server.Services` with the shared ``http`` client session,
        ``publish(topic, payload)`` on the event bus, ``run_pipeline(name, payload)``, the
        step ``databases`` and ``chat``, the chat platforms' service (``register_replier`` for
        ``step.chat_reply``; see ``server/engine/chat.py``).
    :param logger: a logger named after the plugin or component.
    :return: nothing, or an awaitable the server awaits.
    """


@hookspec
def shutdown(logger: logging.Logger) -> Awaitable[None] | None:
    """Release what :func:`startup` acquired.

    Called once per plugin when it leaves service: for built-in and entry-point plugins when
    the server stops; for a component's old version after the executions still using it
    have drained (or the drain wait ran out), and when its file is deleted. May be
    ``async``; bounded by the lifecycle timeout; errors are logged, never raised.

    :param logger: the same logger :func:`startup` received.
    :return: nothing, or an awaitable the server awaits.
    """
