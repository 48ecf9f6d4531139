"""The shipped components (greeting, risk_tagger, order_pricing): as units, through a server, and in the examples.

Unit tests build each component the way the server does (`read_source`, `build_module`, `collect`) and
call its step functions with a hand-made StepContext; end-to-end tests serve a config with the shipped
components folder (`components_dir=ROOT/"components"`, `watch=False`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import math
import textwrap
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import pytest

from server import StepContext, ValidationError
from server.app import build_engine
from server.app import reload_config_file as reload_config
from server.config.loader import load_config_file, load_config_text
from server.errors import ConfigError
from server.hooks.registry import Registry, StepType
from server.keys import RELOADER, REPLICATOR
from server.reload.loader import build_module, collect, read_source
from tests.chat_fake import PUBLIC_URL, SLACK_SECRET, TWILIO_SID, TWILIO_TOKEN, slack_headers, twilio_headers
from tests.conftest import ROOT, run_cli, until

COMPONENTS = ROOT / "components"
CHAT_EXAMPLE = ROOT / "example" / "chat-triage-pipeline.yaml"
PRICING_EXAMPLE = ROOT / "example" / "order-pricing-pipeline.yaml"


# --------------------------------------------------------------------------- helpers


@functools.cache
def step_type(filename: str, name: str) -> StepType:
    """Load a shipped component file as the server does and return one of its step types."""
    source = read_source(COMPONENTS / filename)
    component = collect(build_module(source), source, Registry())
    return component.steps[name]


def make_ctx(step: StepType, data: Mapping[str, Any], config: Mapping[str, Any]) -> StepContext:
    """A StepContext as the executor builds it: `prepared` from the raw config, no services."""
    kwargs: dict[str, Any] = dict(
        data=dict(data),
        config=dict(config),
        step="unit",
        type=step.name,
        pipeline="unit",
        execution_id="exec-unit",
        trigger=dict(data),
        steps={},
        meta={"pipeline": "unit"},
        services=None,
        prepared=step.prepare(config) if step.prepare else None,
    )
    if "logger" in inspect.signature(StepContext).parameters:  # older StepContext took a logger
        kwargs["logger"] = logging.LoggerAdapter(logging.getLogger("test.shipped"), {})
    return StepContext(**kwargs)


async def call(
    filename: str, name: str, data: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None
) -> Any:
    """Run one step function directly (awaiting it when it is async)."""
    step = step_type(filename, name)
    result = step.fn(make_ctx(step, data or {}, config or {}))
    return await result if inspect.isawaitable(result) else result


def greet(data=None, config=None):
    return call("greeting.py", "step.greet", data, config)


def tag(data=None, config=None):
    return call("risk_tagger.py", "step.risk_tag", data, config)


def price(data=None, config=None):
    return call("order_pricing.py", "step.price_order", data, config)


def line_of(yaml_text: str, needle: str) -> int:
    """The 1-based line of `needle` in the config file make_server writes (it dedents the text)."""
    for number, line in enumerate(textwrap.dedent(yaml_text).splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the config")


async def shipped_server(make_server, yaml_text: str):
    """A server for `yaml_text` with the shipped components loaded (no watcher)."""
    return await make_server(yaml_text, components_dir=COMPONENTS, watch=False)


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    ("filename", "names"),
    [
        ("greeting.py", {"step.greet"}),
        ("risk_tagger.py", {"step.risk_tag"}),
        ("order_pricing.py", {"step.price_order"}),
    ],
)
def test_each_component_builds_and_registers_only_its_step(filename, names):
    source = read_source(COMPONENTS / filename)
    component = collect(build_module(source), source, Registry())
    assert set(component.steps) == names
    assert component.endpoints == ()
    assert all(s.provider == f"component:{source.id}" for s in component.steps.values())


def test_registration_options():
    assert step_type("greeting.py", "step.greet").is_async
    risk = step_type("risk_tagger.py", "step.risk_tag")
    assert not risk.is_async and risk.timeout == 2 and risk.prepare is not None
    pricing = step_type("order_pricing.py", "step.price_order")
    assert not pricing.is_async


# --------------------------------------------------------------------------- step.greet (unit)


@pytest.mark.parametrize(
    ("data", "config", "expected"),
    [
        ({}, {}, "hello world"),  # all defaults
        ({"name": "Ada"}, {}, "hello Ada"),  # data's name
        ({"name": "Ada"}, {"name": "Bob"}, "hello Bob"),  # config beats data
        ({}, {"name": "Bob"}, "hello Bob"),
        ({"name": "Ada"}, {"name": None}, "hello Ada"),  # a template that rendered null
        ({"name": "Ada"}, {"name": ""}, "hello Ada"),  # ... or empty
        ({"name": ""}, {}, "hello world"),
        ({"name": "Ada"}, {"greeting": "hi"}, "hi Ada"),  # custom greeting word
        ({}, {"greeting": "bonjour", "name": "Zoé"}, "bonjour Zoé"),
    ],
)
async def test_greet_defaults_and_precedence(data, config, expected):
    assert await greet(data, config) == {"greeting": expected}


async def test_greet_does_not_modify_data():
    data = {"name": "Ada"}
    step = step_type("greeting.py", "step.greet")
    ctx = make_ctx(step, data, {})
    await step.fn(ctx)
    assert ctx.data == {"name": "Ada"}


# --------------------------------------------------------------------------- step.risk_tag (unit)


@pytest.mark.parametrize(
    ("text", "risk", "matches"),
    [
        ("the checkout is down", "high", ["down"]),
        ("possible data loss on the replica", "high", ["data loss"]),
        ("I want a refund", "medium", ["refund"]),
        ("my parcel is late", "medium", ["late"]),
        ("thanks, all good", "low", []),
        ("", "low", []),
    ],
)
async def test_risk_levels_with_default_keywords(text, risk, matches):
    assert await tag({"text": text}) == {"risk": risk, "risk_matches": matches}


async def test_risk_first_level_with_a_hit_wins_and_only_its_matches_are_reported():
    result = await tag({"text": "urgent: please refund me, the app is broken"})
    assert result == {"risk": "high", "risk_matches": ["urgent"]}


async def test_risk_matches_are_sorted_lower_cased_and_unique():
    result = await tag({"text": "OUTAGE! Security breach, outage again, Breach confirmed"})
    assert result == {"risk": "high", "risk_matches": ["breach", "outage", "security"]}


@pytest.mark.parametrize(
    "text",
    [
        "please download the invoice",
        "downtime window tonight",
        "sundown",
        "the latest release",
        "an errorless run",
        "breached",
    ],
)
async def test_risk_matches_whole_words_only(text):
    # "download" must not match "down", "latest" not "late", and so on.
    assert await tag({"text": text}) == {"risk": "low", "risk_matches": []}


async def test_risk_plurals_are_different_words():
    # A consequence of whole-word matching worth knowing: list plural forms as keywords too.
    assert (await tag({"text": "two outages and many errors"}))["risk"] == "low"


@pytest.mark.parametrize("text", ["DOWN", "Down", "dOwN", "the API is DOWN!"])
async def test_risk_is_case_insensitive(text):
    assert await tag({"text": text}) == {"risk": "high", "risk_matches": ["down"]}


async def test_risk_custom_keywords_replace_the_defaults():
    config = {"keywords": {"critical": ["fire", "Smoke"], "minor": ["typo"]}}
    assert await tag({"text": "FIRE in room 3, smoke everywhere"}, config) == {
        "risk": "critical",
        "risk_matches": ["fire", "smoke"],
    }
    assert await tag({"text": "a typo on the page"}, config) == {"risk": "minor", "risk_matches": ["typo"]}
    # The default keywords are gone: "down" and "refund" are nothing special any more.
    assert await tag({"text": "site down, refund now"}, config) == {"risk": "low", "risk_matches": []}


async def test_risk_custom_levels_are_tried_in_config_order():
    text = {"text": "urgent refund"}
    assert (await tag(text, {"keywords": {"medium": ["refund"], "high": ["urgent"]}}))["risk"] == "medium"
    assert (await tag(text, {"keywords": {"high": ["urgent"], "medium": ["refund"]}}))["risk"] == "high"


async def test_risk_keywords_are_literal_text_not_regex():
    config = {"keywords": {"high": ["a.b", "x|y"]}}
    assert (await tag({"text": "axb and x"}, config))["risk"] == "low"
    assert await tag({"text": "see a.b now"}, config) == {"risk": "high", "risk_matches": ["a.b"]}
    assert await tag({"text": "x|y"}, config) == {"risk": "high", "risk_matches": ["x|y"]}


async def test_risk_empty_keyword_lists_are_skipped():
    config = {"keywords": {"high": [], "medium": ["late"]}}
    assert await tag({"text": "late"}, config) == {"risk": "medium", "risk_matches": ["late"]}
    assert await tag({"text": "anything"}, {"keywords": {}}) == {"risk": "low", "risk_matches": []}


async def test_risk_field_option_reads_another_key():
    data = {"text": "all fine", "body": "we suspect fraud"}
    assert await tag(data, {"field": "body"}) == {"risk": "high", "risk_matches": ["fraud"]}
    assert await tag(data) == {"risk": "low", "risk_matches": []}  # default field is `text`
    assert await tag(data, {"field": "missing"}) == {"risk": "low", "risk_matches": []}
    assert await tag({"text": None}) == {"risk": "low", "risk_matches": []}
    assert await tag({"code": 404}, {"field": "code", "keywords": {"high": ["404"]}}) == {
        "risk": "high",
        "risk_matches": ["404"],
    }  # non-strings are str()-ed


@pytest.mark.parametrize(
    "keywords",
    [
        ["down", "outage"],  # a list, not a mapping
        {"high": "down"},  # a level's words must be a list
        "high: down",
        None,  # `keywords:` left empty in YAML
    ],
)
def test_risk_prepare_rejects_bad_keywords(keywords):
    with pytest.raises(ValueError, match="keywords must map a level to a list of words"):
        step_type("risk_tagger.py", "step.risk_tag").prepare({"keywords": keywords})


async def test_risk_keywords_ending_in_punctuation_match():
    assert (await tag({"text": "we use c++ here"}, {"keywords": {"high": ["c++"]}}))["risk"] == "high"


# --------------------------------------------------------------------------- step.price_order (unit)


def cents(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("subtotal", "discount", "tax", "total", "currency")}


async def test_price_plain_total_defaults_to_usd_without_tax_or_discount():
    assert await price({"total": "19.90"}) == {
        "subtotal": 19.9,
        "discount": 0.0,
        "tax": 0.0,
        "total": 19.9,
        "currency": "USD",
    }
    with pytest.raises(ValidationError, match="total: a number is required"):
        await price({})


async def test_price_items_sum_quantity_times_unit_price():
    # 3 x 19.99 = 59.97; 2 x 0.50 = 1.00; qty defaults to 1: 4.25 -> 65.22
    items = [{"qty": 3, "unit_price": "19.99"}, {"qty": 2, "unit_price": 0.5}, {"unit_price": "4.25"}]
    assert await price({"items": items, "total": 999}) == {  # items win over a plain total
        "subtotal": 65.22,
        "discount": 0.0,
        "tax": 0.0,
        "total": 65.22,
        "currency": "USD",
    }
    assert (await price({"items": []}))["total"] == 0.0


async def test_price_converts_currencies_with_the_default_rates():
    # USD -> EUR at 0.92: 100 -> 92.00; 59.97 -> 55.1724 -> 55.17
    assert cents(await price({"total": 100}, {"currency": "EUR"})) == {
        "subtotal": 92.0,
        "discount": 0.0,
        "tax": 0.0,
        "total": 92.0,
        "currency": "EUR",
    }
    assert (await price({"items": [{"qty": 3, "unit_price": "19.99"}]}, {"currency": "eur"}))["total"] == 55.17
    # EUR -> USD: 92 / 0.92 = 100.00; lower-case codes are accepted
    assert cents(await price({"total": 92, "currency": "eur"}, {"currency": "USD"})) == {
        "subtotal": 100.0,
        "discount": 0.0,
        "tax": 0.0,
        "total": 100.0,
        "currency": "USD",
    }
    # GBP -> JPY: 79 / 0.79 * 151.5 = 15150.00
    assert (await price({"total": 79, "currency": "GBP"}, {"currency": "JPY"}))["total"] == 15150.0
    # no target currency: the quote stays in the data's currency
    assert cents(await price({"total": "10.00", "currency": "CHF"})) == {
        "subtotal": 10.0,
        "discount": 0.0,
        "tax": 0.0,
        "total": 10.0,
        "currency": "CHF",
    }


async def test_price_custom_rates_and_base_currency():
    config = {"rates": {"usd": 1, "sek": "10.5"}, "base_currency": "SEK", "currency": "USD"}
    assert (await price({"total": "21"}, config))["total"] == 2.0  # 21 SEK / 10.5 = 2.00 USD
    with pytest.raises(ValidationError, match="'EUR' is not supported"):  # custom rates replace the defaults
        await price({"total": 1, "currency": "EUR"}, config)


async def test_price_discount_and_tax_after_conversion():
    # 3 x 19.99 + 1 x 5.05 = 65.02 USD -> x 0.92 = 59.8184 EUR         -> subtotal 59.82
    # discount 10 %: 5.98184                                            -> 5.98
    # tax 20 % of (59.8184 - 5.98184) = 53.83656 x 0.2 = 10.767312      -> 10.77
    # total = 59.82 - 5.98 + 10.77                                      =  64.61
    items = [{"qty": 3, "unit_price": "19.99"}, {"qty": 1, "unit_price": "5.05"}]
    config = {"currency": "EUR", "discount_percent": 10, "tax_rate": "0.2"}
    assert await price({"items": items}, config) == {
        "subtotal": 59.82,
        "discount": 5.98,
        "tax": 10.77,
        "total": 64.61,
        "currency": "EUR",
    }


@pytest.mark.parametrize(
    ("data", "config", "expected"),
    [
        # 0.125 -> 0.13 (half-even would give 0.12)
        ({"total": "0.125"}, {}, {"subtotal": 0.13, "discount": 0.0, "tax": 0.0, "total": 0.13}),
        # a JSON float 1.005 is read through str(): exactly 1.005 -> 1.01 (binary float rounding gives 1.00)
        ({"total": 1.005}, {}, {"subtotal": 1.01, "discount": 0.0, "tax": 0.0, "total": 1.01}),
        # tax 10 % of 10.25 = 1.025 -> 1.03; total 10.25 + 1.03 = 11.28
        ({"total": "10.25"}, {"tax_rate": "0.1"}, {"subtotal": 10.25, "discount": 0.0, "tax": 1.03, "total": 11.28}),
        # discount 5 % of 2.50 = 0.125 -> 0.13; tax 10 % of 2.375 = 0.2375 -> 0.24; total 2.50 - 0.13 + 0.24 = 2.61
        (
            {"total": "2.50"},
            {"discount_percent": 5, "tax_rate": 0.1},
            {"subtotal": 2.5, "discount": 0.13, "tax": 0.24, "total": 2.61},
        ),
    ],
)
async def test_price_rounds_each_amount_to_cents_half_up(data, config, expected):
    result = await price(data, config)
    assert {k: result[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("data", "config", "field"),
    [
        ({"total": 1, "currency": "XYZ"}, {}, "currency"),
        ({"total": 1, "currency": 5}, {}, "currency"),
        ({"items": [{"qty": -1, "unit_price": 1}]}, {}, "items.0.qty"),
        ({"items": [{"qty": 1, "unit_price": 1}, {"qty": 1, "unit_price": "-0.01"}]}, {}, "items.1.unit_price"),
        ({"items": [{"qty": math.nan, "unit_price": 1}]}, {}, "items.0.qty"),
        ({"items": [{"qty": "NaN", "unit_price": 1}]}, {}, "items.0.qty"),
        ({"items": [{"qty": math.inf, "unit_price": 1}]}, {}, "items.0.qty"),
        ({"items": [{"qty": "two", "unit_price": 1}]}, {}, "items.0.qty"),
        ({"items": [{"qty": None, "unit_price": 1}]}, {}, "items.0.qty"),
        ({"items": [{"qty": True, "unit_price": 1}]}, {}, "items.0.qty"),
        ({"items": [{"qty": 1, "unit_price": [1]}]}, {}, "items.0.unit_price"),
        ({"items": {"qty": 1}}, {}, "items"),
        ({"items": [5]}, {}, "items.0"),
        ({"total": -5}, {}, "total"),
        ({"total": "NaN"}, {}, "total"),
    ],
)
async def test_price_rejects_bad_input_naming_the_field(data, config, field):
    with pytest.raises(ValidationError) as info:
        await price(data, config)
    assert info.value.status == 400
    assert info.value.details["field"] == field
    assert info.value.message.startswith(field) or field == "currency"


# --------------------------------------------------------------------------- end to end: one pipeline per step

GREET_CONFIG = """
pipelines:
  greet-user:
    trigger: {type: http, config: {path: /greet/user}}
    steps:
      - {name: greet, type: step.greet, config: {name: "{{ .user }}"}}
  greet-plain:
    trigger: {type: http, config: {path: /greet/plain}}
    steps:
      - {name: greet, type: step.greet}
  greet-hi:
    trigger: {type: http, config: {path: /greet/hi}}
    steps:
      - {name: greet, type: step.greet, config: {greeting: hi}}
      - name: respond
        type: step.json_response
        config: {status: 201, body: {message: "{{ .greeting }}!"}}
