"""A quick report run started from the web page: `companion report --quick` as a child process
(its own CPU and GIL, so the server keeps answering), its progress read from a status file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from companion.config import Settings
from companion.errors import CompanionError

LATEST = "LATEST"  # reports/LATEST names the directory of the newest report


def reports_dir(settings: Settings) -> Path:
    return settings.data_dir / "reports"


def latest_report(settings: Settings) -> Path | None:
    """The newest report's directory, as the last run recorded it."""
    pointer = reports_dir(settings) / LATEST
    if not pointer.exists():
        return None
    path = Path(pointer.read_text(encoding="utf-8").strip())
    return path if (path / "report.json").exists() else None


def record_latest(settings: Settings, out: Path) -> None:
    """Make `out` the report the web page shows."""
    pointer = reports_dir(settings) / LATEST
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(str(out.resolve()) + "\n", encoding="utf-8")


class ReportRunning(CompanionError):
    status_code = 409
    code = "report_running"


class ReportJob:
    """At most one run at a time per server; its state survives only in the status file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = reports_dir(settings)
        self.status_path = self.dir / "run-status.json"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> dict[str, Any]:
        """Start a quick run; ReportRunning (409) while one runs."""
        with self._lock:
            if self.running():
                raise ReportRunning("a report run is already in progress")
            self.dir.mkdir(parents=True, exist_ok=True)
            out = self.dir / time.strftime("%Y%m%d-%H%M%S")
            command = [sys.executable, "-m", "companion", "report", "--quick", "--out", str(out),
                       "--status-file", str(self.status_path)]  # fmt: skip
            env = {**os.environ, "COMPANION_DATA_DIR": str(self.settings.data_dir),
                   "COMPANION_MODELS_DIR": str(self.settings.resolved_models_dir)}  # fmt: skip
            self.status_path.write_text(json.dumps({"state": "starting", "fraction": 0.0,
                                                    "started": time.time()}))  # fmt: skip
            log = (self.dir / "run.log").open("wb")
            self._proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            log.close()
        return self.status()

    def status(self) -> dict[str, Any]:
        """idle, starting, running, done or failed, with the step, fraction and elapsed time."""
        try:
            body: dict[str, Any] = json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            body = {"state": "idle", "fraction": 0.0}
        if body.get("state") in ("starting", "running") and not self.running():
            code = self._proc.returncode if self._proc is not None else None
            body["state"] = "failed"  # the process is gone (or belonged to an earlier server)
            body["error"] = f"the run stopped (exit code {code})"
        if body.get("started"):
            body["elapsed_s"] = round(time.time() - float(body["started"]), 1)
        return body

    def stop(self) -> None:
        """End a run still going when the server shuts down."""
        if self.running() and self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
