"""Semantic-cache quality on paraphrase data: hits and false hits of the shipped decision
(cosine >= threshold, then the verifier) beside the bi-encoder alone, in the same run."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from companion.bench import shared_data
from companion.cache.pairs import NEAR_MISSES, PARAPHRASES
from companion.cache.semantic import ALIGNMENT_THRESHOLD, SIMILARITY_THRESHOLD
from companion.cache.verify import Verifier
from companion.embed.base import Embedder, TokenEncoder

FALSE_BUDGET = 0.01  # "hit rate at false-hit rate <= 1%"


@dataclass
class Scored:
    """Pairs with their cosine and, for those above the threshold, the verifier's verdict."""

    cosine: np.ndarray
    verified: np.ndarray  # cosine >= threshold and the verifier agreed


def load_mrpc() -> tuple[list[tuple[str, str]], np.ndarray] | None:
    """MRPC test pairs and labels (1 = paraphrase), or None without the shared data."""
    path = shared_data("paraphrase/msr_paraphrase_test.txt")
    if path is None:
        return None
    pairs, labels = [], []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        cols = line.split("\t")
        if len(cols) >= 5 and cols[0] in ("0", "1"):
            pairs.append((cols[3], cols[4]))
            labels.append(int(cols[0]))
    return pairs, np.array(labels)


def load_gptcache() -> list[tuple[str, str]]:
    """GPTCache's mock pairs (all same meaning), or [] without the shared data."""
    path = shared_data("paraphrase/gptcache_mock_data.json")
    if path is None:
        return []
    return [(p["origin"], p["similar"]) for p in json.loads(path.read_text(encoding="utf-8"))]


def score(embedder: Embedder, pairs: list[tuple[str, str]], threshold: float) -> Scored:
    """Cosine of every pair; the verifier runs only where the cosine passes."""
    first = np.concatenate(
        [embedder.embed([a for a, _ in pairs[i : i + 64]]) for i in range(0, len(pairs), 64)]
    )
    second = np.concatenate(
        [embedder.embed([b for _, b in pairs[i : i + 64]]) for i in range(0, len(pairs), 64)]
    )
    cosine = np.sum(first * second, axis=1)
    encoder = embedder if isinstance(embedder, TokenEncoder) else None
    verifier = Verifier(encoder, ALIGNMENT_THRESHOLD)
    verified = np.array(
        [
            c >= threshold and verifier.check(b, a).ok
            for c, (a, b) in zip(cosine, pairs, strict=True)
        ]
    )
    return Scored(cosine, verified)


def baseline_threshold(cosine: np.ndarray, labels: np.ndarray) -> float:
    """The lowest cosine threshold that keeps false hits within FALSE_BUDGET."""
    negatives = np.sort(cosine[labels == 0])[::-1]
    allowed = int(np.floor(FALSE_BUDGET * len(negatives)))
    return float(negatives[allowed]) + 1e-6


def _rate(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if len(mask) else 0.0


def mrpc_figures(embedder: Embedder) -> tuple[dict[str, float], dict[str, Any]]:
    """Shipped decision vs the bi-encoder alone at its own <= 1%-false threshold."""
    loaded = load_mrpc()
    if loaded is None:
        return {}, {"mrpc": "shared data not found"}
    pairs, labels = loaded
    scored = score(embedder, pairs, SIMILARITY_THRESHOLD)
    base_t = baseline_threshold(scored.cosine, labels)
    ours_hit = _rate(scored.verified[labels == 1])
    base_hit = _rate(scored.cosine[labels == 1] >= base_t)
    figures = {
        "mrpc_hit_rate_at_1pct_false": ours_hit,
        "mrpc_false_hit_rate": _rate(scored.verified[labels == 0]),
        "mrpc_baseline_hit_rate_at_1pct_false": base_hit,
        "mrpc_baseline_false_hit_rate": _rate(scored.cosine[labels == 0] >= base_t),
        "mrpc_vs_baseline_ratio": round(ours_hit / base_hit, 3) if base_hit else 0.0,
    }
    notes = {
        "mrpc_pairs": len(pairs),
        "mrpc_baseline_threshold": round(base_t, 4),
        "similarity_threshold": SIMILARITY_THRESHOLD,
        "alignment_threshold": ALIGNMENT_THRESHOLD,
    }
    return figures, notes | _chat_pairs(embedder, base_t)


def _chat_pairs(embedder: Embedder, base_t: float) -> dict[str, Any]:
    """The hand-written chat near misses and paraphrases, ours and the baseline's."""
    near = score(embedder, NEAR_MISSES, SIMILARITY_THRESHOLD)
    para = score(embedder, PARAPHRASES, SIMILARITY_THRESHOLD)
    return {
        "near_miss_false_hits": f"{int(near.verified.sum())}/{len(NEAR_MISSES)}",
        "near_miss_false_hits_baseline": f"{int((near.cosine >= base_t).sum())}/{len(NEAR_MISSES)}",
        "chat_paraphrase_hits": f"{int(para.verified.sum())}/{len(PARAPHRASES)}",
        "chat_paraphrase_hits_baseline": f"{int((para.cosine >= base_t).sum())}/{len(PARAPHRASES)}",
    }


def gptcache_figures(embedder: Embedder) -> dict[str, float]:
    """Share of GPTCache's same-meaning pairs answered at the shipped threshold."""
    pairs = load_gptcache()
    if not pairs:
        return {}
    scored = score(embedder, pairs, SIMILARITY_THRESHOLD)
    return {"gptcache_mock_hit_rate": _rate(scored.verified)}


def semantic_lookup_ms(embedder: Embedder, cache: Any, probes: list[Any]) -> list[float]:
    """Lookup times with a fresh embedding each (the model, not the memo), in ms."""
    inner = getattr(embedder, "inner", embedder)
    times = []
    for probe in probes:
        started = time.perf_counter()
        vector = inner.embed_one(probe.message)
        cache.lookup(type(probe)(probe.key, probe.message, vector))
        times.append((time.perf_counter() - started) * 1000)
    return times
