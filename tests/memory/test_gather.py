"""Recall of questions that gather several mentions: the cue, the pseudo-relevance feedback
vector, and the real service finding every mention (recall.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np

from companion.memory import MemoryService
from companion.memory.recall import GATHERS, Weights, feedback_vector


def test_gathering_questions_are_told_apart() -> None:
    for question in ("How many musical instruments do I own?", "What is the total I spent?",
                     "What is the order of the three trips I took?"):
        assert GATHERS.search(question), question
    for question in ("What is my dog's name?", "Where do I work?"):
        assert not GATHERS.search(question), question


def test_feedback_vector_moves_the_question_towards_its_best_matches() -> None:
    q = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    best = np.array([[0.0, 1.0, 0.0], [0.0, 0.8, 0.6]], dtype=np.float32)
    moved = feedback_vector(q, best, 0.5)
    assert np.isclose(np.linalg.norm(moved), 1.0)
    assert moved[0] > moved[1] > 0 and moved[2] > 0  # still mostly the question
    assert np.allclose(feedback_vector(q, best[:0], 0.5), q)  # no matches: the question


DAY = timedelta(days=1)
INSTRUMENTS = [
    "I've had my black Fender Stratocaster electric guitar for about five years now.",
    "The maintenance of my piano worries me a bit, a Korg B1 I bought three years ago.",
    "I'm also thinking about getting a new ukulele, my old one cracked last winter.",
]
FILLER = [  # some share the question's words ("how many", "currently", "own"), not its topic
    "I currently own two bikes and a scooter, which one should I service first?",
    "How many tomatoes can my own small garden produce in a summer?",
    "I need tips on planning a road trip along the coast of Portugal.",
    "My landlord raised the rent again, how should I negotiate with him?",
    "I'm currently looking for a good science fiction novel to read on the train.",
    "How do I keep basil alive on a windowsill in winter?",
]


def test_a_gathering_question_finds_every_mention(memory: MemoryService) -> None:
    """Each instrument in its own conversation among others that share the question's words:
    "how many" finds all three in the top 5 (ranked on words, the ukulele came 6th)."""
    start = datetime.now(UTC) - 30 * DAY
    said = [*INSTRUMENTS, *FILLER]
    order = [3, 0, 4, 5, 1, 6, 7, 2, 8]  # the instruments spread among the others
    for n, i in enumerate(order):
        memory.observe("u", said[i], n + 1, session_id=f"s{n}", now=start + n * DAY)
    found = memory.recall("u", "How many musical instruments do I currently own?", k=5)
    texts = [r.memory.text for r in found]
    sources = {m for r in found for m in r.memory.source_ids}
    assert {order.index(i) + 1 for i in range(3)} <= sources, texts
    # the reasons stay the question's own similarity (not the feedback query's)
    memory.weights = replace(memory.weights, gather=False)
    again = {(r.is_episode, r.memory.id): r.reasons["similarity"] for r in memory.recall(
        "u", "How many musical instruments do I currently own?", k=9)}
    memory.weights = Weights()
    assert all(r.reasons["similarity"] == again[(r.is_episode, r.memory.id)]
               for r in found if (r.is_episode, r.memory.id) in again)
