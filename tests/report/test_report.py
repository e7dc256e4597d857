"""`companion report --quick` on the real model: the files, every table and plot in Chromium,
and every number of the HTML and the Markdown equal to report.json."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from companion.bench.http_load import llama_server_path
from companion.report.render import cell_text
from tests.report.conftest import ARTIFACTS, Run
from tests.server.page_kit import CHROMIUM, FLAGS

pytestmark = pytest.mark.timeout(1500)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
STEPS = ("models", "engine", "user", "cache", "threshold", "memory")


def numbers(text: str) -> set[float]:
    return {float(n) for n in NUMBER.findall(text)}


@pytest.fixture(scope="module")
def report(report_run: Run) -> dict[str, Any]:
    assert report_run.proc.returncode == 0, report_run.proc.stdout + report_run.proc.stderr
    data: dict[str, Any] = json.loads((report_run.out / "report.json").read_text())
    return data


def test_the_run_measures_every_step_and_says_how_long_it_took(
    report_run: Run, report: dict[str, Any]
) -> None:
    assert not report["errors"]
    for step in STEPS:
        assert report["steps"][step]["figures"], step
    assert report["steps"]["peers"]["notes"].get("skipped") or report["steps"]["peers"]["figures"]
    assert f"took {report['duration_s']} s" in report_run.proc.stdout
    assert "Cache workload (bench cache)" in report_run.proc.stderr  # the progress lines
    ids = [t["id"] for t in report["tables"]]
    assert ids == ["machine", "cold_start", "token_generation", "cache_metrics", "memory_usage",
                   "per_user_memory", "single_user", "multi_user", "requirements",
                   "cache_by_type", "memory_query", "model_comparison", "peers"]  # fmt: skip
    assert [p["id"] for p in report["plots"]] == ["users", "threshold", "recall", "turns"]
    machine = report["machine"]
    assert machine["cores_logical"] >= 1 and machine["ram_gb"] > 0 and "tiny" in machine[
        "installed_sizes"]  # fmt: skip
    measured = {t["id"]: {r[0]: r[1] for r in t["rows"]} for t in report["tables"]}
    assert measured["cold_start"]["tiny load time"] > 0
    assert measured["token_generation"]["CPU only"] > 0
    assert measured["single_user"]["Simple queries"] > 0
    assert 0 < measured["memory_query"]["Total memory time"] < 5000


def test_llama_server_is_measured_beside_companion_when_there_is_one(
    report: dict[str, Any],
) -> None:
    """A llama-server on PATH or built by scripts/build-llama-server.sh (~/.cache/companion/)
    runs the same streams as companion serve, and the peers table shows both."""
    server = report["machine"]["peers"]["llama_server"]
    if llama_server_path() is None:
        assert not server["present"] and "build-llama-server.sh" in server["why"]
        pytest.skip("no llama-server here: run scripts/build-llama-server.sh")
    assert server["present"] and server["path"] == str(llama_server_path())
    n = report["steps"]["peers"]["notes"]["streams"]
    figures = report["steps"]["peers"]["figures"]
    assert figures[f"http_aggregate_tokens_per_s_{n}"] > 0
    assert figures[f"peer_llama_server_aggregate_tokens_per_s_{n}"] > 0
    rows = next(t for t in report["tables"] if t["id"] == "peers")["rows"]
    streamed = [r for r in rows if r[0].startswith(f"{n} streams over HTTP")]
    assert len(streamed) == 2 and all(r[1] and r[3] and r[4] for r in streamed), streamed


def test_every_table_and_plot_is_in_the_html_with_the_json_numbers(
    report_run: Run, report: dict[str, Any]
) -> None:
    html = report_run.out / "report.html"
    assert not re.search(r'(src|href)="(?!#)', html.read_text())  # self-contained
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(html.as_uri())
        for t in report["tables"]:
            table = page.locator(f'table[data-table="{t["id"]}"]')
            assert table.locator("th").all_inner_texts() == t["columns"]
            rows = table.locator("tbody tr")
            assert rows.count() == len(t["rows"]), t["id"]
            for i, expected in enumerate(t["rows"]):
                cells = rows.nth(i).locator("td").all_inner_texts()
                assert cells == [cell_text(c) for c in expected], (t["id"], i)
        for plot in report["plots"]:
            svg = page.locator(f'figure[data-plot="{plot["id"]}"] svg')
            assert svg.count() == 1 and svg.bounding_box()["width"] > 300
            text = svg.text_content() or ""
            for label in (plot["x_label"], plot["y_label"], plot["y2_label"]):
                assert label in text, (plot["id"], label)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-test.png"), full_page=True)
        page.evaluate("document.querySelectorAll('svg').forEach(s => s.remove())")
        body = page.inner_text("body")  # what a reader sees, plots left out
        browser.close()
    extra = numbers(body) - numbers(json.dumps(report))
    assert not extra, f"numbers in the HTML that report.json does not have: {sorted(extra)}"


def test_every_markdown_table_equals_the_json(report_run: Run, report: dict[str, Any]) -> None:
    md = (report_run.out / "report.md").read_text()
    for t in report["tables"]:
        block = md.split(f"### {t['title']}\n", 1)[1]
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        parsed = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln)[1:-1]]
                  for ln in lines]  # fmt: skip
        assert parsed[0] == t["columns"]
        assert parsed[2 : 2 + len(t["rows"])] == [[cell_text(c) for c in r] for r in t["rows"]]
    for plot in report["plots"]:
        assert f"(plots/{plot['id']}.svg)" in md
        assert (report_run.out / "plots" / f"{plot['id']}.svg").read_text().startswith("<svg")
    extra = numbers(re.sub(r"\(plots/\w+\.svg\)", "", md)) - numbers(json.dumps(report))
    assert not extra, f"numbers in the Markdown that report.json does not have: {sorted(extra)}"
