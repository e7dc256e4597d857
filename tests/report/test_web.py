"""The Performance tab's report: its routes under every role, and the page in Chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect, sync_playwright

from companion.auth import KeyStore
from companion.report.job import record_latest
from companion.runtime import open_runtime
from companion.server.app import create_app
from tests.conftest import make_settings
from tests.report.conftest import ARTIFACTS, Run
from tests.server.page_kit import CHROMIUM, FLAGS, SLOW

pytestmark = pytest.mark.timeout(1500)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Path]]:
    settings = make_settings(tmp_path / "d", auth=True)
    rt = open_runtime(settings)
    keys = KeyStore(rt.store)
    made = {"alice": keys.create("alice")[0], "admin": keys.create("ops", admin=True)[0]}
    with TestClient(create_app(settings, rt)) as client:
        yield client, {k: f"Bearer {v}" for k, v in made.items()}, tmp_path / "d"
    rt.close()


def test_the_latest_report_is_served_to_users(
    secured: tuple[TestClient, dict[str, str], Path], report_run: Run
) -> None:
    client, keys, data = secured
    alice = {"Authorization": keys["alice"]}
    missing = client.get("/api/v1/report", headers=alice)
    assert missing.status_code == 404 and "companion report --quick" in missing.json()[
        "error"]["message"]  # fmt: skip
    assert client.get("/api/v1/report").status_code == 401
    record_latest(make_settings(data), report_run.out)
    body = client.get("/api/v1/report", headers=alice).json()
    assert [t["id"] for t in body["tables"]][:2] == ["machine", "cold_start"]
    assert set(body["svgs"]) == {"users", "threshold", "recall", "turns"}
    page = client.get("/api/v1/report/html", headers=alice)
    assert page.status_code == 200 and page.text.startswith("<!doctype html>")


def test_only_an_admin_starts_a_run_and_one_at_a_time(
    secured: tuple[TestClient, dict[str, str], Path],
) -> None:
    client, keys, _ = secured
    assert client.post("/api/v1/report/run").status_code == 401
    refused = client.post("/api/v1/report/run", headers={"Authorization": keys["alice"]})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    admin = {"Authorization": keys["admin"]}
    assert client.get("/api/v1/report/run", headers=admin).json()["state"] == "idle"
    started = client.post("/api/v1/report/run", headers=admin)
    assert started.status_code == 202 and started.json()["state"] == "starting"
    again = client.post("/api/v1/report/run", headers=admin)
    assert again.status_code == 409 and again.json()["error"]["code"] == "report_running"
    state = client.get("/api/v1/report/run", headers={"Authorization": keys["alice"]}).json()
    assert state["state"] in ("starting", "running")  # stopped when the server stops


def test_the_performance_tab_shows_the_report_and_starts_a_run(
    server: str, tmp_path: Path, report_run: Run
) -> None:
    record_latest(make_settings(tmp_path / "data"), report_run.out)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(SLOW)
        page.goto(server + "/")
        page.get_by_role("tab", name="Performance").click()
        plots = page.locator("#report-plots figure img")
        expect(plots).to_have_count(4, timeout=30_000)
        for i in range(4):
            expect(plots.nth(i)).to_be_visible()
        assert "concurrent users" in (plots.first.get_attribute("alt") or "")
        assert page.locator("#report-plots img").evaluate_all(
            "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")  # fmt: skip
        tables = page.locator("#report-tables details")
        expect(tables).to_have_count(13)
        tables.nth(1).locator("summary").click()
        expect(tables.nth(1).locator("td").first).to_have_text("tiny load time")
        page.get_by_role("button", name="Run a quick report").click()
        expect(page.locator("#report-progress")).to_be_visible(timeout=10_000)
        expect(page.locator("#report-status")).to_contain_text("Running", timeout=10_000)
        time.sleep(3)  # a poll or two: the progress moves on from "starting"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-tab.png"), full_page=True)
        expect(page.get_by_role("button", name="Run a quick report")).to_be_disabled()
        browser.close()
