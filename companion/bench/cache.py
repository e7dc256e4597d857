"""bench cache: the spec's cache table over a mixed chat workload, the semantic layer's speed
and quality on paraphrase data, and cached vs uncached replies over HTTP (real uvicorn).

The workload (docs/cache.md): requests in the spec's four classes, through Companion.chat
with the real model and a fresh SQLite file:
- identical: popular questions (GPTCache's "origin" lines, Zipf-distributed) in new sessions;
- similar: the paraphrase ("similar") of a popular question already asked;
- context: turns of Synthetic-Persona-Chat conversations, continuing their session;
- creative: Persona-Chat lines as they occur (chit-chat; a few, like "What do you do for a
  living?", recur verbatim).
"""

from __future__ import annotations

import asyncio
import csv
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from companion.bench import persona_chat_openers, shared_data
from companion.bench.cache_http import http_figures
from companion.bench.cache_quality import quality_figures, semantic_lookup_ms
from companion.bench.cache_shared import shared_cache_figures
from companion.bench.devsets import SETS, load_gptcache
from companion.bench.progress import phase
from companion.cache import Probe
from companion.config import Settings
from companion.errors import ConfigError
from companion.runtime import Runtime, open_runtime
from companion.stats import percentile

MIX = {"identical": 0.55, "similar": 0.15, "context": 0.15, "creative": 0.15}
POPULAR = 80  # distinct popular questions
USERS = 400  # visitors asking the popular questions
TURN_OPTIONS: dict[str, Any] = {"max_tokens": 32, "temperature": 0.0}
GOALS = {  # figure: (comparison, target)
    "exact_lookup_p50_ms": ("<=", 0.1),
    "store_p50_ms": ("<=", 1.0),
    "semantic_lookup_p50_ms": ("<=", 10.0),
    "cached_replies_per_min": (">=", 30_000),
    **{f"semantic_false_hit_rate_{s}": ("<=", 0.01) for s in SETS},
    **{f"semantic_vs_cosine_{s}": (">=", 1.3) for s in SETS},
}


@dataclass(frozen=True)
class Turn:
    """One request of the workload."""

    kind: str
    user: str
    message: str
    session: str | None = None  # a conversation id for context turns


