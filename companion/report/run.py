"""One report run: every step with a progress bar, then the tables, plots and files."""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from companion.config import Settings
from companion.report import machine, plots, render, tables
from companion.report.budget import Budget
from companion.report.measure import STEPS, Step

FORMAT = "companion-report/1"
log = logging.getLogger("companion.report")


class Status:
    """The run's progress as a small JSON file (the web page's Performance tab polls it)."""

    def __init__(self, path: Path | None, total: float) -> None:
        self.path, self.total, self.done = path, total, 0.0
        self.started = time.time()

    def write(self, state: str, step: str = "", doing: str = "", **extra: Any) -> None:
        if self.path is None:
            return
        body = {"state": state, "step": step, "doing": doing, "pid": os.getpid(),
                "fraction": round(self.done / self.total, 3) if self.total else 1.0,
                "started": self.started, "elapsed_s": round(time.time() - self.started, 1),
                **extra}  # fmt: skip
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body), encoding="utf-8")
        tmp.replace(self.path)


def _run_step(step: Step, settings: Settings, budget: Budget, bar: Progress, task: Any,
              status: Status) -> dict[str, Any]:  # fmt: skip
    """One step under its own progress line; a failure is kept in the report, not raised."""

    def tick(doing: str) -> None:
        bar.update(task, description=f"{step.title}: {doing}")
        status.write("running", step.name, doing)

    started = time.perf_counter()
    try:
        result = step.run(settings, budget, tick)
    except Exception as exc:  # the other steps still run; the report says what failed
        log.debug("step %s failed", step.name, exc_info=True)
        result = {"figures": {}, "notes": {}, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc(limit=5)}  # fmt: skip
    result["seconds"] = round(time.perf_counter() - started, 1)
    bar.update(task, completed=1, description=f"{step.title} ({result['seconds']} s)"
               + (" FAILED" if "error" in result else ""))  # fmt: skip
    return result


def measure(settings: Settings, budget: Budget, console: Console, status: Status,
            only: set[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the steps (all, or those in `only`) with a progress bar each and one overall."""
    steps = [s for s in STEPS if only is None or s.name in only]
    results: dict[str, Any] = {}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TaskProgressColumn(), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=False) as bar:
        overall = bar.add_task("companion report", total=sum(s.weight for s in steps))
        for step in steps:
            task = bar.add_task(step.title, total=1)
            status.write("running", step.name, step.title)
            results[step.name] = _run_step(step, settings, budget, bar, task, status)
            status.done += step.weight
            bar.update(overall, advance=step.weight)
    return results


def run_report(settings: Settings, budget: Budget, out: Path, command: str, *,
               console: Console | None = None, status_path: Path | None = None,
               only: set[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Measure, build the tables and plots, write the files; the report dict."""
    console = console or Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    status = Status(status_path, sum(s.weight for s in STEPS if only is None or s.name in only))
    status.write("running", "machine", "describing the machine")
    started = time.perf_counter()
    report: dict[str, Any] = {
        "format": FORMAT,
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "budget": budget.to_dict(),
        "machine": machine.describe(settings),
    }
    report["steps"] = measure(settings, budget, console, status, only)
    report["duration_s"] = round(time.perf_counter() - started, 1)
    cpu = psutil.Process().cpu_times()  # with the servers it started: how much was ours
    report["cpu_s"] = round(cpu.user + cpu.system + cpu.children_user + cpu.children_system, 1)
    paths = finish(report, out)
    status.write("failed" if report["errors"] else "done", doing="written",
                 out=str(out), errors=report["errors"])  # fmt: skip
    report["paths"] = {k: str(v) for k, v in paths.items()}
    return report


def finish(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Tables, plots and files from a report's measured steps."""
    report["errors"] = {k: v["error"] for k, v in report["steps"].items() if "error" in v}
    report["tables"] = tables.build(report)
    report["plots"] = plots.build(report["steps"])
    report.pop("paths", None)
    return render.write(report, out)
