"""Tests for server.templates: the `{{ ... }}` template language used in step config."""

from __future__ import annotations

import builtins
import re
import types
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.config.templates import Renderable, Scope, TemplateError, compile_value, has_template


class Opaque:
    """An arbitrary object: templates must never read its attributes."""

    value = "secret"
    touched = False

    def __getattr__(self, name: str) -> Any:
        Opaque.touched = True
        raise AttributeError(name)

    def __getitem__(self, key: Any) -> Any:
        Opaque.touched = True
        return "leaked"

    def __str__(self) -> str:
        return "<opaque>"


DATA: dict[str, Any] = {
    "name": "Ada",
    "Mixed": "MiXeD",
    "n": 3,
    "zero": 0,
    "f": 1.5,
    "ok": True,
    "no": False,
    "none": None,
    "empty": "",
    "uni": "Grüße",
    "obj": {"a": 1, "b": [1, 2]},
    "items": [{"sku": "A1"}, {"sku": "B2"}],
    "tup": ("t0", "t1"),
    "dash-key": "d",
    "under_key": "u",
    "codes": {200: "ok-int", "404": "nf-str"},
    "opaque": Opaque(),
    "steps": {"fetch": "shadowed"},
}
STEPS = {"fetch": {"status": 200, "body": {"id": "x1"}}}
TRIGGER = {"id": 7, "user": {"email": "a@b.c"}}
META = {"pipeline": "p1", "execution_id": "e-1", "started_at": "2026-11-25T19:19:31.123456Z"}
SCOPE = Scope(data=DATA, steps=STEPS, trigger=TRIGGER, meta=META)


def render(template: Any, scope: Scope = SCOPE) -> Any:
    return compile_value(template).render(scope)


def assert_same(actual: Any, expected: Any) -> None:
    assert actual == expected
    assert type(actual) is type(expected)


# --- reading values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ .name }}", "Ada"),
        ("{{.name}}", "Ada"),
        ("{{ .n }}", 3),
        ("{{ .f }}", 1.5),
        ("{{ .ok }}", True),
        ("{{ .no }}", False),
        ("{{ .obj }}", {"a": 1, "b": [1, 2]}),
        ("{{ .obj.b }}", [1, 2]),
        ("{{ .obj.b.1 }}", 2),
        ("{{ .items.0.sku }}", "A1"),
        ("{{ .items.1.sku }}", "B2"),
        ("{{ .tup.1 }}", "t1"),
        ("{{ .dash-key }}", "d"),
        ("{{ .under_key }}", "u"),
        ("{{ .codes.404 }}", "nf-str"),
        ("{{ .codes.200 }}", "ok-int"),  # digit segments fall back to int Mapping keys
        ("{{ .steps.fetch.status }}", 200),  # the steps root wins over data["steps"]
        ("{{ .steps.fetch.body }}", {"id": "x1"}),
        ("{{ .trigger.id }}", 7),
        ("{{ .trigger.user.email }}", "a@b.c"),
        ("{{ .meta.pipeline }}", "p1"),
        ("{{ .meta.execution_id }}", "e-1"),
        ("{{ .meta.started_at }}", "2026-11-25T19:19:31.123456Z"),
    ],
)
def test_whole_value_keeps_type(template: str, expected: Any) -> None:
    assert_same(render(template), expected)


@pytest.mark.parametrize(
    ("template", "root"),
    [("{{ . }}", DATA), ("{{ .steps }}", STEPS), ("{{ .trigger }}", TRIGGER), ("{{ .meta }}", META)],
)
def test_bare_roots_return_the_mapping_itself(template: str, root: dict[str, Any]) -> None:
    assert render(template) is root


def test_none_value_and_scope_defaults() -> None:
    assert render("{{ .none }}") is None
    scope = Scope(data={"a": 1})
    assert (scope.steps, scope.trigger, scope.meta) == ({}, {}, {})
    assert render("{{ .steps.x }}", scope) is None


def test_non_dict_mappings_are_followed() -> None:
    scope = Scope(data=types.MappingProxyType({"m": types.MappingProxyType({"k": "v"})}))
    assert render("{{ .m.k }}", scope) == "v"


