"""Reconciliation, Mem0's idea without its model call: each candidate fact is compared with the
user's similar memories and becomes ADD, UPDATE, DELETE or NONE.

- same slot (one value per slot: home, age, work, likes:<thing> ...) and same text: NONE
  (the fact was repeated: its importance goes up); other text: UPDATE (a move, a change of mind);
- no slot: a near-duplicate (cosine >= DUPLICATE) is NONE, anything else ADD;
- "forget that ...": DELETE every memory in the same slot, holding all its words, or sharing
  a word and close in meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from companion.embed.base import Vector
from companion.memory.base import Candidate, Event, Memory
from companion.memory.extract import content_words, extract

DUPLICATE = 0.9  # cosine at which a slot-less candidate restates a memory
FORGET = 0.6  # cosine at which "forget that X" takes a memory sharing a word with X


@dataclass(frozen=True)
class Decision:
    """What to do with one candidate: the event, the memory it touches, and why."""

    event: Event
    target: Memory | None
    reason: str


def _norm(text: str) -> str:
    """Text compared for sameness: lower case, single spaces, no end punctuation."""
    return " ".join(text.lower().split()).rstrip(".!")


def _similarity(vector: Vector | None, memory: Memory) -> float:
    """Cosine of a candidate and a memory (0 when either has no vector)."""
    if vector is None or memory.embedding is None:
        return 0.0
    return float(np.dot(vector, memory.embedding))


def _forget(cand: Candidate, vector: Vector | None, memories: list[Memory]) -> list[Decision]:
    """Every memory that `forget that <text>` points at."""
    slots = {c.slot for c in extract(cand.text) if c.slot}
    wanted = set(content_words(cand.text))
    decisions = []
    for memory in memories:
        shared = wanted & set(content_words(memory.text))
        sim = _similarity(vector, memory)
        if memory.slot in slots or (wanted and shared == wanted) or (shared and sim >= FORGET):
            why = "same slot" if memory.slot in slots else f"matches (cosine {sim:.2f})"
            decisions.append(Decision("DELETE", memory, f"asked to forget: {why}"))
    return decisions or [Decision("NONE", None, "asked to forget, nothing matched")]


def decide(cand: Candidate, vector: Vector | None, memories: list[Memory]) -> list[Decision]:
    """The decisions for one candidate against the user's memories (all of them, or similar)."""
    if cand.forget:
        return _forget(cand, vector, memories)
    same_subject = [m for m in memories if m.subject == cand.subject]
    if cand.slot is not None:
        for memory in same_subject:
            if memory.slot == cand.slot:
                if _norm(memory.text) == _norm(cand.text):
                    return [Decision("NONE", memory, f"repeated ({cand.slot})")]
                return [Decision("UPDATE", memory, f"new value for {cand.slot}")]
    best, best_sim = None, 0.0
    for memory in same_subject:
        sim = _similarity(vector, memory)
        if sim > best_sim:
            best, best_sim = memory, sim
    if best is not None and (best_sim >= DUPLICATE or _norm(best.text) == _norm(cand.text)):
        return [Decision("NONE", best, f"restates memory {best.id} (cosine {best_sim:.2f})")]
    return [Decision("ADD", None, f"new {cand.kind}")]
