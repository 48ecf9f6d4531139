"""Run one pipeline against a registry snapshot: steps, flow, errors, timeouts and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor as ThreadPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import logs
from ..config.model import END, Pipeline, Step
from ..config.templates import Scope
from ..errors import PipelineTimeout, StepError, StepTypeUnavailable, WorkflowError
from ..hooks.contracts import check_outputs, resolve_inputs
from ..hooks.registry import Registry, StepType
from ..metrics.catalog import Metrics
from .context import Response, Services, StepContext, StepResult
from .deadlines import Deadlines
from .ids import new_execution_id

if TYPE_CHECKING:
    from .state import State

log = logging.getLogger("workflow.pipeline")
_HELD = contextlib.nullcontext()  # the caller passed its state and holds the lease on it
step_log = logging.getLogger("workflow.step")


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
    # For the recorded detail (store/detail.py): the trigger payload, each step's output, and the execution this
    # one re-runs (the admin API's re-run).
    trigger: Mapping[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    rerun_of: str | None = None

    @property
    def result(self) -> Any:
        """What the caller sees: the response body if a step answered, else the final data."""
        return self.response.body if self.response is not None else self.data


class Executor:
    """Runs pipelines; holds only what every execution shares."""

    def __init__(
        self,
        *,
        state: Callable[[], State],
        services: Callable[[], Services | None],
        metrics: Metrics,
        step_timeout: float,
        thread_pool: ThreadPool | None = None,
        max_depth: int = 8,
        finished: Callable[[Outcome], None] | None = None,
    ) -> None:
        self._state = state
        self._finished = finished
        self._services = services
        self.metrics = metrics
        self.step_timeout = step_timeout
        self.thread_pool = thread_pool
        self.max_depth = max_depth
        self.deadlines = Deadlines()

    async def run(
        self,
        pipeline: Pipeline,
        payload: Mapping[str, Any],
        *,
        execution_id: str | None = None,
        workflow_type: str | None = None,
        depth: int = 0,
        state: State | None = None,
        rerun_of: str | None = None,
    ) -> Outcome:
        """Execute `pipeline` on `payload`; never raises for step failures (see Outcome.error).

        `state` is the snapshot the pipeline was found in, and a caller passing it holds a lease on
        it; by default the run leases the state in service now. The execution keeps its state to
        the end, so a reload never changes a running execution.
        """
        own_lease = state is None
        if state is None:
            state = self._state()
        outcome = Outcome(
            execution_id or new_execution_id(),
            pipeline.name,
            workflow_type or pipeline.trigger.workflow_type,
            "success",
            dict(payload),
            None,
            None,
            [],
            _utc_now(),
            rerun_of=rerun_of,
        )
        token = logs.execution_id.set(outcome.execution_id)
        active = self.metrics.active_cell(outcome.workflow_type)
        active.value += 1.0
        start = time.perf_counter()
        try:
            with state.lease if own_lease else _HELD:
                await _Run(self, pipeline, payload, outcome, state.registry, depth).execute()
        except asyncio.CancelledError:
            outcome.status = "error"
            raise
        finally:
            active.value -= 1.0
            outcome.duration = time.perf_counter() - start
            self.metrics.observe_execution(outcome.workflow_type, pipeline.name, outcome.status, outcome.duration)
            logs.execution_id.reset(token)
            if self._finished is not None:
                self._finished(outcome)
        return outcome


class _Run:
    """The mutable state of one execution."""

    __slots__ = (
        "executor",
        "pipeline",
        "outcome",
        "registry",
        "depth",
        "trigger",
        "outputs",
        "meta",
        "scope",
        "services",
        "task",
        "loop",
        "deadline",
        "expired",
    )

    def __init__(
        self,
        executor: Executor,
        pipeline: Pipeline,
        payload: Mapping[str, Any],
        outcome: Outcome,
        registry: Registry,
        depth: int,
    ) -> None:
        self.executor, self.pipeline, self.outcome, self.registry = executor, pipeline, outcome, registry
        self.depth = depth
        self.trigger = payload
        self.outputs: dict[str, Any] = {}
        outcome.trigger, outcome.outputs = payload, self.outputs
        self.meta = {"pipeline": pipeline.name, "execution_id": outcome.execution_id, "started_at": outcome.started_at}
        self.scope = Scope(outcome.data, self.outputs, payload, self.meta)
        self.services = executor._services()
        # One lookup of the running task gives the loop too (each lookup checks the pid: a system call).
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a pipeline runs in an asyncio task")
        self.task = task
        self.loop = self.task.get_loop()
        self.deadline = self.loop.time() + pipeline.timeout
        self.expired = False

    async def execute(self) -> None:
        """Walk the steps under the pipeline's deadline; failures end up in the outcome."""
        pipeline, outcome, task = self.pipeline, self.outcome, self.task
        # A shared deadline timer instead of asyncio.timeout(): the same cancel-then-uncancel
        # protocol, at a fraction of the cost on the hot path.
        deadlines = self.executor.deadlines
        timer = deadlines.add(self.loop, self.deadline, self)
        try:
            await self.walk(pipeline.steps, 0 if pipeline.steps else END, pipeline.on_error)
        except asyncio.CancelledError:
            if not self.expired or task.uncancel() > 0:
                raise
            outcome.error = PipelineTimeout(f"pipeline {pipeline.name!r} timed out after {pipeline.timeout:g}s")
        except WorkflowError as exc:
            # Outcomes outlive the request (execution history): drop the frames, which would keep
            # a replaced component's module alive through its globals.
            exc.__traceback__ = exc.__context__ = exc.__cause__ = None
            outcome.error = exc
        finally:
            deadlines.discard(self, timer)
        if outcome.error is None:
            return
        outcome.status = "timeout" if isinstance(outcome.error, PipelineTimeout) else "error"
        outcome.error.details.setdefault("execution_id", outcome.execution_id)
        if pipeline.on_error == "compensate" and pipeline.compensation:
            await self.compensate()
        log.warning(
            "pipeline %s failed: %s",
            pipeline.name,
            outcome.error.message,
            extra={"pipeline": pipeline.name, "status": outcome.status, "step": outcome.error.details.get("step")},
        )

    def expire(self) -> None:
        """The pipeline's deadline passed: cancel the execution (execute() turns that into a timeout)."""
        self.expired = True
        self.task.cancel()

    async def walk(self, steps: tuple[Step, ...], index: int, on_error: str) -> None:
        """Follow the flow from `index`, applying the pipeline's on_error policy."""
        limit = 100 * len(steps) + 100  # a `next:` loop must not spin until the timeout
        flow, names = self.pipeline.flow, self.pipeline.index
        while index != END:
            limit -= 1
            if limit < 0:
                raise StepError(
                    f"pipeline {self.pipeline.name!r} ran more than {100 * len(steps) + 100} steps: a `next:` loop?"
                )
            step = steps[index]
            try:
                result = await self.step(step)
            except StepTypeUnavailable:
                raise
            except WorkflowError:
                if on_error != "skip":
                    raise
                index = flow[index]  # a skipped router goes to its join (plan_flow)
                continue
            if result is None:  # plain output (or none): fall through
                index = flow[index]
                continue
            if result.response is not None:
                self.outcome.response = result.response
                return
            if result.goto is None:
                index = flow[index]
            elif result.goto in names:
                index = names[result.goto]
            else:
                raise StepError(f"step {step.name!r} jumped to unknown step {result.goto!r}", step=step.name)

    async def step(self, step: Step) -> StepResult | None:
        """Run one step under its time limit, merge its output and record how it went.

        Returns the step's StepResult when it returned one (to answer or jump), else None.
        """
        step_type = self.registry.steps.get(step.type)
        if step_type is None:
            raise StepTypeUnavailable(f"step type {step.type!r} is not available", step=step.name, type=step.type)
        limit = step.timeout or step_type.timeout or self.executor.step_timeout
        # A step's own timer is needed only when it is tighter than the pipeline's deadline;
        # otherwise the deadline already bounds it, and a timer per step is the executor's
        # largest fixed cost.
        own_timer = limit < self.pipeline.timeout and self.loop.time() + limit < self.deadline
        start = time.perf_counter()
        status, error = "success", None
        try:
            # The read-only view handed to the step function; declared inputs are checked here.
            config = step.renderer.render(self.scope)
            data = self.outcome.data
            inputs = resolve_inputs(step_type.inputs, config, data, step.name) if step_type.inputs else None
            ctx = StepContext(
                data,
                config,
                step.name,
                step.type,
                self.pipeline.name,
                self.outcome.execution_id,
                self.trigger,
                self.outputs,
                self.meta,
                self.services,
                step.prepared,
                self.depth,
                inputs,
            )
            if own_timer:
                async with asyncio.timeout(limit):
                    raw = await self.call(step_type, ctx)
            elif step_type.is_async:
                raw = await step_type.fn(ctx)
            else:
                raw = await self.call(step_type, ctx)
            output: Mapping[str, Any] | None
            if raw is None or type(raw) is dict:  # most steps: no call to take a StepResult apart
                output, result = raw, None
            else:
                output, result = _split(raw, step)
            if step_type.outputs:
                check_outputs(step_type.outputs, output, step.name)
        except TimeoutError:
            if not own_timer:  # the step raised it itself, e.g. from its own client
                status, error = "error", "TimeoutError"
                raise StepError(
                    f"step {step.name!r} ({step.type}) failed: TimeoutError", status=504, step=step.name
                ) from None
            status, error = "timeout", f"step {step.name!r} timed out after {limit:g}s"
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
            step_log.exception(
                "step %s (%s) raised", step.name, step.type, extra={"pipeline": self.pipeline.name, "step": step.name}
            )
            raise StepError(f"step {step.name!r} ({step.type}) failed: {type(exc).__name__}", step=step.name) from None
        finally:
            self.outcome.steps.append(StepRecord(step.name, step.type, status, time.perf_counter() - start, error))
            # The metric's statuses are fixed (success, error, timeout): a step cut short by the
            # pipeline's deadline timed out; one cancelled by a disconnect or shutdown failed.
            if status == "cancelled":
                status = "timeout" if self.expired else "error"
            self.executor.metrics.step_cells(step.type)[status].value += 1.0
        self.outputs[step.name] = output if output is not None else {}
        if output:
            self.outcome.data.update(output)
        return result

    def call(self, step_type: StepType, ctx: StepContext) -> Awaitable[Any]:
        """The step's awaitable: its coroutine, or a plain function running in the bounded thread pool."""
        if step_type.is_async:
            coroutine: Awaitable[Any] = step_type.fn(ctx)
            return coroutine
        # Copy the context so the step's log lines keep the request and execution ids.
        call = functools.partial(contextvars.copy_context().run, step_type.fn, ctx)
        return self.loop.run_in_executor(self.executor.thread_pool, call)

    async def compensate(self) -> None:
        """Run the compensation steps in reverse order; their failures are logged, not raised."""
        for step in reversed(self.pipeline.compensation):
            try:
                async with asyncio.timeout(self.pipeline.timeout):
                    await self.step(step)
            except (WorkflowError, TimeoutError) as exc:
                log.error(
                    "compensation step %s failed: %s",
                    step.name,
                    getattr(exc, "message", exc),
                    extra={"pipeline": self.pipeline.name, "step": step.name},
                )


def _utc_now() -> str:
    """Now in UTC as RFC 3339 with microseconds, e.g. 2026-11-25T19:19:31.123456Z (the store's own format)."""
    now = time.time()
    second = int(now)
    if second != _second_text[0]:  # formatting the date costs more than the rest of this function
        _second_text[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second_text[1]}.{int((now - second) * 1_000_000):06d}Z"


_second_text: list[Any] = [None, ""]


def _split(raw: Any, step: Step) -> tuple[Mapping[str, Any] | None, StepResult | None]:
    """A step's return value other than None or a dict, as (output, the StepResult if it returned one)."""
    if isinstance(raw, StepResult):
        return raw.output, raw
    if isinstance(raw, Mapping):
        return raw, None
    raise StepError(
        f"step {step.name!r} ({step.type}) returned {type(raw).__name__}; a step returns a dict, None or a StepResult",
        step=step.name,
    )
