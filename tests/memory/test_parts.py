"""Questions about several things at once (parts.py), the merge of their rankings, and recall
of questions that gather several mentions (pseudo-relevance feedback, recall.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from companion.memory import MemoryService
from companion.memory.base import Episode, Recalled
from companion.memory.parts import question_parts
from companion.memory.recall import GATHERS, Weights, feedback_vector, merge_parts


@pytest.mark.parametrize(
    ("question", "parts"),
    [
        ("Which group did I join first, 'Page Turners' or 'Marketing Professionals'?",
         ["Page Turners", "Marketing Professionals"]),
        ('Did I start "The Crown" before "Game of Thrones"?', ["The Crown", "Game of Thrones"]),
        ("Which device did I set up first, the smart thermostat or the mesh network system?",
         ["smart thermostat", "mesh network system"]),
        ("Who did I meet first, Mark and Sarah or Tom?", ["Mark and Sarah", "Tom"]),
        ("How many days passed between my visit to MoMA and the Ancient Civilizations exhibit?",
         ["visit to MoMA", "Ancient Civilizations exhibit"]),
    ],
)
def test_a_question_about_several_things_is_split(question: str, parts: list[str]) -> None:
    assert question_parts(question) == parts


@pytest.mark.parametrize(
    "question",
    [
        "What is my dog's name?",  # one thing
        "Do you like cats or dogs?",  # alternatives without the comma of a choice
        "How did Melanie feel after the accident?",  # a clause is not split
        "What did I buy for my sister's birthday and my mom's?",  # nor a list
        "How many days passed between 'then' and 'now'?",  # quotes of frame words only
        # more than one sentence: a story or a follow-up, not split
        "I mentioned 'Dune' last week. Which did I read first, 'Dune' or 'Emma'?",
    ],
)
def test_a_question_about_one_thing_is_not_split(question: str) -> None:
    assert question_parts(question) == []


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


def _hit(n: int, score: float, confident: bool = True) -> Recalled:
    now = datetime.now(UTC)
    turn = Episode(n, "u", "s", n, "user", None, f"turn {n}", 0.5, 0, now, None)
    return Recalled(turn, score, {"confident": confident})


def test_merge_brings_every_parts_best_match_to_the_top() -> None:
    whole = [_hit(1, 0.9), _hit(2, 0.8), _hit(3, 0.7), _hit(4, 0.6)]
    part_a = [_hit(1, 0.5), _hit(5, 0.2), _hit(3, 0.45)]
    part_b = [_hit(6, 0.4), _hit(2, 0.1)]
    merged = merge_parts(whole, [part_a, part_b], ["A", "B"], 4, 1.0)
    assert [r.memory.id for r in merged] == [1, 6, 3, 2]  # 6: part B's best, scored 1.0
    assert merged[2].reasons == {"confident": True, "part": "A"}  # 3: lifted by part A
    assert merged[1].reasons == {"confident": False, "part": "B"}  # a part never says "known"
    assert merged[0].reasons == {"confident": True}  # the whole question's own
    assert merged[3].reasons == {"confident": True}  # part B found 2 lower: not lifted
    # a part weighed lower does not pass the whole question's best
    assert [r.memory.id for r in merge_parts(whole, [part_b], ["B"], 2, 0.95)] == [1, 6]
    assert merge_parts(whole, [], [], 3, 1.0) == [
        Recalled(r.memory, r.score / 0.9, r.reasons) for r in whole[:3]]


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


def test_parts_find_both_named_things(memory: MemoryService) -> None:
    """With parts on, a choice between two named things returns the turns of both."""
    start = datetime.now(UTC) - 20 * DAY
    said = ["I just joined a book club called Page Turners, we meet on Fridays.",
            *FILLER[:3],
            "I've been active in a LinkedIn group called Marketing Professionals since May.",
            *FILLER[3:]]
    for n, text in enumerate(said):
        memory.observe("u", text, n + 1, session_id=f"s{n}", now=start + n * DAY)
    memory.weights = replace(Weights(), parts=1.0)
    try:
        found = memory.recall(
            "u", "Which group did I join first, 'Page Turners' or 'Marketing Professionals'?", k=2)
    finally:
        memory.weights = Weights()
    assert sorted(m for r in found for m in r.memory.source_ids) == [1, 5]
