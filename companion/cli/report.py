"""companion report [--quick] [--out DIR]; companion report compare A.json B.json"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from companion.cli import Ctx, cli, setup_logging
from companion.report import compare as comparing
from companion.report.budget import BUDGETS, FULL, QUICK
from companion.report.job import record_latest, reports_dir
from companion.report.measure import STEPS
from companion.report.render import to_markdown
from companion.report.run import finish, run_report


@cli.group(invoke_without_command=True)
@click.option("--quick", is_flag=True,
              help="At most 3 minutes on a 2-core machine, busy or not (short replies, few "
              "requests).")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Directory for report.html, report.md, report.json (default: "
              "DATA_DIR/reports/TIME).")  # fmt: skip
@click.option(
    "--markdown",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the Markdown report here (plot links relative to it), e.g. "
    "docs/PERFORMANCE.md.",
)
@click.option(
    "--only",
    multiple=True,
    type=click.Choice([s.name for s in STEPS]),
    help="Run only these steps (repeatable).",
)
@click.option(
    "--budget",
    "budget_name",
    type=click.Choice(sorted(BUDGETS)),
    hidden=True,
    help="Test suite only: a smaller workload than --quick.",
)
@click.option(
    "--render-only",
    type=click.Path(path_type=Path, dir_okay=False),
    hidden=True,
    help="Rewrite the files from this report.json's figures (no measuring).",
)
@click.option(
    "--status-file",
    type=click.Path(path_type=Path),
    hidden=True,
    help="Write the progress as JSON here (the web page's run).",
)
@click.pass_context
def report(ctx: click.Context, quick: bool, out: Path | None, markdown: Path | None,
           only: tuple[str, ...], budget_name: str | None, render_only: Path | None,
           status_file: Path | None) -> None:  # fmt: skip
    """Measure the spec's performance tables on this machine; write report.html/.md/.json.

    Runs the bench suites within a time budget (--quick: at most 3 minutes on a 2-core
    machine, even with other work on it; the full run takes longer), with the spec's figures
    beside each result.

    Example: companion report --quick --out artifacts/report

    Example: companion report --quick --out docs/performance --markdown docs/PERFORMANCE.md

    Example: companion report compare old/report.json new/report.json
    """
    if ctx.invoked_subcommand is not None:
        return
    obj: Ctx = ctx.obj
    settings = obj.settings()
    setup_logging("ERROR")
    if render_only is not None:
        data = comparing.load(render_only)
        _written(finish(data, out or render_only.parent), data, markdown)
        return
    budget = BUDGETS[budget_name] if budget_name else QUICK if quick else FULL
    out = out or reports_dir(settings) / time.strftime("%Y%m%d-%H%M%S")
    argv = sys.argv[sys.argv.index("report") + 1 :] if "report" in sys.argv else []
    result = run_report(settings, budget, out, shlex.join(["companion", "report", *argv]),
                        console=Console(stderr=True), status_path=status_file,
                        only=set(only) or None)  # fmt: skip
    record_latest(settings, out)
    _written({k: Path(v) for k, v in result["paths"].items()}, result, markdown)
    click.echo(f"took {result['duration_s']} s ({budget.name} budget)")
    if result["errors"]:
        for step, error in result["errors"].items():
            click.echo(f"error: step {step} failed: {error}", err=True)
        sys.exit(1)


def _written(paths: dict[str, Path], data: dict[str, Any], markdown: Path | None) -> None:
    """Say where the files are; write the extra Markdown copy when asked."""
    if markdown is not None:
        plots = os.path.relpath(paths["html"].parent / "plots", markdown.resolve().parent)
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(to_markdown(data, Path(plots).as_posix()), encoding="utf-8")
        paths = {**paths, "md+": markdown}
    for kind, path in paths.items():
        click.echo(f"{kind:5} {path}")


@report.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--all", "show_all", is_flag=True, help="Also list figures that did not move.")
def compare_cmd(a: Path, b: Path, show_all: bool) -> None:
    """Print what moved between two reports: B/A ratios, beyond the measured noise.

    Example: companion report compare before/report.json after/report.json
    """
    ra, rb = comparing.load(a), comparing.load(b)
    rows = comparing.compare(ra, rb)
    table = Table(title=f"A = {a} ({ra['created']})\nB = {b} ({rb['created']})")
    for column in ("figure", "A", "B", "B/A", "noise", "moved"):
        table.add_column(column, justify="left" if column in ("figure", "moved") else "right")
    shown = [r for r in rows if show_all or r["moved"] != "-"]
    for r in shown:
        table.add_row(r["figure"], *(_num(r[k]) for k in ("a", "b", "ratio", "noise")), r["moved"])
    Console(width=120).print(table)
    moved = sum(r["moved"] in ("up", "down") for r in rows)
    click.echo(
        f"{moved} of {len(rows)} figures moved beyond their noise "
        f"(p50-p95 spread where measured, else {comparing.DEFAULT_NOISE:.0%})"
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


__all__ = ["FULL", "QUICK", "report"]
