"""Schemathesis against both OpenAPI documents of a real server: no 5xx, no status or body the document denies.

A bounded, reproducible run: a fixed number of examples per operation and phase, generated deterministically
(derandomized: the same cases every run, no example database), never a time budget. Every phase runs: the
schema's examples, coverage (boundary and negative values), fuzzing, and the stateful phase, which follows the
documents' links (a trigger's `X-Execution-ID` into `GET /executions/{id}`). Streaming endpoints are excluded: the
admin listener's `GET /api/events` (Server-Sent Events) stays open until the server stops, so a request to it
never ends; it is left out with the CLI's `--exclude-path`, and nothing else is. Each run gets a server of its
own: the admin run deletes and creates components, which the main run's pipelines use. Before the admin run, two
orders are recorded, so the admin document's links take the stateful phase from the execution list into an
execution's detail and its re-run. The dry-run `validate` is not bounded further: its candidate process is forked
from the isolation's running helper, tens of milliseconds a call, about 1.5 s of the run per prefix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.conftest import ROOT, SECRET, free_port, server_command, token

EXAMPLES = 50  # per operation and phase
SEED = 20261205
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
REPORT = "schemathesis.xml"  # JUnit, in the test's folder: which operations ran, and how each went


def schemathesis(document: str, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`st run` on `document` (a URL): bounded by EXAMPLES, deterministic; its files go to `home`, not the repo."""
    command = [sys.executable, "-m", "schemathesis.cli", "run", document, "--checks", CHECKS]
    command += ["--max-examples", str(EXAMPLES), "--seed", str(SEED), "--generation-deterministic"]
    command += ["--request-timeout", "30", "--no-color", "--report", "junit", "--report-junit-path", REPORT, *extra]
    return subprocess.run(command, cwd=home, capture_output=True, text=True, timeout=300)


@dataclass(frozen=True)
class Running:
    """A real server process on loopback."""

    main: str
    admin: str
    home: Path


@pytest.fixture
def example() -> str:
    """The example config the server runs: the quick start's, unless a test asks for another."""
    return "order-processing-pipeline.yaml"


@pytest.fixture
def running(tmp_path: Path, example: str) -> Iterator[Running]:
    """`workflow-server` serving `example`, with a copy of the shipped components."""
    home = tmp_path
    shutil.copytree(ROOT / "components", home / "components", ignore=shutil.ignore_patterns(".*", "__pycache__"))
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKFLOW_", "JWT_"))}
    env |= {
        "WORKFLOW_DATA_DIR": str(home / "data"),
        "WORKFLOW_COMPONENTS_DIR": str(home / "components"),
        "WORKFLOW_LOG_FORMAT": "json",
        "JWT_SECRET": SECRET,
    }
    config = ROOT / "example" / example
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        server_command(config, f"127.0.0.1:{port}", f"127.0.0.1:{admin}"), cwd=ROOT, env=env, stderr=log
    )
    main = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(main, proc, home / "server.log")
        yield Running(main, f"http://127.0.0.1:{admin}", home)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(400):
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(f"the server did not become ready:\n{log.read_text()}")


# The webhook example adds conditional routes, two json_response statuses and nested required_fields.
@pytest.mark.parametrize("example", ["order-processing-pipeline.yaml", "webhook-pipeline.yaml"])
def test_the_main_listener_keeps_its_document(running: Running) -> None:
    document = running.main + "/openapi.json"
    result = schemathesis(document, running.home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(running.home) == operations(document) - {"GET /openapi.json"}


def test_the_admin_listener_keeps_its_document(running: Running) -> None:
    headers = token("fuzz", exp=int(time.time()) + 3600)
    streaming = "/api/events"  # an event stream: it never ends (see the module's docstring)
    extra = ["--header", f"Authorization: {headers['Authorization']}", "--exclude-path", streaming]
    left_out = {"GET /api/openapi.json", f"GET {streaming}"}  # and the document itself, which is not tested
    _record_executions(running, headers)  # for the links from the list into an execution's detail and its re-run
    document = running.admin + "/api/openapi.json"
    result = schemathesis(document, running.home, *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(running.home) == operations(document) - left_out


def _record_executions(running: Running, headers: dict[str, str]) -> None:
    """An order that succeeds and one its validation refuses, once the admin API lists both (recording is batched)."""
    for body, status in (({"customer_id": "C-42", "total": "19.90", "currency": "eur"}, 201), ({"total": 1}, 400)):
        order = urllib.request.Request(
            running.main + "/api/orders", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(order, timeout=10) as response:
                answered = response.status
        except urllib.error.HTTPError as exc:  # the refused order
            answered = exc.code
        assert answered == status
    listed = urllib.request.Request(running.admin + "/api/executions", headers=headers)
    for _ in range(200):
        with urllib.request.urlopen(listed, timeout=10) as response:
            if len(json.load(response)["executions"]) >= 2:
                return
        time.sleep(0.05)
    pytest.fail("the two executions were not recorded")


def operations(document: str) -> set[str]:
    """`METHOD /path` of every operation in the document at `document`."""
    with urllib.request.urlopen(document, timeout=10) as response:
        paths = json.load(response)["paths"]
    return {f"{method.upper()} {path}" for path, item in paths.items() for method in item if method != "parameters"}


def ran(home: Path) -> set[str]:
    """The operations the run's JUnit report lists, each without a failure or an error."""
    cases = ElementTree.parse(home / REPORT).getroot().iter("testcase")
    named = {case.get("name", ""): case for case in cases}
    assert all(case.find("failure") is None and case.find("error") is None for case in named.values())
    return {name for name in named if name != "Stateful tests"}