def test_compiled_once_rendered_against_many_scopes() -> None:
    compiled = compile_value({"greeting": "hi {{ .name }}", "n": "{{ .n }}"})
    assert compiled.render(Scope(data={"name": "a", "n": 1})) == {"greeting": "hi a", "n": 1}
    assert compiled.render(Scope(data={"name": "b"})) == {"greeting": "hi b", "n": None}


MISSING_PATHS = [
    ".nope",
    ".nope.deeper",
    ".name.x",
    ".name.0",
    ".n.x",
    ".none.x",
    ".items.5",
    ".items.x",
    ".items.0.nope",
    ".obj.b.9",
    ".tup.2",
    ".steps.nope.x",
    ".trigger.nope",
    ".meta.nope",
    # no attribute access on anything
    ".__class__",
    ".opaque.value",
    ".opaque.__class__",
    ".opaque.0",
    ".name.__class__.__name__",
    ".items.__len__",
    ".obj.__class__",
    ".obj.keys",
    ".n.real",
    ".__class__.__mro__",
]


@pytest.mark.parametrize("path", MISSING_PATHS)
def test_missing_is_none_as_whole_value_and_empty_in_text(path: str) -> None:
    Opaque.touched = False
    assert render(f"{{{{ {path} }}}}") is None
    assert render(f"[{{{{ {path} }}}}]") == "[]"
    assert not Opaque.touched


def test_dunder_names_are_plain_keys() -> None:
    assert render("{{ .__class__ }}", Scope(data={"__class__": "just a key"})) == "just a key"


# --- mixed text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {{ .name }}!", "Hi Ada!"),
        ("{{ .n }} ", "3 "),
        (" {{ .n }}", " 3"),
        ("\n{{ .n }}\n", "\n3\n"),
        ("{{ .n }}{{ .n }}", "33"),
        ("{{ .f }}x", "1.5x"),
        ("{{ .ok }}/{{ .no }}", "true/false"),
        ("<{{ .none }}>", "<>"),
        ("<{{ .empty }}>", "<>"),
        ("{{ .obj }}!", '{"a":1,"b":[1,2]}!'),
        ("{{ .obj.b }} ", "[1,2] "),
        ("{{ .tup }} ", '["t0","t1"] '),
        ("{{ .uni }} {{ .items.0 }}", 'Grüße {"sku":"A1"}'),
        ("{{ .opaque }} ", "<opaque> "),
        ("id={{ .steps.fetch.body.id }}&t={{ .trigger.id }}&p={{ .meta.pipeline }}", "id=x1&t=7&p=p1"),
        ("a }} b {{ .n }}", "a }} b 3"),
        ("{{ .n }} }}", "3 }}"),
    ],
)
def test_mixed_text_is_string(template: str, expected: str) -> None:
    assert_same(render(template), expected)


def test_mixed_json_keeps_non_ascii() -> None:
    assert render("{{ .d }}.", Scope(data={"d": {"k": "ü"}})) == '{"k":"ü"}.'


