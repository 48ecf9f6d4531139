"""Tests for config loading: YAML with lines, `${VAR}`, validation with file:line, durations, flow and routing."""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from server.config.durations import parse_duration
from server.config.loader import AppConfig, load_config_file, load_config_text
from server.config.model import END
from server.config.routing import RouteConflict, Router
from server.errors import ConfigError, MethodNotAllowed, NotFound
from server.hooks.manager import build_plugin_manager
from server.hooks.registry import Registry, build_registry
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The built-in step types, without installed plugin packages."""
    return build_registry(build_plugin_manager(entry_points=False))


@pytest.fixture
def write(tmp_path: Path):
    """Write dedented YAML to a file and return its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


@pytest.fixture
def load(write, registry: Registry):
    """Load dedented YAML text through a real file."""

    def load(text: str, **kwargs: Any) -> AppConfig:
        return load_config_file(write(text), registry, **kwargs)

    return load


@pytest.fixture
def problems(write, registry: Registry):
    """The `file:line: message` problems of a config that must fail, with the file name replaced by `F`."""

    def problems(text: str, **kwargs: Any) -> list[str]:
        path = write(text)
        with pytest.raises(ConfigError) as info:
            load_config_file(path, registry, **kwargs)
        assert all(p.startswith(f"{path}:") for p in info.value.problems), info.value.problems
        return sorted(p.replace(str(path), "F", 1) for p in info.value.problems)

    return problems


def flow_names(config: AppConfig, pipeline: str) -> dict[str, str | None]:
    """Each step's fall-through successor by name (None at the end)."""
    p = config.pipelines[pipeline]
    return {s.name: (None if nxt == END else p.steps[nxt].name) for s, nxt in zip(p.steps, p.flow, strict=True)}


# --- the shipped examples ------------------------------------------------------------------------


def test_order_processing_example_loads(registry: Registry) -> None:
    path = ROOT / "example/order-processing-pipeline.yaml"
    config = load_config_file(path, registry, strict=False, log_warnings=False)
    assert config.name == "order-processing"
    # step.greet comes from components/greeting.py, which these built-in plugins lack (tests/test_startup.py
    # starts the example with the shipped components: no warning there).
    assert config.warnings == (
        f"{path}:93: pipeline 'greet', step 'greet': unknown step type 'step.greet' "
        "(the pipeline answers 503 until a plugin provides it)",
    )
    assert list(config.pipelines) == ["create-order", "notify-customer", "get-order", "greet"]
    create = config.pipelines["create-order"]
    assert (create.trigger.type, create.trigger.method, create.trigger.path) == ("http", "POST", "/api/orders")
    assert [s.name for s in create.steps] == ["validate", "normalize", "price", "announce", "respond"]
    assert [s.type for s in create.steps] == [
        "step.validate",
        "step.transform",
        "step.set",
        "step.publish",
        "step.json_response",
    ]
    assert (create.on_error, create.timeout, create.compensation) == ("stop", 30.0, ())
    assert create.flow == (1, 2, 3, 4, END)
    assert create.steps[0].line == 18 and create.line == 11
    assert create.steps[0].prepared[0] == "json_schema"
    assert [p.name for p in config.events["order.created"]] == ["notify-customer"]
    assert config.pipelines["notify-customer"].timeout == 30.0  # the default
    assert config.router.match("POST", "/api/orders")[:2] == (create, "/api/orders")
    target, route, params = config.router.match("GET", "/api/orders/3f2a")
    assert (target.name, route, params) == ("get-order", "/api/orders/{id}", {"id": "3f2a"})
    assert sorted((m, t) for m, t, _ in config.router.routes()) == [
        ("GET", "/api/greet"),
        ("GET", "/api/orders/{id}"),
        ("POST", "/api/orders"),
    ]


