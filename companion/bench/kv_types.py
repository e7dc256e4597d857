"""bench engine's extra parts: KV cache types, and a long prefill joining running streams.

KV types: the same KV_N greedy requests run together on an engine per `kv_cache_type`; a reply
agrees when its text equals f16's, and the common-prefix share says how far it follows f16.
Prefill stall: the inter-token gap p95 of running streams while a ~1,500-token prompt is
prefilled in chunks between their decode steps, against the same streams just before it joins.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import replace

from companion.bench.http_load import Stream
from companion.config import Settings
from companion.domain import GenerationOptions
from companion.llm.base import GenerationDone, GenerationRequest
from companion.llm.batched import BatchedEngine, open_engine
from companion.stats import percentile

KV_N = 16
TYPES = ("f16", "q8_0", "q4_0")


async def _replies(
    engine: BatchedEngine, prompts: list[list[int]], opts: GenerationOptions, tag: str
) -> tuple[list[GenerationDone], float]:
    async def one(i: int, prompt: list[int]) -> GenerationDone:
        request = GenerationRequest(prompt, opts, session_key=f"kv-{tag}-{i}")
        async for event in engine.generate(request):
            if isinstance(event, GenerationDone):
                return event
        raise AssertionError("no GenerationDone")

    started = time.perf_counter()
    done = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return list(done), time.perf_counter() - started


def kv_type_figures(
    bench: Settings, model: os.PathLike[str], prompts: list[list[int]], opts: GenerationOptions
) -> dict[str, float]:
    """kv_<type>_tokens_per_s_16 for each type; kv_<type>_agreement and _prefix_share vs f16."""
    figures: dict[str, float] = {}
    reference: list[str] = []
    for kind in TYPES:
        settings = bench.model_copy(update={"kv_cache_type": kind, "engine_parallel": KV_N,
                                            "engine_disk_kv_mb": 0})  # fmt: skip
        engine = open_engine(settings, model, "tiny")  # type: ignore[arg-type]
        try:
            done, wall = asyncio.run(_replies(engine, prompts[:KV_N], opts, kind))
        finally:
            engine.close()
        texts = [d.text for d in done]
        figures[f"kv_{kind}_tokens_per_s_{KV_N}"] = round(
            sum(d.completion_tokens for d in done) / wall, 2
        )
        if kind == "f16":
            reference = texts
            continue
        same = sum(a == b for a, b in zip(texts, reference, strict=True))
        shares = [_prefix(a, b) / max(len(b), 1) for a, b in zip(texts, reference, strict=True)]
        figures[f"kv_{kind}_agreement"] = round(same / len(texts), 3)
        figures[f"kv_{kind}_prefix_share"] = round(sum(shares) / len(shares), 3)
    return figures


def _prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


STALL_ROUNDS = 3  # a long prompt joins this many times; the gaps of all rounds are pooled
STALL_BEFORE_S = 2.0  # the window of the streams' gaps just before it joins


async def prefill_stall(
    engine: BatchedEngine,
    rounds: list[tuple[list[list[int]], list[int]]],
    opts: GenerationOptions,
) -> dict[str, float]:
    """Inter-token gap p95 of running streams just before a long prompt joins, and while it is
    prefilled: for each (stream prompts, long prompt) round, the streams start, decode
    STALL_BEFORE_S seconds after their last first token (the window before), then the long
    prompt joins (the window during: until its first token). Both windows come from the same
    streams seconds apart, and the gaps of all rounds are pooled, so the ratio does not divide
    by a baseline taken under other conditions (a separate alone run read 48-93 ms here)."""
    from companion.bench.engine import engine_stream  # the sweep's timed stream

    before: list[float] = []
    during: list[float] = []
    ratios: list[float] = []
    ttfts: list[float] = []
    for r, (prompts, long_prompt) in enumerate(rounds):
        streams = [Stream(time.perf_counter()) for _ in prompts]
        running = [
            asyncio.create_task(engine_stream(engine, p, opts, f"stall-{r}-{i}", s))
            for i, (p, s) in enumerate(zip(prompts, streams, strict=True))
        ]
        while not all(s.arrivals for s in streams):
            await asyncio.sleep(0.01)
        decoding = max(s.arrivals[0] for s in streams)
        await asyncio.sleep(STALL_BEFORE_S)
        joined = time.perf_counter()
        long = await engine_stream(
            engine, long_prompt, replace(opts, max_tokens=1), f"stall-{r}-long"
        )
        await asyncio.gather(*running)
        a = _gaps(streams, decoding, joined)
        b = _gaps(streams, joined, joined + long.ttft_s + 0.2)
        before += a
        during += b
        ttfts.append(long.ttft_s)
        if a and b:
            ratios.append(percentile(b, 95) / percentile(a, 95))
    base = percentile(before, 95) if before else 0.0
    with_prefill = percentile(during, 95) if during else 0.0
    n = len(rounds[0][0])
    return {
        f"itl_p95_ms_{n}_alone": round(base, 1),
        f"itl_p95_ms_{n}_during_prefill": round(with_prefill, 1),
        "prefill_tokens": float(len(rounds[0][1])),
        "prefill_itl_ratio": round(with_prefill / base, 2) if base else 0.0,
        "prefill_itl_ratio_worst_round": round(max(ratios), 2) if ratios else 0.0,
        "prefill_stall_rounds": float(len(rounds)),
        "prefill_long_ttft_s": round(statistics.median(ttfts), 3),
    }


def _gaps(streams: list[Stream], start: float, end: float) -> list[float]:
    """The streams' inter-token gaps (ms) that end inside [start, end]."""
    return [g for s in streams for g in s.gaps_ms(start, end)]
