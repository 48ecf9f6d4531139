"""The Prometheus metric set of the contract, on a private registry, and the HTTP middleware."""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .keys import ROUTE_LABEL

UNMATCHED = "unmatched"



class Metrics:
    """Every metric the dashboards read; one instance per server (or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        self.http_requests = Counter("http_requests_total", "HTTP requests answered.",
                                     ["method", "path", "status_code"], registry=r)
        self.http_duration = Histogram("http_request_duration_seconds", "HTTP request latency.",
                                       ["method", "path"], registry=r)
        self.executions = Counter("workflow_executions_total", "Pipeline executions finished.",
                                  ["workflow_type", "action", "status"], registry=r)
        self.execution_duration = Histogram("workflow_duration_seconds", "Pipeline execution time.",
                                            ["workflow_type", "action"], registry=r)
        self.active = Gauge("active_workflows", "Pipeline executions running now.",
                            ["workflow_type"], registry=r)
        self.queue_depth = Gauge("workflow_queue_depth", "Executions waiting in the async queue.",
                                 registry=r)
        self.module_operations = Counter("module_operations", "Module operations by outcome.",
                                         ["module", "operation", "status"], registry=r)
        self.dynamic_components = Gauge("dynamic_components", "Components in service.", registry=r)
        self.reload_seconds = Histogram("dynamic_component_reload_seconds",
                                        "From a component file change to its new version serving.",
                                        registry=r)
        # Labelled children cost a lock and a dict lookup each; the hot path reuses them.
        self._children: dict[tuple, object] = {}

    def child(self, metric, *labels: str):
        """The labelled child of `metric`, cached."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request."""
        self.child(self.http_requests, method, path, str(status)).inc()
        self.child(self.http_duration, method, path).observe(seconds)

    def observe_execution(self, workflow_type: str, action: str, status: str, seconds: float) -> None:
        """Count one finished pipeline execution."""
        self.child(self.executions, workflow_type, action, status).inc()
        self.child(self.execution_duration, workflow_type, action).observe(seconds)

    def observe_step(self, step_type: str, status: str) -> None:
        """Count one step execution (`module_operations_total{operation="execute"}`)."""
        self.child(self.module_operations, step_type, "execute", status).inc()

    def handler(self) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The `/metrics` handler for this registry."""
        return make_aiohttp_handler(self.registry)


def route_label(request: web.Request) -> str:
    """The `path` label: the matched route template, never the raw URL."""
    label = request.get(ROUTE_LABEL)
    if label is not None:
        return label
    info = request.match_info
    route = info.route if info is not None else None
    if route is None or info.http_exception is not None or route.resource is None:
        return UNMATCHED
    canonical = route.resource.canonical
    return UNMATCHED if "{tail" in canonical else canonical


