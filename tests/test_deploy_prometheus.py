"""deploy/prometheus: the alert rules are valid, their unit tests pass, and they read only CONTRACT §7 names."""

from __future__ import annotations

import re

import yaml

from tests.deploy.tools import DEPLOY, run, tool

RULES = DEPLOY / "prometheus" / "alerts.yml"
README = DEPLOY / "README.md"

# CONTRACT §7, plus `up`, which Prometheus writes for every target.
CONTRACT_METRICS = {
    "http_requests_total",
    "http_request_duration_seconds",
    "workflow_executions_total",
    "workflow_duration_seconds",
    "active_workflows",
    "workflow_queue_depth",
    "module_operations_total",
    "dynamic_components",
    "dynamic_component_reload_seconds",
    "chat_events_total",
    "chat_ack_duration_seconds",
    "chat_replies_total",
    "chat_reply_duration_seconds",
    "queue_jobs_total",
    "queue_oldest_job_age_seconds",
    "up",
}
REQUIRED_ALERTS = {
    "WorkflowTargetDown",
    "WorkflowHighErrorRatio",
    "WorkflowHighLatencyP99",
    "WorkflowComponentReloadFailures",
    "WorkflowQueueBacklog",
    "WorkflowDeadLetters",
    "WorkflowChatSignatureRejections",
}
PROMQL_WORDS = {
    "sum", "by", "rate", "increase", "histogram_quantile", "max", "min", "avg", "without", "on", "ignoring",
    "and", "or", "unless", "le", "count", "topk", "bool", "irate", "clamp_min", "vector", "label_replace",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Every bare identifier of a PromQL expression that is not a function, keyword or label name."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\bby\s*\([^)]*\)|\bwithout\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r'"[^"]*"', "", expr)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL_WORDS
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules():
    out = run(tool("promtool"), "check", "rules", str(RULES)).stdout
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_the_alert_unit_tests_pass():
    out = run(tool("promtool"), "test", "rules", "alerts_test.yml", cwd=RULES.parent).stdout
    assert "SUCCESS" in out


def test_every_required_alert_exists_with_a_test_and_a_runbook():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert rules.keys() >= REQUIRED_ALERTS
    tested = yaml.safe_load((RULES.parent / "alerts_test.yml").read_text())["tests"]
    tested_alerts = {case["alertname"] for test in tested for case in test["alert_rule_test"] if case["exp_alerts"]}
    readme = README.read_text()
    for name, rule in rules.items():
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), name
        assert name in tested_alerts, f"{name} has no firing case in alerts_test.yml"
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"### {name}" in readme and anchor == name.lower(), f"{name} has no runbook in deploy/README.md"


def test_the_rules_read_only_contract_metric_names():
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - CONTRACT_METRICS
        assert not unknown, f"{rule['alert']} reads {unknown}, which CONTRACT §7 does not name"