"""


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/greet/plain", None, "hello world"),
        ("/greet/plain", {"name": "Ada"}, "hello Ada"),
        ("/greet/user", {"user": "Bob", "name": "Ada"}, "hello Bob"),  # config (a template) beats data
        ("/greet/user", {"name": "Ada"}, "hello Ada"),  # missing user renders null: data's name
        ("/greet/user", {}, "hello world"),
    ],
)
async def test_greet_end_to_end(make_server, path, body, expected):
    srv = await shipped_server(make_server, GREET_CONFIG)
    response = await srv.client.post(path, json=body) if body is not None else await srv.client.post(path)
    assert response.status == 200
    assert (await response.json())["greeting"] == expected


async def test_greet_end_to_end_with_custom_greeting_and_response(make_server):
    srv = await shipped_server(make_server, GREET_CONFIG)
    response = await srv.client.post("/greet/hi", json={"name": "Ada"})
    assert response.status == 201
    assert await response.json() == {"message": "hi Ada!"}


RISK_CONFIG = """
pipelines:
  tag-default:
    trigger: {type: http, config: {path: /tag}}
    steps:
      - {name: risk, type: step.risk_tag}
  tag-custom:
    trigger: {type: http, config: {path: /tag/custom}}
    steps:
      - name: risk
        type: step.risk_tag
        config:
          field: body
          keywords:
            critical: [fire, "gas leak"]
            minor: [typo]
