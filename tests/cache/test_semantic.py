"""The semantic layer with the real embedding model: verified paraphrases hit, near misses never."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from companion.cache import ResponseCache
from companion.cache.pairs import NEAR_MISSES
from companion.cache.semantic import PartitionIndex
from companion.cache.verify import Verdict, details, rule_check
from tests.cache.test_exact import keep, probe


def test_a_paraphrase_hits_the_semantic_layer(cache: ResponseCache) -> None:
    keep(cache, "How do I bake sourdough bread?", "Start with a starter.")
    hit, asked = cache.lookup(probe("how can i bake sourdough bread"))
    assert hit is not None and hit.layer == "semantic" and 0.9 < hit.similarity < 1.0
    assert hit.entry.response == "Start with a starter."
    assert asked.vector is not None and asked.vector.shape == (384,)
    assert cache.stats()["semantic_hits"] == 1


def test_near_misses_never_hit(cache: ResponseCache) -> None:
    for first, _ in NEAR_MISSES:
        keep(cache, first, f"reply to {first}")
    for _, second in NEAR_MISSES:
        hit, _ = cache.lookup(probe(second))
        assert hit is None or hit.entry.message == second, (second, hit)


def test_semantic_search_stays_inside_the_partition(cache: ResponseCache) -> None:
    keep(cache, "How do I bake sourdough bread?", "alice's reply", user="alice")
    # alice's entry is shared (no history), so keep a personal one for bob and ask as carol
    cache.store(
        probe("How do I bake sourdough bread?", "bob", history_used=2),
        "bob's reply",
        model="m",
        prompt_tokens=1,
        completion_tokens=1,
        finish_reason="stop",
    )
    hit, _ = cache.lookup(probe("how can i bake sourdough bread", "carol", history_used=2))
    assert hit is None


def test_rules_catch_details() -> None:
    assert details("Give me 3 tips, not 5").numbers == frozenset({"3", "5"})
    assert details("I can't swim").negated
    assert "c++" in details("How do I learn C++?").entities
    assert not rule_check("Is Python faster than Java?", "Is Java faster than Python?").ok
    assert not rule_check("soft yolk please", "hard yolk please").ok
    assert rule_check("How can I fall asleep faster?", "How do I fall asleep more quickly?").ok


def test_person_rule_refuses_a_conflict_not_an_impersonal_phrasing() -> None:
    """Whose it is must agree when both sides say it; an impersonal phrasing of the same
    question is no conflict (13 of QUESTION_PAIRS' 25 duplicates were refused for it), nor is a
    contraction written out ("I'm" read as no person refused 155 chat dev paraphrases)."""
    same = [
        ("What are the best books to learn Python?", "Which books should I read to learn Python?"),
        ("How do I deal with stress?", "What are good ways to cope with stress?"),
        ("Is green tea good for your health?", "What are the health benefits of green tea?"),
        ("I'm a corporate lawyer.", "i am a corporate lawyer."),
        ("Yes, I'm fine.", "yes, i am fine."),
    ]
    for cached, asked in same:
        assert rule_check(asked, cached).ok, (cached, asked)
    conflicts = [
        ("What is my name?", "What is your name?"),
        ("Do you like me?", "Do I like you?"),
        ("How do I lose weight fast?", "How does she lose weight fast?"),
        ("Where is our hotel?", "Where is their hotel?"),
        ("How do I make a cup of tea?", "How do you make a cup of tea?"),
        (  # same persons in the same order once runs collapse: the swapped pronoun tells
            "I'm looking for someone to go hiking with me this weekend. Do you like to go hiking?",
            "I'm looking for someone to go hiking with you this weekend. Do you like to go hiking?",
        ),
    ]
    for cached, asked in conflicts:
        assert rule_check(asked, cached) == Verdict(False, "person differs"), (cached, asked)


def test_an_impersonal_duplicate_hits_and_a_swapped_person_does_not(cache: ResponseCache) -> None:
    keep(cache, "What are the best books to learn Python?", "Fluent Python, for one.")
    hit, _ = cache.lookup(probe("Which books should I read to learn Python?"))
    assert hit is not None and hit.layer == "semantic"
    assert hit.entry.response == "Fluent Python, for one."
    # a chat dev near miss at cosine 0.99 and logit 5.3: only the swapped pronoun keeps it out
    hiking = "I'm looking for someone to go hiking with me this weekend. Do you like to go hiking?"
    keep(cache, hiking, "Count me in!")
    hit, _ = cache.lookup(probe(hiking.replace("with me", "with you")))
    assert hit is None and cache.stats()["semantic_hits"] == 1


def test_partition_index_switches_to_hnsw_and_keeps_finding() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = PartitionIndex(384, ann_min=200)
    for i, v in enumerate(vectors):
        index.add(f"k{i}", f"m{i}", v)
    for _ in range(200):
        if index._ann is not None:
            break
        import time

        time.sleep(0.05)
    assert index._ann is not None
    found = index.search(vectors[123], 3, 0.9)
    assert found and found[0].key == "k123"
    index.remove("k123")
    assert all(n.key != "k123" for n in index.search(vectors[123], 3, 0.9))


def test_entity_order_reads_whole_words_and_does_not_depend_on_the_hash_seed() -> None:
    """The word "indiana" inside "indianapolis" is not where Indiana is named, and equal
    positions tie by the entity: the verdict never depends on the (hash-seeded) set order."""
    code = (
        "from companion.cache.verify import _order; "
        "print(_order(frozenset({'indiana', 'indianapolis'}), 'Indianapolis, Indiana'))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(n)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # fmt: skip
        for n in range(6)
    }
    assert outs == {"['indianapolis', 'indiana']\n"}
    swapped = rule_check("She flew from Paris to Rome.", "She flew from Rome to Paris.")
    assert swapped == Verdict(False, "named entities in another order")
