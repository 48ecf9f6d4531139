"""Configs that are hostile or careless: bounded YAML, a config watcher that survives anything, complete validation."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from server.config.loader import load_config_text
from server.errors import ConfigError
from server.hooks.manager import build_plugin_manager
from server.hooks.registry import Registry, build_registry
from server.keys import RELOADER
from tests.conftest import run_cli, until

# Nine levels of nine aliases: 9**9 strings once expanded, from under a kilobyte of text.
BOMB_LINES = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)
]
BOMB = "pipelines:\n  p:\n    trigger: {type: manual}\n    steps:\n      - name: s\n        type: step.set\n" + (
    "        config:\n          values:\n" + "".join(f"            {line}\n" for line in BOMB_LINES)
)
DEEP = (
    "pipelines:\n  p:\n    trigger: {type: manual}\n    steps:\n      - {name: s, type: step.set, config: {values: {v: "
    + ("[" * 300 + "]" * 300 + "}}}\n")
)
DEEP_BLOCK = "pipelines:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(300))
GOOD = """
pipelines:
  hello:
    trigger: {type: http, config: {path: /hello, method: GET}}
    steps:
      - {name: s, type: step.json_response, config: {body: {v: VALUE}}}
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry(build_plugin_manager(entry_points=False))


def problems_of(text: str, registry: Registry, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(text).lstrip("\n"), registry, source="F", **kwargs)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "max_depth", "expected"),
    [
        (BOMB, 64, "F:14: the YAML expands to more than 250000 values once its aliases are expanded"),
        (DEEP, 64, "F:5: the YAML nests deeper than the limit of 64 levels (WORKFLOW_MAX_JSON_DEPTH)"),
        (DEEP_BLOCK, 64, "F:65: the YAML nests deeper than the limit of 64 levels (WORKFLOW_MAX_JSON_DEPTH)"),
        ("a: &a [1, *a]\n", 64, "F:1: alias *a is used inside its own anchor"),
        ("name: x\nn: " + "9" * 5000 + "\n", 64, "F:2: a number has more than 4300 digits"),
        ("name: x\nflag: !!bool maybe\n", 64, "F:2: the value 'maybe' cannot be read as bool: 'maybe'"),
        (
            "name: x\nwhen: 2026-13-45\n",
            64,
            "F:2: the value '2026-13-45' cannot be read as timestamp: month must be in 1..12",
        ),
        # five levels as written, seven once the aliases are followed
        (
            "x: &x [[[[1]]]]\ny: [*x, [*x]]\n",
            6,
            "F:2: the YAML nests deeper than the limit of 6 levels (WORKFLOW_MAX_JSON_DEPTH) once its aliases are"
            " expanded",
        ),
    ],
    ids=[
        "alias-bomb",
        "flow-nesting",
        "block-nesting",
        "recursive-alias",
        "long-int",
        "bad-bool",
        "bad-date",
        "depth-via-aliases",
    ],
)
def test_yaml_past_its_limits_is_one_clear_problem(registry, text, max_depth, expected):
    assert problems_of(text, registry, max_depth=max_depth) == [expected]


def test_aliases_within_the_limits_still_work(registry):
    text = "pipelines:\n  p:\n    trigger: {type: manual}\n    steps:\n"
    text += "      - {name: s0, type: step.set, config: &x {values: {a: [1, 2, 3]}}}\n"
    text += "".join(f"      - {{name: s{i}, type: step.set, config: *x}}\n" for i in range(1, 200))
    config = load_config_text(text, registry)
    assert [step.config for step in config.pipelines["p"].steps] == [{"values": {"a": [1, 2, 3]}}] * 200


@pytest.mark.parametrize("text", [BOMB, DEEP], ids=["alias-bomb", "deep-nesting"])
def test_validate_and_start_up_report_the_line_without_a_traceback(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = 14 if text is BOMB else 5
    validate = run_cli("validate", str(path), env={"WORKFLOW_COMPONENTS_DIR": str(tmp_path / "c")})
    run = run_cli("-config", str(path), "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0")
    for result in (validate, run):
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert f"{path}:{line}: the YAML " in result.stderr, result.stderr


def test_a_config_that_is_not_utf8_is_a_line_not_a_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"pipelines:\n  p:\n    x: \xff\xfe\n")
    result = run_cli("validate", str(path), env={"WORKFLOW_COMPONENTS_DIR": str(tmp_path / "c")})
    assert (result.returncode, result.stderr.strip()) == (1, f"{path}:3: the config is not UTF-8 text (byte 23)")


