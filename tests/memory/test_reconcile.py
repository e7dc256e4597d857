"""Reconciliation on a real SQLite store with the real embedder: ADD, UPDATE, DELETE, NONE."""

from __future__ import annotations

import pytest

from companion.errors import NotFound
from companion.memory import MemoryService


def texts(memory: MemoryService, user: str) -> list[str]:
    return sorted(m.text for m in memory.memories(user))


def test_a_move_updates_the_home_instead_of_adding_one(memory: MemoryService) -> None:
    (first,) = memory.observe("alice", "I live in Paris.", 1)
    (moved,) = memory.observe("alice", "I moved to Lyon!", 2)
    assert first.event == "ADD" and moved.event == "UPDATE"
    assert moved.memory_id == first.memory_id
    assert (moved.old_text, moved.new_text) == ("Lives in Paris", "Lives in Lyon")
    assert texts(memory, "alice") == ["Lives in Lyon"]
    history = memory.history("alice", first.memory_id)
    assert [(h["event"], h["old_text"], h["new_text"]) for h in history] == [
        ("ADD", None, "Lives in Paris"), ("UPDATE", "Lives in Paris", "Lives in Lyon")]
    top = memory.recall("alice", "Where do I live?")
    assert top[0].memory.text == "Lives in Lyon" and top[0].snippet == "I moved to Lyon!"
    # the turn that said Paris stays as history, marked superseded and ranked below
    (old,) = [r for r in top if r.is_episode and r.memory.text == "I live in Paris."]
    assert old.reasons["superseded"] and old.score < top[0].score


def test_repeating_a_fact_reinforces_it(memory: MemoryService) -> None:
    memory.observe("alice", "I love hiking in the Alps", 1)
    before = memory.memories("alice")[0]
    (again,) = memory.observe("alice", "I love hiking in the Alps.", 2)
    after = memory.memories("alice")[0]
    assert again.event == "NONE" and after.id == before.id
    assert after.importance > before.importance
    assert after.source_ids == (1, 2)
    assert len(memory.memories("alice")) == 1


def test_a_change_of_mind_updates_the_preference(memory: MemoryService) -> None:
    memory.observe("alice", "I like jazz", None)
    (change,) = memory.observe("alice", "I don't like jazz anymore", None)
    assert change.event == "UPDATE"
    assert texts(memory, "alice") == ["Dislikes jazz"]


def test_forget_deletes_and_logs(memory: MemoryService) -> None:
    memory.observe("alice", "My name is Alice. I love hiking in the Alps.", None)
    changes = memory.observe("alice", "Forget that I love hiking", None)
    assert [c.event for c in changes] == ["DELETE"]
    assert texts(memory, "alice") == ["Name is Alice"]
    assert memory.history("alice")[-1]["event"] == "DELETE"
    (nothing,) = memory.observe("alice", "Forget that I own a boat", None)
    assert nothing.event == "NONE"
    assert texts(memory, "alice") == ["Name is Alice"]


def test_every_candidate_is_accounted_for(memory: MemoryService) -> None:
    turn = "My name is Bo, I'm 30 years old and I work as a chef. My cat is called Mia."
    changes = memory.observe("bo", turn, 7)
    assert [c.event for c in changes] == ["ADD"] * 4
    assert memory.stats()["extracted"] == 4 == memory.stats()["ADD"]
    assert all(m.source_ids == (7,) for m in memory.memories("bo"))


def test_api_operations_stay_inside_the_user(memory: MemoryService) -> None:
    made = memory.add("alice", "Allergic to peanuts", importance=1.0)
    assert made.topics == ("health",)
    edited = memory.edit("alice", made.id, text="Allergic to peanuts and shellfish")
    assert edited.text.endswith("shellfish")
    with pytest.raises(NotFound):
        memory.edit("mallory", made.id, text="hacked")
    with pytest.raises(NotFound):
        memory.delete("mallory", made.id)
    memory.delete("alice", made.id)
    assert memory.memories("alice") == []
    assert [h["event"] for h in memory.history("alice")] == ["ADD", "UPDATE", "DELETE"]
