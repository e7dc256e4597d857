"""One real report run (the tiny model, every step, the test budget) shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server.conftest import server  # noqa: F401  (a real `companion serve`)

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"  # screenshots


@dataclass
class Run:
    out: Path
    proc: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """`companion report --quick` with the test budget (the same steps, less of each)."""
    base = tmp_path_factory.mktemp("report")
    env = {**os.environ, "COMPANION_DATA_DIR": str(base / "data"), "COMPANION_MODEL_SIZE": "tiny"}
    command = [str(Path(sys.executable).with_name("companion")), "report", "--quick",
               "--budget", "test", "--out", str(base / "out")]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    return Run(base / "out", proc)
