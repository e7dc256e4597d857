"""engine_parallel = auto: a short decode probe at start-up picks the sequences (real model)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from companion.llm.batched import open_engine
from companion.llm.probe import CANDIDATES
from companion.llm.registry import tiny_package_path
from tests.conftest import make_settings


def test_auto_parallel_probes_once_and_reports_its_choice(tmp_path: Path) -> None:
    path = tiny_package_path()
    assert path is not None
    settings = make_settings(tmp_path / "data", engine_parallel="auto", context_length=512)
    engine = open_engine(settings, path, "tiny")
    try:
        stats = engine.stats()
    finally:
        engine.close()
    assert engine.parallel in CANDIDATES and stats["parallel"] == engine.parallel
    assert stats["kv_cells"] >= 512  # from the RAM budget
    saved = json.loads((tmp_path / "data" / "kv" / f"probe-{path.stem}.json").read_text())
    assert saved["parallel"] == engine.parallel and len(saved["rates"]) == len(CANDIDATES)
    started = time.perf_counter()
    again = open_engine(settings, path, "tiny")  # the measured choice is reused
    again.close()
    assert again.parallel == engine.parallel and time.perf_counter() - started < 5