"""


@pytest.mark.parametrize(
    ("text", "risk", "matches"),
    [
        ("Checkout is DOWN", "high", ["down"]),
        ("please download the invoice", "low", []),
        ("where is my refund?", "medium", ["refund"]),
        ("urgent: refund", "high", ["urgent"]),
        ("hello", "low", []),
    ],
)
async def test_risk_tag_end_to_end(make_server, text, risk, matches):
    srv = await shipped_server(make_server, RISK_CONFIG)
    response = await srv.client.post("/tag", json={"text": text})
    body = await response.json()
    assert response.status == 200
    assert (body["risk"], body["risk_matches"], body["text"]) == (risk, matches, text)


async def test_risk_tag_end_to_end_custom_keywords_and_field(make_server):
    srv = await shipped_server(make_server, RISK_CONFIG)
    response = await srv.client.post("/tag/custom", json={"text": "site down", "body": "GAS LEAK and fire"})
    assert (await response.json())["risk_matches"] == ["fire", "gas leak"]
    response = await srv.client.post("/tag/custom", json={"text": "site down", "body": "a typo"})
    body = await response.json()
    assert (body["risk"], body["risk_matches"]) == ("minor", ["typo"])
    response = await srv.client.post("/tag/custom", json={"text": "fire!"})  # reads `body`, not `text`
    assert (await response.json())["risk"] == "low"


# ------------------------------------------------- a bad keywords config: what really happens, where

BAD_RISK_CONFIG = """
pipelines:
  tag:
    trigger: {type: http, config: {path: /tag}}
    steps:
      - name: risk
        type: step.risk_tag
        config: {keywords: [down, outage]}
  greet:
    trigger: {type: http, config: {path: /greet}}
    steps:
      - {name: greet, type: step.greet}
