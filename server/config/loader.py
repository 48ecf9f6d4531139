"""Load a YAML config into validated, compiled pipelines, reporting every problem as file:line."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..databases import declared_connections, parse_connections
from ..errors import ConfigError
from ..hooks.registry import Registry
from .chat import parse_chat
from .durations import parse_duration
from .model import Pipeline, Step, Trigger, plan_flow
from .routing import RouteConflict, Router
from .templates import TemplateError, compile_value
from .triggers import compile_trigger
from .yamlload import DEFAULT_MAX_DEPTH, LineDict, LineList, YAMLProblem, load_yaml_lenient

log = logging.getLogger("workflow.config")

# Keys the original engine used at the top level: accepted so its configs load, then ignored.
LEGACY_KEYS = ("modules", "workflows", "triggers", "requires", "version", "description")
TOP_LEVEL_KEYS = frozenset({"name", "pipelines", "chat", "connections"}) | frozenset(LEGACY_KEYS)
PIPELINE_KEYS = frozenset({"trigger", "steps", "on_error", "timeout", "compensation", "description"})
STEP_KEYS = frozenset({"name", "type", "config", "next", "timeout", "description"})
ON_ERROR = ("stop", "skip", "compensate")
DEFAULT_PIPELINE_TIMEOUT = 30.0


@dataclass(frozen=True)
class AppConfig:
    """A loaded configuration: pipelines by name plus the indexes that dispatch to them."""

    name: str
    source: str
    pipelines: Mapping[str, Pipeline]
    router: Router[Pipeline]
    events: Mapping[str, tuple[Pipeline, ...]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # The parsed document, kept so a new registry (a component reload) can recompile it.
    document: LineDict = field(default_factory=LineDict, repr=False, compare=False)
    # The `chat:` block's enabled platforms (server/config/chat.py), and the chat pipelines by platform.
    chat: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    chats: Mapping[str, tuple[Pipeline, ...]] = field(default_factory=dict)


class _Problems:
    """Collects problems as `file:line: message` so a load reports all of them at once, sorted by line."""

    def __init__(self, source: str, early: list[tuple[int, str]] | None = None) -> None:
        self.source = source
        self.items: list[tuple[int, str]] = []
        self.warnings: list[str] = []
        # What reading the YAML found (duplicate keys, unset variables): an `${UNSET}` also makes an empty
        # duration on its line, so a line with one of these reports only that.
        self.early = [(line, f"{source}:{line}: {message}") for line, message in early or ()]
        self.early_lines = {line for line, _ in self.early}

    def add(self, line: int, message: str) -> None:
        if line not in self.early_lines:
            self.items.append((line, f"{self.source}:{line}: {message}"))

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(f"{self.source}:{line}: {message}")

    def __bool__(self) -> bool:
        return bool(self.items or self.early)

    def sorted(self) -> list[str]:
        """Every problem, in the order of the file (stable, so one line's problems keep their order)."""
        return [text for _, text in sorted(self.early + self.items, key=lambda item: item[0])]


def load_config_file(
    path: str | Path,
    registry: Registry,
    *,
    env: Mapping[str, str] | None = None,
    strict: bool = True,
    log_warnings: bool = True,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> AppConfig:
    """Read and compile the config at `path`; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:  # a binary file saved over the config
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: the config is not UTF-8 text (byte {exc.start})"]) from None
    return load_config_text(
        text, registry, source=str(path), env=env, strict=strict, log_warnings=log_warnings, max_depth=max_depth
    )


def load_config_text(
    text: str,
    registry: Registry,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    strict: bool = True,
    log_warnings: bool = True,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> AppConfig:
    """Parse and compile config text; unknown step types are errors when `strict`, else warnings (logged)."""
    try:
        doc, early = load_yaml_lenient(text, env, max_depth=max_depth)
    except YAMLProblem as exc:
        raise ConfigError([f"{source}:{line}: {msg}" for line, msg in exc.problems]) from None
    if not isinstance(doc, LineDict):
        problems = [f"{source}:{line}: {msg}" for line, msg in early]
        raise ConfigError([*problems, f"{source}:1: the config must be a mapping with a 'pipelines' key"])
    for key in doc:
        if key in LEGACY_KEYS:
            log.info(
                "ignoring top-level key %r (%s:%d): used by the original engine, not needed here",
                key,
                source,
                doc.line_of(key),
            )
    config = compile_config(doc, registry, source=source, strict=strict, early=early)
    for warning in config.warnings if log_warnings else ():
        log.warning("%s", warning)
    return config


def compile_config(
    doc: LineDict, registry: Registry, *, source: str, strict: bool = True, early: list[tuple[int, str]] | None = None
) -> AppConfig:
    """Compile a parsed config against `registry`: templates, step configs, flow and routes.

    `early` holds what reading the YAML found (duplicate keys, unset variables): reported with the rest.
    """
    problems = _Problems(source, early)
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            problems.add(doc.line_of(key), f"unknown top-level key {key!r}")
    raw_pipelines = doc.get("pipelines")
    if not isinstance(raw_pipelines, LineDict) or not raw_pipelines:
        problems.add(doc.line_of("pipelines"), "'pipelines' must be a mapping of pipeline names to pipelines")
        raw_pipelines = LineDict()
    chat = parse_chat(doc.get("chat"), doc.line_of("chat"), problems.add)
    connections = parse_connections(doc.get("connections"), doc.line_of("connections"), problems.add)
    pipelines = {}
    routes: Router[_Named] = Router()  # every HTTP trigger, its pipeline's other problems notwithstanding
    with declared_connections(connections):  # what the steps' `prepare` may name (step.db_query)
        for name, raw in raw_pipelines.items():
            pipeline, trigger = _pipeline(
                str(name), raw, raw_pipelines.line_of(name), registry, problems, strict, platforms=tuple(chat)
            )
            if pipeline is not None:
                pipelines[pipeline.name] = pipeline
            if trigger is not None and trigger.type == "http":
                try:
                    routes.add(trigger.method, trigger.path, _Named(str(name)))
                except RouteConflict as exc:  # also a malformed path, such as /a/{id}/{id}
                    problems.add(trigger.line, f"pipeline {str(name)!r}: {exc}")
    _check_delegations(pipelines, problems)
    if problems:
        raise ConfigError(problems.sorted())
    router: Router[Pipeline] = Router()
    events: dict[str, list[Pipeline]] = {}
    chats: dict[str, list[Pipeline]] = {}
    for pipeline in pipelines.values():
        trigger = pipeline.trigger
        if trigger.type == "http":
            router.add(trigger.method, trigger.path, pipeline)  # conflicts were reported above
        elif trigger.type == "event":
            events.setdefault(trigger.topic, []).append(pipeline)
        elif trigger.chat is not None:
            chats.setdefault(trigger.chat.platform, []).append(pipeline)
    return AppConfig(
        str(doc.get("name") or Path(source).stem),
        source,
        pipelines,
        router,
        {topic: tuple(ps) for topic, ps in events.items()},
        tuple(problems.warnings),
        doc,
        chat,
        {platform: tuple(ps) for platform, ps in chats.items()},
    )


@dataclass(frozen=True)
class _Named:
    """A route's owner while routes are checked: only its name is needed."""

    name: str


def _check_delegations(pipelines: Mapping[str, Pipeline], problems: _Problems) -> None:
    """A `step.delegate` naming a pipeline that does not exist is a config error, not a 500 later."""
    for pipeline in pipelines.values():
        for step in pipeline.steps + pipeline.compensation:
            target = step.config.get("pipeline") if step.type == "step.delegate" else None
            if isinstance(target, str) and "{{" not in target and target not in pipelines:
                problems.add(
                    step.line,
                    f"pipeline {pipeline.name!r}, step {step.name!r}: delegates to unknown pipeline {target!r}",
                )


def _pipeline(
    name: str,
    raw: Any,
    line: int,
    registry: Registry,
    problems: _Problems,
    strict: bool,
    *,
    platforms: tuple[str, ...] = (),
) -> tuple[Pipeline | None, Trigger | None]:
    where = f"pipeline {name!r}"
    if not isinstance(raw, LineDict):
        problems.add(line, f"{where}: must be a mapping with 'trigger' and 'steps'")
        return None, None
    for key in raw:
        if key not in PIPELINE_KEYS:
            problems.add(
                raw.line_of(key), f"{where}: unknown key {key!r} (expected one of {', '.join(sorted(PIPELINE_KEYS))})"
            )
    trigger = compile_trigger(where, raw.get("trigger"), raw.line_of("trigger"), problems.add, platforms)
    on_error = raw.get("on_error", "stop")
    if on_error not in ON_ERROR:
        problems.add(raw.line_of("on_error"), f"{where}: on_error must be one of {', '.join(ON_ERROR)}")
    timeout = _duration(where, raw, "timeout", problems) or DEFAULT_PIPELINE_TIMEOUT
    steps = _steps(where, raw.get("steps"), raw.line_of("steps"), "steps", registry, problems, strict)
    compensation = _steps(
        where,
        raw.get("compensation", LineList()),
        raw.line_of("compensation"),
        "compensation",
        registry,
        problems,
        strict,
        required=False,
    )
    if steps is None or compensation is None or trigger is None:
        return None, trigger
    try:
        flow = plan_flow(steps)
    except ValueError as exc:
        problems.add(line, f"{where}: {exc}")
        return None, trigger
    return Pipeline(name, trigger, steps, flow, on_error, timeout, compensation, line), trigger


def _steps(
    where: str,
    raw: Any,
    line: int,
    key: str,
    registry: Registry,
    problems: _Problems,
    strict: bool,
    *,
    required: bool = True,
) -> tuple[Step, ...] | None:
    if not isinstance(raw, LineList):
        problems.add(line, f"{where}: '{key}' must be a list of steps")
        return None
    if required and not raw:
        problems.add(line, f"{where}: '{key}' is empty: a pipeline must list at least one step")
        return None
    before = len(problems.items)
    steps, seen = [], set()
    for index, item in enumerate(raw):
        step = _step(where, key, index, item, raw.line_of(index), registry, problems, strict)
        if step is None:
            continue
        if step.name in seen:
            problems.add(step.line, f"{where}: duplicate step name {step.name!r}")
        seen.add(step.name)
        steps.append(step)
    # Steps that failed validation still count as names, so a jump to one is not a second error.
    names = {item.get("name") for item in raw if isinstance(item, dict) and isinstance(item.get("name"), str)}
    for step in steps:
        for target in step.targets + ((step.next,) if step.next else ()):
            if target not in names:
                problems.add(
                    step.line, f"{where}: step {step.name!r} jumps to {target!r}, which is not a step of this pipeline"
                )
    return tuple(steps) if len(problems.items) == before else None


def _step(
    where: str, key: str, index: int, raw: Any, line: int, registry: Registry, problems: _Problems, strict: bool
) -> Step | None:
    if not isinstance(raw, LineDict):
        problems.add(line, f"{where}: {key}[{index}] must be a mapping with 'name' and 'type'")
        return None
    name, kind = raw.get("name"), raw.get("type")
    label = f"{where}, step {name!r}"
    ok = True
    for k in raw:
        if k not in STEP_KEYS:
            problems.add(raw.line_of(k), f"{label}: unknown key {k!r}")
            ok = False
    if not isinstance(name, str) or not name:
        problems.add(line, f"{where}: {key}[{index}] needs a 'name'")
        return None
    if not isinstance(kind, str) or not kind:
        problems.add(line, f"{label}: needs a 'type'")
        return None
    config = raw.get("config") if raw.get("config") is not None else LineDict()
    if not isinstance(config, dict):
        problems.add(raw.line_of("config"), f"{label}: 'config' must be a mapping")
        return None
    rendered = None
    try:
        rendered = compile_value(config)
    except TemplateError as exc:  # keep going: the step's other problems are reported too
        problems.add(raw.line_of("config"), f"{label}: config.{exc}")
        ok = False
    step_type = registry.steps.get(kind)
    prepared: Any = None
    targets: tuple[str, ...] = ()
    if step_type is None:
        message = f"{label}: unknown step type {kind!r}"
        if strict:
            problems.add(raw.line_of("type"), message)
            ok = False
        else:
            problems.warn(raw.line_of("type"), message + " (the pipeline answers 503 until a plugin provides it)")
    else:
        try:
            prepared = step_type.prepare(config) if step_type.prepare else None
            targets = tuple(step_type.routes(config)) if step_type.routes else ()
        except (ValueError, TypeError, KeyError) as exc:
            problems.add(raw.line_of("config"), f"{label}: {exc}")
            ok = False
    timeout = _duration(label, raw, "timeout", problems)
    nxt = raw.get("next")
    if nxt is not None and not isinstance(nxt, str):
        problems.add(raw.line_of("next"), f"{label}: 'next' must name a step")
        ok = False
    if not ok or rendered is None:  # rendered is None only after a template error, which cleared ok
        return None
    return Step(name, kind, dict(config), rendered, nxt, timeout, line, prepared, targets)


def _duration(where: str, raw: LineDict, key: str, problems: _Problems) -> float | None:
    if key not in raw:
        return None
    try:
        return parse_duration(raw[key])
    except ValueError as exc:
        problems.add(raw.line_of(key), f"{where}: {key}: {exc}")
        return None
