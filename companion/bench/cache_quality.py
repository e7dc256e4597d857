"""Semantic-cache quality per dev set: the shipped decision against cosine alone, in one run.

For each dev set S (companion.bench.devsets, its "dev" half: the pair classifier trained on the
"train" halves): `semantic_hit_rate_S` and `semantic_false_hit_rate_S` of the shipped decision
(cosine >= the prefilter, the detail rules, then the pair classifier's logit),
`cosine_hit_rate_at_same_false_S` (cosine alone, its threshold set so that its false hits do not
exceed the shipped decision's),
the curve over prefilters, each stage's hits at equal false-hit rate, and the lowest logit that
keeps false hits <= 1% on every set; and the same figures on question pairs nobody trained on
(cache/pairs.py QUESTION_PAIRS, and the GPTCache pairs of the chat set's dev half).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from companion.bench import devsets
from companion.cache.classifier import shared_classifier
from companion.cache.pairs import NEAR_MISSES, PARAPHRASES, QUESTION_PAIRS
from companion.cache.semantic import SAME_MEANING_LOGIT, SIMILARITY_THRESHOLD
from companion.cache.verify import rule_check
from companion.embed.base import Embedder

FALSE_BUDGET = 0.01  # "hit rate at false-hit rate <= 1%"
MIN_BASE_PAIRS = 10  # a ratio's denominator must count at least this many pairs
CURVE = [round(0.70 + 0.02 * i, 2) for i in range(15)]  # cosine prefilters 0.70 .. 0.98
BEFORE = 0.96  # the decision shipped before the classifier: cosine >= 0.96, then the rules


@dataclass
class Scored:
    """One set's pairs: labels (1 = same meaning), cosine, whether the detail rules
    (cache/verify.py) let it pass, and the pair classifier's logit."""

    name: str
    labels: np.ndarray
    cosine: np.ndarray
    rules: np.ndarray
    logits: np.ndarray

    def shipped(self, threshold: float, logit: float = SAME_MEANING_LOGIT) -> np.ndarray:
        """Which pairs the decision with this cosine prefilter (and logit) would serve."""
        return (self.cosine >= threshold) & self.rules & (self.logits >= logit)

    def before(self) -> np.ndarray:
        """Which pairs the decision shipped before (cosine >= 0.96, then the rules) served."""
        return (self.cosine >= BEFORE) & self.rules


