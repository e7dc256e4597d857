"""The machine's decode limit: N streams decoding together for a while, nothing else running.

`decode_rate` keeps N greedy streams busy (each restarts when its reply ends) and counts the
tokens the engine decodes per second after a short warm-up. bench load runs it for 20 s at the
server's parallelism before the load (load_decode_limit_ratio); `engine_parallel = auto` runs
it briefly at several N at start-up and takes the knee of tokens/s against N.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import time
from pathlib import Path

from companion.config import Settings
from companion.domain import GenerationOptions
from companion.llm.base import GenerationRequest

log = logging.getLogger("companion.llm.probe")

PROMPTS = (
    "Tell me about your favourite place to walk and why you like it.",
    "What is a good way to spend a rainy afternoon at home?",
    "Describe a meal you would cook for an old friend.",
    "What did you learn this week that surprised you?",
)
CANDIDATES = (1, 2, 4, 8, 16, 32)
AUTO_MAX = CANDIDATES[-1]
KNEE = 0.9  # the fewest sequences that reach this share of the best rate


async def decode_rate(engine: object, n: int, seconds: float, warm_s: float = 1.0) -> float:
    """Tokens/s the engine decodes with `n` streams running together (prompts from PROMPTS,
    greedy; the engine's stream rate floor is off meanwhile)."""
    stop = asyncio.Event()
    render, tokenize = engine.render_chat, engine.tokenize  # type: ignore[attr-defined]
    system = "You are a friendly companion. Answer at length."
    prompts = [
        tokenize(render([{"role": "system", "content": system}, {"role": "user", "content": p}]))
        for p in PROMPTS
    ]
    opts = GenerationOptions(max_tokens=256, temperature=0.0)

    decoding: set[int] = set()
    all_decoding = asyncio.Event()

    async def stream(i: int) -> None:
        turn = 0
        while not stop.is_set():
            request = GenerationRequest(prompts[(i + turn) % len(prompts)], opts, f"~probe-{i}")
            async for _ in engine.generate(request):  # type: ignore[attr-defined]
                decoding.add(i)
                if len(decoding) == n:
                    all_decoding.set()
                if stop.is_set():
                    break
            turn += 1

    # n streams together, whatever the engine's stream rate floor would allow (a slow step must
    # not hold probe streams back, nor make admission refuse them: the start-up probe of
    # engine_parallel = auto once failed with Overloaded, 17 streams queued behind 11)
    floor = getattr(engine, "floor_tps", 0.0)
    engine.floor_tps = 0.0  # type: ignore[attr-defined]
    tasks = [asyncio.create_task(stream(i)) for i in range(n)]
    try:
        await asyncio.sleep(warm_s)
        with contextlib.suppress(TimeoutError):  # every stream decodes before the count starts
            await asyncio.wait_for(all_decoding.wait(), 120)
        before, started = _decoded(engine), time.perf_counter()
        await asyncio.sleep(seconds)
        limit = started + 3 * seconds + 30  # a starved machine: wait for one step to count
        while _decoded(engine) == before and time.perf_counter() < limit:
            await asyncio.sleep(0.5)
        rate = (_decoded(engine) - before) / (time.perf_counter() - started)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        engine.floor_tps = floor  # type: ignore[attr-defined]
    return round(rate, 2)


def _decoded(engine: object) -> float:
    return float(engine.stats()["decoded_tokens"])  # type: ignore[attr-defined]


async def knee(engine: object, limit: int, seconds: float = 1.5) -> tuple[int, dict[int, float]]:
    """The fewest sequences (up to `limit`) reaching KNEE of the best rate, and every rate."""
    rates: dict[int, float] = {}
    for n in (c for c in CANDIDATES if c <= limit):
        rates[n] = await decode_rate(engine, n, seconds, warm_s=0.5)
    best = max(rates.values())
    chosen = min(n for n, r in rates.items() if r >= KNEE * best)
    log.info("decode probe: %s tok/s by sequences; engine_parallel = %d", rates, chosen)
    return chosen, rates


def auto_parallel(engine: object, cache: Path) -> int:
    """engine_parallel = auto: the knee measured now, or earlier on this machine and model."""
    info = engine.info  # type: ignore[attr-defined]
    tag = f"{info.path}|{info.file_size_mb}|{os.cpu_count()}|{AUTO_MAX}"
    try:
        known = json.loads(cache.read_text())
        if known.get("tag") == tag:
            return int(known["parallel"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # its own loop, whatever the caller's
        chosen, rates = pool.submit(asyncio.run, knee(engine, AUTO_MAX)).result()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"tag": tag, "parallel": chosen, "rates": rates}))
    except OSError as exc:
        log.warning("the decode probe's result could not be saved: %s", exc)
    return chosen


def describe(settings: Settings, model: Path) -> str:
    """The engine line of `companion models info`: sequences, KV cells (layout) and type, KV
    tiers."""
    from companion.llm.batched import context_plan, kv_split
    from companion.llm.kvtiers import default_host_mb

    parallel: str = str(settings.engine_parallel)
    if settings.engine_parallel == "auto":
        try:
            known = json.loads((settings.data_dir / "kv" / f"probe-{model.stem}.json").read_text())
            rates = ", ".join(f"{n}: {r}" for n, r in known["rates"].items())
            parallel = f"auto = {known['parallel']} (probe tok/s by sequences: {rates})"
        except (OSError, ValueError, KeyError):
            parallel = "auto (a decode probe at the first start picks it)"
    cells = settings.engine_kv_tokens or (
        "from the RAM budget at load"
        if settings.engine_parallel == "auto"
        else settings.context_length * int(settings.engine_parallel)
    )
    if kv_split(settings):
        plan = context_plan(settings)
        cells = f"{plan.kv_tokens} in {plan.n_seq_max} streams of {plan.stream_cells} (split)"
    host = settings.engine_host_kv_mb
    host_mb = f"{default_host_mb()} MB (from free RAM)" if host is None else f"{host} MB"
    floor = settings.engine_stream_floor_tps
    if floor:
        parallel += f" at most, fewer while a stream would get under {floor:g} tokens/s"
    return (
        f"parallel {parallel}; KV cells {cells}, {settings.kv_cache_type}; evicted sessions: "
        f"RAM {host_mb}, disk {settings.engine_disk_kv_mb} MB"
    )
