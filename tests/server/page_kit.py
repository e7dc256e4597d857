"""Shared parts of the page tests: Debian's Chromium through Playwright, a real server per test
module, short replies, and screenshots in four variants (desktop / 390x844, light / dark)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.server.conftest import serving

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "page"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SLOW = 180_000  # ms: the tiny model on a busy 2-core machine
SHORT = {"max_tokens": 4}  # every reply the page asks for stays short


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module's tests (each test uses its own user ids)."""
    with serving(tmp_path_factory.mktemp("site") / "data") as url:
        yield url


def new_context(
    browser: Browser,
    *,
    options: dict[str, object] | None = None,
    user: str | None = None,
    **kwargs: object,
) -> BrowserContext:
    """A browser context whose page asks for short replies (and starts as `user`)."""
    context = browser.new_context(viewport=DESKTOP, **kwargs)  # type: ignore[arg-type]
    wanted = json.dumps(json.dumps(options or SHORT))
    script = f"localStorage.setItem('companion.options', {wanted});"
    if user:  # the first time only: a reload keeps the user the page remembered
        script += "localStorage.getItem('companion.user') || "
        script += f"localStorage.setItem('companion.user', {json.dumps(user)});"
    context.add_init_script(script)
    return context


def open_page(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.set_default_timeout(SLOW)
    page.goto(url + "/")
    return page


def shots(page: Page, name: str, drawer: str | None = None) -> list[Path]:
    """Screenshots of what the page shows now: desktop and phone, light and dark; on the phone
    with `drawer` ("#sessions" or "#panels") open."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or DESKTOP
    made = []
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(viewport)
            opened = drawer and label == "phone"
            if opened:
                page.click(f"[aria-controls='{drawer.lstrip('#')}']")
                page.wait_for_timeout(300)  # the drawer slides in
            path = ARTIFACTS / f"{name}-{label}-{scheme}.png"
            page.screenshot(path=str(path))
            if opened:
                page.keyboard.press("Escape")
            made.append(path)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(size)
    return made


def send(page: Page, text: str) -> None:
    """Type a message and send it with Enter; wait for the reply's meta line. A message the page
    says was not sent fails at once, with the page's reason."""
    replies = page.locator("#messages li.assistant:not(.greeting) .meta")
    before = {"n": replies.count(), "status": page.locator("#status").text_content() or ""}
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")
    outcome = page.wait_for_function(
        """b => {
          const status = document.querySelector('#status').textContent;
          if (status.startsWith('Not sent') && status !== b.status) return status;
          const metas = document.querySelectorAll('#messages li.assistant:not(.greeting) .meta');
          return metas.length > b.n && !document.querySelector('[aria-busy=true]') && 'ok';
        }""",
        arg=before,
        timeout=SLOW,
    ).json_value()
    assert outcome == "ok", f"{text!r}: {outcome}"