def test_webhook_example_joins_conditional_targets(registry: Registry) -> None:
    config = load_config_file(ROOT / "example/webhook-pipeline.yaml", registry)
    assert config.pipelines["payment-events"].steps[1].targets == (
        "mark-paid",
        "mark-failed",
        "mark-refunded",
        "ignore",
    )
    assert flow_names(config, "payment-events") == {
        "validate": "route",
        "route": "announce",
        "mark-paid": "announce",
        "mark-failed": "announce",
        "mark-refunded": "announce",
        "ignore": "announce",
        "announce": "respond",
        "respond": None,
    }


# --- ${VAR} expansion -----------------------------------------------------------------------------

ENV_CONFIG = """
pipelines:
  p:
    trigger: {type: http, config: {path: "${PREFIX}/orders", method: POST}}
    timeout: ${TIMEOUT}
    steps:
      - name: s
        type: step.set
        config:
          values:
            plain: ${A}
            mixed: "a=${A}, b=${B}!"
            nested: {list: ["x-${A}", {deep: "${B}"}]}
            fallback: "${UNSET:-dflt}"
            empty_fallback: "${EMPTY:-dflt}"
            empty_plain: "[${EMPTY}]"
            set_wins: "${A:-dflt}"
            blank_default: "<${UNSET:-}>"
            escaped: "$${A} costs $$5"
            lone: "cost $5 and $A"
"""


def test_env_expansion(load) -> None:
    env = {"PREFIX": "/v1", "TIMEOUT": "45", "A": "alpha", "B": "beta", "EMPTY": ""}
    config = load(ENV_CONFIG, env=env)
    pipeline = config.pipelines["p"]
    assert pipeline.trigger.path == "/v1/orders"
    assert pipeline.timeout == 45.0  # a bare number of seconds, even as a string
    assert pipeline.steps[0].config["values"] == {
        "plain": "alpha",
        "mixed": "a=alpha, b=beta!",
        "nested": {"list": ["x-alpha", {"deep": "beta"}]},
        "fallback": "dflt",
        "empty_fallback": "dflt",  # shell semantics: `:-` replaces an empty value too
        "empty_plain": "[]",  # set but empty is not an error
        "set_wins": "alpha",
        "blank_default": "<>",
        "escaped": "${A} costs $5",
        "lone": "cost $5 and $A",
    }


