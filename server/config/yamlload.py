"""YAML loading that remembers line numbers and expands `${VAR}` in strings."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import yaml

# Bounds on what a config may expand to, whoever wrote it: an alias bomb (nine levels of nine aliases) is a
# few hundred bytes of text and billions of nodes once its aliases are followed.
MAX_NODES = 250_000  # nodes of the document with every alias expanded
MAX_TEXT_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64  # WORKFLOW_MAX_JSON_DEPTH: the JSON bodies' limit, for the same reason

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class LineDict(dict[Any, Any]):
    """A mapping from YAML that knows the line of itself and of each key (1-based)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Built by hand (not from YAML) it knows no lines; line_of must still answer.
        self.line = 0
        self.key_lines: dict[str, int] = {}

    def line_of(self, key: str) -> int:
        """The line of `key`, or of the mapping itself when the key is absent."""
        return self.key_lines.get(key, self.line)


class LineList(list[Any]):
    """A sequence from YAML that knows the line of each item (1-based)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line = 0
        self.item_lines: list[int] = []

    def line_of(self, index: int) -> int:
        """The line of item `index`."""
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class YAMLProblem(Exception):
    """Every problem found while reading one file, each as `(line, message)`."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__("; ".join(f"{line}: {msg}" for line, msg in problems))
        self.problems = problems


def load_yaml(text: str, env: Mapping[str, str] | None = None, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse `text` into LineDict/LineList trees, expanding `${VAR}` (and `${VAR:-default}`)."""
    data, problems = load_yaml_lenient(text, env, max_depth=max_depth)
    if problems:
        raise YAMLProblem(problems)
    return data


def load_yaml_lenient(
    text: str, env: Mapping[str, str] | None = None, *, max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[Any, list[tuple[int, str]]]:
    """The document and the problems that still let it be read (duplicate keys, unset variables).

    A document that cannot be read at all (bad syntax, or over a limit) raises YAMLProblem.
    """
    if len(text) > MAX_TEXT_BYTES:
        raise YAMLProblem([(1, f"the file is larger than the limit of {MAX_TEXT_BYTES} bytes")])
    env = os.environ if env is None else env
    problems: list[tuple[int, str]] = []
    loader = _Loader(text)
    loader.env, loader.problems, loader.max_depth, loader._expanded = env, problems, max_depth, {}
    try:
        data = loader.get_single_data()
    except _OverLimit as exc:
        raise YAMLProblem([(exc.line, exc.message)]) from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise YAMLProblem([(line, f"invalid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise YAMLProblem([(0, f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return data, problems


class _OverLimit(Exception):
    """The document nests or expands past a limit; raised while composing, before anything is built."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


class _Unreadable(_OverLimit, ValueError):
    """A scalar whose conversion failed (an integer of 5,000 digits, a date with month 13)."""


def _unreadable(node: yaml.Node, exc: Exception) -> str:
    """Why a value cannot be read, in the config author's terms rather than Python's."""
    if "integer string conversion" in str(exc):
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    shown = (
        str(node.value)[:40] + ("…" if len(str(node.value)) > 40 else "") if isinstance(node, yaml.ScalarNode) else ""
    )
    return f"the value {shown!r} cannot be read as {node.tag.rsplit(':', 1)[-1]}: {exc}"


class _Loader(yaml.SafeLoader):
    env: Mapping[str, str]
    problems: list[tuple[int, str]]
    max_depth: int
    _nesting = 0
    _expanded: dict[int, tuple[int, int]]  # id(node) -> (nodes, depth) with its aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # PyYAML composes recursively: refuse deep nesting before it becomes a RecursionError.
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1 if event.start_mark else 0
        anchored = self.anchors.get(event.anchor) if isinstance(event, yaml.AliasEvent) else None
        if anchored is not None:
            if id(anchored) not in self._expanded:  # `&a [*a]`: it would never end
                raise _OverLimit(line, f"alias *{event.anchor} is used inside its own anchor")
            if self._nesting + self._expanded[id(anchored)][1] > self.max_depth:
                raise _OverLimit(line, self._too_deep() + " once its aliases are expanded")
        opens = isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent)
        if opens:
            self._nesting += 1
            if self._nesting > self.max_depth:
                raise _OverLimit(line, self._too_deep())
        try:
            node = super().compose_node(parent, index)
        finally:
            self._nesting -= opens
        if node is not None:
            self._measure(node)
        return node

    def _measure(self, node: yaml.Node) -> None:
        """Count `node` as its aliases expand it; an alias reuses its anchor's count, so this is linear."""
        expanded = self._expanded
        if id(node) in expanded:  # an alias: the anchored node again
            nodes, depth = expanded[id(node)]
        else:
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            counts = [expanded[id(child)] for child in children]
            nodes = 1 + sum(n for n, _ in counts)
            depth = 0 if isinstance(node, yaml.ScalarNode) else 1 + max((d for _, d in counts), default=0)
            expanded[id(node)] = (nodes, depth)
        if nodes > MAX_NODES:
            raise _OverLimit(
                node.start_mark.line + 1,
                f"the YAML expands to more than {MAX_NODES} values once its aliases are expanded",
            )

    def _too_deep(self) -> str:
        return f"the YAML nests deeper than the limit of {self.max_depth} levels (WORKFLOW_MAX_JSON_DEPTH)"

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML lets a value's own conversion error out bare (an int of 5,000 digits, month 13, `!!bool maybe`
        # is a KeyError, `!!timestamp foo` an AttributeError): give it a line.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, KeyError, AttributeError, TypeError) as exc:
            if isinstance(exc, _OverLimit):
                raise
            raise _Unreadable(node.start_mark.line + 1, _unreadable(node, exc)) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:
        self._check_duplicates(node)
        result = LineDict(super().construct_mapping(node, deep=True))
        result.line = node.start_mark.line + 1
        result.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
        return result

    def _check_duplicates(self, node: yaml.MappingNode) -> None:
        # PyYAML keeps the last of two equal keys, so a repeated pipeline name would vanish silently.
        seen: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            ident, line = (key.tag, key.value), key.start_mark.line + 1
            if ident in seen:
                self.problems.append((line, f"duplicate key {key.value!r} (first defined on line {seen[ident]})"))
            else:
                seen[ident] = line

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineList:
        result = LineList(super().construct_sequence(node, deep=True))
        result.line = node.start_mark.line + 1
        result.item_lines = [item.start_mark.line + 1 for item in node.value]
        return result

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:
        value = super().construct_yaml_str(node)
        return self._expand(value, node.start_mark.line + 1) if "$" in value else value

    def _expand(self, value: str, line: int) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            # Shell semantics: `${VAR:-default}` also replaces a variable that is set but empty.
            if self.env.get(name) or (name in self.env and default is None):
                return self.env[name]
            if default is not None:
                return default
            self.problems.append((line, f"environment variable {name} is not set (used as ${{{name}}})"))
            return ""

        return _VAR.sub(replace, value)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_sequence)
_Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_yaml_str)
