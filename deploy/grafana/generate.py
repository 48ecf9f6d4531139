"""Write the three Grafana dashboards of this folder: `python3 deploy/grafana/generate.py`.

The JSON files are generated, not edited by hand: change a panel here and run this script again
(tests/test_deploy_grafana.py fails when a committed file differs from what this script writes). Only the metric
names of CONTRACT §7 are queried. Every dashboard has a `datasource` variable (any Prometheus) and `job` and
`instance` variables, and every rate uses `$__rate_interval`, so a panel has data from the first few scrapes.
Standard library only, so it runs anywhere.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job", instance=~"$instance"'
RI = "[$__rate_interval]"


def sel(extra: str = "") -> str:
    """The label selector every query carries: the chosen job and instance, plus the panel's own matchers."""
    return "{" + SEL + (", " + extra if extra else "") + "}"


# Selectors with a panel's own matchers (precomputed: Python 3.11 f-strings cannot nest the same quotes).
S_5XX = sel('status_code=~"5.."')
S_EXEC = sel('operation="execute"')
S_FILE_CHANGE = sel('module="dynamic", operation="file_change"')
S_REFUSED = sel('module="dynamic", status="error"')
S_LIFECYCLE = sel('module="dynamic", operation=~"load|reload|register|unregister"')
S_DEAD = sel('outcome="dead"')


def variables() -> list[dict[str, Any]]:
    def query(name: str, label: str, expr: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": {"query": expr, "refId": f"{name}-variable"},
            "definition": expr,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        query("job", "Job", "label_values(http_requests_total, job)"),
        query("instance", "Instance", 'label_values(http_requests_total{job=~"$job"}, instance)'),
    ]


class Board:
    def __init__(self, uid: str, title: str, description: str) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.panels: list[dict[str, Any]] = []
        self._x = self._y = 0

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        kind: str = "timeseries",
        width: int = 12,
        description: str = "",
    ) -> None:
        """Add a panel; each target is (PromQL, legend). Panels flow left to right, 24 columns a row."""
        height = 4 if kind == "stat" else 8
        if self._x + width > 24:
            self._x, self._y = 0, self._y + 8
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": kind,
                "title": title,
                "description": description,
                "datasource": DS,
                "gridPos": {"h": height, "w": width, "x": self._x, "y": self._y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
                if kind == "timeseries"
                else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
                "targets": [
                    {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend, "range": True}
                    for i, (expr, legend) in enumerate(targets)
                ],
            }
        )
        self._x += width

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["workflow-server"],
            "editable": True,
            "schemaVersion": 39,
            "version": 1,
            "timezone": "browser",
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "graphTooltip": 1,
            "annotations": {"list": []},
            "links": [],
            "templating": {"list": variables()},
            "panels": self.panels,
        }


def quantiles(metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[tuple[str, str]]:
    group = f"{by}, le" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        (f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{sel()}{RI})))", f"{prefix}p{round(q * 100)}")
        for q in qs
    ]


def overview() -> Board:
    b = Board("workflow-overview", "workflow-server: overview", "Requests, latency, errors and pipeline executions.")
    b.panel(
        "Requests per second by route and status",
        [(f"sum by (path, status_code) (rate(http_requests_total{sel()}{RI}))", "{{path}} {{status_code}}")],
        unit="reqps",
    )
    b.panel(
        "5xx error ratio",
        [
            (
                f"(sum(rate(http_requests_total{S_5XX}{RI})) or vector(0)) / sum(rate(http_requests_total{sel()}{RI}))",
                "5xx / all",
            )
        ],
        unit="percentunit",
    )
    b.panel("Request latency", quantiles("http_request_duration_seconds"), unit="s")
    b.panel(
        "Request latency p99 by route",
        quantiles("http_request_duration_seconds", by="path", qs=(0.99,)),
        unit="s",
    )
    b.panel(
        "Executions per second by pipeline and status",
        [(f"sum by (action, status) (rate(workflow_executions_total{sel()}{RI}))", "{{action}} {{status}}")],
        unit="ops",
    )
    b.panel("Execution time p95 by pipeline", quantiles("workflow_duration_seconds", by="action", qs=(0.95,)), unit="s")
    b.panel(
        "Active workflows",
        [(f"sum by (workflow_type) (active_workflows{sel()})", "{{workflow_type}}")],
        width=8,
    )
    b.panel("Async queue depth", [(f"sum(workflow_queue_depth{sel()})", "waiting")], width=8)
    b.panel(
        "Step executions per second by type and status",
        [
            (
                f"sum by (module, status) (rate(module_operations_total{S_EXEC}{RI}))",
                "{{module}} {{status}}",
            )
        ],
        unit="ops",
        width=8,
    )
    return b


