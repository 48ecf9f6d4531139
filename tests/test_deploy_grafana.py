"""deploy/grafana: the three dashboards are what generate.py writes, Grafana's model reads them, they query only
CONTRACT §7 names, and every panel query and alert expression runs on a real Prometheus scraping a real server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from slack_sdk.signature import SignatureVerifier

from tests.chat_fake import SLACK_SECRET
from tests.conftest import ROOT, free_port, server_command
from tests.deploy.tools import DEPLOY, TOOLS_VENV, tool
from tests.test_deploy_prometheus import CONTRACT_METRICS, RULES, alert_rules, metric_names

GRAFANA = DEPLOY / "grafana"
BOARDS = {
    "workflow-overview.json": "workflow-overview",
    "dynamic-components.json": "workflow-dynamic-components",
    "chat-platform.json": "workflow-chat-platform",
}
# What the live check sends for Grafana's variables. Grafana's $__rate_interval is at least four scrape intervals;
# with the 1 s scrape below, 10s holds several samples.
SUBSTITUTE = {"$__rate_interval": "10s", "$job": "workflow-server"}


def boards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((GRAFANA / name).read_text()) for name in BOARDS}


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def test_the_committed_dashboards_are_what_generate_py_writes(tmp_path):
    subprocess.run([sys.executable, str(GRAFANA / "generate.py"), str(tmp_path)], check=True)
    for name in BOARDS:
        assert (tmp_path / name).read_text() == (GRAFANA / name).read_text(), (
            f"{name} differs from generate.py's output: run `python3 deploy/grafana/generate.py`"
        )
    assert sorted(p.name for p in GRAFANA.glob("*.json")) == sorted(BOARDS)


def test_grafanas_own_model_reads_every_dashboard():
    python = TOOLS_VENV / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import grafana_foundation_sdk"], capture_output=True, check=False)
    if not python.exists() or probe.returncode:
        tool("grafana-foundation-sdk")  # skips, or fails under WORKFLOW_TEST_STRICT
    paths = [str(GRAFANA / name) for name in BOARDS]
    out = subprocess.run(
        [str(python), str(ROOT / "tests" / "deploy" / "grafana_model_check.py"), *paths],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = json.loads(out)
    for name, uid in BOARDS.items():
        raw, seen = boards()[name], report[str(GRAFANA / name)]
        assert seen["uid"] == uid
        assert seen["variables"] == [["datasource", "datasource"], ["query", "job"], ["query", "instance"]]
        assert [p["title"] for p in seen["panels"]] == [p["title"] for p in raw["panels"]]
        for panel, model in zip(raw["panels"], seen["panels"], strict=True):
            assert model["type"] in {"timeseries", "stat"}
            assert model["datasource_uid"] == "${datasource}"
            # Every target was read as a Prometheus query, and nothing was lost on the way back out.
            assert model["queries"] == [t["expr"] for t in panel["targets"]]
        assert seen["round_trip_panels"] == len(raw["panels"])
        assert seen["round_trip_queries"] == sum(len(p["targets"]) for p in raw["panels"])


@pytest.mark.parametrize("name", BOARDS)
def test_dashboard_structure(name):
    board = boards()[name]
    assert board["uid"] == BOARDS[name] and board["title"].startswith("workflow-server: ")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["job"]["query"]["query"] == "label_values(http_requests_total, job)"
    assert '{job=~"$job"}' in variables["instance"]["query"]["query"]
    ids, cells = set(), set()
    for panel in board["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        for cell in (
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        ):
            assert cell not in cells, f"{panel['title']} overlaps another panel"
            cells.add(cell)
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            expr = target["expr"]
            assert target["datasource"] == panel["datasource"]
            assert 'job=~"$job", instance=~"$instance"' in expr, f"{panel['title']}: {expr}"
            unknown = metric_names(expr) - CONTRACT_METRICS
            assert not unknown, f"{panel['title']} reads {unknown}, which CONTRACT §7 does not name"
            for window in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]+)\]", expr):
                assert window == "$__rate_interval" or panel["type"] == "stat", f"{panel['title']}: {expr}"


def test_the_dashboards_cover_what_an_operator_asks():
    every = {name: " ".join(expr for _, expr in queries(board)) for name, board in boards().items()}
    for metric in ("http_requests_total", "http_request_duration_seconds_bucket", "workflow_executions_total",
                   "active_workflows", "workflow_queue_depth"):  # fmt: skip
        assert metric in every["workflow-overview.json"]
    for needle in ("dynamic_components{", "dynamic_component_reload_seconds_bucket", 'operation="file_change"',
                   'status="error"'):  # fmt: skip
        assert needle in every["dynamic-components.json"]
    for metric in ("chat_events_total", "chat_ack_duration_seconds_bucket", "chat_replies_total",
                   "queue_oldest_job_age_seconds", 'outcome="dead"'):  # fmt: skip
        assert metric in every["chat-platform.json"]


# ---- the live check: a real workflow-server, scraped every second by a real Prometheus ----------------------------


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _slack_event(base: str, event_id: str, *, signed: bool) -> None:
    """POST a Slack event, signed by slack_sdk (or with a forged signature, which is refused)."""
    event = {"type": "message", "channel": "C1", "user": "U1", "text": "hi", "ts": "1700000000.000100"}
    body = json.dumps({"type": "event_callback", "team_id": "T1", "event_id": event_id, "event": event})
    now = str(int(time.time()))
    signature = SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=now, body=body)
    headers = {"X-Slack-Request-Timestamp": now, "X-Slack-Signature": signature if signed else "v0=" + "0" * 64}
    request = urllib.request.Request(f"{base}/webhooks/slack/events", data=body.encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == (200 if signed else 401)


def _wait(what: str, check, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Stack:
    def __init__(self, port: int, prom: int, metrics_text: str) -> None:
        self.port, self.prom, self.metrics_text = port, prom, metrics_text

    def query(self, expr: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = _get(url)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", f"{expr}\n{answer}"
        return answer["data"]


COMPONENT = """
from server import hookimpl

