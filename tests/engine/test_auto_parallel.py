"""engine_parallel = auto: a short decode probe at start-up picks the sequences (real model)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from companion.llm.batched import BASE_STREAMS, open_engine
from companion.llm.probe import CANDIDATES, decode_rate
from companion.llm.registry import tiny_package_path
from tests.conftest import make_settings
from tests.engine.conftest import chat_prompt, collect, greedy, make_engine, most_active


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


async def test_the_probe_runs_every_stream_together_whatever_the_stream_floor() -> None:
    """A stream rate floor that no step meets holds requests back to BASE_STREAMS (and, behind
    them, admission may refuse more): the decode probe still runs all its streams at once, and
    the floor is back afterwards. Before, auto's start-up probe failed with Overloaded."""
    eng = make_engine(parallel=12, max_queue=16)
    try:
        eng.floor_tps = 1000.0
        await collect(eng, greedy(chat_prompt(eng, "Hello there."), max_tokens=4))  # a step
        assert eng.streams == BASE_STREAMS  # the floor holds back, as the probe would see it
        async with most_active(eng) as seen:
            rate = await decode_rate(eng, 12, seconds=1.0, warm_s=0.3)
        assert rate > 0 and seen[0] == 12
        assert eng.floor_tps == 1000.0
    finally:
        eng.close()