def test_env_expansion_reads_the_process_environment(load, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WF_TEST_PATH", "/from-env")
    config = load("""
        pipelines:
          p:
            trigger: {type: http, config: {path: "${WF_TEST_PATH}"}}
            steps: [{name: s, type: step.log}]
    """)
    assert config.router.match("POST", "/from-env")[1] == "/from-env"


def test_unset_variables_are_all_reported_with_their_lines(problems) -> None:
    found = problems(ENV_CONFIG, env={"A": "alpha"})
    assert found == sorted(
        [
            "F:3: environment variable PREFIX is not set (used as ${PREFIX})",
            "F:4: environment variable TIMEOUT is not set (used as ${TIMEOUT})",
            "F:11: environment variable B is not set (used as ${B})",
            "F:12: environment variable B is not set (used as ${B})",
            "F:15: environment variable EMPTY is not set (used as ${EMPTY})",
        ]
    )


def test_unset_variable_never_loads_as_literal(load, registry: Registry) -> None:
    text = (
        "pipelines:\n  p:\n    trigger: {type: manual}\n"
        "    steps: [{name: s, type: step.log, config: {message: '${SECRET}'}}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, registry, source="inline.yaml", env={})
    assert info.value.problems == ["inline.yaml:4: environment variable SECRET is not set (used as ${SECRET})"]
    config = load_config_text(text, registry, env={"SECRET": "s3"})
    assert config.pipelines["p"].steps[0].config == {"message": "s3"}


# --- validation: every problem, with file:line -----------------------------------------------------

SINGLE_STEP = "steps: [{name: s, type: step.log}]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            steps:
              - name: a
                type: step.nope
    """,
            ["F:6: pipeline 'p', step 'a': unknown step type 'step.nope'"],
            id="unknown-step-type",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            steps:
              - {name: a, type: step.log}
              - {name: b, type: step.log}
              - {name: a, type: step.log}
    """,
            ["F:7: pipeline 'p': duplicate step name 'a'"],
            id="duplicate-step-name",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            steps:
              - name: route
                type: step.conditional
                config: {field: kind, routes: {x: a, y: nowhere}, default: gone}
              - {name: a, type: step.log}
    """,
            [
                "F:5: pipeline 'p': step 'route' jumps to 'gone', which is not a step of this pipeline",
                "F:5: pipeline 'p': step 'route' jumps to 'nowhere', which is not a step of this pipeline",
            ],
            id="conditional-missing-targets",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            steps:
              - {name: a, type: step.log, next: b}
    """,
            ["F:5: pipeline 'p': step 'a' jumps to 'b', which is not a step of this pipeline"],
            id="next-missing",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            steps:
              - {name: route, type: step.conditional, config: {field: k, routes: {x: a}}}
              - {name: a, type: step.nope}
    """,
            ["F:6: pipeline 'p', step 'a': unknown step type 'step.nope'"],
            id="jump-to-invalid-step-is-one-error",
        ),
        pytest.param(
            """
        pipelines:
          one:
            trigger: {type: http, config: {path: /a, method: POST}}
            steps: [{name: s, type: step.log}]
          two:
            trigger: {type: http, config: {path: /a}}
            steps: [{name: s, type: step.log}]
    """,
            ["F:6: pipeline 'two': POST /a is already the trigger of one"],
            id="same-method-and-path",
        ),
        pytest.param(
            """
        pipelines:
          one:
            trigger: {type: http, config: {path: "/a/{id}", method: get}}
            steps: [{name: s, type: step.log}]
          two:
            trigger: {type: http, config: {path: "/a/{x}", method: GET}}
            steps: [{name: s, type: step.log}]
    """,
            ["F:6: pipeline 'two': GET /a/{x} is already the trigger of one"],
            id="same-templated-path",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: http, config: {path: "/a/{id}/b/{id}"}}
            steps: [{name: s, type: step.log}]
    """,
            ["F:3: pipeline 'p': POST /a/{id}/b/{id} names a path parameter twice"],
            id="repeated-path-parameter",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            steps:
              - name: respond
                type: step.json_response
                config:
                  body:
                    items: [{ok: "{{ .x }}"}, {bad: "{{ .x | nope }}"}]
    """,
            [
                "F:7: pipeline 'p', step 'respond': config.body.items[1].bad: unknown function \"nope\" "
                'in "{{ .x | nope }}"'
            ],
            id="malformed-template",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            steps:
              - {name: a, type: step.nope, config: {m: "{{ .x"}}
    """,
            [
                "F:5: pipeline 'p', step 'a': config.m: unclosed action in \"{{ .x\"",
                "F:5: pipeline 'p', step 'a': unknown step type 'step.nope'",
            ],
            id="template-and-type-both-reported",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            timeout: 5 parsecs
            steps:
              - {name: a, type: step.log, timeout: 0}
          q:
            trigger: {type: schedule, config: {interval: -1s}}
            timeout: null
            steps: [{name: s, type: step.log}]
    """,
            [
                "F:4: pipeline 'p': timeout: '5 parsecs' is not a duration like '30s' or '1m30s'",
                "F:6: pipeline 'p', step 'a': timeout: 0: a duration must be positive",
                "F:8: pipeline 'q': interval: '-1s' is not a duration like '30s' or '1m30s'",
                "F:9: pipeline 'q': timeout: None is not a duration like '30s' or '1m30s'",
            ],
            id="bad-durations",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger:
              type: webhook
            steps: [{name: s, type: step.log}]
          q:
            trigger: http
            steps: [{name: s, type: step.log}]
          r:
            steps: [{name: s, type: step.log}]
    """,
            [
                "F:10: pipeline 'r': 'trigger' must be a mapping with a 'type'",
                "F:4: pipeline 'p': trigger type 'webhook' is not one of http, chat, event, schedule, manual",
                "F:7: pipeline 'q': 'trigger' must be a mapping with a 'type'",
            ],
            id="bad-triggers",
        ),
        pytest.param(
            """
        pipelines:
          a:
            trigger: {type: http}
            %s
          b:
            trigger:
              type: http
              config: {method: GET}
            %s
          c:
            trigger: {type: http, config: {path: orders}}
            %s
          d:
            trigger: {type: http, config: {path: /d, method: TRACE}}
            %s
          e:
            trigger: {type: event}
            %s
          f:
            trigger: {type: chat, config: {platform: irc}}
            %s
          g:
            trigger: {type: schedule, config: {}}
            %s
    """
            % ((SINGLE_STEP,) * 7),
            [
                "F:11: pipeline 'c': an http trigger needs a 'path' starting with '/'",
                "F:14: pipeline 'd': method 'TRACE' is not GET, POST, PUT, PATCH or DELETE",
                "F:17: pipeline 'e': an event trigger needs a 'topic'",
                "F:20: pipeline 'f': a chat trigger needs 'platform': one of slack, twilio, telegram, generic",
                "F:23: pipeline 'g': a schedule trigger needs an 'interval' such as '5m'",
                "F:3: pipeline 'a': an http trigger needs a 'path' starting with '/'",
                "F:8: pipeline 'b': an http trigger needs a 'path' starting with '/'",
            ],
            id="incomplete-triggers",
        ),
        pytest.param(
            """
        pipelines:
          a: {trigger: {type: http, config: {path: /metrics}}, %s}
          b: {trigger: {type: http, config: {path: /healthz}}, %s}
          c: {trigger: {type: http, config: {path: /readyz/deep}}, %s}
          d: {trigger: {type: http, config: {path: "/executions/{id}"}}, %s}
          e: {trigger: {type: http, config: {path: /webhooks/slack/events}}, %s}
          f: {trigger: {type: http, config: {path: /openapi.json}}, %s}
    """
            % ((SINGLE_STEP,) * 6),
            [
                f"F:{n}: pipeline '{p}': path '{path}' is reserved by the server"
                for n, p, path in [
                    (2, "a", "/metrics"),
                    (3, "b", "/healthz"),
                    (4, "c", "/readyz/deep"),
                    (5, "d", "/executions/{id}"),
                    (6, "e", "/webhooks/slack/events"),
                    (7, "f", "/openapi.json"),
                ]
            ],
            id="reserved-paths",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            on_error: retry
            steps: [{name: s, type: step.log}]
    """,
            ["F:4: pipeline 'p': on_error must be one of stop, skip, compensate"],
            id="bad-on-error",
        ),
        pytest.param(
            """
        name: x
        pipeline: {}
        pipelines:
          p:
            trigger: {type: manual}
            retries: 3
            steps:
              - {name: a, type: step.log, cofnig: {}}
    """,
            [
                "F:2: unknown top-level key 'pipeline'",
                "F:6: pipeline 'p': unknown key 'retries' (expected one of compensation, description, on_error, steps, "
                "timeout, trigger)",
                "F:8: pipeline 'p', step 'a': unknown key 'cofnig'",
            ],
            id="unknown-keys",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            steps:
              - name: check
                type: step.validate
                config: {strategy: nope}
              - name: shape
                type: step.transform
                config:
                  convert: {x: complex}
              - {name: say, type: step.log, config: {level: loud}}
              - {name: route, type: step.conditional, config: {routes: {a: say}}}
    """,
            [
                "F:12: pipeline 'p', step 'say': level 'loud' is not debug, info, warning or error",
                "F:13: pipeline 'p', step 'route': step.conditional needs 'field' (a template or a dot path)",
                "F:7: pipeline 'p', step 'check': strategy must be 'required_fields' or 'json_schema'",
                "F:10: pipeline 'p', step 'shape': convert.x: 'complex' is not one of int, float, str, bool",
            ],
            id="plugin-prepare-rejects",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            steps: [{name: s, type: step.log}]
          p:
            trigger: {type: manual}
            steps: [{name: s, type: step.log}]
    """,
            ["F:5: duplicate key 'p' (first defined on line 2)"],
            id="duplicate-pipeline-name",
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            steps:
              - {name: a, type: step.log
              - {name: b, type: step.log}
    """,
            ["F:6: invalid YAML: expected ',' or '}', but got '{'"],
            id="invalid-yaml",
        ),
        pytest.param("- a\n- b\n", ["F:1: the config must be a mapping with a 'pipelines' key"], id="top-level-list"),
        pytest.param("", ["F:1: the config must be a mapping with a 'pipelines' key"], id="empty-file"),
        pytest.param(
            "name: x\n", ["F:1: 'pipelines' must be a mapping of pipeline names to pipelines"], id="no-pipelines"
        ),
        pytest.param(
            """
        pipelines:
          p:
            trigger: {type: manual}
            steps: []
          q:
            trigger: {type: manual}
            steps:
              - just-a-string
              - {type: step.log}
              - {name: c, type: step.log, config: [1]}
              - {name: d, type: step.log, next: [a]}
    """,
            [
                "F:10: pipeline 'q', step 'c': 'config' must be a mapping",
                "F:11: pipeline 'q', step 'd': 'next' must name a step",
                "F:4: pipeline 'p': 'steps' is empty: a pipeline must list at least one step",
                "F:8: pipeline 'q': steps[0] must be a mapping with 'name' and 'type'",
                "F:9: pipeline 'q': steps[1] needs a 'name'",
            ],
            id="malformed-steps",
        ),
    ],
)
def test_every_problem_is_reported_with_its_line(problems, text: str, expected: list[str]) -> None:
    assert problems(text) == sorted(expected)


