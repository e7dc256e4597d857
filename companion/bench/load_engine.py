"""bench load's engine figures: the machine's decode limit measured first, and where the
prompt time went (computed, new, restored, reused) from the server's engine counters.

load_decode_limit_ratio = the load's tokens_per_s / the probe's tokens/s, both in one run at
the server's parallelism: how much of what this machine can decode the real workload gets.
"""

from __future__ import annotations

import asyncio
from typing import Any

from companion.config import Settings
from companion.llm.hardware import detect_hardware
from companion.llm.probe import decode_rate
from companion.llm.registry import Registry
from companion.runtime import main_plan, start_engine

PROBE_S = 20.0


def decode_probe(settings: Settings, seconds: float = PROBE_S) -> dict[str, float]:
    """Decode tokens/s of the server's model at its parallelism, in process, before the load."""
    quiet = settings.model_copy(update={"engine_host_kv_mb": 0, "engine_disk_kv_mb": 0})
    plan = main_plan(quiet, Registry(quiet.resolved_models_dir), detect_hardware())
    engine = start_engine(quiet, plan)
    try:
        rate = asyncio.run(decode_rate(engine, engine.parallel, seconds, warm_s=2.0))
    finally:
        engine.close()
    return {"probe_tokens_per_s": rate, "probe_sequences": float(engine.parallel),
            "probe_s": seconds}  # fmt: skip


def engine_figures(
    before: dict[str, Any], after: dict[str, Any], tokens_per_s: float, probe: dict[str, float]
) -> dict[str, float]:
    """The prompt work of the load (differences of the engine counters) and the ratio."""
    b, a = before.get("engine", {}), after.get("engine", {})

    def delta(name: str) -> float:
        return round(float(a.get(name, 0.0)) - float(b.get(name, 0.0)), 1)

    computed, new = delta("prompt_tokens"), delta("new_prompt_tokens")
    limit = probe.get("probe_tokens_per_s", 0.0)
    restores, saves = delta("kv_restores"), delta("kv_saves")
    return {
        "load_decode_limit_ratio": round(tokens_per_s / limit, 3) if limit else 0.0,
        "load_probe_tokens_per_s": limit,
        "load_prefill_tokens_computed": computed,
        "load_new_prompt_tokens": new,
        "load_prefill_ratio_vs_new": round(computed / new, 3) if new else 0.0,
        "load_kv_reused_tokens": delta("kv_reused_tokens"),
        "load_kv_restores": restores,
        "load_kv_restores_disk": delta("kv_restores_disk"),
        "load_kv_restores_shared": delta("kv_restores_shared"),
        "load_kv_restored_tokens": delta("kv_restored_tokens"),
        "load_kv_restore_failures": delta("kv_restore_failures"),
        "load_kv_restore_ms_avg": round(delta("kv_restore_ms") / restores, 2) if restores else 0.0,
        "load_kv_evictions": delta("kv_evictions"),
        "load_kv_sheds": delta("kv_sheds"),
        "load_kv_saves": saves,
        "load_kv_save_ms_avg": round(delta("kv_save_ms") / saves, 2) if saves else 0.0,
        "load_loop_lag_p99_ms": float(after.get("loop_lag_p99_ms", 0.0)),
    }


def engine_goals(found: dict[str, float]) -> dict[str, bool]:
    """Issue 13's goals that one run can check (TTFT halved needs the landed version beside)."""
    return {
        "load_decode_limit_ratio>=0.7": found["load_decode_limit_ratio"] >= 0.7,
        "load_prefill_tokens_computed<=1.3x_new": found["load_prefill_tokens_computed"]
        <= 1.3 * found["load_new_prompt_tokens"],
        "load_loop_lag_p99_ms<20": found["load_loop_lag_p99_ms"] < 20,
    }
