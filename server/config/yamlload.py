"""YAML loading that remembers line numbers and expands `${VAR}` in strings."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

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


def load_yaml(text: str, env: Mapping[str, str] | None = None) -> Any:
    """Parse `text` into LineDict/LineList trees, expanding `${VAR}` (and `${VAR:-default}`)."""
    env = os.environ if env is None else env
    problems: list[tuple[int, str]] = []
    loader = _Loader(text)
    loader.env, loader.problems = env, problems
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise YAMLProblem([(line, f"invalid YAML: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise YAMLProblem([(0, f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if problems:
        raise YAMLProblem(problems)
    return data


class _Loader(yaml.SafeLoader):
    env: Mapping[str, str]
    problems: list[tuple[int, str]]

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
