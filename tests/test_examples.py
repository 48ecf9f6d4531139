"""The shipped example configs, driven end to end over HTTP."""

from __future__ import annotations

import logging
import uuid

import pytest

from tests.conftest import ROOT, equals, metric_value, until

ORDERS = (ROOT / "example" / "order-processing-pipeline.yaml").read_text()
WEBHOOKS = (ROOT / "example" / "webhook-pipeline.yaml").read_text()


async def test_create_order_answers_201_and_notifies(make_server, caplog):
    srv = await make_server(ORDERS)
    with caplog.at_level(logging.INFO):
        response = await srv.client.post(
            "/api/orders", json={"customer_id": "C-42", "total": "19.90", "currency": "eur"}
        )
        body = await response.json()
        assert response.status == 201
        assert body["status"] == "pending" and body["total"] == 19.9 and body["currency"] == "EUR"
        uuid.UUID(body["order_id"])
        notified = f"order {body['order_id']} for c-42: 19.9 EUR"
        await until(lambda: any(r.getMessage() == notified for r in caplog.records))
    text = await srv.metrics()
    assert (
        metric_value(
            text, "workflow_executions_total", workflow_type="event", action="notify-customer", status="success"
        )
        == 1
    )


async def test_create_order_defaults_currency(make_server):
    srv = await make_server(ORDERS)
    response = await srv.client.post("/api/orders", json={"customer_id": "c", "total": 3})
    assert (await response.json())["currency"] == "USD"


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"total": 1}, "customer_id"),
        ({"customer_id": "c"}, "total"),
        ({"customer_id": "c", "total": "abc"}, "cannot convert"),
    ],
)
async def test_create_order_rejects_bad_orders(make_server, payload, needle):
    srv = await make_server(ORDERS)
    response = await srv.client.post("/api/orders", json=payload)
    body = await response.json()
    assert response.status == 400
    assert needle in body["error"]
    assert body["step"] in ("validate", "normalize")


async def test_the_greeting_component_reloads_on_save_without_a_config_edit(make_server, components):
    """The README's edit-save-call loop: edit components/greeting.py, save, call again, see the change."""
    greeting = components / "greeting.py"
    greeting.write_text((ROOT / "components" / "greeting.py").read_text())
    srv = await make_server(ORDERS, debounce=0.01)

    async def greeted() -> str:
        response = await srv.client.get("/api/greet", params={"name": "Ada"})
        return (await response.json())["greeting"] if response.status == 200 else ""

    await until(lambda: equals(greeted(), "hello Ada"))
    assert await (await srv.client.get("/api/greet")).json() == {"greeting": "hello world"}
    source = greeting.read_text()
    assert source.count('"hello"') == 1  # the README tells the reader to change this word
    greeting.write_text(source.replace('"hello"', '"good morning"'))
    await until(lambda: equals(greeted(), "good morning Ada"))


async def test_order_lookup_reads_the_path_parameter(make_server):
    srv = await make_server(ORDERS)
    response = await srv.client.get("/api/orders/o-77?status=shipped")
    assert await response.json() == {"order_id": "o-77", "status": "shipped"}
    default = await srv.client.get("/api/orders/o-78")
    assert (await default.json())["status"] == "pending"


@pytest.mark.parametrize(
    ("event_type", "status", "expected"),
    [
        ("payment.succeeded", 200, {"handled": True, "order_status": "paid"}),
        ("payment.failed", 200, {"handled": True, "order_status": "payment_failed"}),
        ("charge.refunded", 200, {"handled": True, "order_status": "refunded"}),
        ("customer.created", 202, {"handled": False, "type": "customer.created"}),
    ],
)
async def test_payment_webhook_routes_by_event_type(make_server, event_type, status, expected):
    srv = await make_server(WEBHOOKS)
    response = await srv.client.post(
        "/hooks/payments", json={"id": "evt_1", "type": event_type, "data": {"order_id": "o-7", "amount": 1990}}
    )
    body = await response.json()
    assert response.status == status
    assert body["received"] == "evt_1"
    assert expected.items() <= body.items()


async def test_payment_webhook_joins_after_all_targets(make_server):
    """A routed step never falls through to a sibling target: `paid` must not become `refunded`."""
    srv = await make_server(WEBHOOKS)
    await srv.client.post(
        "/hooks/payments", json={"id": "e", "type": "payment.succeeded", "data": {"order_id": "o-1", "amount": 5}}
    )
    text = await srv.metrics()
    for step, runs in (("step.set", 1), ("step.publish", 1), ("step.json_response", 1)):
        assert metric_value(text, "module_operations_total", module=step, status="success") == runs, step


async def test_paid_event_reaches_the_audit_pipeline(make_server, caplog):
    srv = await make_server(WEBHOOKS)

    async def audited() -> bool:
        return (
            metric_value(
                await srv.metrics(),
                "workflow_executions_total",
                workflow_type="event",
                action="audit-paid",
                status="success",
            )
            == 1
        )

    with caplog.at_level(logging.INFO):
        response = await srv.client.post(
            "/hooks/payments", json={"id": "e", "type": "payment.succeeded", "data": {"order_id": "o-9", "amount": 5}}
        )
        assert (await response.json())["order_status"] == "paid"
        await until(audited)
    audits = [r for r in caplog.records if r.getMessage() == "order o-9 is paid"]
    assert [r.levelno for r in audits] == [logging.INFO]


async def test_payment_webhook_requires_fields(make_server):
    srv = await make_server(WEBHOOKS)
    response = await srv.client.post("/hooks/payments", json={"id": "e", "type": "payment.failed", "data": {}})
    assert response.status == 400
    assert (await response.json()) == {
        "error": "missing required field(s): data.order_id",
        "fields": ["data.order_id"],
        "step": "validate",
        "execution_id": response.headers["X-Execution-ID"],
    }