def test_all_problems_of_a_file_come_at_once(problems) -> None:
    found = problems("""
        version: 2
        extra: true
        pipelines:
          a:
            trigger: {type: http, config: {path: /a}}
            on_error: never
            steps:
              - {name: s, type: step.nope}
              - {name: s, type: step.log, timeout: 5 parsecs}
          b:
            trigger: {type: http, config: {path: /a}}
            steps:
              - {name: t, type: step.set, config: {values: {x: "{{ .y "}}}
    """)
    assert found == sorted(
        [
            "F:2: unknown top-level key 'extra'",
            "F:6: pipeline 'a': on_error must be one of stop, skip, compensate",
            "F:8: pipeline 'a', step 's': unknown step type 'step.nope'",
            "F:9: pipeline 'a', step 's': timeout: '5 parsecs' is not a duration like '30s' or '1m30s'",
            # the route conflict is found although both pipelines have other problems
            "F:11: pipeline 'b': POST /a is already the trigger of a",
            "F:13: pipeline 'b', step 't': config.values.x: unclosed action in \"{{ .y \"",
        ]
    )


def test_unknown_step_type_is_a_warning_when_not_strict(load, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="workflow.config")
    path_text = """
        pipelines:
          p:
            trigger: {type: manual}
            steps:
              - {name: a, type: step.later}
              - {name: b, type: step.log}
    """
    config = load(path_text, strict=False)
    assert [s.type for s in config.pipelines["p"].steps] == ["step.later", "step.log"]
    assert len(config.warnings) == 1
    assert config.warnings[0].endswith(
        ":5: pipeline 'p', step 'a': unknown step type 'step.later' "
        "(the pipeline answers 503 until a plugin provides it)"
    )
    assert [r.getMessage() for r in caplog.records] == list(config.warnings)


