"""What a step receives and may return: the types a plugin author works with."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

    from ..databases import Databases
    from .chat import ChatService

_NO_INPUTS: Mapping[str, Any] = MappingProxyType({})  # shared by the steps that declare no inputs


@dataclass(frozen=True, slots=True)
class Services:
    """Shared services a step may use; owned and closed by the server."""

    http: aiohttp.ClientSession
    publish: Callable[[str, Mapping[str, Any]], Awaitable[int]]
    run_pipeline: Callable[..., Awaitable[Any]]
    # `await databases.get(spec)`: the server's own database (spec None) or one the config names.
    databases: Databases | None = None
    # The chat platforms' seam (server/engine/chat.py): their config, accept with de-duplication, reply functions.
    chat: ChatService | None = None


class StepContext:
    """One step's view of a running pipeline (read-only by convention).

    `data` is the current pipeline data and `config` the step's rendered config; `prepared`
    is whatever the step type's `prepare` function returned when the config was loaded;
    `inputs` holds the declared inputs, checked and with their defaults applied; `logger`
    carries the pipeline and step names (and, through the context, the request and
    execution ids).
    """

    # A plain slotted class: one is built per step on the hot path, and most steps never log.
    __slots__ = (
        "data",
        "config",
        "step",
        "type",
        "pipeline",
        "execution_id",
        "trigger",
        "steps",
        "meta",
        "services",
        "prepared",
        "depth",
        "inputs",
        "_logger",
    )

    def __init__(
        self,
        data: Mapping[str, Any],
        config: Mapping[str, Any],
        step: str,
        type: str,
        pipeline: str,
        execution_id: str,
        trigger: Mapping[str, Any],
        steps: Mapping[str, Any],
        meta: Mapping[str, Any],
        services: Services | None,
        prepared: Any = None,
        depth: int = 0,
        inputs: Mapping[str, Any] | None = None,
    ) -> None:
        self.data, self.config, self.step, self.type = data, config, step, type
        self.pipeline, self.execution_id, self.trigger, self.steps = pipeline, execution_id, trigger, steps
        self.meta, self.services, self.prepared, self.depth = meta, services, prepared, depth
        self.inputs = inputs if inputs is not None else _NO_INPUTS
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose lines name the pipeline and the step."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                logging.getLogger("workflow.step"), {"pipeline": self.pipeline, "step": self.step}
            )
        return self._logger

    def __repr__(self) -> str:
        return f"StepContext(pipeline={self.pipeline!r}, step={self.step!r}, type={self.type!r})"


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