async def probe(ctx):
    return {{"probe": {version}}}

@hookimpl
def register_steps(register):
    register("step.deploy_probe", probe)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    prometheus = tool("prometheus")
    tmp = tmp_path_factory.mktemp("live")
    components = tmp / "components"
    components.mkdir()
    port, admin, prom = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOW_")}
    # One attempt per job, so the chat job whose reply fails is a dead letter at once.
    env |= {"WORKFLOW_DATA_DIR": str(tmp / "data"), "WORKFLOW_COMPONENTS_DIR": str(components),
            "WORKFLOW_QUEUE_MAX_ATTEMPTS": "1"}  # fmt: skip
    # The order example, plus Slack whose API is this server itself: a reply gets 404, so replies, their
    # latency, failed jobs and dead letters all have data.
    config = yaml.safe_load((ROOT / "example" / "order-processing-pipeline.yaml").read_text())
    config["chat"] = {"slack": {"signing_secret": SLACK_SECRET, "bot_token": "xoxb-live",
                                "api_base": f"http://127.0.0.1:{port}/no-slack-here"}}  # fmt: skip
    config["pipelines"]["chat-live"] = {
        "trigger": {"type": "chat", "config": {"platform": "slack"}},
        "steps": [{"name": "reply", "type": "step.chat_reply", "config": {"text": "seen: {{ .text }}"}}],
    }
    (tmp / "live.yaml").write_text(yaml.safe_dump(config))
    server = subprocess.Popen(
        server_command(tmp / "live.yaml", f"127.0.0.1:{port}", f"127.0.0.1:{admin}"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "server.log", "w"),  # noqa: SIM115
    )
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "workflow-server", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom_proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "prometheus.log", "w"),  # noqa: SIM115
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait("the server's /readyz", lambda: _get(f"{base}/readyz")[0] == 200)
        _wait("Prometheus", lambda: _get(f"http://127.0.0.1:{prom}/-/ready")[0] == 200)
        # Traffic over several scrapes: created orders, refused bodies, look-ups, an unknown path.
        (components / "deploy_probe.py").write_text(COMPONENT.format(version=1))
        for i in range(8):
            assert _post(f"{base}/api/orders", {"customer_id": f"c-{i}", "total": 10 + i}) == 201
            assert _post(f"{base}/api/orders", {"total": 1}) == 400
            _get(f"{base}/api/orders/o-{i}?status=shipped")
            _get(f"{base}/nothing-here")
            if i == 3:  # a reload, then a version that must be refused
                (components / "deploy_probe.py").write_text(COMPONENT.format(version=2))
            if i == 5:
                (components / "deploy_probe.py").write_text("this is not python(\n")
            _slack_event(base, f"Ev{i}", signed=True)
            _slack_event(base, f"Forged{i}", signed=False)
            time.sleep(0.7)
        text = _get(f"{base}/metrics")[1].decode()
        assert 'module="dynamic",operation="reload",status="error"' in text.replace(" ", "")
        stack = Stack(port, prom, text)
        _wait("five scrapes", lambda: stack.query('count_over_time(up{job="workflow-server"}[10s]) >= 5')["result"])
        yield stack
    finally:
        for proc in (prom_proc, server):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp / "tsdb", ignore_errors=True)


def _families(expr: str) -> set[str]:
    return metric_names(expr)


def test_every_panel_query_runs_on_a_live_prometheus_and_shows_data(stack):
    substitute = SUBSTITUTE | {"$instance": f"127.0.0.1:{stack.port}"}
    empty, no_metric_yet = [], []
    for name, board in boards().items():
        for title, expr in queries(board):
            for var, value in substitute.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, expr
            result = stack.query(expr)["result"]
            if result:
                continue
            missing = {m for m in _families(expr) if f"\n{m}" not in stack.metrics_text}
            (no_metric_yet if missing else empty).append(f"{name}: {title} {sorted(missing)}")
    assert not empty, f"panels with no data although their metrics exist: {empty}"
    assert not no_metric_yet, f"panels reading metrics this server does not export: {no_metric_yet}"
    print("panels without data (metric not exported yet):", *no_metric_yet, sep="\n  ")


def test_the_template_variables_find_the_live_target(stack):
    url = f"http://127.0.0.1:{stack.prom}/api/v1/label/job/values?" + urllib.parse.urlencode(
        {"match[]": "http_requests_total"}
    )
    assert "workflow-server" in json.loads(_get(url)[1])["data"]


def test_every_alert_expression_runs_and_the_rules_load(stack):
    for rule in alert_rules():
        stack.query(rule["expr"])
    groups = json.loads(_get(f"http://127.0.0.1:{stack.prom}/api/v1/rules")[1])["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert loaded.keys() == {rule["alert"] for rule in alert_rules()}
    assert all(rule["health"] != "err" for rule in loaded.values()), loaded
    # The server is up and healthy, so nothing that says otherwise fires.
    assert loaded["WorkflowTargetDown"]["state"] == "inactive"
