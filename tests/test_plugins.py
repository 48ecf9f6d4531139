"""Hook specs, the plugin manager, and validation of what plugins register."""

from __future__ import annotations

import inspect
import sys
import textwrap

import pytest

import server
from server.errors import RegistrationError
from server.hooks import hookspecs
from server.hooks.manager import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, build_plugin_manager
from server.hooks.registry import RegistryBuilder, StepType, build_registry

BUILT_IN_TYPES = {
    "step.validate",
    "step.set",
    "step.log",
    "step.transform",
    "step.json_response",
    "step.http_call",
    "step.publish",
    "step.delegate",
    "step.conditional",
    "step.db_query",
    "step.db_exec",
    "step.chat_reply",
}
# The chat platforms other than the reply step register endpoints, not step types.
ENDPOINT_PLUGINS = {"plugins.chat.slack", "plugins.chat.twilio", "plugins.chat.telegram", "plugins.chat.generic"}


def _hookspecs():
    return [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "workflow_spec")]


def test_every_hook_is_documented():
    specs = _hookspecs()
    assert {f.__name__ for f in specs} >= {"register_steps", "register_webhooks"}
    for spec in specs:
        doc = inspect.getdoc(spec) or ""
        assert "Called" in doc, f"{spec.__name__}: say when it is called"
        for param in inspect.signature(spec).parameters:
            assert f":param {param}:" in doc, f"{spec.__name__}: document {param}"
        assert ":return:" in doc, f"{spec.__name__}: document the return value"


def test_public_api_is_what_plugin_authors_import():
    assert set(server.__all__) == {
        "hookimpl",
        "json_body",
        "Accepted",
        "Refused",
        "body_digest",
        "chat_endpoint",
        "chat_post",
        "fresh_timestamp",
        "hmac_hex",
        "same_signature",
        "ChatMessage",
        "ChatService",
        "Replier",
        "Register",
        "Response",
        "RegistrationError",
        "Services",
        "StepContext",
        "StepError",
        "StepResult",
        "ValidationError",
        "WorkflowError",
    }
    assert all(hasattr(server, name) for name in server.__all__)


def test_built_in_plugins_provide_the_built_in_step_types():
    registry = build_registry(build_plugin_manager(entry_points=False))
    assert set(registry.steps) == BUILT_IN_TYPES
    assert {step.provider for step in registry.steps.values()} == set(DEFAULT_PLUGINS) - ENDPOINT_PLUGINS
    for path in ("slack/events", "slack/commands", "slack/interactions", "twilio/sms", "telegram/a", "generic/b"):
        assert registry.webhooks.match("POST", f"/webhooks/{path}")[1].startswith(f"/webhooks/{path.split('/')[0]}/")
    assert registry.steps["step.conditional"].routes is not None
    assert all(step.is_async for step in registry.steps.values())


def test_duplicate_step_type_names_both_providers():
    builder = RegistryBuilder()
    builder.step_registrar("plugin_a")("step.same", _async_step)
    with pytest.raises(RegistrationError) as caught:
        builder.step_registrar("plugin_b")("step.same", _async_step)
    assert "plugin_a" in caught.value.message and "plugin_b" in caught.value.message
    assert "step.same" in caught.value.message


@pytest.mark.parametrize(
    ("name", "fn", "needle"),
    [
        ("Step.Upper", None, "dotted lower-case"),
        ("nodot", None, "dotted lower-case"),
        ("step.x", 42, "not callable"),
        ("step.x", lambda: None, "exactly one argument"),
        ("step.x", lambda a, b: None, "exactly one argument"),
    ],
)
def test_bad_registrations_are_refused_with_the_reason(name, fn, needle):
    with pytest.raises(RegistrationError, match=needle):
        RegistryBuilder().step_registrar("p")(name, fn if fn is not None else _async_step)


def test_sync_and_async_steps_are_told_apart():
    builder = RegistryBuilder()
    register = builder.step_registrar("p")
    register("step.a", _async_step)
    register("step.s", lambda ctx: {"x": 1}, timeout=2.5)
    steps = builder.build().steps
    assert steps["step.a"].is_async and not steps["step.s"].is_async
    assert steps["step.s"].timeout == 2.5
    assert steps["step.a"].description == "An async step."


def test_snapshot_is_immutable():
    registry = build_registry(build_plugin_manager(entry_points=False))
    with pytest.raises(TypeError):
        registry.steps["step.new"] = StepType("step.new", _async_step, "p", True)  # type: ignore[index]


def test_bad_endpoint_registrations_are_refused():
    register = RegistryBuilder().endpoint_registrar("p")
    with pytest.raises(RegistrationError, match="start with /webhooks/"):
        register("POST", "/elsewhere", _async_handler)
    with pytest.raises(RegistrationError, match="async function"):
        register("POST", "/webhooks/x", lambda request: None)
    register("POST", "/webhooks/x/{a}", _async_handler)
    with pytest.raises(RegistrationError, match="already"):
        register("POST", "/webhooks/x/{b}", _async_handler)


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch):
    (tmp_path / "wf_demo_plugin.py").write_text(
        textwrap.dedent("""
        from server import hookimpl

        async def shout(ctx):
            return {"shout": ctx.config["text"].upper()}

        @hookimpl
        def register_steps(register):
            register("demo.shout", shout)
    """)
    )
    dist = tmp_path / "wf_demo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wf-demo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ndemo = wf_demo_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = build_registry(build_plugin_manager())
    finally:
        sys.modules.pop("wf_demo_plugin", None)
    assert registry.steps["demo.shout"].provider == "demo"
    clash = tmp_path / "wf_demo_plugin.py"
    clash.write_text(clash.read_text().replace("demo.shout", "step.set"))
    try:
        with pytest.raises(RegistrationError, match=r"step.set.*already registered by plugins.core"):
            build_registry(build_plugin_manager())
    finally:
        sys.modules.pop("wf_demo_plugin", None)


async def _async_step(ctx):
    """An async step."""
    return None


async def _async_handler(request):
    return None
