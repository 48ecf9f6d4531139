"""Admin API reads: the pipelines in service (graph and recent figures), and the query arguments all share."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ..config.model import Pipeline
from ..errors import BadRequest, clip
from ..http.middleware import json_response
from ..keys import ENGINE, STORE

_SPACED_OFFSET = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")
# How many recent executions of each pipeline its success rate and p95 duration are computed from.
RECENT = 200


async def list_pipelines(request: web.Request) -> web.Response:
    """`GET /api/pipelines`: each pipeline's trigger and steps, and whether each step type is available now."""
    state = request.app[ENGINE].state
    pipelines = []
    for pipeline in state.config.pipelines.values():
        flow = _flow(pipeline)
        steps = []
        for step in (*pipeline.steps, *pipeline.compensation):
            provider = state.registry.steps.get(step.type)
            steps.append(
                {
                    "name": step.name,
                    "type": step.type,
                    "available": provider is not None,
                    "provider": provider.provider if provider else None,
                    "compensation": step in pipeline.compensation,
                    "next": flow.get(step.name, []),
                }
            )
        trigger = pipeline.trigger
        pipelines.append(
            {
                "name": pipeline.name,
                "trigger": {"type": trigger.type, "config": dict(trigger.config)},
                "on_error": pipeline.on_error,
                "timeout_seconds": pipeline.timeout,
                "available": all(s["available"] for s in steps),
                "steps": steps,
                "recent": await _recent(request, pipeline.name),
            }
        )
    return json_response({"pipelines": pipelines, "source": state.config.source})


def time_of(query: Any, key: str) -> datetime | None:
    """The ISO 8601 time in query argument `key` (UTC when it names no zone), or None when absent."""
    raw = query.get(key)
    if not raw:
        return None
    # An unencoded `+01:00` offset arrives as ` 01:00` (a query string's `+` is a space): put it back.
    raw = _SPACED_OFFSET.sub(r"\1+\2", raw.strip())
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        # In UTC here: a time at the calendar's edge whose offset moves it past year 1 or 9999 is refused now,
        # not by the store's conversion (0001-01-01T00:00:00+01:00 overflows).
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise BadRequest(f"{key} must be an ISO 8601 time, like 2026-11-25T19:00:00Z", field=key) from None


def refuse_nul(query: Mapping[str, str]) -> None:
    """400 for a query argument holding a NUL character: PostgreSQL cannot take one in a text value."""
    for name, value in query.items():
        if "\x00" in value:
            raise BadRequest(f"{clip(name)!r} holds a NUL character", field=clip(name))


def limit_of(query: Any) -> int:
    """The `limit` query argument, 1 to 1000 (50 when absent)."""
    number = whole_number(query.get("limit", "50"))
    if number is None or not 1 <= number <= 1000:
        raise BadRequest("limit must be a whole number from 1 to 1000", field="limit")
    return number


def whole_number(raw: str) -> int | None:
    """`raw` as a whole number when it is ASCII digits, else None (`"²".isdigit()` holds, yet `int("²")` fails)."""
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _flow(pipeline: Pipeline) -> dict[str, list[str]]:
    """Where each step goes next: its routes (a conditional's targets), else the step after it (`end` at the end)."""
    names = [step.name for step in pipeline.steps]
    flow: dict[str, list[str]] = {}
    for index, step in enumerate(pipeline.steps):
        if step.targets:
            flow[step.name] = list(dict.fromkeys(step.targets))
        else:
            following = pipeline.flow[index] if index < len(pipeline.flow) else -1
            flow[step.name] = [names[following] if 0 <= following < len(names) else "end"]
    return flow


async def _recent(request: web.Request, name: str) -> dict[str, Any]:
    """The last RECENT recorded executions of a pipeline: how many, the share that succeeded, the p95 duration."""
    try:
        rows, _ = await request.app[STORE].list_executions(pipeline=name, limit=RECENT)
    except Exception:  # the store is away: the graph still shows, without its figures
        return {"count": 0, "success_rate": None, "p95_ms": None}
    if not rows:
        return {"count": 0, "success_rate": None, "p95_ms": None}
    durations = sorted(row.duration_ms for row in rows)
    p95 = durations[min(len(durations) - 1, math.ceil(0.95 * len(durations)) - 1)]
    succeeded = sum(1 for row in rows if row.status == "success")
    return {"count": len(rows), "success_rate": round(succeeded / len(rows), 4), "p95_ms": round(p95, 3)}
