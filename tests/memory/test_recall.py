"""Hybrid recall: reasons per memory, ranking, and no memory ever crossing users."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.memory import MemoryService

ALICE = [
    "My name is Alice.",
    "I live in Paris.",
    "My dog is called Rex.",
    "I work as a nurse at the children's hospital.",
    "I love playing the violin.",
    "I'm going to visit my grandmother in Porto next week.",
]


def test_recall_finds_the_fact_with_reasons(memory: MemoryService) -> None:
    for turn in ALICE:
        memory.observe("alice", turn, None)
    top = memory.recall("alice", "What is my dog's name?", k=3)
    assert top[0].memory.text == "Has a dog named Rex"
    reasons = top[0].reasons
    assert reasons["found_by"] == ["text", "vector"]
    assert "dog" in reasons["matched_terms"]
    assert set(reasons) >= {"similarity", "text_match", "importance", "recency"}
    assert top == sorted(top, key=lambda r: -r.score)
    assert len(memory.recall("alice", "Tell me about music and my instrument", k=2)) <= 2
    assert memory.recall("alice", "violin")[0].memory.text == "Likes playing the violin"


def test_no_cross_user_recall(memory: MemoryService) -> None:
    for turn in ALICE:
        memory.observe("alice", turn, None)
    memory.observe("bob", "I live in Berlin.", None)
    for query in ("Where do I live?", "dog Rex", "Paris", "nurse violin grandmother Porto"):
        found = memory.recall("bob", query, k=10)
        assert all(r.memory.user_id == "bob" for r in found), query
        assert all("Paris" not in r.memory.text for r in found)
    assert memory.recall("carol", "Where do I live?") == []
    assert [m.user_id for m in memory.memories("bob")] == ["bob"]


def test_irrelevant_memories_stay_out(memory: MemoryService) -> None:
    memory.observe("alice", "My dog is called Rex.", None)
    assert memory.recall("alice", "Explain quantum computing in simple terms") == []


def test_importance_and_recency_break_ties(memory: MemoryService) -> None:
    old = datetime.now(UTC) - timedelta(days=200)
    # with their message ids, as in a chat: each fact and its turn come back as one result
    memory.observe("u", "I went hiking near the lake with my brother", 1, now=old)
    memory.observe("u", "I went hiking near the lake with my sister", 2)
    top = memory.recall("u", "hiking near the lake")
    assert top[0].memory.text.endswith("sister")
    assert top[0].reasons["recency"] > top[1].reasons["recency"]


def test_marking_used_reinforces(memory: MemoryService) -> None:
    memory.observe("u", "I live in Paris.", 1)
    (hit,) = memory.recall("u", "Where do I live?")  # the fact, with its turn as the snippet
    assert not hit.is_episode and hit.snippet == "I live in Paris."
    memory.mark_recalled("u", [hit])
    (again,) = memory.recall("u", "Where do I live?")
    assert again.memory.use_count == 1 and again.memory.last_used_at is not None
    assert again.memory.importance > hit.memory.importance
