"""The Prometheus metric set of the contract (CONTRACT §7), on a private registry; `/metrics` is served by http/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .. import logs
from .cells import (
    CounterCell,
    FastCounter,
    FastGauge,
    FastHistogram,
    GaugeCell,
    HistogramCell,
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Labelled(Protocol[T_co]):
    """A metric with labels: prometheus_client's or one of the fast families."""

    def labels(self, *values: str) -> T_co: ...


# Loop lag: well under the 100 ms timer period is normal; seconds mean blocking code on the loop.
LOOP_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every metric the dashboards read; one instance per server (or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        # Updated per request or per step: lock-free, on the event loop's thread only (see metric_types).
        self.http_requests = FastCounter(
            "http_requests_total", "HTTP requests answered.", ["method", "path", "status_code"], registry=r
        )
        self.http_duration = FastHistogram(
            "http_request_duration_seconds", "HTTP request latency.", ["method", "path"], registry=r
        )
        self.executions = FastCounter(
            "workflow_executions_total",
            "Pipeline executions finished.",
            ["workflow_type", "action", "status"],
            registry=r,
        )
        self.execution_duration = FastHistogram(
            "workflow_duration_seconds", "Pipeline execution time.", ["workflow_type", "action"], registry=r
        )
        self.active = FastGauge("active_workflows", "Pipeline executions running now.", ["workflow_type"], registry=r)
        # Cluster-wide values from the shared queue, refreshed by every replica (dashboards take max()).
        self.queue_depth = Gauge("workflow_queue_depth", "Jobs waiting or running in the durable queue.", registry=r)
        self.queue_oldest = Gauge(
            "queue_oldest_job_age_seconds", "Age of the oldest job waiting or running (0 when empty).", registry=r
        )
        self.queue_jobs = FastCounter(
            "queue_jobs", "Queue jobs settled, by outcome (done, retried, dead).", ["outcome"], registry=r
        )
        self.module_operations = FastCounter(
            "module_operations", "Module operations by outcome.", ["module", "operation", "status"], registry=r
        )
        self.dynamic_components = Gauge("dynamic_components", "Components in service.", registry=r)
        self.reload_seconds = Histogram(
            "dynamic_component_reload_seconds", "From a component file change to its new version serving.", registry=r
        )
        # Set by the loop watchdog (server/engine/watchdog.py) on the loop's thread.
        self.loop_lag = FastHistogram(
            "event_loop_lag_seconds",
            "How late the event loop ran its 100 ms timer.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag_max = FastGauge(
            "event_loop_lag_max_seconds", "The worst event loop lag of the last 60 s.", registry=r
        )
        # Chat platforms (plugins/chat): what arrived and how fast it was acknowledged, and the replies sent.
        self.chat_events = Counter(
            "chat_events", "Chat webhook requests by outcome.", ["platform", "outcome"], registry=r
        )
        self.chat_ack = Histogram(
            "chat_ack_duration_seconds",
            "From a chat webhook request received to its acknowledgement.",
            ["platform"],
            registry=r,
        )
        self.chat_replies = Counter(
            "chat_replies", "Replies sent to chat platforms.", ["platform", "status"], registry=r
        )
        self.chat_reply_duration = Histogram(
            "chat_reply_duration_seconds",
            "One reply call to a chat platform's API, retries included.",
            ["platform"],
            registry=r,
        )
        r.register(_DroppedLogLines())
        # The hot path finds its cells with one dict lookup on its own label values.
        self._children: dict[tuple[int, tuple[str, ...]], object] = {}
        self._request_cells: dict[tuple[str, str, int], tuple[CounterCell, HistogramCell]] = {}
        self._execution_cells: dict[tuple[str, str, str], tuple[CounterCell, HistogramCell]] = {}
        self._step_cells: dict[str, dict[str, CounterCell]] = {}
        self._active_cells: dict[str, GaugeCell] = {}

    def child(self, metric: Labelled[T], *labels: str) -> T:
        """The labelled child of `metric`, cached."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return cast(T, found)  # the cache holds the children of every metric: stored by this very key

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request."""
        cells = self._request_cells.get((method, path, status))
        if cells is None:
            cells = self._request_cells[(method, path, status)] = (
                self.http_requests.labels(method, path, str(status)),
                self.http_duration.labels(method, path),
            )
        cells[0].value += 1.0
        cells[1].observe(seconds)

    def observe_execution(self, workflow_type: str, action: str, status: str, seconds: float) -> None:
        """Count one finished pipeline execution."""
        cells = self._execution_cells.get((workflow_type, action, status))
        if cells is None:
            cells = self._execution_cells[(workflow_type, action, status)] = (
                self.executions.labels(workflow_type, action, status),
                self.execution_duration.labels(workflow_type, action),
            )
        cells[0].value += 1.0
        cells[1].observe(seconds)

    def active_cell(self, workflow_type: str) -> GaugeCell:
        """The `active_workflows` cell of a workflow type."""
        cell = self._active_cells.get(workflow_type)
        if cell is None:
            cell = self._active_cells[workflow_type] = self.active.labels(workflow_type)
        return cell

    def step_cells(self, step_type: str) -> dict[str, CounterCell]:
        """`module_operations_total{module=step_type, operation="execute"}` by status, created on first use."""
        cells = self._step_cells.get(step_type)
        if cells is None:
            cells = self._step_cells[step_type] = _StepCells(self.module_operations, step_type)
        return cells


class _StepCells(dict[str, CounterCell]):
    """Status -> counter cell for one step type; a status appears in /metrics only once counted."""

    def __init__(self, counter: FastCounter, step_type: str) -> None:
        super().__init__()
        self._counter, self._step_type = counter, step_type

    def __missing__(self, status: str) -> CounterCell:
        cell = self[status] = self._counter.labels(self._step_type, "execute", status)
        return cell


class _DroppedLogLines(Collector):
    """`log_lines_dropped_total`: log lines the process's log output dropped because it could not keep up."""

    def collect(self) -> Iterator[Metric]:
        """The count at scrape time, read from the one log output."""
        yield CounterMetricFamily(
            "log_lines_dropped", "Log lines dropped because the log output could not keep up.", logs.dropped_lines()
        )
