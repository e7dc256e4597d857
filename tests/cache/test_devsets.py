"""The dev sets are built the same way every time, and the two halves never share a sentence."""

from __future__ import annotations

import random

import numpy as np
import pytest

from companion.bench import devsets
from companion.bench.cache_quality import Scored, hit_rate_at, set_figures
from companion.cache.nearmiss import flip_opposite, near_miss, reworded, swap_item
from companion.cache.verify import rule_check
from companion.cache.words import OPPOSITES


def test_a_near_miss_changes_one_detail_and_is_reproducible() -> None:
    line = "I take my dog for a walk every morning."
    first = near_miss(line, random.Random(3))
    assert first == near_miss(line, random.Random(3))
    assert first is not None and first != line
    changed = [a for a, b in zip(line.split(), first.split(), strict=False) if a != b]
    assert len(changed) <= 2  # one word ("don't like" adds one)
    assert swap_item("Can dogs eat grapes?", random.Random(0)) not in (None, "Can dogs eat grapes?")
    assert reworded("What's your name?") == "what is your name?"
    assert near_miss("Hello there.", random.Random(0)) is None


def test_halves_are_stable_and_disjoint() -> None:
    chat = devsets.load("chat")
    if not chat.pairs:
        pytest.skip("../shared/data not found")
    again = devsets.load("chat")
    assert chat.pairs == again.pairs and chat.labels == again.labels
    train, dev = chat.half("train"), chat.half("dev")
    assert len(train.pairs) + len(dev.pairs) == len(chat.pairs)
    assert not {a for a, _ in train.pairs} & {a for a, _ in dev.pairs}
    assert 0.3 < sum(dev.labels) / len(dev.labels) < 0.7


def test_hit_rate_at_a_false_hit_budget() -> None:
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    scores = np.array([0.99, 0.98, 0.9, 0.89, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    assert hit_rate_at(scores, labels, 0.0) == (0.75, 0.0)
    assert hit_rate_at(scores, labels, 1 / 6) == (1.0, round(1 / 6, 4))
    tied = np.array([0.9, 0.9, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert hit_rate_at(tied, labels, 0.0) == (0.5, 0.0)  # a tie is never split


def test_every_opposite_a_near_miss_uses_is_refused_by_the_verifier() -> None:
    """One word list (cache/words.py): what the dev data changes, the verifier checks."""
    for word in OPPOSITES:
        line = f"Do you think it is {word} here?"
        changed = flip_opposite(line, random.Random(0))
        assert changed is not None and changed != line
        assert not rule_check(changed, line).ok, (line, changed)


def test_a_ratio_over_too_few_pairs_is_null_with_its_reason() -> None:
    """Cosine alone serving no same-meaning pair at the shipped false-hit rate: the ratio is
    JSON null with the reason (it once read 303.955, a division by almost nothing)."""
    labels = np.array([1] * 50 + [0] * 50)
    cosine = np.concatenate([np.linspace(0.90, 0.97, 50), np.linspace(0.98, 0.99, 50)])
    rules = np.concatenate([np.ones(50, bool), np.zeros(50, bool)])
    logits = np.where(rules, 5.0, -5.0)  # the classifier stops every miss
    figures, notes = set_figures(Scored("toy", labels, cosine, rules, logits), 0.95)
    assert figures["semantic_hit_rate_toy"] > 0 and figures["semantic_false_hit_rate_toy"] == 0
    assert figures["cosine_hit_rate_at_same_false_toy"] == 0.0
    assert figures["semantic_vs_cosine_toy"] is None
    assert "cosine alone serves 0 of 50" in notes["null_figures"]["semantic_vs_cosine_toy"]
    cosine = np.concatenate([np.linspace(0.90, 0.99, 50), np.linspace(0.10, 0.20, 50)])
    ones = np.ones(100, bool)
    figures, notes = set_figures(Scored("toy", labels, cosine, ones, np.full(100, 5.0)), 0.95)
    assert figures["semantic_vs_cosine_toy"] == round(
        figures["semantic_hit_rate_toy"] / figures["cosine_hit_rate_at_same_false_toy"], 3
    )
    assert notes["null_figures"] == {}


def test_an_opposite_is_seen_in_a_repeated_word_and_inside_a_compound() -> None:
    """Near misses the chat dev set holds since the word lists are one (0.76% -> 1.71% false
    hits until the verifier counted words and read compounds' parts)."""
    line = "It works even offline, even for big files."
    assert not rule_check(line.replace("works even", "works odd"), line).ok
    assert not rule_check(
        "Call datasets.enable_progress_bar()", "Call datasets.disable_progress_bar()"
    ).ok
    assert not rule_check("Find low-quality datasets", "Find high-quality datasets").ok
    assert rule_check("How do I bake sourdough bread?", "how can i bake sourdough bread").ok


def test_the_classifier_trains_on_the_train_halves_only() -> None:
    rows = devsets.training_pairs(extra_chat=50)
    if not rows:
        pytest.skip("../shared/data not found")
    assert all(devsets.split_of(r["a"]) == "train" for r in rows)
    assert {r["set"] for r in rows} == {"mrpc", "stsb", "chat", "chat_extra"}
    assert all(0.0 <= r["target"] <= 1.0 for r in rows)
    dev = {a for name in devsets.SETS for a, _ in devsets.load(name).half("dev").pairs}
    assert not dev & {r["a"] for r in rows}
