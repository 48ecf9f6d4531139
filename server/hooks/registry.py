"""The immutable snapshot of step types and webhook endpoints, built from a plugin manager."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pluggy

from ..config.routing import RouteConflict, Router
from ..errors import RegistrationError
from .contracts import Field, parse_fields

STEP_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class StepType:
    """One registered step type and who provides it."""

    name: str
    fn: Callable[..., Any]
    provider: str
    is_async: bool
    prepare: Callable[[Mapping[str, Any]], Any] | None = None
    routes: Callable[[Mapping[str, Any]], list[str]] | None = None
    timeout: float | None = None
    description: str = ""
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One webhook endpoint registered by a plugin."""

    method: str
    path: str
    handler: Callable[..., Any]
    provider: str


@dataclass(frozen=True)
class Registry:
    """What is in service right now; replaced whole, never mutated."""

    steps: Mapping[str, StepType] = field(default_factory=lambda: MappingProxyType({}))
    endpoints: tuple[Endpoint, ...] = ()
    webhooks: Router[Callable[..., Any]] = field(default_factory=Router)

    def providers(self) -> dict[str, list[str]]:
        """Step type names grouped by provider, for listings and health."""
        grouped: dict[str, list[str]] = {}
        for step in self.steps.values():
            grouped.setdefault(step.provider, []).append(step.name)
        return grouped


class RegistryBuilder:
    """Collects registrations, validating each; `build()` returns the frozen snapshot."""

    def __init__(self, base: Registry | None = None) -> None:
        self.steps: dict[str, StepType] = dict(base.steps) if base else {}
        self.endpoints: list[Endpoint] = list(base.endpoints) if base else []

    def step_registrar(self, provider: str) -> Callable[..., None]:
        """The `register` callback handed to one provider's `register_steps`."""

        def register(
            name: str,
            fn: Callable[..., Any],
            *,
            prepare: Callable[[Mapping[str, Any]], Any] | None = None,
            routes: Callable[[Mapping[str, Any]], list[str]] | None = None,
            timeout: float | None = None,
            description: str = "",
            inputs: Mapping[str, Any] | None = None,
            outputs: Mapping[str, Any] | None = None,
        ) -> None:
            where = f"{provider}: step type {name!r}"
            self.add_step(
                StepType(
                    name,
                    fn,
                    provider,
                    _is_async(fn),
                    prepare,
                    routes,
                    timeout,
                    description or _first_line(getattr(fn, "__doc__", None)),
                    parse_fields(inputs, f"{where}: inputs"),
                    parse_fields(outputs, f"{where}: outputs"),
                )
            )

        return register

    def endpoint_registrar(self, provider: str) -> Callable[..., None]:
        """The `register` callback handed to one provider's `register_webhooks`."""

        def register(method: str, path: str, handler: Callable[..., Any]) -> None:
            self.add_endpoint(Endpoint(method.upper(), path, handler, provider))

        return register

    def add_step(self, step: StepType) -> None:
        """Validate and add one step type."""
        where = f"{step.provider}: step type {step.name!r}"
        if not isinstance(step.name, str) or not STEP_TYPE_NAME.match(step.name):
            raise RegistrationError(f"{where}: names are dotted lower-case words, like 'step.greet'")
        if not callable(step.fn):
            raise RegistrationError(f"{where}: the handler is not callable")
        _check_arity(where, step.fn, 1)
        if step.timeout is not None and step.timeout <= 0:
            raise RegistrationError(f"{where}: timeout must be positive")
        owner = self.steps.get(step.name)
        if owner is not None:
            raise RegistrationError(
                f"{where}: already registered by {owner.provider}",
                type=step.name,
                providers=[owner.provider, step.provider],
            )
        self.steps[step.name] = step

    def add_endpoint(self, endpoint: Endpoint) -> None:
        """Validate and add one webhook endpoint."""
        where = f"{endpoint.provider}: endpoint {endpoint.method} {endpoint.path}"
        if endpoint.method not in HTTP_METHODS:
            raise RegistrationError(f"{where}: unknown HTTP method")
        if not endpoint.path.startswith("/webhooks/"):
            raise RegistrationError(f"{where}: webhook paths start with /webhooks/")
        if not inspect.iscoroutinefunction(endpoint.handler):
            raise RegistrationError(f"{where}: the handler must be an async function")
        for other in self.endpoints:
            if (other.method, other.path) == (endpoint.method, endpoint.path):
                raise RegistrationError(f"{where}: already registered by {other.provider}")
        try:
            _webhook_router([*self.endpoints, endpoint])
        except RouteConflict as exc:
            raise RegistrationError(f"{where}: {exc}") from None
        self.endpoints.append(endpoint)

    def collect(self, pm: pluggy.PluginManager, plugins: Iterable[object] | None = None) -> None:
        """Run the registration hooks of `plugins` (default: every plugin in `pm`)."""
        wanted = None if plugins is None else {id(p) for p in plugins}
        for hook, registrar in (
            (pm.hook.register_steps, self.step_registrar),
            (pm.hook.register_webhooks, self.endpoint_registrar),
        ):
            for impl in hook.get_hookimpls():
                if wanted is None or id(impl.plugin) in wanted:
                    impl.function(register=registrar(impl.plugin_name))

    def build(self) -> Registry:
        """Freeze what was collected."""
        return Registry(MappingProxyType(dict(self.steps)), tuple(self.endpoints), _webhook_router(self.endpoints))


def compose_registry(base: Registry, *parts: tuple[Mapping[str, StepType], Iterable[Endpoint]]) -> Registry:
    """`base` plus already-validated parts (each a component's steps and endpoints), without re-checking."""
    steps = dict(base.steps)
    endpoints = list(base.endpoints)
    for part_steps, part_endpoints in parts:
        steps.update(part_steps)
        endpoints.extend(part_endpoints)
    return Registry(MappingProxyType(steps), tuple(endpoints), _webhook_router(endpoints))


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Collect every registration of every plugin in `pm` into a snapshot."""
    builder = RegistryBuilder()
    builder.collect(pm)
    return builder.build()


def _webhook_router(endpoints: Iterable[Endpoint]) -> Router[Callable[..., Any]]:
    router: Router[Callable[..., Any]] = Router()
    for endpoint in endpoints:
        router.add(endpoint.method, endpoint.path, endpoint.handler)
    return router


def _is_async(fn: Callable[..., Any]) -> bool:
    # An object with an `async def __call__` is an async step too: that method is inspected, not callable(fn).
    method = getattr(type(fn), "__call__", None)  # noqa: B004
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(method)


def _check_arity(where: str, fn: Callable[..., Any], count: int) -> None:
    try:
        inspect.signature(fn).bind(*([None] * count))
    except TypeError:
        raise RegistrationError(f"{where}: the handler must accept exactly one argument (ctx)") from None
    except ValueError:  # builtins without a signature: accept
        pass


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0]
