"""The running engine: the swappable registry and config, the executor, the queue and shared services."""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Mapping

import aiohttp
import pluggy
from aiohttp import web

from .config import AppConfig
from .errors import NotFound, StepError, WorkflowError
from .executions import ExecutionLog
from .keys import ENGINE
from .metrics import Metrics
from .pipeline import Executor, Outcome
from .pipeline_model import Pipeline
from .queue import LocalQueue
from .registry import Registry
from .settings import Settings
from .steps import Services

log = logging.getLogger("workflow.engine")


class Engine:
    """Owns what every request shares. `registry` and `config` are replaced whole, never mutated."""

    def __init__(self, settings: Settings, metrics: Metrics, plugin_manager: pluggy.PluginManager,
                 registry: Registry, config: AppConfig) -> None:
        self.settings = settings
        self.metrics = metrics
        self.plugin_manager = plugin_manager
        self.registry = registry
        self.config = config
        self.ready = False
        self.draining = False
        self.executions = ExecutionLog(settings.execution_history)
        self.queue = LocalQueue(workers=settings.async_workers, capacity=settings.async_queue_size,
                                depth_gauge=metrics.queue_depth)
        self.thread_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="workflow-step")
        self.services: Services | None = None
        self.executor = Executor(registry=lambda: self.registry, services=lambda: self.services,
                                 metrics=metrics, step_timeout=settings.step_timeout,
                                 thread_pool=self.thread_pool)

    async def run(self, pipeline: Pipeline, payload: Mapping[str, Any], **options: Any) -> Outcome:
        """Run `pipeline` now and return its outcome."""
        return await self.executor.run(pipeline, payload, **options)

    def submit(self, pipeline: Pipeline, payload: Mapping[str, Any], *, workflow_type: str | None = None) -> str:
        """Queue `pipeline` for background execution and return the execution id."""
        execution_id = str(uuid.uuid4())
        kind = workflow_type or pipeline.trigger.workflow_type

        async def job() -> None:
            self.executions.started(execution_id)
            outcome = await self.executor.run(pipeline, payload, execution_id=execution_id, workflow_type=kind)
            self.executions.finished(outcome)

        self.queue.submit(job)
        self.executions.submitted(execution_id, pipeline.name, kind)
        return execution_id

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> int:
        """Start every pipeline whose event trigger listens on `topic`; return how many were queued."""
        pipelines = self.config.events.get(topic, ())
        for pipeline in pipelines:
            self.submit(pipeline, dict(payload))
        return len(pipelines)

    async def run_by_name(self, name: str, payload: Mapping[str, Any], *, depth: int = 0) -> Outcome:
        """Run the pipeline called `name` (for `step.delegate`); raise its error if it fails."""
        pipeline = self.config.pipelines.get(name)
        if pipeline is None:
            raise NotFound(f"no pipeline named {name!r}")
        if depth > self.executor.max_depth:
            raise StepError(f"delegation deeper than {self.executor.max_depth} pipelines (a cycle?)")
        outcome = await self.executor.run(pipeline, payload, depth=depth)
        if outcome.error is not None:
            raise _wrapped(name, outcome.error)
        return outcome


def _wrapped(name: str, error: WorkflowError) -> WorkflowError:
    """The delegated pipeline's error as the delegating step's, keeping its status."""
    return StepError(f"pipeline {name!r}: {error.message}", status=error.status,
                     delegated_step=error.details.get("step"))


async def engine_context(app: web.Application) -> AsyncIterator[None]:
    """Start the shared HTTP client and the queue workers; on exit drain and close them."""
    engine = app[ENGINE]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        engine.services = Services(http=session, publish=engine.publish, run_pipeline=engine.run_by_name)
        engine.queue.start()
        engine.ready = True
        yield
        engine.ready = False
        engine.draining = True
        await engine.queue.stop(engine.settings.shutdown_timeout)
    engine.thread_pool.shutdown(wait=False, cancel_futures=True)