# --- functions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ lower .Mixed }}", "mixed"),
        ("{{ .Mixed | lower }}", "mixed"),
        ("{{ upper .name }}", "ADA"),
        ("{{ .name | upper }}", "ADA"),
        ('{{ default "anon" .nope }}', "anon"),
        ('{{ .nope | default "anon" }}', "anon"),
        ('{{ default "anon" .none }}', "anon"),
        ('{{ default "anon" .empty }}', "anon"),
        ('{{ .empty | default "anon" }}', "anon"),
        ('{{ default "anon" .name }}', "Ada"),
        ('{{ .name | default "anon" }}', "Ada"),
        ("{{ default 5 .nope }}", 5),
        ("{{ default 5 .n }}", 3),
        ("{{ default 9 .zero }}", 0),
        ("{{ default true .no }}", False),
        ("{{ default .name .nope }}", "Ada"),
        ("{{ json .obj }}", '{"a":1,"b":[1,2]}'),
        ("{{ .obj | json }}", '{"a":1,"b":[1,2]}'),
        ("{{ json .uni }}", '"Grüße"'),
        ("{{ json .n }}", "3"),
        ("{{ json .ok }}", "true"),
        ("{{ json .nope }}", "null"),
        ("{{ .items | json }}", '[{"sku":"A1"},{"sku":"B2"}]'),
        # chained pipes and calls feeding pipes
        ('{{ .nope | default "anon" | upper }}', "ANON"),
        ('{{ .name | default "anon" | upper }}', "ADA"),
        ("{{ .name | lower | upper }}", "ADA"),
        ('{{ default "anon" .nope | upper }}', "ANON"),
        ("{{ .obj.a | json | upper }}", "1"),
        # parenthesised sub-expressions
        ('{{ upper (default "anon" .nope) }}', "ANON"),
        ("{{ default (lower .Mixed) .nope }}", "mixed"),
        ("{{ (lower .Mixed) }}", "mixed"),
        ("{{ (.name) }}", "Ada"),
        ("{{ json (upper .name) }}", '"ADA"'),
        ("{{ upper (lower (upper .name)) }}", "ADA"),
        ("{{ (.name | lower) | upper }}", "ADA"),
        ("{{ .nope | default (.name | lower) }}", "ada"),
        ('Hello {{ .nope | default "anon" | upper }}!', "Hello ANON!"),
        ("{{ default 5 .nope }}!", "5!"),
    ],
)
def test_functions_call_and_pipe(template: str, expected: Any) -> None:
    assert_same(render(template), expected)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ lower .none }}", ""),
        ("{{ lower .nope }}", ""),
        ("{{ upper .nope }}", ""),
        ("{{ upper .n }}", "3"),
        ("{{ lower .f }}", "1.5"),
        ("{{ upper 1e3 }}", "1000.0"),
        ("{{ upper .ok }}", "TRUE"),
        ("{{ upper .obj }}", '{"A":1,"B":[1,2]}'),
        ("{{ json .opaque }}", '"<opaque>"'),
        ("{{ upper .opaque }}", "<OPAQUE>"),
    ],
)
def test_functions_never_raise(template: str, expected: str) -> None:
    assert_same(render(template), expected)


def test_json_of_a_cycle_does_not_raise() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert isinstance(render("{{ json .c }}", Scope(data={"c": cyclic})), str)
    assert isinstance(render("{{ .c }}!", Scope(data={"c": cyclic})), str)


def test_uuidv4() -> None:
    compiled = compile_value("{{ uuidv4 }}")
    first, second = compiled.render(SCOPE), compiled.render(SCOPE)
    assert uuid.UUID(first).version == 4 and str(uuid.UUID(first)) == first
    assert first != second
    assert re.fullmatch(r"id-[0-9a-f-]{36}", render("id-{{ uuidv4 }}"))
    assert re.fullmatch(r"[0-9A-F-]{36}", render("{{ upper uuidv4 }}"))  # bare name as an argument


def test_now_is_rfc3339_utc() -> None:
    value = render("{{ now }}")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", value)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - parsed) < timedelta(seconds=5)
    assert render("{{ now | lower }}").endswith("z")


# --- literals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('{{ "hi" }}', "hi"),
        ('{{ "" }}', ""),
        ('{{ "true" }}', "true"),
        ("{{ 42 }}", 42),
        ("{{ -7 }}", -7),
        ("{{ 2.5 }}", 2.5),
        ("{{ 1e3 }}", 1000.0),
        ("{{ true }}", True),
        ("{{ false }}", False),
        ('{{ "a\\"b\\\\c\\nd\\te" }}', 'a"b\\c\nd\te'),
        ('{{ "}}" }}', "}}"),
        ('{{ "{{" }}', "{{"),
        ('{{ "a | b (c)" }}', "a | b (c)"),
        ('{{ "ü" }}', "ü"),
        ("x{{ 42 }}", "x42"),
        ("{{ true }}!", "true!"),
        ("{{ null }}!", "!"),
        ('{{ "}}" }}!', "}}!"),
    ],
)
def test_literals(template: str, expected: Any) -> None:
    assert_same(render(template), expected)


