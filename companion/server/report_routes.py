"""The Performance tab's routes: the latest report (tables, plot data and SVGs) and a quick
report run started from the page (admin only when auth is on), with its progress."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from companion.errors import NotFound
from companion.report.job import ReportJob, latest_report

router = APIRouter(tags=["report"])

KEEP = ("format", "command", "created", "duration_s", "budget", "machine", "errors", "tables",
        "plots")  # fmt: skip


def job_of(request: Request) -> ReportJob:
    """The app's one report job (made on first use)."""
    state = request.app.state
    if getattr(state, "report_job", None) is None:
        state.report_job = ReportJob(state.runtime.settings)
    job: ReportJob = state.report_job
    return job


def _latest(request: Request) -> Any:
    found = latest_report(request.app.state.runtime.settings)
    if found is None:
        raise NotFound("no report yet: run `companion report --quick` or start one here")
    return found


@router.get("/api/v1/report")
async def report(request: Request) -> dict[str, Any]:
    """The latest report: its tables, plots (data and SVG) and the machine; 404 if none."""
    found = _latest(request)
    data = json.loads((found / "report.json").read_text(encoding="utf-8"))
    svgs = {}
    for plot in data.get("plots", []):
        path = found / "plots" / f"{plot['id']}.svg"
        if path.exists():
            svgs[plot["id"]] = path.read_text(encoding="utf-8")
    return {**{k: data.get(k) for k in KEEP}, "svgs": svgs}


@router.get("/api/v1/report/html", response_class=HTMLResponse)
async def report_html(request: Request) -> HTMLResponse:
    """The latest report.html (self-contained)."""
    return HTMLResponse((_latest(request) / "report.html").read_text(encoding="utf-8"))


@router.get("/api/v1/report/run")
async def run_status(request: Request) -> dict[str, Any]:
    """The page's report run: idle, starting, running, done or failed, and how far it is."""
    return job_of(request).status()


@router.post("/api/v1/report/run", status_code=202)
async def run_start(request: Request) -> dict[str, Any]:
    """Start `companion report --quick` (admin only when auth is on: server/policy.py); 409
    while one runs."""
    return job_of(request).start()
