"""The admin page in a real browser: Debian's headless Chromium driven by Playwright, against a real server.

Screenshots go to tests/artifacts/ (git-ignored), and each path is printed. Without chromium or playwright the
tests skip, naming what is missing; under WORKFLOW_TEST_STRICT (CI) they fail instead.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.keys import RELOADER
from tests.conftest import ROOT, SECRET, Server, hello, service_unavailable, token, until
from tests.pipeline_plugin import FLAKY

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
HAVE_CHROMIUM = CHROMIUM.exists()
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

CONFIG = """
    pipelines:
      hello:
        trigger: {type: http, config: {path: /hello, method: POST}}
        steps:
          - {name: greet, type: step.hello}
      picky:
        trigger: {type: http, config: {path: /picky, method: POST}}
        steps:
          - {name: check, type: step.validate, config: {strategy: required_fields, required_fields: [x]}}
          - {name: route, type: step.conditional, config: {field: kind, routes: {a: mark_a}, default: mark_b}}
          - {name: mark_a, type: step.set, config: {values: {a: 1}}}
          - {name: mark_b, type: step.set, config: {values: {b: "{{ .x }}"}}}
      notify:
        trigger: {type: http, config: {path: /notify, method: POST}}
        steps:
          - {name: call, type: step.http_call, config: {url: "http://127.0.0.1:9/x", fail_on_error: false}}
      flaky:
        trigger: {type: http, config: {path: /flaky, method: POST, async: true}}
        steps:
          - {name: flaky, type: test.flaky}
"""
BROKEN = "from server import hookimpl\n\n\ndef oops(:\n    pass\n"
EDITOR = "document.querySelector('.CodeMirror').CodeMirror"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium (Debian's), launched through Playwright."""
    if not HAVE_CHROMIUM:
        service_unavailable(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        service_unavailable("the playwright package is missing: pip install -e '.[dev]'")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def server(serve, components: Path) -> Server:
    """A server with the admin API and the test step types; one failing attempt makes a dead letter."""
    FLAKY["fail"] = True
    return await serve(CONFIG, strict=False, jwt_secret=SECRET, debounce=0.01, queue_max_attempts=1)


class Page:
    """One signed-in browser page on the admin listener, collecting console errors and CSP violations."""

    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base = page, base
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    async def go(self, route: str) -> None:
        await self.page.goto(f"{self.base}#/{route}")

    async def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    def unexpected_errors(self) -> list[str]:
        """Script errors and CSP violations; answers with an error status are the page's to show, and it does."""
        return [e for e in self.errors if not e.startswith("Failed to load resource: the server responded")]


async def signed_in(browser: Any, server: Server, who: dict[str, str] | None = None, **viewport: int) -> Page:
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1280, "height": 720, **viewport})
    page = Page(await context.new_page(), str(server.admin.make_url("/")))
    await page.page.goto(page.base)
    await page.page.fill("#token", (who or token())["Authorization"].removeprefix("Bearer "))
    await page.page.click("#signin button")
    await expect(page.page.locator("#live")).to_have_text("live")
    await expect(page.page.locator("main h2")).to_have_text("Components")
    return page


async def create(server: Server, cid: str, source: str) -> None:
    response = await server.admin.post("/api/dynamic/components", json={"id": cid, "source": source}, headers=token())
    assert response.status == 201, await response.text()


async def recorded(server: Server, count: int) -> None:
    """Until the recorder has written `count` executions (it writes every half second)."""

    async def written() -> bool:
        response = await server.admin.get("/api/executions", headers=token())
        return len((await response.json())["executions"]) >= count

    await until(written)


async def answer(server: Server, path: str, body: Any) -> tuple[int, Any]:
    response = await server.client.post(path, json=body)
    return response.status, json.loads(await response.text())


# --------------------------------------------------------------------------- the tests


async def test_sign_in_create_a_component_and_see_it_serving(browser, server: Server) -> None:
    from playwright.async_api import expect

    ui = await signed_in(browser, server)
    page = ui.page
    await expect(page.locator("#who")).to_contain_text("ada (admin) · session ends")
    await page.click("#new-component")
    await page.fill("#cid", "greeter")
    await page.evaluate(f"(source) => {EDITOR}.setValue(source)", hello(1))
    await page.click("#save")
    await expect(page.locator("#message")).to_have_text("Saved greeter: version 1 serves now.")
    assert await answer(server, "/hello", {}) == (200, {"version": 1, "params": {}, "query": {}})
    await expect(page.locator("main h2")).to_contain_text("greeter")
    await expect(page.locator("#side")).to_contain_text("v1")
    await ui.shot("component-created")
    await ui.go("components")
    row = page.locator("tbody tr", has_text="greeter")
    await expect(row).to_contain_text("serving")
    await expect(row).to_contain_text("step.hello")
    await ui.shot("components")
    # Delete asks first, naming the pipelines that will answer 503; cancelling keeps it.
    await page.click("text=greeter")
    await page.click("#delete")
    dialog = page.locator("#confirm")
    await expect(dialog).to_contain_text("These pipelines will answer 503")
    await expect(dialog).to_contain_text("hello")
    await ui.shot("delete-confirmation")
    await page.keyboard.press("Escape")  # the dialog closes from the keyboard: nothing deleted
    await expect(dialog).to_be_hidden()
    assert "greeter" in server.client.app[RELOADER].components
    await page.click("#delete")
    await page.click("#confirm-ok")
    await expect(page.locator("#message")).to_have_text("Deleted greeter.")
    await expect(page.locator("tbody")).to_contain_text("No component yet.")
    assert (await server.client.post("/hello", json={})).status == 503
    assert ui.unexpected_errors() == []


