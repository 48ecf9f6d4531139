"""Go-template-like `{{ ... }}` templates in step config: parsed once at load, rendered per run."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, NamedTuple, NoReturn, Protocol, runtime_checkable

__all__ = ["Renderable", "Scope", "TemplateError", "compile_value", "has_template"]


class TemplateError(ValueError):
    """A template that cannot be parsed."""


@dataclass(slots=True)
class Scope:
    """What a template can read while a pipeline runs."""

    data: Mapping[str, Any]
    steps: Mapping[str, Any] = field(default_factory=dict)
    trigger: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Renderable(Protocol):
    """A compiled config value; render() never raises."""

    is_constant: bool

    def render(self, scope: Scope) -> Any: ...


Evaluator = Callable[[Scope], Any]

# Everything from here to the parser runs at render time, so none of it may raise.


def _json_default(obj: Any) -> Any:
    # Odd leaves (datetimes, Decimals, custom Mappings) degrade to text rather than fail a run.
    if isinstance(obj, Mapping):
        return dict(obj)
    return list(obj) if isinstance(obj, (set, frozenset)) else str(obj)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a hostile __str__ must not take the pipeline down
        return ""


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    except Exception:  # cycles or unserialisable keys: fall back to a JSON string of str()
        return json.dumps(_safe_str(value), ensure_ascii=False)


def _to_text(value: Any) -> str:
    if value is None:
        return ""
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return _dumps(value) if isinstance(value, (Mapping, list, tuple)) else _safe_str(value)


def _default(fallback: Any, value: Any) -> Any:
    # Only absent values fall back; False and 0 are real values.
    return fallback if value is None or (isinstance(value, str) and not value) else value


_FUNCTIONS: dict[str, tuple[Callable[..., Any], int]] = {
    "uuidv4": (lambda: str(uuid.uuid4()), 0),
    "now": (lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), 0),
    "lower": (lambda value: _to_text(value).lower(), 1),
    "upper": (lambda value: _to_text(value).upper(), 1),
    "default": (_default, 2),
    "json": (_dumps, 1),
}
_KEYWORDS: dict[str, Any] = {"true": True, "false": False, "null": None, "nil": None}
_ROOTS = frozenset({"steps", "trigger", "meta"})


def _lookup(cur: Any, key: str, index: int | None) -> Any:
    # Only Mapping keys and list/tuple indices are followed: never getattr on arbitrary objects.
    if type(cur) is dict or isinstance(cur, Mapping):
        try:
            found = cur.get(key)
            # YAML may produce int keys ({200: ...}), so digit segments fall back to them.
            return found if found is not None or index is None else cur.get(index)
        except Exception:  # a foreign Mapping's lookup must not break rendering
            return None
    if index is not None and isinstance(cur, (list, tuple)):
        return cur[index] if index < len(cur) else None
    return None


def _path_evaluator(segments: list[str]) -> Evaluator:
    root = "data"
    if segments and segments[0] in _ROOTS:
        root, segments = segments[0], segments[1:]
    get_root = attrgetter(root)
    keys = tuple((seg, int(seg) if seg.isdigit() else None) for seg in segments)
    if not keys:
        return get_root

    if len(keys) == 1:  # `.name`, the usual path: no loop
        [(key, index)] = keys

        def evaluate_one(scope: Scope) -> Any:
            cur = get_root(scope)
            if type(cur) is dict and index is None:
                return cur.get(key)
            return _lookup(cur, key, index)

        return evaluate_one

    def evaluate(scope: Scope) -> Any:
        cur = get_root(scope)
        for key, index in keys:
            # A plain dict and a name (no digits) are the usual step: no call for them.
            cur = cur.get(key) if type(cur) is dict and index is None else _lookup(cur, key, index)
            if cur is None:
                return None
        return cur

    return evaluate


_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
      | (?P<path>\.(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)?)
      | (?P<num>[-+]?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[|()])
      | (?P<str>"(?:[^"\\]|\\.)*")""",
    re.VERBOSE | re.DOTALL,
)
_BAD_TOKEN_RE = re.compile(r"[^\s|()]*")
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}
# One action: string literals are skipped whole so a quoted "}}" does not end it.
_ACTION_RE = re.compile(r'\{\{((?:[^"}]|\}(?!\})|"(?:[^"\\]|\\.)*")*)(\}\})?', re.DOTALL)


