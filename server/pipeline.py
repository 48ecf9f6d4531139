"""Run one pipeline against a registry snapshot: steps, flow, errors, timeouts and metrics."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import uuid
from concurrent.futures import Executor as ThreadPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping

from . import logs
from .contracts import check_outputs, resolve_inputs
from .errors import PipelineTimeout, StepError, StepTypeUnavailable, WorkflowError
from .metrics import Metrics
from .pipeline_model import END, Pipeline, Step
from .registry import Registry, StepType
from .steps import Response, Services, StepContext, StepResult
from .templates import Scope

if TYPE_CHECKING:
    from .engine import State

log = logging.getLogger("workflow.pipeline")


@dataclass(slots=True)
class StepRecord:
    """How one step went."""

    name: str
    type: str
    status: str
    duration: float
    error: str | None = None


@dataclass(slots=True)
class Outcome:
    """The result of one execution: final data, an optional HTTP response, or the error."""

    execution_id: str
    pipeline: str
    workflow_type: str
    status: str = "success"
    data: dict[str, Any] = field(default_factory=dict)
    response: Response | None = None
    error: WorkflowError | None = None
    steps: list[StepRecord] = field(default_factory=list)
    started_at: str = ""
    duration: float = 0.0

    @property
    def result(self) -> Any:
        """What the caller sees: the response body if a step answered, else the final data."""
        return self.response.body if self.response is not None else self.data


class Executor:
    """Runs pipelines; holds only what every execution shares."""

    def __init__(self, *, state: Callable[[], "State"], services: Callable[[], Services],
                 metrics: Metrics, step_timeout: float, thread_pool: ThreadPool | None = None,
                 max_depth: int = 8) -> None:
        self._state = state
        self._services = services
        self.metrics = metrics
        self.step_timeout = step_timeout
        self.thread_pool = thread_pool
        self.max_depth = max_depth

    async def run(self, pipeline: Pipeline, payload: Mapping[str, Any], *, execution_id: str | None = None,
                  workflow_type: str | None = None, depth: int = 0, state: "State | None" = None) -> Outcome:
        """Execute `pipeline` on `payload`; never raises for step failures (see Outcome.error).

        `state` is the snapshot the pipeline was found in (default: the one in service now); the
        execution keeps it to its end, so a reload never changes a running execution.
        """
        state = state or self._state()
        outcome = Outcome(execution_id or str(uuid.uuid4()), pipeline.name,
                          workflow_type or pipeline.trigger.workflow_type, data=dict(payload))
        outcome.started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        token = logs.execution_id.set(outcome.execution_id)
        active = self.metrics.child(self.metrics.active, outcome.workflow_type)
        active.inc()
        state.lease.acquire()
        start = time.perf_counter()
        try:
            await self._run_guarded(pipeline, payload, outcome, state.registry, depth)
        except asyncio.CancelledError:
            outcome.status = "error"
            raise
        finally:
            state.lease.release()
            active.dec()
            outcome.duration = time.perf_counter() - start
            self.metrics.observe_execution(outcome.workflow_type, pipeline.name, outcome.status, outcome.duration)
            logs.execution_id.reset(token)
        return outcome

    async def _run_guarded(self, pipeline: Pipeline, payload: Mapping[str, Any], outcome: Outcome,
                           registry: Registry, depth: int) -> None:
        run = _Run(self, pipeline, payload, outcome, registry, depth)
        try:
            async with run.deadline:
                await run.steps(pipeline.steps, 0 if pipeline.steps else END, pipeline.on_error)
        except WorkflowError as exc:
            outcome.error = exc
        except TimeoutError:
            outcome.error = PipelineTimeout(
                f"pipeline {pipeline.name!r} timed out after {pipeline.timeout:g}s",
                execution_id=outcome.execution_id)
        if outcome.error is not None:
            outcome.status = "timeout" if isinstance(outcome.error, PipelineTimeout) else "error"
            outcome.error.details.setdefault("execution_id", outcome.execution_id)
            if pipeline.on_error == "compensate" and pipeline.compensation:
                await run.compensate()
            log.warning("pipeline %s failed: %s", pipeline.name, outcome.error.message,
                        extra={"pipeline": pipeline.name, "status": outcome.status,
                               "step": outcome.error.details.get("step")})


class _Run:
    """The mutable state of one execution."""

    def __init__(self, executor: Executor, pipeline: Pipeline, payload: Mapping[str, Any],
                 outcome: Outcome, registry: Registry, depth: int) -> None:
        self.executor, self.pipeline, self.outcome, self.registry = executor, pipeline, outcome, registry
        self.depth = depth
        self.trigger = payload
        self.outputs: dict[str, Any] = {}
        self.meta = {"pipeline": pipeline.name, "execution_id": outcome.execution_id,
                     "started_at": outcome.started_at}
        self.scope = Scope(outcome.data, self.outputs, payload, self.meta)
        self.logger = logging.LoggerAdapter(logging.getLogger(f"workflow.step"),
                                            {"pipeline": pipeline.name})
        self.services = executor._services()
        self.deadline = asyncio.timeout(pipeline.timeout)

    async def steps(self, steps: tuple[Step, ...], index: int, on_error: str) -> None:
        """Walk the flow from `index`, applying the pipeline's on_error policy."""
        budget = 100 * len(steps) + 100  # a `next:` loop must not spin until the timeout
        while index != END:
            budget -= 1
            if budget < 0:
                raise StepError(f"pipeline {self.pipeline.name!r} ran more than {100 * len(steps) + 100} "
                                "steps: a `next:` loop?")
            step = steps[index]
            try:
                result = await self.step(step)
            except StepTypeUnavailable:
                raise
            except WorkflowError:
                if on_error != "skip":
                    raise
                index = self.pipeline.flow[index]  # a skipped router goes to its join (plan_flow)
                continue
            if result.response is not None:
                self.outcome.response = result.response
                return
            if result.goto is not None:
                if result.goto not in self.pipeline.index:
                    raise StepError(f"step {step.name!r} jumped to unknown step {result.goto!r}",
                                    step=step.name)
                index = self.pipeline.index[result.goto]
            else:
                index = self.pipeline.flow[index]

    async def step(self, step: Step) -> StepResult:
        """Run one step under its timeout, merge its output and record how it went."""
        step_type = self.registry.steps.get(step.type)
        if step_type is None:
            raise StepTypeUnavailable(f"step type {step.type!r} is not available", step=step.name,
                                      type=step.type)
        timeout = step.timeout or step_type.timeout or self.executor.step_timeout
        start = time.perf_counter()
        status, error = "success", None
        try:
            ctx = self.context(step, step_type)
            async with asyncio.timeout(timeout):
                raw = await self.call(step_type, ctx)
            result = _as_result(raw, step)
            if step_type.outputs:
                check_outputs(step_type.outputs, result.output, step.name)
        except TimeoutError:
            status, error = "timeout", f"step {step.name!r} timed out after {timeout:g}s"
            raise PipelineTimeout(error, step=step.name) from None
        except WorkflowError as exc:
            status, error = "error", exc.message
            exc.details.setdefault("step", step.name)
            raise
        except asyncio.CancelledError:  # the pipeline timed out, the client left, or shutdown
            status, error = "cancelled", "cancelled"
            raise
        except Exception as exc:
            status, error = "error", f"{type(exc).__name__}: {exc}"
            self.logger.logger.exception("step %s (%s) raised", step.name, step.type,
                                         extra={"pipeline": self.pipeline.name, "step": step.name})
            raise StepError(f"step {step.name!r} ({step.type}) failed: {type(exc).__name__}",
                            step=step.name) from None
        finally:
            self.outcome.steps.append(StepRecord(step.name, step.type, status, time.perf_counter() - start, error))
            # The metric's statuses are fixed (success, error, timeout): a step cut short by the
            # pipeline's deadline timed out; one cancelled by a disconnect or shutdown failed.
            if status == "cancelled":
                status = "timeout" if self.deadline.expired() else "error"
            self.executor.metrics.observe_step(step.type, status)
        output = result.output
        self.outputs[step.name] = output if output is not None else {}
        if output:
            self.outcome.data.update(output)
        return result

    def context(self, step: Step, step_type: StepType) -> StepContext:
        """The read-only view handed to the step function; declared inputs are checked here."""
        config = step.renderer.render(self.scope)
        data = self.outcome.data
        inputs = resolve_inputs(step_type.inputs, config, data, step.name) if step_type.inputs else {}
        # A LoggerAdapter replaces any `extra=` of the call (before 3.13), so the step is in its own.
        logger = logging.LoggerAdapter(self.logger.logger, {**self.logger.extra, "step": step.name})
        return StepContext(self.outcome.data, config, step.name, step.type, self.pipeline.name,
                           self.outcome.execution_id, self.trigger, self.outputs, self.meta,
                           logger, self.services, step.prepared, self.depth, inputs)

    async def call(self, step_type: StepType, ctx: StepContext) -> Any:
        """Await an async step; run a plain one in the bounded thread pool."""
        if step_type.is_async:
            return await step_type.fn(ctx)
        loop = asyncio.get_running_loop()
        # Copy the context so the step's log lines keep the request and execution ids.
        call = functools.partial(contextvars.copy_context().run, step_type.fn, ctx)
        return await loop.run_in_executor(self.executor.thread_pool, call)

    async def compensate(self) -> None:
        """Run the compensation steps in reverse order; their failures are logged, not raised."""
        for step in reversed(self.pipeline.compensation):
            try:
                async with asyncio.timeout(self.pipeline.timeout):
                    await self.step(step)
            except (WorkflowError, TimeoutError) as exc:
                log.error("compensation step %s failed: %s", step.name, getattr(exc, "message", exc),
                          extra={"pipeline": self.pipeline.name, "step": step.name})


def _as_result(raw: Any, step: Step) -> StepResult:
    if raw is None:
        return _EMPTY
    if isinstance(raw, StepResult):
        return raw
    if isinstance(raw, Mapping):
        return StepResult(output=raw)
    raise StepError(f"step {step.name!r} ({step.type}) returned {type(raw).__name__}; "
                    "a step returns a dict, None or a StepResult", step=step.name)


_EMPTY = StepResult()