@pytest.mark.parametrize("template", ["{{ null }}", "{{ nil }}"])
def test_null_literals(template: str) -> None:
    assert render(template) is None


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "problem", "quoted"),
    [
        ("{{ .name", "unclosed action", "{{ .name"),
        ("a {{ .b }} {{ .c", "unclosed action", "{{ .c"),
        ("{{", "unclosed action", "{{"),
        ("{{ }}", "empty action", "{{ }}"),
        ("{{}}", "empty action", "{{}}"),
        ("{{ lowr .name }}", 'unknown function "lowr"', "{{ lowr .name }}"),
        ("x {{ .name | lowr }}", 'unknown function "lowr"', "{{ .name | lowr }}"),
        ('{{ eval "1+1" }}', 'unknown function "eval"', '{{ eval "1+1" }}'),
        ("{{ __import__ }}", 'unknown function "__import__"', "{{ __import__ }}"),
        ("{{ upper (len .items) }}", 'unknown function "len"', "{{ upper (len .items) }}"),
        ("{{ .x | lower.__globals__ }}", 'bad token "lower.__globals__"', "{{ .x | lower.__globals__ }}"),
        ("{{ lower.__globals__ }}", 'bad token "lower.__globals__"', "{{ lower.__globals__ }}"),
        ("{{ (lower .x).__globals__ }}", 'unexpected ".__globals__"', "{{ (lower .x).__globals__ }}"),
        ("{{ lower(.x) }}", 'bad token "lower"', "{{ lower(.x) }}"),
        ("{{ .a..b }}", 'bad token ".a..b"', "{{ .a..b }}"),
        ("{{ .a. }}", 'bad token ".a."', "{{ .a. }}"),
        ("{{ .a$ }}", 'bad token ".a$"', "{{ .a$ }}"),
        ("{{ 12ab }}", 'bad token "12ab"', "{{ 12ab }}"),
        ('{{ "a"b }}', "bad token", '{{ "a"b }}'),
        ("{{ $x }}", 'unexpected character "$"', "{{ $x }}"),
        ("{{ 'x' }}", 'unexpected character "\'"', "{{ 'x' }}"),
        ("{{ .a } }}", 'unexpected character "}"', "{{ .a } }}"),
        ("{{ .a + 1 }}", 'unexpected character "+"', "{{ .a + 1 }}"),
        ("{{ lower }}", 'wrong number of arguments for "lower": want 1, got 0', "{{ lower }}"),
        ("{{ upper .a .b }}", 'wrong number of arguments for "upper": want 1, got 2', "{{ upper .a .b }}"),
        ("{{ default .a }}", 'wrong number of arguments for "default": want 2, got 1', "{{ default .a }}"),
        ("{{ .a | default }}", 'for "default": want 2, got 1', "{{ .a | default }}"),
        ("{{ .a | default .b .c }}", 'for "default": want 2, got 3', "{{ .a | default .b .c }}"),
        ("{{ json }}", 'wrong number of arguments for "json": want 1, got 0', "{{ json }}"),
        ("{{ uuidv4 .a }}", 'wrong number of arguments for "uuidv4": want 0, got 1', "{{ uuidv4 .a }}"),
        ("{{ .a | now }}", 'wrong number of arguments for "now": want 0, got 1', "{{ .a | now }}"),
        ("{{ upper lower }}", 'for "lower": want 1, got 0', "{{ upper lower }}"),
        ('{{ "abc }}', "unterminated string literal", '{{ "abc }}'),
        ('{{ "abc\\" }}', "unterminated string literal", '{{ "abc\\" }}'),
        ('{{ "a\\qb" }}', 'invalid escape "\\q"', '{{ "a\\qb" }}'),
        ("{{ .a .b }}", 'unexpected ".b" after ".a"', "{{ .a .b }}"),
        ('{{ "x" 1 }}', 'unexpected "1"', '{{ "x" 1 }}'),
        ("{{ .a | .b }}", 'cannot pipe into ".b"', "{{ .a | .b }}"),
        ('{{ .a | "x" }}', "cannot pipe into", '{{ .a | "x" }}'),
        ("{{ .a | }}", "missing command", "{{ .a | }}"),
        ("{{ | lower }}", "missing command", "{{ | lower }}"),
        ("{{ .a || lower }}", "missing command", "{{ .a || lower }}"),
        ("{{ (lower .a }}", "unclosed parenthesis", "{{ (lower .a }}"),
        ("{{ lower .a) }}", 'unexpected ")"', "{{ lower .a) }}"),
        ("{{ () }}", "empty parentheses", "{{ () }}"),
        ("{{ ) }}", "missing command", "{{ ) }}"),
    ],
)
def test_malformed_templates(template: str, problem: str, quoted: str) -> None:
    with pytest.raises(TemplateError) as info:
        compile_value(template)
    message = str(info.value)
    assert problem in message
    assert message.endswith(f' in "{quoted}"')


