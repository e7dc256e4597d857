"""LoCoMo retrieval recall: our memory against plain embedding search over the raw turns.

Each conversation's sessions are fed in order as one user's chats (every turn as a user turn,
its speaker as the subject, at the session's date). For each question, recall@k is the share
of its evidence turns (`D<session>:<turn>`) among the source turns of the top k memories; the
baseline ranks the raw turns (`speaker: text`, the same caption added) by cosine alone.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from companion.embed.base import Embedder
from companion.memory import MemoryService

KS = (5, 10)


@dataclass
class Turn:
    """One dialogue turn as fed."""

    dia_id: str
    speaker: str
    text: str
    when: datetime


@dataclass
class Tally:
    """Recall sums per k, overall and by category."""

    sums: dict[tuple[str, int], float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, category: str, k: int, value: float) -> None:
        """Record one question's recall@k."""
        for key in ("all", category):
            self.sums[(key, k)] += value

    def figures(self, prefix: str) -> dict[str, float]:
        """`<prefix>_recall_at_<k>` overall and `_cat<c>` by category."""
        out = {}
        for (key, k), total in sorted(self.sums.items()):
            name = f"{prefix}_recall_at_{k}" + ("" if key == "all" else f"_cat{key}")
            out[name] = round(total / self.counts[key], 4)
        return out


def _when(text: str) -> datetime:
    """'1:56 pm on 8 May, 2023' as a UTC datetime."""
    return datetime.strptime(text, "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def turns_of(conversation: dict[str, Any]) -> list[Turn]:
    """Every turn in session order, with the image caption (if any) appended."""
    out = []
    sessions = sorted((int(k.split("_")[1]), v) for k, v in conversation.items()
                      if k.startswith("session_") and isinstance(v, list))
    for number, session in sessions:
        when = _when(conversation[f"session_{number}_date_time"])
        for turn in session:
            text = turn["text"]
            if turn.get("blip_caption"):
                text += f" [shares {turn['blip_caption']}]"
            out.append(Turn(turn["dia_id"], turn["speaker"], text, when))
    return out


def recall_at(sources: list[set[str]], evidence: set[str], k: int) -> float:
    """Share of the evidence found among the sources of the first k results."""
    found: set[str] = set().union(*sources[:k]) if sources else set()
    return len(found & evidence) / len(evidence)


def _baseline(embedder: Embedder, turns: list[Turn]) -> tuple[list[str], np.ndarray]:
    """Raw-turn ids and their vectors."""
    texts = [f"{t.speaker}: {t.text}" for t in turns]
    vectors = np.vstack([embedder.embed(texts[i:i + 64]) for i in range(0, len(texts), 64)])
    return [t.dia_id for t in turns], vectors


def run_conversation(memory: MemoryService, sample: dict[str, Any], memory_tally: Tally,
                     base_tally: Tally) -> dict[str, float]:
    """Feed one conversation, ask its questions, add to both tallies; returns feed counts."""
    user = f"locomo-{sample['sample_id']}"
    turns = turns_of(sample["conversation"])
    dia_of: dict[int, str] = {}
    for number, turn in enumerate(turns, start=1):
        dia_of[number] = turn.dia_id
        memory.observe(user, turn.text, number, subject=turn.speaker, now=turn.when)
    asked_at = turns[-1].when + timedelta(days=1)
    ids, vectors = _baseline(memory.embedder, turns)
    sources_per_hit = []
    for qa in sample["qa"]:
        evidence = {e.strip() for e in qa.get("evidence", []) if e.strip()}
        if not evidence:
            continue
        category = str(qa["category"])
        vector = memory.embedder.embed_one(qa["question"])
        hits = memory.recall(user, qa["question"], vector, max(KS), now=asked_at)
        mem_sources = [{dia_of[i] for i in h.memory.source_ids if i in dia_of} for h in hits]
        sources_per_hit += [len(s) for s in mem_sources]
        order = np.argsort(-(vectors @ vector))[: max(KS)]
        base_sources = [{ids[i]} for i in order]
        for k in KS:
            memory_tally.add(category, k, recall_at(mem_sources, evidence, k))
            base_tally.add(category, k, recall_at(base_sources, evidence, k))
        for tally in (memory_tally, base_tally):
            tally.counts["all"] += 1
            tally.counts[category] += 1
    return {
        "turns": len(turns),
        "memories": len(memory.memories(user, limit=100000)),
        "sources_per_recalled_memory": float(np.mean(sources_per_hit)) if sources_per_hit else 0,
    }


def run(memory: MemoryService, path: Path, limit: int | None = None) -> dict[str, float]:
    """Both systems over the conversations in `path`; figures by k and category."""
    samples = json.loads(path.read_text(encoding="utf-8"))[:limit]
    ours, base = Tally(), Tally()
    fed = [run_conversation(memory, s, ours, base) for s in samples]
    figures = {**ours.figures("locomo"), **base.figures("locomo_baseline")}
    figures["locomo_questions"] = ours.counts["all"]
    figures["locomo_turns_fed"] = sum(f["turns"] for f in fed)
    figures["locomo_memories_stored"] = sum(f["memories"] for f in fed)
    figures["locomo_sources_per_recalled_memory"] = round(
        float(np.mean([f["sources_per_recalled_memory"] for f in fed])), 3)
    return figures