def _conversations(limit: int) -> list[list[str]]:
    """User 1's lines of Persona-Chat conversations (each a session)."""
    path = shared_data("persona_chat/Synthetic-Persona-Chat_test.csv")
    if path is None:
        return []
    found: list[list[str]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            lines = [
                t.partition(": ")[2].strip()
                for t in row.get("Best Generated Conversation", "").splitlines()
                if t.startswith("User 1:")
            ]
            if len(lines) >= 5:
                found.append(lines[1:6])
            if len(found) >= limit:
                break
    return found


def workload(n: int, seed: int = 7) -> list[Turn]:
    """`n` requests in the MIX proportions, shuffled except that a session's turns keep order."""
    rng = random.Random(seed)
    pairs = load_gptcache()[:POPULAR] or [("What is a good hobby?", "What's a nice hobby?")]
    weights = [1 / (i + 1) for i in range(len(pairs))]
    counts = {k: int(n * share) for k, share in MIX.items()}
    counts["identical"] += n - sum(counts.values())
    turns = [
        Turn("identical", f"v{rng.randrange(USERS)}", rng.choices(pairs, weights)[0][0])
        for _ in range(counts["identical"])
    ]
    asked = sorted({t.message for t in turns})
    similar = {a: b for a, b in pairs}
    turns += [
        Turn("similar", f"v{rng.randrange(USERS)}", similar[rng.choice(asked)])
        for _ in range(counts["similar"])
    ]
    creative = persona_chat_openers(counts["creative"] + 50)[50:] or ["Tell me a story."]
    turns += [
        Turn("creative", f"v{rng.randrange(USERS)}", creative[i % len(creative)])
        for i in range(counts["creative"])
    ]
    rng.shuffle(turns)
    convs = _conversations(counts["context"] // 5 + 1)
    context = [
        Turn("context", f"c{i}", line, f"conv{i}") for i, conv in enumerate(convs) for line in conv
    ][: counts["context"]]
    total = len(turns) + len(context)
    slots = set(rng.sample(range(total), len(context)))  # context turns keep their order
    rest, ctx = iter(turns), iter(context)
    return [next(ctx) if i in slots else next(rest) for i in range(total)]


async def _run_workload(rt: Runtime, turns: list[Turn]) -> dict[str, list[bool]]:
    """Send every turn through Companion.chat; which were answered from the cache, by kind."""
    sessions: dict[str, str] = {}
    cached: dict[str, list[bool]] = {k: [] for k in MIX}
    for turn in turns:
        sid = sessions.get(turn.session) if turn.session else None
        result = await rt.companion.chat(turn.user, turn.message, sid, **TURN_OPTIONS)
        if turn.session:
            sessions[turn.session] = result.session_id
        cached[turn.kind].append(result.cached)
    return cached


def _exact_lookup_ms(rt: Runtime, turns: list[Turn]) -> list[float]:
    """Key + exact layer, in process, for the workload's messages (as a new visitor)."""
    cache, info = rt.companion.cache, rt.companion.engine.info
    assert cache is not None
    system = [{"role": "system", "content": rt.settings.system_prompt}]
    from companion.turn import options_from

    opts = options_from(rt.settings, **TURN_OPTIONS)
    times = []
    for turn in turns:
        started = time.perf_counter()
        probe = cache.probe(
            "visitor",
            system,
            turn.message,
            options=opts,
            model_name=info.name,
            model_path=info.path,
            history_used=0,
            personal=False,
        )
        cache.exact.lookup(probe)
        times.append((time.perf_counter() - started) * 1000)
    return times


def _semantic_probes(rt: Runtime, count: int) -> list[Probe]:
    """Probes of paraphrases of stored popular questions (the shared partition)."""
    cache, info = rt.companion.cache, rt.companion.engine.info
    assert cache is not None
    from companion.turn import options_from

    opts = options_from(rt.settings, **TURN_OPTIONS)
    system = [{"role": "system", "content": rt.settings.system_prompt}]
    return [
        cache.probe(
            "visitor",
            system,
            b,
            options=opts,
            model_name=info.name,
            model_path=info.path,
            history_used=0,
            personal=False,
        )
        for _, b in load_gptcache()[:count]
    ]


def _goals(figures: dict[str, float | None], null: dict[str, str]) -> dict[str, str]:
    """Each goal with its target, the measured value and whether it was met."""
    out = {}
    for name, (op, target) in GOALS.items():
        if name in figures:
            value = figures[name]
            if value is None:
                out[name] = f"not shown: {null.get(name, 'no value')}"
                continue
            met = value <= target if op == "<=" else value >= target
            out[name] = f"{'met' if met else 'NOT met'}: {value} {op} {target}"
    return out


def run(settings: Settings, scale: int | None = None, database_url: str | None = None,
        redis_url: str | None = None) -> tuple[dict[str, float | None], dict[str, Any]]:
    """All figures; `scale` = workload requests (default 1000). With `database_url` (and
    `redis_url`), cold exact lookups on PostgreSQL (and Redis) beside SQLite: pg_* figures."""
    if redis_url and not database_url:
        raise ConfigError("--redis-url needs --database-url (the table behind Redis)",
                          field="redis_url")
    n = scale or 1000
    turns = workload(n)
    with tempfile.TemporaryDirectory() as tmp:
        local = settings.model_copy(update={"data_dir": Path(tmp), "database_url": None})
        phase(f"cache: {n} chat requests")
        rt = open_runtime(local)
        try:
            started = time.perf_counter()
            cached = asyncio.run(_run_workload(rt, turns))
            workload_s = time.perf_counter() - started
            stats = rt.companion.get_performance_stats()["cache"]
            phase("cache: lookup timings")
            exact_ms = _exact_lookup_ms(rt, turns)
            assert rt.companion.cache is not None and rt.companion.embedder is not None
            sem_ms = semantic_lookup_ms(
                rt.companion.embedder, rt.companion.cache, _semantic_probes(rt, 200)
            )
            figures: dict[str, float | None] = {
                "hit_rate": stats["hit_rate"],
                "lookup_p50_ms": stats["lookup_p50_ms"],
                "lookup_p95_ms": stats["lookup_p95_ms"],
                "store_p50_ms": stats["store_p50_ms"],
                "size_mb": stats["size_mb"],
                "exact_lookup_p50_ms": round(percentile(exact_ms, 50), 4),
                "exact_lookup_p95_ms": round(percentile(exact_ms, 95), 4),
                "semantic_lookup_p50_ms": round(percentile(sem_ms, 50), 3),
                "semantic_lookup_p95_ms": round(percentile(sem_ms, 95), 3),
            }
            phase("cache: paraphrase quality per dev set (MRPC, STS-B, chat)")
            quality, quality_notes = quality_figures(rt.companion.embedder)
            figures |= quality
        finally:
            rt.close()
    phase("cache: HTTP server figures")
    figures |= http_figures(settings)
    if database_url:
        figures |= shared_cache_figures(settings, [t.message for t in turns], database_url,
                                        redis_url)
    notes = {
        "requests": n,
        "workload_s": round(workload_s, 1),
        "hit_rate_by_class": {
            k: round(sum(v) / len(v), 3) if v else 0.0 for k, v in cached.items()
        },
        "requests_by_class": {k: len(v) for k, v in cached.items()},
        "hits_by_layer": {"exact": stats["exact_hits"], "semantic": stats["semantic_hits"]},
        "entries": stats["entries"],
        "shared_entries": stats["shared_entries"],
        "turn_options": TURN_OPTIONS,
        **quality_notes,
        "goals": _goals(figures, quality_notes.get("null_figures", {})),
    }
    return figures, notes
