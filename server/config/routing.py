"""Match a method and path against HTTP triggers, without aiohttp's frozen router."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Generic, TypeVar

from ..errors import MethodNotAllowed, NotFound, clip

T = TypeVar("T")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RouteConflict(ValueError):
    """Two triggers claim the same method and path, or a path cannot be routed."""


class Router(Generic[T]):
    """Static paths by dict lookup, templated paths (`/orders/{id}`) by regex, in config order."""

    def __init__(self) -> None:
        self._static: dict[str, dict[str, tuple[str, T]]] = {}
        self._dynamic: list[tuple[re.Pattern[str], str, dict[str, tuple[str, T]]]] = []
        self._shapes: dict[tuple[str, str], str] = {}

    def add(self, method: str, template: str, target: T) -> None:
        """Route `method template` to `target`; raise RouteConflict if that route is taken."""
        shape = _PARAM.sub("{}", template)
        names = _names(template)
        if len(set(names)) != len(names):
            raise RouteConflict(f"{method} {template} names a path parameter twice")
        if (method, shape) in self._shapes:
            raise RouteConflict(f"{method} {template} is already the trigger of {self._shapes[(method, shape)]}")
        self._shapes[(method, shape)] = getattr(target, "name", template)
        if "{" not in template:
            self._static.setdefault(template, {})[method] = (template, target)
            return
        for _pattern, existing, methods in self._dynamic:
            if _PARAM.sub("{}", existing) == shape:
                methods[method] = (template, target)
                return
        self._dynamic.append((_compile(template), template, {method: (template, target)}))

    def match(self, method: str, path: str) -> tuple[T, str, dict[str, str]]:
        """Return (target, route template, path parameters) or raise NotFound / MethodNotAllowed."""
        allowed: list[str] = []
        route = ""
        methods = self._static.get(path)
        if methods is not None:
            hit = methods.get(method)
            if hit is not None:
                return hit[1], hit[0], {}
            allowed.extend(methods)
            route = route or path
        for pattern, template, methods in self._dynamic:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            hit = methods.get(method)
            if hit is not None:
                # Methods sharing a shape may name their parameters differently (/a/{id}, /a/{x}).
                return hit[1], hit[0], dict(zip(_names(hit[0]), found.groups(), strict=True))
            allowed.extend(methods)
            route = route or template
        if allowed:
            raise MethodNotAllowed(
                f"method {clip(method)} is not allowed for {clip(path)}", sorted(set(allowed)), route=route
            )
        raise NotFound(f"no pipeline is triggered by {clip(path)}", path=clip(path))

    def routes(self) -> list[tuple[str, str, Any]]:
        """Every (method, template, target), for listings and the OpenAPI document."""
        out = [(m, t, tgt) for methods in self._static.values() for m, (t, tgt) in methods.items()]
        out += [(m, t, tgt) for _, _, methods in self._dynamic for m, (t, tgt) in methods.items()]
        return out


@lru_cache(maxsize=1024)
def _names(template: str) -> tuple[str, ...]:
    return tuple(_PARAM.findall(template))


def _compile(template: str) -> re.Pattern[str]:
    parts, pos = [], 0
    for match in _PARAM.finditer(template):
        parts.append(re.escape(template[pos : match.start()]))
        parts.append(f"(?P<{match.group(1)}>[^/]+)")
        pos = match.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts))
