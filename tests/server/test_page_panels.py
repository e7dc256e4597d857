"""The page's sessions, users, sign-in, persona, memory and performance panels, themes and the
phone layout, in Debian's Chromium against a real server and the tiny model."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from companion.persona.card import blank_png, to_card, write_png_card
from companion.persona.model import persona_from
from tests.server.conftest import companion_bin, serving
from tests.server.page_kit import (
    ARTIFACTS,
    PHONE,
    browser,
    new_context,
    open_page,
    send,
    shots,
    site,
)

__all__ = ["browser", "site"]  # fixtures
LONG_WORD = """() => {
  const mine = document.querySelector('#messages li.user').cloneNode(true);
  mine.querySelector('.text').textContent = 'x'.repeat(600);
  document.querySelector('#messages').append(mine);
}"""
SLOW_RELOAD = """() => {
  window.fastFetch = window.fetch;
  window.fetch = (url, opts) => String(url).endsWith('/messages')
    ? new Promise((r) => setTimeout(r, 1500)).then(() => window.fastFetch(url, opts))
    : window.fastFetch(url, opts);
  window.C.openSession(window.C.state.session);
}"""
DOUBLE_MESSAGES = """() => {
  const list = document.querySelector('#messages');
  list.append(...[...list.children].map((n) => n.cloneNode(true)));
}"""


def test_sessions_rename_search_and_delete(browser: Browser, site: str) -> None:
    context = new_context(browser, user="sess1")
    page = open_page(context, site)
    send(page, "I keep bees on my balcony.")
    # A reload of the old chat still on its way when "+ New chat" is pressed (the persona panel
    # reloads it after every reply) must not bring the old chat back over the new one.
    page.evaluate(SLOW_RELOAD)
    page.get_by_role("button", name="+ New chat").click()
    page.wait_for_timeout(2500)
    expect(page.locator("#messages li.user")).to_have_count(0)
    page.evaluate("window.fetch = window.fastFetch")
    send(page, "What should I cook tonight?")
    items = page.locator("#session-list li.session")
    expect(items).to_have_count(2)
    bees = items.filter(has_text="bees")
    bees.get_by_role("button", name="Rename chat: I keep bees on my balcony.").click()
    title = page.get_by_label("New chat title")
    title.fill("Beekeeping")
    title.press("Enter")
    expect(items.filter(has_text="Beekeeping")).to_have_count(1)

    page.get_by_label("Search your messages").fill("balc")
    hit = page.locator("#search-results li button").first
    expect(hit.locator("mark").first).to_have_text(re.compile("balcony", re.IGNORECASE))
    expect(hit).to_contain_text("Beekeeping")
    shots(page, "search", "#sessions")
    hit.click()
    expect(page.locator("#messages li.user .text")).to_have_text("I keep bees on my balcony.")
    page.get_by_label("Search your messages").fill("")
    expect(items).to_have_count(2)

    items.filter(has_text="Beekeeping").get_by_role(
        "button", name="Delete chat: Beekeeping"
    ).click()
    expect(page.locator("#confirm")).to_contain_text("cannot be undone")
    page.locator("#confirm").get_by_role("button", name="Delete").click()
    expect(items).to_have_count(1)
    expect(page.locator("#messages li")).to_have_count(0)  # the open chat was the deleted one
    context.close()


def test_switching_user_reloads_every_panel_and_is_remembered(browser: Browser, site: str) -> None:
    httpx.post(f"{site}/api/v1/users/ann/memories", json={"text": "Ann plays the cello"})
    context = new_context(browser, user="ann")
    page = open_page(context, site)
    expect(page.locator("#memory-list")).to_contain_text("cello")
    user = page.get_by_label("User", exact=True)
    user.fill("bad id!")
    user.press("Enter")
    expect(page.locator("#user-error")).to_contain_text("letters, digits")
    expect(user).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#memory-list")).to_contain_text("cello")  # still ann
    user.fill("ben")
    user.press("Enter")
    expect(page.locator("#memory-list")).not_to_contain_text("cello")
    expect(page.locator("#memory-list")).to_contain_text("Nothing yet")
    page.reload()
    expect(page.get_by_label("User", exact=True)).to_have_value("ben")
    context.close()


def test_memory_panel_details_confirm_undo_and_reasons(browser: Browser, site: str) -> None:
    context = new_context(browser, user="mem1")
    page = open_page(context, site)
    page.get_by_label("New memory").fill("I live in Lisbon and love sailing")
    page.get_by_role("button", name="Add", exact=True).click()
    item = page.locator("#memory-list li", has_text="Lisbon")
    expect(item).to_contain_text("important")
    expect(item).to_contain_text("added")
    expect(item.get_by_role("img", name="importance 90%")).to_be_visible()
    send(page, "Where do I live, Lisbon?")
    used = page.locator("#used-memories li", has_text="Lisbon")
    expect(used.locator(".why")).to_contain_text("Used because")
    assert "similarity" not in used.inner_text() and "score" not in used.inner_text()
    shots(page, "memory", "#panels")

    item.get_by_role("button", name="Delete memory: I live in Lisbon and love sailing").click()
    page.locator("#confirm").get_by_role("button", name="Cancel").click()
    expect(item).to_have_count(1)  # cancelled: still there
    item.get_by_role("button", name="Delete memory: I live in Lisbon and love sailing").click()
    page.locator("#confirm").get_by_role("button", name="Forget").click()
    expect(page.locator("#memory-list li", has_text="Lisbon")).to_have_count(0)
    page.locator("#toast").get_by_role("button", name="Undo").click()
    expect(page.locator("#memory-list li", has_text="Lisbon")).to_have_count(1)
    context.close()


def test_persona_editor_greeting_avatar_import_and_export(
    browser: Browser, site: str, tmp_path: Path
) -> None:
    context = new_context(browser, user="pat", accept_downloads=True)
    page = open_page(context, site)
    page.get_by_role("tab", name="Persona").click()
    expect(page.locator("#persona-note")).to_contain_text("saved as a new persona")
    form = page.locator("#persona-form")
    form.get_by_label("Name").fill("Captain Ada")
    form.get_by_label("Description").fill("{{char}} is a cheerful sea captain.")
    form.get_by_label("Scenario").fill("On the deck of a tall ship.")
    form.get_by_label("First message").fill("Ahoy, {{user}}! Welcome aboard.")
    form.get_by_label("Example lines").fill("Fair winds!\nHoist the sails!")
    form.get_by_label("warmth").fill("0.9")
    form.get_by_role("button", name="Save as new persona").click()
    expect(page.locator("#persona-status")).to_have_text("Saved Captain Ada.")
    expect(page.locator("#persona-select")).to_have_value("captain-ada")
    page.get_by_role("button", name="+ New chat").click()
    expect(page.locator("#messages li.greeting")).to_contain_text("Ahoy, pat! Welcome aboard.")
    stored = httpx.get(f"{site}/api/v1/personas/captain-ada").json()
    assert stored["scenario"] == "On the deck of a tall ship." and stored["traits"]["warmth"] == 0.9
    assert "Captain Ada is a cheerful sea captain." in stored["rendered_prompt"]

    with page.expect_download() as got:
        page.get_by_role("button", name="Export PNG").click()
    assert got.value.suggested_filename == "captain-ada.png"

    card = write_png_card(
        to_card(persona_from({"name": "Sea Cat", "greeting": "Mrrp, {{user}}."})),
        blank_png("Sea Cat", 32),
    )
    path = tmp_path / "sea-cat.png"
    path.write_bytes(card)
    page.locator("#card-file").set_input_files(str(path))
    expect(page.locator("#persona-status")).to_have_text("Imported Sea Cat.")
    expect(page.locator("#persona-avatar img")).to_be_visible()
    expect(page.locator("#messages li.greeting .avatar img")).to_be_visible()
    expect(page.locator("#messages li.greeting")).to_contain_text("Mrrp, pat.")
    shots(page, "persona", "#panels")
    page.locator("#card-file").set_input_files(str(path))  # again: the id is taken
    expect(page.locator("#persona-status")).to_contain_text("exists already")
    page.get_by_role("button", name="Import as a copy").click()
    expect(page.locator("#persona-status")).to_have_text("Imported Sea Cat (2).")
    page.locator("#card-file").set_input_files(str(path))
    page.get_by_role("button", name="Overwrite it").click()
    expect(page.locator("#persona-status")).to_have_text("Imported Sea Cat.")
    context.close()


def test_performance_axes_theme_toggle_phone_drawer_and_favicon(
    browser: Browser, site: str
) -> None:
    context = new_context(browser, user="perf1", color_scheme="dark")
    page = open_page(context, site)
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")  # the system's choice
    toggle = page.get_by_role("button", name="Theme: follows the system. Change theme")
    toggle.click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")  # remembered
    page.get_by_role("button", name="Theme: light. Change theme").click()
    page.get_by_role("button", name="Theme: dark. Change theme").click()  # back to system
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")

    send(page, "Hello there!")
    page.get_by_role("tab", name="Performance").click()
    expect(page.locator('dd[data-metric="Requests"]')).not_to_have_text("0")
    expect(page.locator('dd[data-metric="Replies generating now"]')).to_have_text("0")
    labels = page.locator("#chart-rt text").all_text_contents()
    assert "ms" in labels and "time" in labels and "now" in labels and "0" in labels
    assert "tok/s" in page.locator("#chart-tps text").all_text_contents()
    shots(page, "performance", "#panels")
    assert httpx.get(f"{site}/static/favicon.svg").status_code == 200
    expect(page.locator('link[rel="icon"]')).to_have_attribute("href", "/static/favicon.svg")

    page.set_viewport_size(PHONE)
    for _ in range(6):  # a long session: the message box stays on screen
        page.evaluate(DOUBLE_MESSAGES)
    page.evaluate(LONG_WORD)  # one unbroken 600-letter word wraps inside its bubble
    assert page.evaluate(
        "() => { const b = document.querySelector('#messages li.user:last-child .bubble');"
        " return b.scrollWidth <= b.clientWidth && b.getBoundingClientRect().right <= 390; }"
    )
    box = page.get_by_label("Message", exact=True).bounding_box()
    assert box is not None and box["y"] + box["height"] <= PHONE["height"]
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    expect(page.locator("#sessions")).not_to_be_visible()
    page.get_by_role("button", name="Sessions").click()
    expect(page.locator("#sessions")).to_be_visible()
    expect(page.locator("#session-list li.session")).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS / "drawer-phone-dark.png"))
    page.keyboard.press("Escape")
    expect(page.locator("#sessions")).not_to_be_visible()
    page.get_by_role("button", name="Details").click()
    expect(page.get_by_role("tab", name="Memory")).to_be_visible()
    page.keyboard.press("Escape")
    page.reload()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to message box")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    context.close()


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A server with auth = true and a key for the user "kim"."""
    data = tmp_path_factory.mktemp("locked") / "data"
    env = {**os.environ, "COMPANION_DATA_DIR": str(data), "COMPANION_MODEL_SIZE": "tiny"}
    made = subprocess.run([companion_bin(), "keys", "create", "kim"], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    with serving(data, COMPANION_AUTH="1") as url:
        yield url, made.stdout.strip()


def test_sign_in_with_a_key_and_sign_out(browser: Browser, locked: tuple[str, str]) -> None:
    url, key = locked
    context = new_context(browser)
    page = open_page(context, url)
    dialog = page.get_by_role("dialog", name="Sign in")
    expect(dialog).to_be_visible()
    shots(page, "sign-in")
    dialog.get_by_label("API key").fill("cmp_wrong")
    dialog.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("not accepted")
    dialog.get_by_label("API key").fill(key)
    dialog.get_by_role("button", name="Sign in").click()
    expect(dialog).not_to_be_visible()
    user = page.get_by_label("User", exact=True)
    expect(user).to_have_value("kim")
    expect(user).to_have_attribute("readonly", "")
    assert page.evaluate("sessionStorage.getItem('companion.key')") == key
    expect(page.locator("#perf-note")).to_contain_text("admin API key")
    send(page, "Hi, I am Kim.")
    expect(page.locator("#session-list li.session")).to_have_count(1)
    page.get_by_role("button", name="Sign out").click()
    expect(dialog).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('companion.key')") is None
    context.close()