async def test_a_broken_version_is_refused_on_its_line_while_the_old_one_serves(browser, server: Server) -> None:
    from playwright.async_api import expect

    manager = server.client.app[RELOADER]
    await create(server, "greeter", hello(1))
    ui = await signed_in(browser, server)
    page = ui.page
    await ui.go("components/greeter")
    await expect(page.locator("#validate")).to_be_visible()
    await page.evaluate(f"(source) => {EDITOR}.setValue(source)", BROKEN)
    await page.click("#validate")
    await expect(page.locator("#verdict")).to_contain_text("Would be refused at line 4")
    assert await page.evaluate(f"() => {EDITOR}.lineInfo(3).bgClass") == "cm-error-line"
    await page.click("#save")
    await expect(page.locator("#verdict")).to_contain_text("Refused at line 4; the previous version still serves.")
    assert await page.evaluate(f"() => {EDITOR}.lineInfo(3).bgClass") == "cm-error-line"
    await ui.shot("component-refused")
    assert manager.components["greeter"].version == 1
    assert await answer(server, "/hello", {}) == (200, {"version": 1, "params": {}, "query": {}})


async def test_a_file_saved_on_disk_appears_live(browser, server: Server, components: Path) -> None:
    from playwright.async_api import expect

    ui = await signed_in(browser, server)
    page = ui.page
    await expect(page.locator("tbody")).to_contain_text("No component yet.")
    (components / "disk.py").write_text(hello(7, step="step.disk"))
    row = page.locator("tbody tr", has_text="disk")
    await expect(row).to_contain_text("step.disk")  # no reload: the event stream brought it
    await expect(row).to_contain_text("serving")
    await ui.shot("components-live")
    await page.click("nav >> text=Timeline")
    await expect(page.locator("#timeline")).to_contain_text("disk v1 serving")
    await ui.shot("timeline")
    assert ui.unexpected_errors() == []


async def test_filter_executions_open_one_and_rerun_it(browser, server: Server) -> None:
    from playwright.async_api import expect

    for body in ({"n": 1}, {"n": 2}, {"x": "yes", "kind": "b"}):
        await server.client.post("/picky", json=body)
    await server.client.post("/notify", json={"to": "ops"})
    await recorded(server, 4)
    ui = await signed_in(browser, server)
    page = ui.page
    await page.click("nav >> text=Executions")
    await expect(page.locator("#rows tr")).to_have_count(4)
    await page.select_option("#f-pipeline", "picky")
    await page.select_option("#f-status", "error")
    await page.fill("#f-error", "missing required")
    await page.click("#filters button")
    await expect(page.locator("#rows tr")).to_have_count(2)
    await expect(page.locator("#rows")).to_contain_text("missing required field(s): x")
    await ui.shot("executions-filtered")
    # Open the successful one, from a filter by status.
    await page.select_option("#f-status", "success")
    await page.fill("#f-error", "")
    await page.click("#filters button")
    await expect(page.locator("#rows tr")).to_have_count(1)
    await page.locator("#rows tr").first.focus()
    await page.keyboard.press("Enter")  # rows open from the keyboard too
    await expect(page.locator("main h2")).to_contain_text("Execution")
    await expect(page.locator("main")).to_contain_text("mark_b")
    await expect(page.locator("main")).to_contain_text('"b": "yes"')
    await ui.shot("execution-detail")
    # Re-run: no side effects in this pipeline, so no confirmation.
    await page.click("#rerun")
    await expect(page.locator("main")).to_contain_text("re-run of")
    await expect(page.locator("main")).to_contain_text("manual")
    await ui.shot("execution-rerun")
    # A pipeline with side effects asks first, naming the steps; cancelling runs nothing.
    await ui.go("executions?pipeline=notify")
    await page.locator("#rows tr").first.click()
    await page.click("#rerun")
    dialog = page.locator("#confirm")
    await expect(dialog).to_contain_text("has steps with side effects: call")
    await ui.shot("rerun-confirmation")
    await page.click("#confirm button[value=cancel]")
    response = await server.admin.get("/api/executions", params={"workflow_type": "manual"}, headers=token())
    assert len((await response.json())["executions"]) == 1
    assert ui.unexpected_errors() == []


