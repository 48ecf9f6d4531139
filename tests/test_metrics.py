"""The lock-free hot-path metrics: the same exposition as prometheus_client's own types, and per-request samples."""

from __future__ import annotations

import re

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.openmetrics.exposition import (
    generate_latest as generate_openmetrics,
)

from server.metrics.cells import FastCounter, FastGauge, FastHistogram
from tests.conftest import metric_value

DURATIONS = [0.0, 0.003, 0.005, 0.0051, 0.05, 0.7, 9.99, 10.0, 12.5]


def _exposition(registry: CollectorRegistry, generate) -> str:
    """The text with every `_created` timestamp replaced, since the two sides create their children apart."""
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", generate(registry).decode())


@pytest.mark.parametrize("generate", [generate_latest, generate_openmetrics])
def test_the_exposition_is_the_one_of_prometheus_client(generate):
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = FastCounter("requests_total", "Requests.", ["method", "status"], registry=ours)
    histogram = FastHistogram("latency_seconds", "Latency.", ["route"], registry=ours)
    gauge = FastGauge("active", "Active.", ["kind"], registry=ours)
    plain = FastCounter("plain_total", "No labels.", registry=ours)
    reference = (
        Counter("requests_total", "Requests.", ["method", "status"], registry=theirs),
        Histogram("latency_seconds", "Latency.", ["route"], registry=theirs),
        Gauge("active", "Active.", ["kind"], registry=theirs),
        Counter("plain_total", "No labels.", registry=theirs),
    )
    for i, seconds in enumerate(DURATIONS):
        status = ("200", "500", "504")[i % 3]
        counter.labels("GET", status).inc()
        reference[0].labels("GET", status).inc()
        histogram.labels("/a" if i % 2 else "/b").observe(seconds)
        reference[1].labels("/a" if i % 2 else "/b").observe(seconds)
    counter.labels("POST", "201").inc(2.5)
    reference[0].labels("POST", "201").inc(2.5)
    gauge.labels("http").inc(3)
    gauge.labels("http").dec()
    gauge.labels("event").set(7)
    reference[2].labels("http").inc(3)
    reference[2].labels("http").dec()
    reference[2].labels("event").set(7)
    plain.labels().inc()
    reference[3].inc()
    assert _exposition(ours, generate) == _exposition(theirs, generate)


def test_a_counter_refuses_negative_amounts_and_a_duplicate_name():
    registry = CollectorRegistry()
    counter = FastCounter("things_total", "Things.", ["kind"], registry=registry)
    with pytest.raises(ValueError, match="Counters can only be incremented by non-negative amounts"):
        counter.labels("a").inc(-1)
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("things_total", "Things again.", registry=registry)
    with pytest.raises(ValueError, match="things: expected 1 label values, got 2"):
        counter.labels("a", "b")


PIPELINES = """
pipelines:
  ok:
    trigger: {type: http, config: {path: /ok, method: POST}}
    steps:
      - {name: check, type: step.validate, config: {required_fields: [name]}}
      - {name: respond, type: step.json_response, config: {status: 201, body: {hello: "{{ .name }}"}}}
  slow:
    trigger: {type: http, config: {path: /slow, method: POST}}
    timeout: 100ms
    steps:
      - {name: nap, type: test.sleep, config: {seconds: 5}}
"""


async def test_metrics_count_every_request_execution_and_step_with_their_statuses(serve):
    srv = await serve(PIPELINES)
    for _ in range(5):
        assert (await srv.client.post("/ok", json={"name": "a"})).status == 201
    for _ in range(3):
        assert (await srv.client.post("/ok", json={})).status == 400
    assert (await srv.client.post("/slow", json={})).status == 504
    text = await srv.metrics()

    def value(name: str, **labels: str) -> float:
        return metric_value(text, name, **labels)

    assert value("http_requests_total", method="POST", path="/ok", status_code="201") == 5
    assert value("http_requests_total", method="POST", path="/ok", status_code="400") == 3
    assert value("http_requests_total", method="POST", path="/slow", status_code="504") == 1
    assert value("http_request_duration_seconds_count", method="POST", path="/ok") == 8
    assert value("http_request_duration_seconds_bucket", method="POST", path="/ok", le="+Inf") == 8
    assert value("http_request_duration_seconds_bucket", method="POST", path="/slow", le="0.05") == 0
    assert value("http_request_duration_seconds_bucket", method="POST", path="/slow", le="0.25") == 1
    assert value("http_request_duration_seconds_sum", method="POST", path="/slow") >= 0.1
    assert value("workflow_executions_total", workflow_type="http", action="ok", status="success") == 5
    assert value("workflow_executions_total", workflow_type="http", action="ok", status="error") == 3
    assert value("workflow_executions_total", workflow_type="http", action="slow", status="timeout") == 1
    assert value("workflow_duration_seconds_count", workflow_type="http", action="ok") == 8
    assert value("workflow_duration_seconds_bucket", workflow_type="http", action="slow", le="+Inf") == 1
    assert value("active_workflows", workflow_type="http") == 0
    for module, status, count in [
        ("step.validate", "success", 5),
        ("step.validate", "error", 3),
        ("step.json_response", "success", 5),
        ("test.sleep", "timeout", 1),
    ]:
        assert value("module_operations_total", module=module, operation="execute", status=status) == count
    assert 'module="step.json_response",operation="execute",status="error"' not in text
    # Every counter child has its `_created` sample and every histogram child its cumulative buckets.
    assert value("http_requests_created", method="POST", path="/ok", status_code="201") > 0
    assert value("workflow_duration_seconds_created", workflow_type="http", action="ok") > 0
    buckets = [
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("http_request_duration_seconds_bucket{") and 'path="/ok"' in line
    ]
    assert len(buckets) == 15 and buckets == sorted(buckets)


def test_metric_value_fails_on_a_metric_the_text_does_not_declare():
    """A renamed contract metric must fail the tests that read it, not read as zero."""
    registry = CollectorRegistry()
    FastCounter("jobs_total", "Jobs.", ["kind"], registry=registry).labels("a").inc(2)
    FastHistogram("job_seconds", "Job time.", ["kind"], registry=registry).labels("a").observe(0.2)
    FastGauge("busy", "Busy.", ["kind"], registry=registry)
    text = generate_latest(registry).decode()
    assert metric_value(text, "jobs_total", kind="a") == 2
    assert metric_value(text, "jobs_total", kind="b") == 0  # declared, no such child yet
    assert metric_value(text, "job_seconds_count", kind="a") == 1
    assert metric_value(text, "job_seconds_bucket", kind="a", le="0.25") == 1
    assert metric_value(text, "busy", kind="a") == 0  # a declared family without any child
    with pytest.raises(AssertionError, match=r"metric 'job_total' is not in the metrics text .*'jobs_total'"):
        metric_value(text, "job_total", kind="a")
    with pytest.raises(AssertionError, match="metric 'busy_total' is not in the metrics text"):
        metric_value(text, "busy_total", kind="a")  # only counters have a `_total` sample
    with pytest.raises(AssertionError, match=r"'jobs_total' has no label\(s\) \['type'\]; its labels are \['kind'\]"):
        metric_value(text, "jobs_total", type="a")
    with pytest.raises(AssertionError, match="matches 15 samples"):
        metric_value(text, "job_seconds_bucket", kind="a")