"""
BAD_KEYWORDS = "keywords must map a level to a list of words"


def test_bad_component_step_config_is_only_a_warning_when_the_engine_is_built(settings, tmp_path):
    # The config is compiled before any component loads, so step.risk_tag is merely unknown here:
    # build_engine does NOT raise ConfigError (a bad built-in step config would).
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(BAD_RISK_CONFIG))
    engine = build_engine(replace(settings, config_path=path, components_dir=COMPONENTS), entry_points=False)
    line = line_of(BAD_RISK_CONFIG, "type: step.risk_tag")
    assert any(
        w.startswith(f"{path}:{line}: ") and "unknown step type 'step.risk_tag'" in w for w in engine.config.warnings
    )
    assert "tag" in engine.config.pipelines


async def test_bad_component_step_config_at_start_up_refuses_the_component(make_server, tmp_path):
    # When the component then loads, the config no longer compiles with it: the component is refused
    # (the error names the config's file:line), the server still starts, and the pipeline answers 503.
    srv = await shipped_server(make_server, BAD_RISK_CONFIG)
    manager = srv.client.app[RELOADER]
    assert "risk_tagger" not in manager.components
    assert {"greeting", "order_pricing"} <= set(manager.components)
    failure = manager.failures["risk_tagger"]
    assert failure.path.endswith("risk_tagger.py")
    config_line = line_of(BAD_RISK_CONFIG, "config: {keywords:")
    assert f"{tmp_path / 'config.yaml'}:{config_line}: pipeline 'tag', step 'risk': {BAD_KEYWORDS}" in failure.error

    response = await srv.client.post("/tag", json={"text": "down"})
    body = await response.json()
    assert response.status == 503
    assert body["type"] == "step.risk_tag" and "step.risk_tag" in body["error"] and body["step"] == "risk"
    # Other components, and their pipelines, are not affected.
    greeting = await srv.client.post("/greet", json={"name": "Ada"})
    assert (await greeting.json())["greeting"] == "hello Ada"
    health = await (await srv.client.get("/healthz")).json()
    assert health["status"] == "degraded"
    assert health["checks"]["components"]["failing_ids"] == ["risk_tagger"]


async def test_bad_keywords_is_a_config_error_with_file_and_line_once_the_component_is_loaded(make_server, tmp_path):
    srv = await shipped_server(make_server, RISK_CONFIG)
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(BAD_RISK_CONFIG))
    with pytest.raises(ConfigError) as info:
        load_config_file(path, srv.engine.registry)
    assert info.value.problems == [
        f"{path}:{line_of(BAD_RISK_CONFIG, 'config: {keywords:')}: pipeline 'tag', step 'risk': {BAD_KEYWORDS}"
    ]
    with pytest.raises(ConfigError, match=r"<config>:\d+: pipeline 'tag', step 'risk': keywords must map"):
        load_config_text(textwrap.dedent(BAD_RISK_CONFIG), srv.engine.registry)


async def test_config_reload_with_bad_keywords_is_refused_and_the_running_config_keeps_serving(make_server, tmp_path):
    srv = await shipped_server(make_server, RISK_CONFIG)
    (tmp_path / "config.yaml").write_text(textwrap.dedent(BAD_RISK_CONFIG))
    assert await reload_config(srv.client.app) is False
    response = await srv.client.post("/tag", json={"text": "outage"})
    assert (await response.json())["risk"] == "high"
    response = await srv.client.post("/greet")  # the refused config's pipeline never arrived
    assert (response.status, await response.json()) == (
        404,
        {"error": "no pipeline is triggered by /greet", "path": "/greet"},
    )


def test_validate_reports_bad_keywords_with_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(BAD_RISK_CONFIG))
    result = run_cli("validate", str(path))
    assert result.returncode == 1
    line = line_of(BAD_RISK_CONFIG, "config: {keywords:")
    assert f"{path}:{line}: pipeline 'tag', step 'risk': {BAD_KEYWORDS}" in result.stderr.splitlines()


async def test_after_fixing_the_config_a_refused_component_loads_when_its_file_is_synced(make_server, tmp_path):
    srv = await shipped_server(make_server, BAD_RISK_CONFIG)
    (tmp_path / "config.yaml").write_text(textwrap.dedent(RISK_CONFIG))
    assert await reload_config(srv.client.app) is True
    manager = srv.client.app[RELOADER]
    await srv.client.app[REPLICATOR].file_changed(COMPONENTS / "risk_tagger.py")  # what a save would do
    assert "risk_tagger" not in manager.failures
    response = await srv.client.post("/tag", json={"text": "outage"})
    assert (await response.json())["risk"] == "high"


async def test_fixing_the_config_brings_a_refused_component_back(make_server, tmp_path):
    srv = await shipped_server(make_server, BAD_RISK_CONFIG)
    (tmp_path / "config.yaml").write_text(textwrap.dedent(RISK_CONFIG))
    assert await reload_config(srv.client.app) is True
    response = await srv.client.post("/tag", json={"text": "outage"})
    assert (response.status, await response.json()) == (
        200,
        {"text": "outage", "params": {}, "query": {}, "risk": "high", "risk_matches": ["outage"]},
    )


PRICE_CONFIG = """
pipelines:
  plain:
    trigger: {type: http, config: {path: /price}}
    steps:
      - {name: price, type: step.price_order}
  to-eur:
    trigger: {type: http, config: {path: /price/eur}}
    steps:
      - {name: price, type: step.price_order, config: {currency: EUR}}
  to-usd:
    trigger: {type: http, config: {path: /price/usd}}
    steps:
      - {name: price, type: step.price_order, config: {currency: USD}}
  full:
    trigger: {type: http, config: {path: /price/full}}
    steps:
      - {name: price, type: step.price_order, config: {currency: EUR, discount_percent: 10, tax_rate: 0.2}}
  half-up:
    trigger: {type: http, config: {path: /price/half-up}}
    steps:
      - {name: price, type: step.price_order, config: {discount_percent: 5, tax_rate: 0.1}}