async def test_requeue_a_dead_letter(browser, server: Server) -> None:
    from playwright.async_api import expect

    accepted = await server.client.post("/flaky", json={})
    job = (await accepted.json())["execution_id"]
    ui = await signed_in(browser, server)
    page = ui.page
    await page.click("nav >> text=Queue")
    await expect(page.locator("main")).to_contain_text(job)  # arrives live when it dies after the page opened
    await expect(page.locator("main")).to_contain_text("flaky step failed")
    await ui.shot("queue-dead-letter")
    FLAKY["fail"] = False
    await page.click(f"[data-requeue='{job}']")
    await expect(page.locator("#message")).to_have_text(f"Job {job} is back in the queue.")

    async def done() -> bool:
        response = await server.client.get(f"/executions/{job}")
        return (await response.json()).get("status") == "success"

    await until(done)
    await page.reload()
    await expect(page.locator("main")).to_contain_text("No dead letter.")
    assert ui.unexpected_errors() == []


async def test_a_viewer_finds_no_write_controls(browser, server: Server) -> None:
    from playwright.async_api import expect

    await create(server, "greeter", hello(1))
    await server.client.post("/picky", json={"x": 1})
    await server.client.post("/flaky", json={})
    await recorded(server, 2)
    ui = await signed_in(browser, server, token("vic", role="viewer"))
    page = ui.page
    await expect(page.locator("#who")).to_contain_text("vic (viewer)")
    await expect(page.locator("tbody")).to_contain_text("greeter")
    assert await page.locator("#new-component").count() == 0
    await ui.go("components/greeter")
    await expect(page.locator("main")).to_contain_text("Read-only: a viewer cannot change components.")
    assert await page.evaluate(f"() => {EDITOR}.getOption('readOnly')") is True
    await ui.shot("viewer-component")
    await ui.go("executions")
    await page.locator("#rows tr").first.click()
    await expect(page.locator("main h2")).to_contain_text("Execution")
    await ui.go("queue")
    await expect(page.locator("main")).to_contain_text("flaky step failed")
    for page_route in ("components/greeter", "executions", "queue"):
        await ui.go(page_route)
        await expect(page.locator("main h2")).to_be_visible()
        for control in ("#validate", "#save", "#delete", "#rerun", "[data-requeue]", "#new-component"):
            assert await page.locator(control).count() == 0, (page_route, control)
    assert ui.unexpected_errors() == []


async def test_phone_width_keyboard_and_readable_errors(browser, server: Server) -> None:
    from playwright.async_api import expect

    await create(server, "greeter", hello(1))
    await server.client.post("/picky", json={"x": 1, "kind": "a"})
    await recorded(server, 1)
    ui = await signed_in(browser, server, width=390, height=844)
    page = ui.page
    for route, name in (
        ("components", "phone-components"),
        ("pipelines", "phone-pipelines"),
        ("executions", "phone-executions"),
    ):
        await ui.go(route)
        await expect(page.locator("main h2")).to_be_visible()
        await page.wait_for_load_state("networkidle")
        # The page itself never scrolls sideways; wide tables scroll inside their own box.
        assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"), route
        await ui.shot(name)
    # Keyboard: the navigation links are reachable with Tab and follow with Enter.
    await ui.go("components")
    await page.focus("nav a[href='#/audit']")
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Enter")
    await expect(page.locator("main h2")).to_have_text("Timeline")
    # An API error reads as a sentence, with its status.
    await ui.go("executions/nothing-here")
    await expect(page.locator("#message")).to_have_text("404 Not found: no recorded execution 'nothing-here'")
    await ui.shot("phone-error")
    assert ui.unexpected_errors() == []


async def test_the_page_holds_up_at_1280x720(browser, server: Server) -> None:
    from playwright.async_api import expect

    await create(server, "greeter", hello(1))
    for body in ({"x": 1, "kind": "a"}, {"x": 2}, {}):
        await server.client.post("/picky", json=body)
    await recorded(server, 3)
    ui = await signed_in(browser, server)
    page = ui.page
    for route in ("pipelines", "audit", "queue"):
        await ui.go(route)
        await expect(page.locator("main h2")).to_be_visible()
        await page.wait_for_load_state("networkidle")
        assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"), route
        await ui.shot(f"desktop-{route}")
    await ui.go("pipelines")
    await expect(page.locator(".pipeline", has_text="picky")).to_contain_text("recent runs")
    assert ui.unexpected_errors() == []
