"""bench models: the spec's "Model Performance Comparison" for every installed size, plus the
same model driven by llama-cpp-python directly (nothing of ours around it) in the same run."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from companion.bench import persona_chat_openers
from companion.bench.progress import advance, phase
from companion.chat import Companion
from companion.config import SIZES, Settings
from companion.llm.batched import open_engine
from companion.llm.llama_cpp import default_threads
from companion.llm.registry import Registry
from companion.storage import open_store

FALLBACK_PROMPTS = [
    "Tell me about your favourite book and why you like it.",
    "I had a long day at work. Can you help me relax?",
    "What is a good hobby to start this winter?",
]


def prompts(n: int) -> list[str]:
    found = persona_chat_openers(n)
    return found if len(found) >= n else (found + FALLBACK_PROMPTS * n)[:n]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def bench_ours(settings: Settings, size: str, path: Path, texts: list[str]) -> dict[str, float]:
    """Load through companion, chat through Companion.chat (SQLite, context, storage included).

    rss_mb is what loading and running the model added; process_rss_mb the whole process.
    """
    import llama_cpp  # noqa: F401  (the library's own footprint is not the model's)

    before = rss_mb()
    engine = open_engine(settings, path, size)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.db")
        companion = Companion(settings, store, engine)
        tokens, seconds = 0, 0.0
        try:
            for text in texts:
                started = time.perf_counter()
                result = asyncio.run(companion.chat("bench", text, None, temperature=0.0))
                seconds += time.perf_counter() - started
                tokens += result.usage.completion_tokens
                advance()
            loaded = rss_mb()  # before close(): what the loaded model and its use hold
        finally:
            engine.close()
            store.close()
    return {
        "load_s": engine.info.load_time_s,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "rss_mb": loaded - before,
        "process_rss_mb": loaded,
        "tokens": float(tokens),
    }


def bench_raw(settings: Settings, path: Path, texts: list[str]) -> dict[str, float]:
    """llama-cpp-python's own chat completion on the same messages and options."""
    import llama_cpp

    llm: Any = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=settings.context_length,
        n_threads=settings.n_threads or default_threads(),
        verbose=False,
    )
    tokens, seconds = 0, 0.0
    try:
        for text in texts:
            messages = [
                {"role": "system", "content": settings.system_prompt},
                {"role": "user", "content": text},
            ]
            started = time.perf_counter()
            out = llm.create_chat_completion(
                messages,
                max_tokens=settings.max_tokens,
                temperature=0.0,
                top_p=settings.top_p,
                top_k=settings.top_k,
                repeat_penalty=settings.repeat_penalty,
            )
            seconds += time.perf_counter() - started
            tokens += out["usage"]["completion_tokens"]
            advance()
    finally:
        llm.close()
    return {"tokens_per_s": tokens / seconds if seconds else 0.0, "tokens": float(tokens)}


def run(settings: Settings, scale: int | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Figures for every installed size, and raw llama-cpp-python on the smallest one.

    `scale` = prompts per model (default 5).
    """
    registry = Registry(settings.resolved_models_dir)
    texts = prompts(scale or 5)
    figures: dict[str, float] = {}
    absent: list[str] = []
    first: Path | None = None
    for size in SIZES:
        path = registry.path_of(size)
        if path is None:
            absent.append(size)
            continue
        first = first or path
        phase(f"model {size}: {len(texts)} prompts", len(texts))
        ours = bench_ours(settings, size, path, texts)
        figures[f"{size}_load_s"] = round(ours["load_s"], 3)
        figures[f"{size}_tokens_per_s"] = round(ours["tokens_per_s"], 2)
        figures[f"{size}_rss_mb"] = round(ours["rss_mb"], 1)
        figures[f"{size}_process_rss_mb"] = round(ours["process_rss_mb"], 1)
    if first is not None:
        phase(f"raw llama-cpp-python: {len(texts)} prompts", len(texts))
        raw = bench_raw(settings, first, texts)
        figures["raw_tokens_per_s"] = round(raw["tokens_per_s"], 2)
        smallest = next(s for s in SIZES if f"{s}_tokens_per_s" in figures)
        ours_tps = figures[f"{smallest}_tokens_per_s"]
        figures["ours_vs_raw_ratio"] = (
            round(ours_tps / raw["tokens_per_s"], 3) if raw["tokens_per_s"] else 0.0
        )
    notes = {
        "absent_sizes": absent,
        "prompts": len(texts),
        "max_tokens": settings.max_tokens,
        "context_length": settings.context_length,
        "workload": "first user lines of Synthetic-Persona-Chat, fresh session each, temperature 0",
    }
    return figures, notes
