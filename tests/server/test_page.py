"""The web page in headless Chromium (Debian's), driven by Playwright against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.goto(server + "/")
    yield pg
    context.close()


def test_send_a_message_and_see_the_streamed_reply(page: Page) -> None:
    expect(page.get_by_role("heading", name="companion")).to_be_visible()
    box = page.get_by_label("Message", exact=True)
    box.fill("Hello! Tell me something nice.")
    box.press("Enter")
    reply = page.locator("#messages li.assistant").last
    expect(reply.locator(".meta")).to_contain_text("tokens", timeout=60_000)
    assert reply.locator(".text").inner_text().strip()
    expect(page.locator("#messages li.user")).to_have_text(
        "You said: Hello! Tell me something nice."
    )
    expect(page.locator("#session-list li")).to_have_count(1)
    page.get_by_role("tab", name="Performance").click()
    expect(page.locator('dd[data-metric="Requests"]')).to_have_text("1", timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-chat.png"), full_page=True)


def test_keyboard_and_phone_width(page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to message box")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    page.get_by_role("tab", name="Memory").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Persona")).to_have_attribute("aria-selected", "true")
    page.screenshot(path=str(ARTIFACTS / "page-phone.png"), full_page=True)


def test_a_memory_appears_is_used_and_can_be_deleted(page: Page) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill("I live in Lisbon and I love sailing.")
    box.press("Enter")
    expect(page.locator("#messages li.assistant .meta")).to_have_count(1, timeout=60_000)
    memories = page.locator("#memory-list li", has_text="Lisbon")
    expect(memories.first).to_be_visible(timeout=30_000)  # stored after the reply
    box.fill("Where do I live?")
    box.press("Enter")
    expect(page.locator("#messages li.assistant .meta")).to_have_count(2, timeout=60_000)
    expect(page.locator("#used-memories li", has_text="Lisbon").first).to_be_visible(timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-memory.png"), full_page=True)
    count = memories.count()
    memories.first.get_by_role("button", name="Delete").click()
    expect(page.locator("#memory-list li", has_text="Lisbon")).to_have_count(
        count - 1, timeout=30_000
    )


def test_persona_panel_saves_and_selects_a_persona(page: Page) -> None:
    page.get_by_role("tab", name="Persona").click()
    page.get_by_role("button", name="New persona").click()
    form = page.locator("#persona-form")
    form.get_by_label("Name").fill("Captain Ada")
    form.get_by_label("Description").fill("A cheerful sea captain who loves stories.")
    form.get_by_label("warmth").fill("0.9")
    form.get_by_role("button", name="Save persona").click()
    expect(page.locator("#persona-status")).to_have_text("Saved Captain Ada.")
    expect(page.locator("#persona-select")).to_have_value("captain-ada")