class _Token(NamedTuple):
    kind: str
    value: Any
    text: str


_END = _Token("end", None, "")  # text "" lets `tok.text in (...)` checks cover the end too


class _Parser:
    """Recursive-descent parser turning one action into a tree of closures."""

    def __init__(self, action: str, inner: str) -> None:
        self.action, self.pos = action, 0
        self.tokens = self._tokenize(inner)

    def fail(self, problem: str) -> NoReturn:
        raise TemplateError(f'{problem} in "{self.action}"')

    def _unescape(self, match: re.Match[str]) -> str:
        if match.group(1) not in _ESCAPES:
            self.fail(f'invalid escape "{match.group()}" in string literal')
        return _ESCAPES[match.group(1)]

    def _tokenize(self, src: str) -> list[_Token]:
        tokens: list[_Token] = []
        pos = 0
        while pos < len(src):
            m = _TOKEN_RE.match(src, pos)
            if m is None:
                self.fail(f'unexpected character "{src[pos]}"')  # _split already vetted string quotes
            kind, end = m.lastgroup or "", m.end()
            value: Any = m.group()
            if kind == "str":
                value = _ESCAPE_RE.sub(self._unescape, value[1:-1])
            elif kind == "num":
                value = float(value) if any(c in value for c in ".eE") else int(value)
            elif kind == "path":
                value = value[1:].split(".") if len(value) > 1 else []
            # Tokens must be delimited, so `lower.__globals__` or `.a..b` is an error, not a lookup.
            delimited = end == len(src) or src[end].isspace() or src[end] in "|)"
            if kind not in ("ws", "punct") and not delimited:
                bad_end = _BAD_TOKEN_RE.match(src, end).end()  # type: ignore[union-attr]  # `*`: always matches
                self.fail(f'bad token "{src[pos:bad_end]}"')
            if kind != "ws":
                tokens.append(_Token(kind, value, src[pos:end]))
            pos = end
        return tokens

    def _peek(self) -> _Token:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else _END

    def _at_command_end(self) -> bool:
        # Only punctuation tokens can have these texts (literals keep their quotes).
        return self._peek().text in ("|", ")", "")

    def parse(self) -> Evaluator:
        if not self.tokens:
            self.fail("empty action")
        evaluator = self._pipeline()
        if self._peek() is not _END:
            self.fail(f'unexpected "{self._peek().text}"')
        return evaluator

    def _pipeline(self) -> Evaluator:
        evaluator = self._command(None)
        while self._peek().text == "|":
            self.pos += 1
            evaluator = self._command(evaluator)
        return evaluator

    def _command(self, piped: Evaluator | None) -> Evaluator:
        tok = self._peek()
        if self._at_command_end():
            self.fail('missing command after "|"' if piped else "missing command")
        if tok.kind == "ident" and tok.value in _FUNCTIONS:
            self.pos += 1
            args = []
            while not self._at_command_end():
                args.append(self._operand())
            if piped is not None:
                args.append(piped)  # Go semantics: the piped value becomes the last argument
            return self._call(tok.value, args)
        if tok.kind == "ident" and tok.value not in _KEYWORDS:
            self.fail(f'unknown function "{tok.value}"')
        if piped is not None:
            self.fail(f'cannot pipe into "{tok.text}": not a function')
        evaluator = self._operand()
        if not self._at_command_end():
            nxt = self._peek().text
            self.fail(f'unexpected "{nxt}" after "{tok.text}" (only functions take arguments)')
        return evaluator

    def _operand(self) -> Evaluator:
        tok = self._peek()
        self.pos += 1
        if tok.kind == "path":
            return _path_evaluator(tok.value)
        if tok.kind in ("str", "num") or tok.value in _KEYWORDS:
            value = _KEYWORDS[tok.value] if tok.kind == "ident" else tok.value
            return lambda scope: value
        if tok.kind == "ident":
            if tok.value not in _FUNCTIONS:
                self.fail(f'unknown function "{tok.value}"')
            return self._call(tok.value, [])  # a bare function name as an argument is a call
        if tok.text == "(":
            if self._peek().text == ")":
                self.fail("empty parentheses")
            evaluator = self._pipeline()
            if self._peek().text != ")":
                self.fail("unclosed parenthesis")
            self.pos += 1
            return evaluator
        self.fail(f'unexpected "{tok.text}"')

    def _call(self, name: str, args: list[Evaluator]) -> Evaluator:
        fn, arity = _FUNCTIONS[name]
        if len(args) != arity:
            self.fail(f'wrong number of arguments for "{name}": want {arity}, got {len(args)}')
        if arity == 1:  # pipes (`.name | lower`) call one-argument functions: no list for them
            [arg] = args
            return lambda scope: fn(arg(scope))
        return lambda scope: fn(*[arg(scope) for arg in args])