@pytest.mark.parametrize("path", ["/healthcare", "/metrics-summary", "/livestock", "/webhooks-log", "/ready2"])
def test_paths_that_only_start_like_reserved_ones_are_allowed(load, path: str) -> None:
    config = load(f"pipelines:\n  p:\n    trigger: {{type: http, config: {{path: {path}}}}}\n    {SINGLE_STEP}\n")
    assert config.router.match("POST", path)[1] == path


def test_legacy_top_level_keys_load_with_one_log_line_each(load, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="workflow.config")
    config = load("""
        version: "1.0"
        description: the original engine's config
        requires: [http]
        modules:
          - {name: server, type: http.server, config: {address: ":8080"}}
        workflows:
          http: {routes: []}
        triggers:
          http: {}
        pipelines:
          p:
            trigger: {type: manual}
            steps: [{name: s, type: step.log}]
    """)
    assert list(config.pipelines) == ["p"]
    records = [r for r in caplog.records if r.name == "workflow.config"]
    lines = {"version": 1, "description": 2, "requires": 3, "modules": 4, "workflows": 6, "triggers": 8}
    assert len(records) == len(lines)
    for record, (key, line) in zip(records, lines.items(), strict=True):
        assert record.levelno == logging.INFO
        assert record.getMessage().startswith(f"ignoring top-level key {key!r} (")
        assert f"config.yaml:{line})" in record.getMessage()


