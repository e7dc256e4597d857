"""LoCoMo retrieval recall: our memory against plain retrieval over the raw turns.

Each conversation's sessions are fed in order as one user's chats (every turn as a user turn,
its speaker as the subject, at the session's date, one session id per session). For each
question, recall@k is the share of its evidence turns (`D<session>:<turn>`) among the source
turns of the top k results; the baselines rank the raw turns (`speaker: text`, the same
caption added) by cosine (dense), BM25, and their reciprocal rank fusion.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from companion.bench.baselines import BASELINES, RawTurns
from companion.memory import MemoryService

KS = (5, 10)


@dataclass
class Turn:
    """One dialogue turn as fed."""

    dia_id: str
    speaker: str
    text: str
    when: datetime
    session: str = ""


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
        for i, turn in enumerate(session):
            text = turn["text"]
            if turn.get("blip_caption"):
                text += f" [shares {turn['blip_caption']}]"
            out.append(Turn(turn["dia_id"], turn["speaker"], text, when + timedelta(seconds=i),
                            f"session_{number}"))
    return out


def recall_at(sources: list[set[str]], evidence: set[str], k: int) -> float:
    """Share of the evidence found among the sources of the first k results."""
    found: set[str] = set().union(*sources[:k]) if sources else set()
    return len(found & evidence) / len(evidence)


def run_conversation(memory: MemoryService, sample: dict[str, Any],
                     tallies: dict[str, Tally]) -> dict[str, float]:
    """Feed one conversation, ask its questions, add to every system's tally."""
    user = f"locomo-{sample['sample_id']}"
    turns = turns_of(sample["conversation"])
    dia_of: dict[int, str] = {}
    for number, turn in enumerate(turns, start=1):
        dia_of[number] = turn.dia_id
        memory.observe(user, turn.text, number, subject=turn.speaker, now=turn.when,
                       session_id=turn.session)
    asked_at = turns[-1].when + timedelta(days=1)
    texts = [f"{t.speaker}: {t.text}" for t in turns]
    raw = RawTurns(texts, memory.embedder.embed(texts))
    sources_per_hit = []
    for qa in sample["qa"]:
        evidence = {e.strip() for e in qa.get("evidence", []) if e.strip()}
        if not evidence:
            continue
        category = str(qa["category"])
        vector = memory.embedder.embed_one(qa["question"])
        hits = memory.recall(user, qa["question"], vector, max(KS), now=asked_at)
        found = {"companion": [{dia_of[i] for i in h.memory.source_ids if i in dia_of}
                               for h in hits]}
        sources_per_hit += [len(s) for s in found["companion"]]
        for name, ranking in raw.rankings(qa["question"], vector, max(KS)).items():
            found[name] = [{turns[i].dia_id} for i in ranking]
        for name, sources in found.items():
            tally = tallies[name]
            for k in KS:
                tally.add(category, k, recall_at(sources, evidence, k))
            tally.counts["all"] += 1
            tally.counts[category] += 1
    raw.close()
    return {
        "turns": len(turns),
        "memories": len(memory.memories(user, limit=100000)),
        "sources_per_recalled_memory": float(np.mean(sources_per_hit)) if sources_per_hit else 0,
    }


def run(memory: MemoryService, path: Path, limit: int | None = None) -> dict[str, float]:
    """Both systems over the conversations in `path`; figures by k and category."""
    samples = json.loads(path.read_text(encoding="utf-8"))[:limit]
    tallies = {name: Tally() for name in ("companion", *BASELINES)}
    fed = [run_conversation(memory, s, tallies) for s in samples]
    figures = tallies["companion"].figures("locomo")
    for name in BASELINES:
        figures.update(tallies[name].figures(f"locomo_{name}"))
    for key in list(figures):
        if key.startswith("locomo_recall_at_"):
            figures[f"{key}_best_baseline"] = max(
                figures[key.replace("locomo_", f"locomo_{b}_", 1)] for b in BASELINES)
    figures["locomo_questions"] = tallies["companion"].counts["all"]
    figures["locomo_turns_fed"] = sum(f["turns"] for f in fed)
    figures["locomo_memories_stored"] = sum(f["memories"] for f in fed)
    figures["locomo_sources_per_recalled_memory"] = round(
        float(np.mean([f["sources_per_recalled_memory"] for f in fed])), 3)
    return figures