def test_error_message_format_and_type() -> None:
    with pytest.raises(TemplateError) as info:
        compile_value("{{ lowr .name }}")
    assert str(info.value) == 'unknown function "lowr" in "{{ lowr .name }}"'
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"body": {"status": "{{ x }}"}}, 'body.status: unknown function "x" in "{{ x }}"'),
        ({"items": [1, {"a": "{{ lowr .x }}"}]}, 'items[1].a: unknown function "lowr" in "{{ lowr .x }}"'),
        (["ok", "{{ .a"], '[1]: unclosed action in "{{ .a"'),
        ({"a": {"b": ["{{ .x }}", ("{{ }}",)]}}, 'a.b[1][0]: empty action in "{{ }}"'),
        ({3: "{{ }}"}, '3: empty action in "{{ }}"'),
    ],
)
def test_nested_errors_name_the_key_path(value: Any, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        compile_value(value)
    assert str(info.value) == message


# --- constants and structure --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "",
        "a }} b",
        "{ .a }",
        "{ {.a} }",
        5,
        1.5,
        None,
        True,
        b"bytes",
        {"a": 1, "b": [1, "x"]},
        [1, 2],
        (1, "x"),
        {"{{ .name }}": "keys are not templated"},
    ],
)
def test_constants_render_as_the_same_object(value: Any) -> None:
    compiled = compile_value(value)
    assert compiled.is_constant
    assert compiled.render(SCOPE) is value
    assert compiled.render(Scope(data={})) is value


def test_dict_keys_are_not_templated() -> None:
    assert render({"{{ .name }}": "{{ .name }}"}) == {"{{ .name }}": "Ada"}


def test_structures_render_only_templated_parts() -> None:
    shared = [1, 2]
    config = {
        "a": "{{ .n }}",
        "b": "const",
        "c": {"d": "{{ .name }}", "e": [1, "{{ .ok }}", ("{{ .f }}", "t")]},
        "f": shared,
    }
    compiled = compile_value(config)
    assert not compiled.is_constant
    first, second = compiled.render(SCOPE), compiled.render(SCOPE)
    assert first == {"a": 3, "b": "const", "c": {"d": "Ada", "e": [1, True, (1.5, "t")]}, "f": [1, 2]}
    assert list(first) == ["a", "b", "c", "f"]
    assert first is not second and first["c"] is not second["c"]
    assert first["f"] is shared  # constant members are shared, not copied
    assert config["a"] == "{{ .n }}" and config["c"]["e"][1] == "{{ .ok }}"  # source untouched


def test_renderable_protocol_and_flags() -> None:
    for value in ("{{ .a }}", "x", {"k": "{{ .a }}"}, ["{{ .a }}"], 1):
        assert isinstance(compile_value(value), Renderable)
    assert not compile_value("{{ now }}").is_constant
    assert not compile_value("x {{ .a }}").is_constant


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ .a }}", True),
        ("x {{ .a }} y", True),
        ("{{", True),
        ("plain", False),
        ("}}", False),
        ("{ {", False),
        ("", False),
    ],
)
def test_has_template(text: str, expected: bool) -> None:
    assert has_template(text) is expected


# --- no evaluation ------------------------------------------------------------------------------


def test_no_eval_or_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("templates must not evaluate code")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", forbidden)
    template = 'x {{ .name | default "a" | upper }} {{ json (lower .obj) }} {{ .items.0.sku }}'
    assert render(template) == 'x ADA "{\\"a\\":1,\\"b\\":[1,2]}" A1'


@pytest.mark.parametrize(
    "template",
    [
        "{{ .__class__ }}",
        "{{ .opaque.__class__ }}",
        "{{ .opaque.__dict__ }}",
        "{{ .name.__class__ }}",
        "{{ .x | lower.__globals__ }}",
        "{{ lower.__globals__ }}",
        "{{ .__globals__ | lower }}",
        "{{ .items.0.__class__.__init__.__globals__ }}",
    ],
)
def test_attribute_probes_are_errors_or_missing(template: str) -> None:
    Opaque.touched = False
    try:
        result = compile_value(template).render(SCOPE)
    except TemplateError:
        return
    assert result in (None, "")
    assert not Opaque.touched