# --- durations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("1h", 3600.0),
        ("1h2m3s", 3723.0),
        ("1.5m", 90.0),
        (".5s", 0.5),
        ("500us", 0.0005),
        ("10", 10.0),
        (" 2.5 ", 2.5),
        (5, 5.0),
        (0.1, 0.1),
    ],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "0: a duration must be positive"),
        ("0s", "'0s': a duration must be positive"),
        (-3, "-3: a duration must be positive"),
        ("-5s", "'-5s' is not a duration like '30s' or '1m30s'"),
        ("5 parsecs", "'5 parsecs' is not a duration like '30s' or '1m30s'"),
        ("1m 30s", "'1m 30s' is not a duration like '30s' or '1m30s'"),
        ("s", "'s' is not a duration like '30s' or '1m30s'"),
        ("  ", "empty duration"),
        (True, "True is not a duration like '30s' or '1m30s'"),
        (None, "None is not a duration like '30s' or '1m30s'"),
        ([5], "[5] is not a duration like '30s' or '1m30s'"),
        (float("inf"), "inf: a duration must be a finite number of seconds"),
        (float("nan"), "nan: a duration must be a finite number of seconds"),
        ("9" * 400 + "h", "a duration must be a finite number of seconds"),
    ],
)
def test_bad_durations(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value)


# --- the conditional join plan ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(
            """
        - {name: a, type: step.log}
        - {name: b, type: step.log}
    """,
            {"a": "b", "b": None},
            id="sequential",
        ),
        pytest.param(
            """
        - {name: route, type: step.conditional, config: {field: k, routes: {x: one, y: two}, default: three}}
        - {name: one, type: step.log}
        - {name: two, type: step.log}
        - {name: three, type: step.log}
        - {name: join, type: step.log}
        - {name: end, type: step.log}
    """,
            {"route": "join", "one": "join", "two": "join", "three": "join", "join": "end", "end": None},
            id="targets-never-fall-through-to-a-sibling",
        ),
        pytest.param(
            """
        - {name: route, type: step.conditional, config: {field: k, routes: {x: one, y: two}}}
        - {name: one, type: step.log, next: done}
        - {name: two, type: step.log}
        - {name: middle, type: step.log}
        - {name: done, type: step.log}
    """,
            {"route": "middle", "one": "done", "two": "middle", "middle": "done", "done": None},
            id="next-wins",
        ),
        pytest.param(
            """
        - {name: route, type: step.conditional, config: {field: k, routes: {x: one, y: two, z: one}}}
        - {name: one, type: step.log}
        - {name: two, type: step.log}
    """,
            {"route": None, "one": None, "two": None},
            id="last-target-ends",
        ),
        pytest.param(
            """
        - {name: first, type: step.log}
        - {name: route, type: step.conditional, config: {field: k, routes: {x: two}, default: one}}
        - {name: one, type: step.log}
        - {name: between, type: step.log}
        - {name: two, type: step.log}
        - {name: after, type: step.log}
    """,
            {"first": "route", "route": "after", "one": "after", "between": "after", "two": "after", "after": None},
            id="join-is-after-the-last-target",
        ),
    ],
)
def test_conditional_join_plan(load, steps: str, expected: dict[str, str | None]) -> None:
    body = textwrap.indent(textwrap.dedent(steps).strip(), " " * 6)
    config = load(f"pipelines:\n  p:\n    trigger: {{type: manual}}\n    steps:\n{body}\n")
    assert flow_names(config, "p") == expected


