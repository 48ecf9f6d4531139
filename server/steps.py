"""What a step receives and may return: the types a plugin author works with."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

if TYPE_CHECKING:
    import aiohttp


@dataclass(frozen=True, slots=True)
class Services:
    """Shared services a step may use; owned and closed by the server."""

    http: "aiohttp.ClientSession"
    publish: Callable[[str, Mapping[str, Any]], Awaitable[int]]
    run_pipeline: Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class StepContext:
    """One step's view of a running pipeline.

    `data` is the current pipeline data and `config` the step's rendered config; `prepared`
    is whatever the step type's `prepare` function returned when the config was loaded;
    `inputs` holds the declared inputs, checked and with their defaults applied.
    """

    data: Mapping[str, Any]
    config: Mapping[str, Any]
    step: str
    type: str
    pipeline: str
    execution_id: str
    trigger: Mapping[str, Any]
    steps: Mapping[str, Any]
    meta: Mapping[str, Any]
    logger: logging.LoggerAdapter
    services: Services
    prepared: Any = None
    depth: int = 0
    inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP answer chosen by a step; the pipeline stops once a step returns one."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepResult:
    """A step's return value when it does more than output data.

    `output` is merged into the pipeline data, `goto` names the step to run next and
    `response` ends the pipeline with that HTTP answer.
    """

    output: Mapping[str, Any] | None = None
    goto: str | None = None
    response: Response | None = None