def save(path: Path, text: str | bytes) -> None:
    """Replace the config as an editor does: a new file renamed over the old one."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(text if isinstance(text, bytes) else textwrap.dedent(text).encode())
    os.replace(temporary, path)


async def health(server: Any) -> dict[str, Any]:
    response = await server.client.get("/healthz")
    return await response.json()


async def test_the_config_watcher_survives_anything_reports_it_and_applies_the_next_good_save(make_server, caplog):
    caplog.set_level(logging.INFO, logger="workflow")
    server = await make_server(GOOD.replace("VALUE", "one"))
    path = server.engine.settings.config_path
    assert (await health(server))["checks"]["config"] == {"status": "ok", "pipelines": 1, "source": str(path)}
    for bad, problem in (
        (BOMB, f"{path}:14: the YAML expands to more than 250000 values once its aliases are expanded"),
        (DEEP, f"{path}:5: the YAML nests deeper than the limit of 64 levels (WORKFLOW_MAX_JSON_DEPTH)"),
        (b"pipelines: \xff\n", f"{path}:1: the config is not UTF-8 text (byte 11)"),
    ):
        save(path, bad)

        async def refused(problem: str = problem) -> bool:
            return (await health(server))["checks"]["config"].get("refused") == [problem]

        await until(refused)
        body = await health(server)
        assert (body["status"], body["checks"]["config"]["status"]) == ("degraded", "degraded")
        response = await server.client.get("/hello")  # the running config keeps serving
        assert (response.status, await response.json()) == (200, {"v": "one"})
    save(path, GOOD.replace("VALUE", "two"))

    async def applied() -> bool:
        response = await server.client.get("/hello")
        return response.status == 200 and await response.json() == {"v": "two"}

    await until(applied)
    assert (await health(server))["checks"]["config"] == {"status": "ok", "pipelines": 1, "source": str(path)}
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_an_unexpected_error_in_a_reload_does_not_stop_the_watcher(make_server, caplog, monkeypatch):
    server = await make_server(GOOD.replace("VALUE", "one"))
    path = server.engine.settings.config_path
    manager = server.client.app[RELOADER]
    original = manager.build_config

    async def broken(text: str, source: str) -> Any:
        raise RecursionError("maximum recursion depth exceeded")  # what a 300-level YAML once raised here

    monkeypatch.setattr(manager, "build_config", broken)
    save(path, GOOD.replace("VALUE", "two"))

    async def refused() -> bool:
        return bool((await health(server))["checks"]["config"].get("refused"))

    await until(refused)
    assert (await health(server))["checks"]["config"]["refused"] == [
        f"{path}: the config could not be loaded (RecursionError: maximum recursion depth exceeded)"
    ]
    monkeypatch.setattr(manager, "build_config", original)
    save(path, GOOD.replace("VALUE", "three"))

    async def applied() -> bool:
        response = await server.client.get("/hello")
        return await response.json() == {"v": "three"}

    await until(applied)
    assert (await health(server))["checks"]["config"]["status"] == "ok"


# --------------------------------------------------------------------------- validation that reports everything


def test_every_problem_in_one_pass_sorted_by_line(registry):
    text = """
        pipelines:
          a:
            trigger: {type: http, config: {path: /a, methd: GET}}
            timeout: 5s
            timeout: 6s
            steps:
              - {name: s, type: step.nope}
          b:
            trigger: {type: http, config: {path: "/x/{id", async: "yes"}}
            steps: {name: s}
          c:
            trigger: {type: http, config: {path: /f//g}}
            steps:
              - {name: s, type: step.log}
          d:
            trigger: {type: http, config: {path: /a, method: post}}
            steps: []
          e:
            trigger: {type: event, config: {topic: t, filter: x}}
            steps:
              - {name: s, type: step.log}
          f:
            trigger: {type: manual, config: {path: /m}}
            steps:
              - {name: s, type: step.log}
    """
    malformed = "is malformed: each segment is text or {name} parameters, none is empty, no brace is left open"
    # Before: the duplicate key alone; with it fixed, the step errors; with those fixed, the route conflict.
    assert problems_of(text, registry) == [
        "F:3: pipeline 'a': unknown key 'methd' in the http trigger's config (expected path, method, async)",
        "F:5: duplicate key 'timeout' (first defined on line 4)",
        "F:7: pipeline 'a', step 's': unknown step type 'step.nope'",
        "F:9: pipeline 'b': path '/x/{id' " + malformed,
        "F:9: pipeline 'b': 'async' must be true or false, not 'yes'",
        "F:10: pipeline 'b': 'steps' must be a list of steps",
        "F:12: pipeline 'c': path '/f//g' " + malformed,
        "F:16: pipeline 'd': POST /a is already the trigger of a",
        "F:17: pipeline 'd': 'steps' is empty: a pipeline must list at least one step",
        "F:19: pipeline 'e': unknown key 'filter' in the event trigger's config (expected topic)",
        "F:23: pipeline 'f': unknown key 'path' in the manual trigger's config (it takes no config)",
    ]


def test_empty_steps_say_what_is_wrong(registry):
    text = "pipelines:\n  p:\n    trigger: {type: manual}\n    steps: []\n"
    assert problems_of(text, registry) == [
        "F:4: pipeline 'p': 'steps' is empty: a pipeline must list at least one step"
    ]


@pytest.mark.parametrize("path", ["/", "/a/", "/files/{name}.json", "/a/{id}/b/{sub_id}", "/x-y_z.~"])
def test_well_formed_paths_are_accepted(registry, path):
    text = f'pipelines:\n  p:\n    trigger: {{type: http, config: {{path: "{path}", async: false}}}}\n'
    config = load_config_text(text + "    steps: [{name: s, type: step.log}]\n", registry)
    assert config.pipelines["p"].trigger.path == path