# --- routing ---------------------------------------------------------------------------------------


@pytest.fixture
def router() -> Router:
    router: Router = Router()
    for method, template in [
        ("GET", "/orders/{id}"),
        ("DELETE", "/orders/{order}"),
        ("GET", "/orders/new"),
        ("POST", "/orders"),
        ("GET", "/shops/{shop}/orders/{id}"),
    ]:
        router.add(method, template, f"{method} {template}")
    return router


@pytest.mark.parametrize(
    ("method", "path", "target", "route", "params"),
    [
        ("GET", "/orders/new", "GET /orders/new", "/orders/new", {}),
        ("GET", "/orders/42", "GET /orders/{id}", "/orders/{id}", {"id": "42"}),
        ("DELETE", "/orders/42", "DELETE /orders/{order}", "/orders/{order}", {"order": "42"}),
        ("DELETE", "/orders/new", "DELETE /orders/{order}", "/orders/{order}", {"order": "new"}),
        ("POST", "/orders", "POST /orders", "/orders", {}),
        (
            "GET",
            "/shops/s1/orders/o%2F2",
            "GET /shops/{shop}/orders/{id}",
            "/shops/{shop}/orders/{id}",
            {"shop": "s1", "id": "o%2F2"},
        ),
    ],
)
def test_router_matches(
    router: Router, method: str, path: str, target: str, route: str, params: dict[str, str]
) -> None:
    assert router.match(method, path) == (target, route, params)


@pytest.mark.parametrize(
    ("method", "path", "allowed", "route"),
    [
        ("PUT", "/orders/42", ["DELETE", "GET"], "/orders/{id}"),
        ("POST", "/orders/new", ["DELETE", "GET"], "/orders/new"),
        ("GET", "/orders", ["POST"], "/orders"),
    ],
)
def test_router_method_not_allowed(router: Router, method: str, path: str, allowed: list[str], route: str) -> None:
    with pytest.raises(MethodNotAllowed) as info:
        router.match(method, path)
    assert (info.value.status, info.value.allowed, info.value.route) == (405, allowed, route)
    assert info.value.to_json() == {"error": f"method {method} is not allowed for {path}", "allowed": allowed}


@pytest.mark.parametrize("path", ["/", "/order", "/orders/", "/orders/42/items", "/shops/s1/orders", "/ORDERS"])
def test_router_not_found(router: Router, path: str) -> None:
    with pytest.raises(NotFound) as info:
        router.match("GET", path)
    assert info.value.status == 404 and path in info.value.message


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("/orders/{x}", "GET /orders/{x} is already the trigger of /orders/{id}"),
        ("/orders/new", "GET /orders/new is already the trigger of /orders/new"),
        ("/a/{id}/{id}", "GET /a/{id}/{id} names a path parameter twice"),
    ],
)
def test_router_rejects_conflicts(router: Router, template: str, message: str) -> None:
    with pytest.raises(RouteConflict) as info:
        router.add("GET", template, "late")
    assert str(info.value) == message
    assert router.match("GET", "/orders/1")[0] == "GET /orders/{id}"  # the router is unchanged
