"""The engine: runs and submits pipelines against the state in service, which it swaps as one reference."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

from ..config.loader import AppConfig
from ..config.model import Pipeline
from ..errors import QueueUnavailable, StepError, WorkflowError
from ..hooks.registry import Registry
from ..metrics.catalog import Metrics
from ..settings import Settings
from .chat import ChatMessage, ChatService, matching_pipelines
from .context import Services
from .executions import ExecutionLog
from .executor import Executor, Outcome
from .ids import new_execution_id
from .state import State

if TYPE_CHECKING:
    from ..store.recorder import Recorder

log = logging.getLogger("workflow.engine")


class JobQueue(Protocol):
    """Where `submit` stores executions for later (server/queue's workers); the engine never imports it."""

    async def put(
        self,
        execution_id: str,
        pipeline: str,
        workflow_type: str,
        payload: dict[str, Any],
        dedupe_key: str | None,
        dedupe_ttl: float,
    ) -> bool:
        """Store the job durably; False when `dedupe_key` was seen within `dedupe_ttl` seconds."""
        ...


class Engine:
    """Owns what every request shares. `state` is replaced whole, never mutated."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        plugin_manager: pluggy.PluginManager,
        registry: Registry,
        config: AppConfig,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.plugin_manager = plugin_manager
        self.built_in = registry
        self.state = State(registry, config)
        # Replaced states still running executions; weak, so a drained one (and the component
        # versions only it holds) is garbage as soon as its last execution lets go.
        self._retired: weakref.WeakSet[State] = weakref.WeakSet()
        self.ready = False
        self.draining = False
        self.executions = ExecutionLog(settings.execution_history)
        self.queue: JobQueue | None = None  # given by use_queue() once the store is open
        self.thread_pool = ThreadPoolExecutor(max_workers=settings.step_threads, thread_name_prefix="workflow-step")
        self.chat = ChatService(self)  # what the chat platforms' endpoints use (services.chat for steps)
        self.services: Services | None = None  # given by start(), once the HTTP client and databases are open
        self.recorder: Recorder | None = None
        self.executor = Executor(
            state=lambda: self.state,
            services=lambda: self.services,
            metrics=metrics,
            step_timeout=settings.step_timeout,
            thread_pool=self.thread_pool,
            finished=self._record,
        )

    def _record(self, outcome: Outcome) -> None:
        """Hand a finished execution to the write-behind recorder, which keeps a compact row and writes it later."""
        if self.recorder is not None:
            self.recorder.add(outcome)

    @property
    def registry(self) -> Registry:
        """The registry in service now."""
        return self.state.registry

    @property
    def config(self) -> AppConfig:
        """The config in service now."""
        return self.state.config

    def use(self, services: Services, recorder: Recorder | None) -> None:
        """What executions need once open: steps get `services`, finished ones go to `recorder` (None: unrecorded)."""
        self.services, self.recorder = services, recorder

    def use_queue(self, queue: JobQueue | None) -> None:
        """Where `submit` stores executions (None: submitting answers 503)."""
        self.queue = queue

    async def stop(self) -> None:
        """Stop taking work and stop recording (the queue's workers have drained before)."""
        self.ready, self.draining = False, True
        self.recorder = None
        self.thread_pool.shutdown(wait=False, cancel_futures=True)

    def swap(self, state: State) -> list[State]:
        """Put `state` in service in one assignment; return the retired states still running executions."""
        old, self.state = self.state, state
        if old.lease.count:
            self._retired.add(old)
        return [s for s in self._retired if s.lease.count]

    def in_flight(self, steps: Any) -> int:
        """Executions running on a state that holds any of these step types (this exact version)."""
        wanted = {id(step) for step in steps}
        return sum(
            s.lease.count
            for s in (self.state, *self._retired)
            if any(id(step) in wanted for step in s.registry.steps.values())
        )

    async def drain(self, states: list[State], timeout: float) -> bool:
        """Wait until no execution uses any of `states`; False if `timeout` ran out first."""
        try:
            async with asyncio.timeout(timeout):
                for state in states:
                    await state.lease.idle()
        except TimeoutError:
            return False
        return True

    def run(self, pipeline: Pipeline, payload: Mapping[str, Any], **options: Any) -> Coroutine[Any, Any, Outcome]:
        """Run `pipeline` now: await this for its outcome."""
        # The executor's coroutine itself, not one wrapping it: one coroutine fewer per request.
        return self.executor.run(pipeline, payload, **options)

    async def submit(
        self,
        pipeline: Pipeline,
        payload: Mapping[str, Any],
        *,
        workflow_type: str | None = None,
        dedupe_key: str | None = None,
        dedupe_ttl: float = 86400.0,
    ) -> str | None:
        """Store `pipeline` for background execution; its execution id, or None for a duplicate `dedupe_key`.

        Returns only once the job is stored; raises QueueUnavailable (503) when it cannot be.
        """
        if self.queue is None:
            raise QueueUnavailable("the queue is not open")
        execution_id = new_execution_id()
        kind = workflow_type or pipeline.trigger.workflow_type
        if not await self.queue.put(execution_id, pipeline.name, kind, dict(payload), dedupe_key, dedupe_ttl):
            return None
        self.executions.submitted(execution_id, pipeline.name, kind)
        return execution_id

    async def run_queued(self, execution_id: str, name: str, payload: Mapping[str, Any], workflow_type: str) -> Outcome:
        """Run a stored job: the pipeline called `name` in the config in service now (it may have been reloaded)."""
        if self.executions.get(execution_id) is None:  # enqueued by another replica (or before a restart)
            self.executions.submitted(execution_id, name, workflow_type)
        self.executions.started(execution_id)
        state = self.state
        current = state.config.pipelines.get(name)
        if current is None:
            error = StepError(
                f"pipeline {name!r} was removed before it could run", status=410, execution_id=execution_id
            )
            return Outcome(execution_id, name, workflow_type, status="error", error=error)
        with state.lease:
            return await self.executor.run(
                current, payload, execution_id=execution_id, workflow_type=workflow_type, state=state
            )

    async def accept(self, message: ChatMessage, *, dedupe_key: str) -> bool:
        """Store a chat event for the pipelines it matches; False when `dedupe_key` was accepted within 24 h.

        Each matching pipeline's job is stored in the durable queue, its de-duplication key (`dedupe_key` and the
        pipeline's name) in the same transaction, before this returns: the platform is acknowledged only then.
        Raises QueueUnavailable (503) when the queue cannot store it, so the platform retries.
        """
        accepted = False
        for pipeline in matching_pipelines(self.config, message):
            queued = await self.submit(
                pipeline, dict(message), workflow_type="messaging", dedupe_key=f"{dedupe_key}|{pipeline.name}"
            )
            accepted = accepted or queued is not None
        return accepted

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> int:
        """Start every pipeline whose event trigger listens on `topic`; return how many were queued."""
        pipelines = self.config.events.get(topic, ())
        for pipeline in pipelines:
            await self.submit(pipeline, dict(payload))
        return len(pipelines)

    async def run_by_name(self, name: str, payload: Mapping[str, Any], *, depth: int = 0) -> Outcome:
        """Run the pipeline called `name` (for `step.delegate`); raise its error if it fails."""
        pipeline = self.config.pipelines.get(name)
        if pipeline is None:  # a misconfiguration of the server, not the client's fault
            raise StepError(f"no pipeline named {name!r}")
        if depth > self.executor.max_depth:
            raise StepError(f"delegation deeper than {self.executor.max_depth} pipelines (a cycle?)")
        outcome = await self.executor.run(pipeline, payload, depth=depth)
        if outcome.error is not None:
            raise _wrapped(name, outcome.error)
        return outcome


def _wrapped(name: str, error: WorkflowError) -> WorkflowError:
    """The delegated pipeline's error as the delegating step's, keeping its status."""
    return StepError(
        f"pipeline {name!r}: {error.message}", status=error.status, delegated_step=error.details.get("step")
    )