def components() -> Board:
    b = Board(
        "workflow-dynamic-components",
        "workflow-server: dynamic components",
        "The hot-reloaded components folder: what serves, what reloaded, how fast, and what was refused.",
    )
    b.panel("Components in service", [(f"dynamic_components{sel()}", "{{instance}}")], kind="stat", width=8)
    b.panel(
        "File changes seen",
        [(f"sum(increase(module_operations_total{S_FILE_CHANGE}{RI}))", "changes")],
        width=8,
    )
    b.panel(
        "Refused loads and reloads",
        [
            (
                f"sum by (operation) (increase(module_operations_total{S_REFUSED}{RI}))",
                "{{operation}}",
            )
        ],
        width=8,
        description="A refused version never replaces the one in service: the old version keeps serving.",
    )
    b.panel(
        "Component operations by status",
        [
            (
                f"sum by (operation, status) (increase(module_operations_total{S_LIFECYCLE}{RI}))",
                "{{operation}} {{status}}",
            )
        ],
    )
    b.panel(
        "Reload latency (file change to new version serving)",
        quantiles("dynamic_component_reload_seconds"),
        unit="s",
    )
    return b


def chat() -> Board:
    b = Board(
        "workflow-chat-platform",
        "workflow-server: chat platform",
        "Chat webhooks (Slack, Twilio, Telegram, generic), their replies, and the durable queue behind them.",
    )
    b.panel(
        "Events per second by platform and outcome",
        [(f"sum by (platform, outcome) (rate(chat_events_total{sel()}{RI}))", "{{platform}} {{outcome}}")],
        unit="ops",
    )
    b.panel("Acknowledgement latency p99", quantiles("chat_ack_duration_seconds", by="platform", qs=(0.99,)), unit="s")
    b.panel(
        "Replies per second by platform and status",
        [(f"sum by (platform, status) (rate(chat_replies_total{sel()}{RI}))", "{{platform}} {{status}}")],
        unit="ops",
    )
    b.panel("Reply latency p95", quantiles("chat_reply_duration_seconds", by="platform", qs=(0.95,)), unit="s")
    b.panel("Oldest queued job", [(f"max(queue_oldest_job_age_seconds{sel()})", "age")], unit="s", width=8)
    b.panel(
        "Queue jobs per second by outcome",
        [(f"sum by (outcome) (rate(queue_jobs_total{sel()}{RI}))", "{{outcome}}")],
        unit="ops",
        width=8,
    )
    b.panel(
        "Dead letters (last hour)",
        [(f"sum(increase(queue_jobs_total{S_DEAD}[1h]))", "dead")],
        kind="stat",
        width=8,
        description="Jobs that failed every attempt: GET /api/queue/dead on the admin listener lists them.",
    )
    return b


BOARDS = {"workflow-overview.json": overview, "dynamic-components.json": components, "chat-platform.json": chat}


def render() -> dict[str, str]:
    return {name: json.dumps(build().to_json(), indent=2) + "\n" for name, build in BOARDS.items()}


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for name, text in render().items():
        (out / name).write_text(text)