"""


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/price",
            {"total": "19.90"},
            {"subtotal": 19.9, "discount": 0.0, "tax": 0.0, "total": 19.9, "currency": "USD"},
        ),
        # 3 x 19.99 + 2 x 0.50 + 1 x 4.25 = 65.22
        (
            "/price",
            {"items": [{"qty": 3, "unit_price": "19.99"}, {"qty": 2, "unit_price": 0.5}, {"unit_price": 4.25}]},
            {"subtotal": 65.22, "discount": 0.0, "tax": 0.0, "total": 65.22, "currency": "USD"},
        ),
        # USD -> EUR: 100 x 0.92 = 92.00
        (
            "/price/eur",
            {"total": 100},
            {"subtotal": 92.0, "discount": 0.0, "tax": 0.0, "total": 92.0, "currency": "EUR"},
        ),
        # EUR -> USD: 46 / 0.92 = 50.00
        (
            "/price/usd",
            {"total": 46, "currency": "eur"},
            {"subtotal": 50.0, "discount": 0.0, "tax": 0.0, "total": 50.0, "currency": "USD"},
        ),
        # 65.02 USD x 0.92 = 59.8184 -> 59.82; discount 5.98184 -> 5.98; tax 53.83656 x 0.2 = 10.767312 -> 10.77
        # total 59.82 - 5.98 + 10.77 = 64.61
        (
            "/price/full",
            {"items": [{"qty": 3, "unit_price": "19.99"}, {"qty": 1, "unit_price": "5.05"}]},
            {"subtotal": 59.82, "discount": 5.98, "tax": 10.77, "total": 64.61, "currency": "EUR"},
        ),
        # discount 5 % of 2.50 = 0.125 -> 0.13 (half up); tax 10 % of 2.375 = 0.2375 -> 0.24; 2.50 - 0.13 + 0.24
        (
            "/price/half-up",
            {"total": "2.50"},
            {"subtotal": 2.5, "discount": 0.13, "tax": 0.24, "total": 2.61, "currency": "USD"},
        ),
        # 0.125 -> 0.13, 1.005 -> 1.01: half up, on exact decimals
        ("/price", {"total": 0.125}, {"subtotal": 0.13, "discount": 0.0, "tax": 0.0, "total": 0.13, "currency": "USD"}),
        ("/price", {"total": 1.005}, {"subtotal": 1.01, "discount": 0.0, "tax": 0.0, "total": 1.01, "currency": "USD"}),
    ],
)
async def test_price_order_end_to_end(make_server, path, body, expected):
    srv = await shipped_server(make_server, PRICE_CONFIG)
    response = await srv.client.post(path, json=body)
    assert response.status == 200
    assert cents(await response.json()) == expected


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/price", {"total": 1, "currency": "XYZ"}, "currency"),
        ("/price/eur", {"total": 1, "currency": "DOGE"}, "currency"),
        ("/price", {"items": [{"qty": -2, "unit_price": 1}]}, "items.0.qty"),
        ("/price", {"items": [{"qty": 1, "unit_price": -1}]}, "items.0.unit_price"),
        ("/price", {"items": [{"qty": "NaN", "unit_price": 1}]}, "items.0.qty"),
        ("/price", {"items": [{"qty": "-Infinity", "unit_price": 1}]}, "items.0.qty"),
        ("/price", {"total": -0.01}, "total"),
    ],
)
async def test_price_order_end_to_end_rejects_bad_input_with_400_naming_the_field(make_server, path, body, field):
    srv = await shipped_server(make_server, PRICE_CONFIG)
    response = await srv.client.post(path, json=body)
    answer = await response.json()
    assert response.status == 400
    assert answer["field"] == field and answer["step"] == "price"
    assert field in answer["error"] and "Traceback" not in answer["error"]
    uuid.UUID(answer["execution_id"])


async def test_price_order_end_to_end_rejects_a_nan_literal(make_server):
    # Python's JSON parser accepts the non-standard NaN literal; the server refuses the body before any step.
    srv = await shipped_server(make_server, PRICE_CONFIG)
    response = await srv.client.post(
        "/price", data='{"items": [{"qty": NaN, "unit_price": 1}]}', headers={"Content-Type": "application/json"}
    )
    assert (response.status, await response.json()) == (400, {"error": "request body: NaN is not a JSON number"})


async def test_price_order_huge_amount_is_a_400(make_server):
    srv = await shipped_server(make_server, PRICE_CONFIG)
    response = await srv.client.post("/price", json={"total": "1e27"})
    assert (response.status, await response.json()) == (
        200,
        {  # 28 digits and more are priced exactly
            "total": 1e27,
            "subtotal": 1e27,
            "discount": 0.0,
            "tax": 0.0,
            "currency": "USD",
            "params": {},
            "query": {},
        },
    )
    response = await srv.client.post("/price", json={"total": "1e100"})
    assert (response.status, await response.json()) == (
        400,
        {
            "error": "the order's amounts are too large to price",
            "field": "total",
            "step": "price",
            "execution_id": response.headers["X-Execution-ID"],
        },
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"currency": "BTC"}, "currency 'BTC' has no rate"),
        ({"base_currency": "XYZ"}, "base_currency 'XYZ' has no rate"),
        ({"discount_percent": -1}, "discount_percent must be a number from 0 to 100"),
        ({"discount_percent": 101}, "discount_percent must be a number from 0 to 100"),
        ({"tax_rate": "abc"}, "tax_rate must be a number from 0 to 1"),
        ({"rates": {"usd": 0}}, "every rate must be a positive number"),
        ({"rates": {"usd": "x"}}, "rates must map currency codes to numbers"),
    ],
)
def test_price_prepare_rejects_bad_config_at_load(config, message):
    with pytest.raises(ValueError, match=message):
        step_type("order_pricing.py", "step.price_order").prepare(config)


# --------------------------------------------------------------------------- the examples


@pytest.mark.parametrize("path", [CHAT_EXAMPLE, PRICING_EXAMPLE])
def test_example_validates_with_the_shipped_components(path):
    result = run_cli("validate", str(path.relative_to(ROOT)))  # components default to ./components
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path.relative_to(ROOT)}: ok")


async def test_chat_example_escalates_high_risk_and_logs_the_event(make_server, caplog):
    srv = await shipped_server(make_server, CHAT_EXAMPLE.read_text())
    response = await srv.client.post("/api/messages", json={"user": "ada", "text": "Checkout is DOWN, urgent!"})
    assert response.status == 200
    assert await response.json() == {
        "risk": "high",
        "priority": "p1",
        "greeting": "hello ada",
        "matches": ["down", "urgent"],
    }
    expected = 'escalated p1 message from ada: Checkout is DOWN, urgent! (matched ["down","urgent"])'
    await until(lambda: any(r.getMessage() == expected for r in caplog.records))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"user": "bob", "text": "I want a refund"},
            {"risk": "medium", "priority": "p2", "greeting": "hello bob", "matches": ["refund"]},
        ),
        (
            {"user": "cy", "text": "thanks for the help"},
            {"risk": "low", "priority": "p3", "greeting": "hello cy", "matches": []},
        ),
        (
            {"user": "dee", "text": "where can I download the app?"},  # "download" is not "down"
            {"risk": "low", "priority": "p3", "greeting": "hello dee", "matches": []},
        ),
        (
            {"text": "my order is late"},  # no user: the greeting falls back
            {"risk": "medium", "priority": "p2", "greeting": "hello world", "matches": ["late"]},
        ),
    ],
)
async def test_chat_example_routes_medium_and_low_without_escalating(make_server, caplog, body, expected):
    srv = await shipped_server(make_server, CHAT_EXAMPLE.read_text())
    response = await srv.client.post("/api/messages", json=body)
    assert response.status == 200
    assert await response.json() == expected
    await asyncio.sleep(0.05)  # an event pipeline, had one been started, would have logged by now
    assert not any(r.getMessage().startswith("escalated") for r in caplog.records)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"user": "ada"}, "'text' is a required property"),
        ({"text": ""}, "text"),
        ({"text": 42}, "text"),
    ],
)
async def test_chat_example_validates_text(make_server, body, needle):
    srv = await shipped_server(make_server, CHAT_EXAMPLE.read_text())
    response = await srv.client.post("/api/messages", json=body)
    answer = await response.json()
    assert response.status == 400
    assert answer["step"] == "validate" and needle in answer["error"]


async def test_pricing_example_quotes_in_the_body_currency_with_tax(make_server):
    srv = await shipped_server(make_server, PRICING_EXAMPLE.read_text())
    items = [{"sku": "mug", "qty": 3, "unit_price": "19.99"}, {"sku": "tea", "qty": 2, "unit_price": 4.5}]
    response = await srv.client.post("/api/quotes", json={"currency": "eur", "items": items})
    assert response.status == 200
    quote = await response.json()
    uuid.UUID(quote.pop("quote_id"))
    # 3 x 19.99 + 2 x 4.50 = 68.97; tax 20 % = 13.794 -> 13.79; total 82.76
    assert quote == {
        "currency": "EUR",
        "items": items,
        "subtotal": 68.97,
        "discount": 0.0,
        "tax": 13.79,
        "total": 82.76,
    }


async def test_pricing_example_defaults_to_usd_and_rounds_tax_half_up(make_server):
    srv = await shipped_server(make_server, PRICING_EXAMPLE.read_text())
    # 2 x 10.05 = 20.10; tax 20 % = 4.02; total 24.12
    response = await srv.client.post("/api/quotes", json={"items": [{"sku": "a", "qty": 2, "unit_price": "10.05"}]})
    quote = await response.json()
    assert (quote["currency"], quote["subtotal"], quote["tax"], quote["total"]) == ("USD", 20.1, 4.02, 24.12)
    # 1 x 0.125: tax 0.025 -> 0.03 (half up; half-even gives 0.02); subtotal 0.13; total 0.16
    response = await srv.client.post("/api/quotes", json={"items": [{"sku": "c", "qty": 1, "unit_price": "0.125"}]})
    quote = await response.json()
    assert (quote["subtotal"], quote["tax"], quote["total"]) == (0.13, 0.03, 0.16)


@pytest.mark.parametrize(
    ("body", "step", "needle"),
    [
        ({}, "validate", "'items' is a required property"),
        ({"items": []}, "validate", "items"),
        ({"items": [{"sku": "a", "qty": -1, "unit_price": 1}]}, "validate", "items/0/qty"),
        ({"items": [{"sku": "a", "qty": 0, "unit_price": 1}]}, "validate", "items/0/qty"),
        ({"items": [{"sku": "a", "qty": 1, "unit_price": "-1"}]}, "validate", "items/0/unit_price"),
        ({"items": [{"sku": "a", "qty": 1, "unit_price": "1,5"}]}, "validate", "items/0/unit_price"),
        ({"items": [{"qty": 1, "unit_price": 1}]}, "validate", "'sku' is a required property"),
        ({"currency": "euro", "items": [{"sku": "a", "qty": 1, "unit_price": 1}]}, "validate", "currency"),
        ({"currency": "XYZ", "items": [{"sku": "a", "qty": 1, "unit_price": 1}]}, "price", "'XYZ' is not supported"),
    ],
)
async def test_pricing_example_rejects_bad_quotes(make_server, body, step, needle):
    srv = await shipped_server(make_server, PRICING_EXAMPLE.read_text())
    response = await srv.client.post("/api/quotes", json=body)
    answer = await response.json()
    assert response.status == 400
    assert answer["step"] == step and needle in answer["error"]
    if step == "price":
        assert answer["field"] == "currency"


async def test_pricing_example_rejects_a_nan_quantity(make_server):
    # The non-standard NaN literal would get past the schema (`NaN > 0` is false, so exclusiveMinimum
    # does not fire): the server refuses it with the body, before any step runs.
    srv = await shipped_server(make_server, PRICING_EXAMPLE.read_text())
    response = await srv.client.post(
        "/api/quotes",
        data='{"items": [{"sku": "a", "qty": NaN, "unit_price": 1}]}',
        headers={"Content-Type": "application/json"},
    )
    assert (response.status, await response.json()) == (400, {"error": "request body: NaN is not a JSON number"})


# --------------------------------------------------------------------------- the chat example on Slack and SMS


def _slack_event(event_id: str, text: str) -> str:
    event = {"type": "message", "channel": "C1", "user": "U1", "text": text, "ts": "1700000000.000100"}
    return json.dumps({"type": "event_callback", "team_id": "T1", "event_id": event_id, "event": event})


async def test_chat_example_answers_nothing_on_chat_without_secrets(make_server, monkeypatch) -> None:
    for name in ("SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID"):
        monkeypatch.delenv(name, raising=False)
    srv = await shipped_server(make_server, CHAT_EXAMPLE.read_text())
    for path in ("/webhooks/slack/events", "/webhooks/twilio/sms"):
        response = await srv.client.post(path, data="{}")
        assert response.status == 404, path


async def test_chat_example_triages_slack_and_sms(make_server, monkeypatch, fake_api, caplog) -> None:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SLACK_SECRET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_API_BASE", f"{fake_api.url}/slack/api")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", TWILIO_SID)
    monkeypatch.setenv("TWILIO_PUBLIC_URL", PUBLIC_URL)
    monkeypatch.setenv("TWILIO_API_BASE", f"{fake_api.url}/twilio")
    srv = await shipped_server(make_server, CHAT_EXAMPLE.read_text())

    body = _slack_event("Ev1", "checkout is down, urgent")
    response = await srv.client.post("/webhooks/slack/events", data=body, headers=slack_headers(body, int(time.time())))
    assert (response.status, await response.text()) == (200, "")
    await until(lambda: len(fake_api.to("/chat.postMessage")) == 2)
    escalation, answer = (call.body for call in fake_api.to("/chat.postMessage"))
    assert escalation == {"channel": "#incidents", "text": "Urgent (p1) from <@U1> in <#C1>: checkout is down, urgent"}
    assert answer == {
        "channel": "C1",
        "thread_ts": "1700000000.000100",
        "text": 'Escalated as p1 (matched ["down","urgent"]). Someone is on it.',
    }

    body = _slack_event("Ev2", "thanks for the help")
    response = await srv.client.post("/webhooks/slack/events", data=body, headers=slack_headers(body, int(time.time())))
    assert response.status == 200
    await until(lambda: len(fake_api.to("/chat.postMessage")) == 3)
    assert fake_api.to("/chat.postMessage")[2].body == {
        "channel": "C1",
        "thread_ts": "1700000000.000100",
        "text": "Thanks, logged with low priority.",
    }

    params = {"MessageSid": "SM1", "AccountSid": TWILIO_SID, "From": "+15550001111", "To": "+15559998888",
              "Body": "my order is broken, urgent"}  # fmt: skip
    response = await srv.client.post(
        "/webhooks/twilio/sms",
        data=urlencode(params),
        headers={**twilio_headers("/webhooks/twilio/sms", params), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (response.status, await response.text()) == (
        200,
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
        "Thanks. This is urgent (p1): we will call you back shortly.</Message></Response>",
    )
    expected = 'escalated p1 message from +15550001111: my order is broken, urgent (matched ["urgent"])'
    await until(lambda: any(r.getMessage() == expected for r in caplog.records))
