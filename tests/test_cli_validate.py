"""Tests for `workflow-server validate FILE` and the run command's config flags."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path

import pytest

from server import cli
from tests.conftest import ROOT, run_cli

EXAMPLE = "example/order-processing-pipeline.yaml"

BAD_CONFIG = """
name: broken
extra: 1
pipelines:
  orders:
    trigger: {type: http, config: {path: /metrics}}
    timeout: 5 parsecs
    steps:
      - {name: check, type: step.validate, config: {strategy: nope}}
      - {name: check, type: step.nope}
      - {name: route, type: step.conditional, config: {field: k, routes: {a: missing}}}
"""
BAD_PROBLEMS = [
    "2: unknown top-level key 'extra'",
    "5: pipeline 'orders': path '/metrics' is reserved by the server",
    "6: pipeline 'orders': timeout: '5 parsecs' is not a duration like '30s' or '1m30s'",
    "8: pipeline 'orders', step 'check': strategy must be 'required_fields' or 'json_schema'",
    "9: pipeline 'orders', step 'check': unknown step type 'step.nope'",
    "10: pipeline 'orders': step 'route' jumps to 'missing', which is not a step of this pipeline",
]


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def clean_process(monkeypatch: pytest.MonkeyPatch):
    """In-process runs of cli.main: no WORKFLOW_* from outside, and the root logger restored afterwards."""
    for name in list(os.environ):
        if name.startswith("WORKFLOW_"):
            monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_validate_good_file() -> None:
    result = run_cli("validate", EXAMPLE)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{EXAMPLE}: ok (4 pipelines)\n", "")


def test_validate_bad_file_prints_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, BAD_CONFIG)
    result = run_cli("validate", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert sorted(result.stderr.splitlines()) == sorted(f"{path}:{p}" for p in BAD_PROBLEMS)


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        pytest.param(
            "pipelines:\n  p: [\n",
            {},
            ["3: invalid YAML: expected the node content, but found '<stream end>'"],
            id="invalid-yaml",
        ),
        pytest.param("- pipelines\n", {}, ["1: the config must be a mapping with a 'pipelines' key"], id="list"),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: http, config: {path: "${WF_PREFIX}/x"}}
            steps: [{name: s, type: step.log, config: {message: "${WF_GREETING}"}}]
    """,
            {"WF_GREETING": "hi"},
            ["3: environment variable WF_PREFIX is not set (used as ${WF_PREFIX})"],
            id="unset-variable",
        ),
    ],
)
def test_validate_reports_file_and_line(tmp_path: Path, text: str, env: dict[str, str], expected: list[str]) -> None:
    path = write(tmp_path, text)
    result = run_cli("validate", str(path), env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"{path}:{p}" for p in expected]


def test_validate_uses_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        pipelines:
          p:
            trigger: {type: http, config: {path: "${WF_PREFIX}/x"}}
            timeout: ${WF_TIMEOUT}
            steps: [{name: s, type: step.log}]
    """,
    )
    result = run_cli("validate", str(path), env={"WF_PREFIX": "/api", "WF_TIMEOUT": "1m"})
    assert (result.returncode, result.stdout) == (0, f"{path}: ok (1 pipelines)\n")


def test_validate_in_process(clean_process, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(ROOT / EXAMPLE)]) == 0
    assert capsys.readouterr().out == f"{ROOT / EXAMPLE}: ok (4 pipelines)\n"
    path = write(tmp_path, BAD_CONFIG)
    assert cli.main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert sorted(captured.err.splitlines()) == sorted(f"{path}:{p}" for p in BAD_PROBLEMS)


def test_validate_missing_file(clean_process, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert cli.main(["validate", str(missing)]) == 1
    assert capsys.readouterr().err == f"{missing}: cannot read config: No such file or directory\n"


@pytest.mark.parametrize("flag", ["-config", "--config", "-c", "-config=", "--config="])
def test_run_accepts_config_flags(clean_process, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str) -> None:
    missing = tmp_path / "absent.yaml"
    args = [flag + str(missing)] if flag.endswith("=") else [flag, str(missing)]
    assert cli.main(args) == 1
    assert capsys.readouterr().err == f"{missing}: cannot read config: No such file or directory\n"


def test_run_reads_config_from_environment(
    clean_process, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "from-env.yaml"
    monkeypatch.setenv("WORKFLOW_CONFIG", str(missing))
    assert cli.main(["run"]) == 1
    assert capsys.readouterr().err == f"{missing}: cannot read config: No such file or directory\n"


def test_run_reports_every_config_problem(clean_process, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, BAD_CONFIG)
    assert cli.main(["-config", str(path), "-addr", ":0", "-admin-addr", ":0"]) == 1
    # At start-up an unknown step type is a warning (a component may provide it later), not an error.
    errors = [line for line in capsys.readouterr().err.splitlines() if "unknown step type" not in line]
    assert sorted(errors) == sorted(f"{path}:{p}" for p in BAD_PROBLEMS if "unknown step type" not in p)


def test_run_rejects_a_bad_address(clean_process, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-config", str(tmp_path / "x.yaml"), "--addr", "nowhere"]) == 1
    assert capsys.readouterr().err == (
        "workflow-server: --addr: 'nowhere' is not an address like ':8080', 'HOST:PORT' or '[::1]:PORT'\n"
    )


def test_run_without_config_is_a_usage_error(clean_process, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "no config file: pass -config FILE or set WORKFLOW_CONFIG" in capsys.readouterr().err