def _split(text: str) -> list[str | tuple[str, str]]:
    """Split text into literal strings and (whole action, inner source) pairs."""
    parts: list[str | tuple[str, str]] = []
    pos = 0
    while (start := text.find("{{", pos)) >= 0:
        m = _ACTION_RE.match(text, start)
        assert m is not None  # the pattern can match just "{{"
        if m.group(2) is None:
            # The pattern stops at a quote only when that string literal never closes.
            at_quote = text.startswith('"', m.end())
            problem = "unterminated string literal" if at_quote else "unclosed action"
            raise TemplateError(f'{problem} in "{text[start:]}"')
        if start > pos:
            parts.append(text[pos:start])
        parts.append((m.group(), m.group(1)))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    return parts


class _Compiled:
    __slots__ = ("render", "is_constant")

    def __init__(self, render: Evaluator, is_constant: bool = False) -> None:
        # The closure itself is the render method: one call fewer per render.
        self.render, self.is_constant = render, is_constant


def _constant(value: Any) -> Renderable:
    return _Compiled(lambda scope: value, True)


def _compile_string(text: str) -> Renderable:
    parts = tuple(p if isinstance(p, str) else _Parser(*p).parse() for p in _split(text))
    if len(parts) == 1 and not isinstance(parts[0], str):
        return _Compiled(parts[0])  # the whole string is one action: keep the value's type
    # `type(p) is str` is the faster test on this hot path, but mypy narrows only on isinstance.
    return _Compiled(
        lambda scope: "".join(
            [
                p if type(p) is str else _to_text(p(scope))  # type: ignore[operator]
                for p in parts
            ]
        )
    )


def _compile_mapping(value: Mapping[Any, Any], path: str) -> Renderable:
    dynamic = tuple(
        (key, compiled.render)
        for key, item in value.items()
        if not (compiled := _compile(item, f"{path}.{key}" if path else str(key))).is_constant
    )
    if not dynamic:
        return _constant(value)
    base = dict(value)

    def render(scope: Scope) -> dict[Any, Any]:
        out = base.copy()  # keeps key order; constant members are shared, not copied
        for key, render_item in dynamic:
            out[key] = render_item(scope)
        return out

    return _Compiled(render)


def _compile(value: Any, path: str) -> Renderable:
    if isinstance(value, str):
        if "{{" not in value:
            return _constant(value)
        try:
            return _compile_string(value)
        except TemplateError as exc:
            if not path:
                raise
            raise TemplateError(f"{path}: {exc}") from None
    if isinstance(value, Mapping):
        return _compile_mapping(value, path)
    if isinstance(value, (list, tuple)):
        items = tuple(_compile(item, f"{path}[{i}]") for i, item in enumerate(value))
        if all(item.is_constant for item in items):
            return _constant(value)
        renders = tuple(item.render for item in items)
        if isinstance(value, tuple):
            return _Compiled(lambda scope: tuple([r(scope) for r in renders]))
        return _Compiled(lambda scope: [r(scope) for r in renders])
    return _constant(value)


def compile_value(value: Any) -> Renderable:
    """Compile a config value (str, dict, list, or any scalar) recursively, once, into a Renderable.

    Dict keys are never templated. A value with no template anywhere compiles to a constant whose
    render() returns the original object itself (no copy), so callers must not mutate rendered
    values. Templated dicts/lists render a new container each time, sharing their constant members.
    Errors in nested values are prefixed with the key path, e.g. ``body.items[0].status: ...``.
    """
    return _compile(value, "")


def has_template(text: str) -> bool:
    """True when a string contains a template action ({{ ... }})."""
    # Any "{{" makes compile_value treat the string as a template (an unclosed one is an error).
    return isinstance(text, str) and "{{" in text
