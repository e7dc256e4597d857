"""report.html (self-contained: CSS and SVG plots inline), report.md (plots as SVG files beside
it) and report.json, all from the same report dict; numbers are printed exactly as stored."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from companion.report.plots import svg

CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;
color:#1d2430;background:#fff}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #dde}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{border:1px solid #dde;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f3f5f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
.within{color:#0a6b2a}.better{color:#0a5a9e}.worse{color:#a32020}
.note,.meta{color:#556;font-size:.9em}figure{margin:1.5em 0}svg{max-width:100%;height:auto}
"""


def cell_text(value: Any) -> str:
    """How a cell is printed: numbers exactly as stored, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def meta_lines(report: dict[str, Any]) -> list[str]:
    """The header: what made the report, when, how long it took, on what."""
    m = report["machine"]
    cpu = f" using {report['cpu_s']} s of CPU" if "cpu_s" in report else ""
    return [
        f"Command: {report['command']}",
        f"Made: {report['created']} in {report['duration_s']} s ({report['budget']['name']} "
        f"budget){cpu}; load average at start "
        f"{' '.join(map(str, m['load_average']))} on {m['cores_logical']} logical cores",
        f"Machine: {m['cpu']}, {m['describe']}; tier {m['tier']}, model "
        f"{m['chosen_model']['size']} ({m['chosen_model']['model']})",
        "Reference: the spec's figures (llm-performance-analysis.md, i7-9700K + RTX 3080); "
        "ratio = measured / spec (the spec's benchmark figure, else the middle of its range).",
        "To make it again: `companion report --quick` takes about three minutes on an idle "
        "two-core machine, longer on a busy one (the load average above says how busy this one "
        "was); "
        "`companion report` (no --quick) measures the spec's full workloads; "
        "`companion report compare A.json B.json` shows what moved between two runs.",
    ]


def _td(value: Any) -> str:
    cls = ' class="num"' if isinstance(value, int | float) and not isinstance(value, bool) else ""
    if value in ("within", "better", "worse"):
        cls = f' class="{value}"'
    return f"<td{cls}>{html.escape(cell_text(value))}</td>"


def html_table(t: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t["columns"])
    body = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in t["rows"])
    note = f'<p class="note">{html.escape(t["note"])}</p>' if t["note"] else ""
    return (f'<section id="table-{t["id"]}"><h2>{html.escape(t["title"])}</h2>'
            f'<p class="note">Spec: {html.escape(t["spec_section"])}</p>'
            f'<table data-table="{t["id"]}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>{note}</section>")  # fmt: skip


def html_plot(p: dict[str, Any], drawn: str) -> str:
    return (f'<figure id="plot-{p["id"]}" data-plot="{p["id"]}">{drawn}'
            f'<figcaption>{html.escape(p["title"])}. {html.escape(p["caption"])}</figcaption>'
            "</figure>")  # fmt: skip


def to_html(report: dict[str, Any], drawn: dict[str, str]) -> str:
    meta = "".join(f'<p class="meta">{html.escape(line)}</p>' for line in meta_lines(report))
    tables = "".join(html_table(t) for t in report["tables"])
    figures = "".join(html_plot(p, drawn[p["id"]]) for p in report["plots"])
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>companion performance report</title><style>{CSS}</style></head><body>"
        f"<h1>companion performance report</h1>{meta}{tables}"
        f'<section id="plots"><h2>Plots</h2>{figures}</section></body></html>\n'
    )


def md_table(t: dict[str, Any]) -> str:
    def line(cells: list[Any]) -> str:
        return "| " + " | ".join(cell_text(c).replace("|", "\\|") for c in cells) + " |"

    lines = [f"### {t['title']}", "", f"Spec: {t['spec_section']}", "", line(t["columns"]),
             "|" + "---|" * len(t["columns"]), *(line(r) for r in t["rows"])]  # fmt: skip
    if t["note"]:
        lines += ["", t["note"]]
    return "\n".join(lines)


def to_markdown(report: dict[str, Any], plot_dir: str) -> str:
    parts = ["# companion performance report", "", *(f"{x}  " for x in meta_lines(report)), ""]
    parts += [md_table(t) + "\n" for t in report["tables"]]
    parts += ["## Plots", ""]
    parts += [f"![{p['title']}]({plot_dir}/{p['id']}.svg)\n\n*{p['title']}. {p['caption']}.*\n"
              for p in report["plots"]]  # fmt: skip
    return "\n".join(parts)


def write(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """report.json, report.html, report.md and plots/*.svg under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = {p["id"]: svg(p) for p in report["plots"]}
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    for pid, text in drawn.items():
        (plots / f"{pid}.svg").write_text(text, encoding="utf-8")
    paths = {"json": out / "report.json", "html": out / "report.html", "md": out / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    paths["html"].write_text(to_html(report, drawn), encoding="utf-8")
    paths["md"].write_text(to_markdown(report, "plots"), encoding="utf-8")
    return paths