def cosines(embedder: Embedder, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Cosine of every pair (unit vectors, batched)."""
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    first = np.concatenate(
        [embedder.embed([a for a, _ in pairs[i : i + 64]]) for i in range(0, len(pairs), 64)]
    )
    second = np.concatenate(
        [embedder.embed([b for _, b in pairs[i : i + 64]]) for i in range(0, len(pairs), 64)]
    )
    return np.sum(first * second, axis=1)


def logits_of(pairs: list[tuple[str, str]]) -> np.ndarray:
    """The shipped pair classifier's logit for every (cached, query) pair, in batches."""
    clf = shared_classifier()
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([clf.logits(pairs[i : i + 32]) for i in range(0, len(pairs), 32)])


def score(embedder: Embedder, name: str, pairs: list[tuple[str, str]], labels: list[int]) -> Scored:
    """Cosine, the rules' verdict and the classifier's logit for every pair (the query is the
    second message)."""
    rules = np.array([rule_check(b, a).ok for a, b in pairs], dtype=bool)
    return Scored(name, np.array(labels), cosines(embedder, pairs), rules, logits_of(pairs))


def hit_rate_at(score_: np.ndarray, labels: np.ndarray, max_false: float) -> tuple[float, float]:
    """Best (hit rate, false-hit rate) of `score_ >= t` over t, with false hits <= max_false."""
    pos, neg = int((labels == 1).sum()), int((labels == 0).sum())
    if not pos or not neg:
        return 0.0, 0.0
    allowed = int(np.floor(max_false * neg + 1e-9))
    best = (0.0, 0.0)
    order = np.argsort(-score_, kind="stable")
    s, y = score_[order], labels[order]
    tp, fp = np.cumsum(y == 1), np.cumsum(y == 0)
    last = np.append(s[1:] != s[:-1], True)  # cut only between different scores
    ok = last & (fp <= allowed) & (s > -np.inf)
    if ok.any():
        i = int(np.flatnonzero(ok)[-1])
        best = (tp[i] / pos, fp[i] / neg)
    return round(float(best[0]), 4), round(float(best[1]), 4)


def _rate(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if len(mask) else 0.0


def ratio_of(hit: float, base: float, positives: int) -> tuple[float | None, str | None]:
    """hit / base, or None with the reason when the base is too few pairs to divide by (a
    ratio over 0 or a handful of pairs says nothing: it read 303.955 once)."""
    pairs = round(base * positives)
    if pairs < MIN_BASE_PAIRS:
        return None, (
            f"undefined: cosine alone serves {pairs} of {positives} same-meaning pairs at this "
            f"false-hit rate (fewer than {MIN_BASE_PAIRS} to divide by)"
        )
    return round(hit / base, 3), None


def set_figures(s: Scored, threshold: float) -> tuple[dict[str, float | None], dict[str, Any]]:
    """One set's figures, each stage at equal false-hit rate and the curve over prefilters."""
    served = s.shipped(threshold)
    hit, negatives = _rate(served[s.labels == 1]), served[s.labels == 0]
    # the sweeps get the unrounded rate: 3 of 1,109 rounds to 0.0027, which allows only 2
    false = float(negatives.mean()) if len(negatives) else 0.0
    cos_hit, _ = hit_rate_at(s.cosine, s.labels, false)
    ratio, why = ratio_of(hit, cos_hit, int(s.labels.sum()))
    figures: dict[str, float | None] = {
        f"semantic_hit_rate_{s.name}": hit,
        f"semantic_false_hit_rate_{s.name}": round(false, 4),
        f"cosine_hit_rate_at_same_false_{s.name}": cos_hit,
        f"semantic_vs_cosine_{s.name}": ratio,
        f"cosine_hit_rate_at_1pct_false_{s.name}": hit_rate_at(s.cosine, s.labels, FALSE_BUDGET)[0],
    }
    above = s.cosine >= threshold
    ruled = np.where(s.rules, s.cosine, -np.inf)
    before = s.before()
    notes: dict[str, Any] = {
        "null_figures": {f"semantic_vs_cosine_{s.name}": why} if why else {},
        "pairs": len(s.labels),
        "same_meaning": int(s.labels.sum()),
        # hits at the shipped decision's false-hit rate, each pipeline's last threshold swept
        "stages_at_equal_false_hit_rate": {
            "cosine": cos_hit,
            "cosine_then_rules": hit_rate_at(ruled, s.labels, false)[0],
            "classifier_alone": hit_rate_at(s.logits, s.labels, false)[0],
            "prefilter_then_classifier": hit_rate_at(
                np.where(above, s.logits, -np.inf), s.labels, false
            )[0],
            "prefilter_then_rules_then_classifier": hit_rate_at(
                np.where(above & s.rules, s.logits, -np.inf), s.labels, false
            )[0],
        },
        "before_0.96_then_rules": _point(s, before, "before"),
        "curve": [
            {"prefilter": t}
            | _point(s, s.cosine >= t, "cosine")
            | _point(s, s.shipped(t), "semantic")
            for t in CURVE
        ],
    }
    return figures, notes


def _point(s: Scored, served: np.ndarray, prefix: str) -> dict[str, float]:
    """Hits and false hits of `served`, named with `prefix`."""
    return {
        f"{prefix}_hits": _rate(served[s.labels == 1]),
        f"{prefix}_false_hits": _rate(served[s.labels == 0]),
    }


def calibrate(sets: list[Scored], budget: float, threshold: float = SIMILARITY_THRESHOLD) -> float:
    """The lowest logit (0.1 steps) that, behind this prefilter, keeps false hits <= budget on
    every set."""
    for t in np.arange(-8.0, 8.0, 0.1):
        if all(_rate(s.shipped(threshold, t)[s.labels == 0]) <= budget for s in sets):
            return round(float(t), 1)
    return 8.0


def quality_figures(embedder: Embedder) -> tuple[dict[str, float | None], dict[str, Any]]:
    """Every dev set's figures on its "dev" half, the lowest logit within budget on all of them,
    and the held-out question pairs. A figure that cannot be computed is None, its reason in
    notes["null_figures"]."""
    figures: dict[str, float | None] = {}
    notes: dict[str, Any] = {
        "similarity_threshold": SIMILARITY_THRESHOLD,
        "same_meaning_logit": SAME_MEANING_LOGIT,
        "null_figures": {},
    }
    halves = []
    gptcache = {origin for origin, _ in devsets.load_gptcache()}
    for name in devsets.SETS:
        pairs = devsets.load(name)
        if not pairs.pairs:
            notes[name] = "shared data not found"
            continue
        dev = pairs.half("dev")
        scored = score(embedder, name, dev.pairs, dev.labels)
        set_fig, notes[name] = set_figures(scored, SIMILARITY_THRESHOLD)
        notes["null_figures"] |= notes[name].pop("null_figures")
        figures |= set_fig
        halves.append(scored)
        if name == "chat":  # its GPTCache questions against their near misses, on their own
            keep = np.array([g in gptcache for g in dev.groups])
            sub = Scored("chat_gptcache", scored.labels[keep], scored.cosine[keep],
                         scored.rules[keep], scored.logits[keep])  # fmt: skip
            notes["held_out_chat_gptcache"] = _held_out(sub)
    if halves:
        notes["lowest_logit_within_budget_on_every_dev_set"] = calibrate(halves, FALSE_BUDGET)
    questions = [(a, b) for a, b, _ in QUESTION_PAIRS]
    notes["held_out_questions"] = _held_out(
        score(embedder, "questions", questions, [y for *_, y in QUESTION_PAIRS])
    )
    return figures, notes | _hand_written(embedder)


def _held_out(s: Scored) -> dict[str, Any]:
    """The shipped decision on pairs it never trained on, and cosine alone at its false-hit
    rate and at 1%."""
    served = s.shipped(SIMILARITY_THRESHOLD)
    false = _rate(served[s.labels == 0])
    return {
        "pairs": len(s.labels),
        "same_meaning": int(s.labels.sum()),
        "semantic_hits": _rate(served[s.labels == 1]),
        "semantic_false_hits": false,
        "cosine_hits_at_same_false": hit_rate_at(s.cosine, s.labels, false)[0],
        "cosine_hits_at_1pct_false": hit_rate_at(s.cosine, s.labels, FALSE_BUDGET)[0],
        "before_0.96_then_rules": _point(s, s.before(), "before"),
    }


def _hand_written(embedder: Embedder) -> dict[str, Any]:
    """The hand-written chat near misses and paraphrases (cache/pairs.py)."""
    out = {}
    for name, pairs in (
        ("near_miss_false_hits", NEAR_MISSES),
        ("chat_paraphrase_hits", PARAPHRASES),
    ):
        served = score(embedder, name, pairs, [0] * len(pairs)).shipped(SIMILARITY_THRESHOLD)
        out[name] = f"{int(served.sum())}/{len(pairs)}"
    return out


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
