"""The semantic cache's dev sets, read from ../shared/data and split in two halves.

- mrpc: MRPC test pairs (1 = paraphrase);
- stsb: STS-B test pairs scored >= 4 (same meaning) against <= 2 (different);
- chat: GPTCache's question/paraphrase pairs and Persona-Chat lines reworded (same meaning)
  against the same lines with one detail changed (companion.cache.nearmiss).

Every pair has a group (its first sentence, or the line it was made from); a stable hash of the
group puts it in the "train" or the "dev" half, so a sentence never sits in both. The pair
classifier trains on "train" only; bench cache reports on "dev".
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from companion.bench import shared_data
from companion.cache.nearmiss import near_miss, reworded

SETS = ("mrpc", "stsb", "chat")
CHAT_LINES = 1500  # Persona-Chat lines to build near misses from
SEED = 19


@dataclass
class PairSet:
    """Sentence pairs with labels (1 = same meaning) and each pair's split group."""

    name: str
    pairs: list[tuple[str, str]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def add(self, a: str, b: str, label: int, group: str) -> None:
        """Append one pair."""
        self.pairs.append((a, b))
        self.labels.append(label)
        self.groups.append(group)

    def half(self, which: str) -> PairSet:
        """The pairs whose group hashes into `which` ("train" or "dev")."""
        out = PairSet(self.name)
        for pair, label, group in zip(self.pairs, self.labels, self.groups, strict=True):
            if split_of(group) == which:
                out.add(*pair, label, group)
        return out


def split_of(group: str) -> str:
    """ "train" or "dev", from a stable hash of the group (the same on every machine)."""
    digest = hashlib.sha256(group.strip().lower().encode("utf-8")).digest()
    return "train" if digest[0] % 2 == 0 else "dev"


def load_mrpc() -> PairSet:
    """MRPC test pairs, grouped by their first sentence."""
    out = PairSet("mrpc")
    path = shared_data("paraphrase/msr_paraphrase_test.txt")
    if path is None:
        return out
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        cols = line.split("\t")
        if len(cols) >= 5 and cols[0] in ("0", "1"):
            out.add(cols[3], cols[4], int(cols[0]), cols[3])
    return out


def load_stsb() -> PairSet:
    """STS-B test pairs scored >= 4 (label 1) or <= 2 (label 0); the middle is left out."""
    out = PairSet("stsb")
    path = shared_data("paraphrase/sts-test.csv")
    if path is None:
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) < 7:
            continue
        score, a, b = float(cols[4]), cols[5], cols[6]
        if score >= 4 or score <= 2:
            out.add(a, b, int(score >= 4), a)
    return out


def load_gptcache() -> list[tuple[str, str]]:
    """GPTCache's mock pairs (all same meaning), or [] without the shared data."""
    path = shared_data("paraphrase/gptcache_mock_data.json")
    if path is None:
        return []
    return [(p["origin"], p["similar"]) for p in json.loads(path.read_text(encoding="utf-8"))]


def persona_lines(limit: int) -> list[str]:
    """Distinct Persona-Chat lines of 4-25 words (questions and statements), in file order."""
    path = shared_data("persona_chat/Synthetic-Persona-Chat_test.csv")
    if path is None:
        return []
    seen: dict[str, None] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for turn in row.get("Best Generated Conversation", "").splitlines():
                text = turn.partition(": ")[2].strip()
                if "[" not in text and 4 <= len(text.split()) <= 25:
                    seen.setdefault(text, None)
            if len(seen) >= limit:
                break
    return list(seen)[:limit]


def load_chat() -> PairSet:
    """Chat-shaped paraphrases against the same lines with one detail changed."""
    out = PairSet("chat")
    rng = random.Random(SEED)
    for origin, similar in load_gptcache():
        out.add(origin, similar, 1, origin)
        changed = near_miss(origin, rng)
        if changed is not None:
            out.add(origin, changed, 0, origin)
    for line in persona_lines(CHAT_LINES):
        same = reworded(line)
        if same is not None:
            out.add(line, same, 1, line)
        changed = near_miss(line, rng)
        if changed is not None:
            out.add(line, changed, 0, line)
    return out


def load(name: str) -> PairSet:
    """One dev set by name (empty without the shared data)."""
    return {"mrpc": load_mrpc, "stsb": load_stsb, "chat": load_chat}[name]()


EXTRA_CHAT_LINES = 200  # more Persona-Chat lines (train half, past the dev set's) for training


def training_pairs(extra_chat: int = EXTRA_CHAT_LINES) -> list[dict[str, Any]]:
    """What the pair classifier trains on (scripts/train_pair_classifier.py): the "train" halves
    only. MRPC and chat pairs (target 0/1); every STS-B pair, its score as a soft target
    (score - 2) / 2 clipped to 0..1; and chat pairs made as load_chat makes them from
    `extra_chat` more Persona-Chat lines whose group is "train" (none of the dev set's lines)."""
    out: list[dict[str, Any]] = []
    for name in ("mrpc", "chat"):
        half = load(name).half("train")
        for (a, b), y in zip(half.pairs, half.labels, strict=True):
            out.append({"a": a, "b": b, "target": float(y), "set": name})
    path = shared_data("paraphrase/sts-test.csv")
    for line in path.read_text(encoding="utf-8").splitlines() if path else []:
        cols = line.split("\t")
        if len(cols) >= 7 and split_of(cols[5]) == "train":
            target = min(max((float(cols[4]) - 2) / 2, 0.0), 1.0)
            out.append({"a": cols[5], "b": cols[6], "target": target, "set": "stsb"})
    rng = random.Random(SEED + 1)
    seen = set(persona_lines(CHAT_LINES))
    made = 0
    for line in persona_lines(CHAT_LINES + 4 * extra_chat):
        if made >= extra_chat:
            break
        if line in seen or split_of(line) != "train":
            continue
        made += 1
        for same in (reworded(line), line.lower().rstrip(".!?")):
            if same is not None and same != line:
                out.append({"a": line, "b": same, "target": 1.0, "set": "chat_extra"})
        for _ in range(2):
            changed = near_miss(line, rng)
            if changed is not None:
                out.append({"a": line, "b": changed, "target": 0.0, "set": "chat_extra"})
    return out


def main(argv: list[str] | None = None) -> None:
    """python -m companion.bench.devsets [--extra-chat N] > pairs.jsonl"""
    import argparse

    ap = argparse.ArgumentParser(description="the pair classifier's training pairs, JSON lines")
    ap.add_argument(
        "--extra-chat",
        type=int,
        default=EXTRA_CHAT_LINES,
        help="train-half Persona-Chat lines (past the dev set's) to make chat pairs of",
    )
    args = ap.parse_args(argv)
    for row in training_pairs(args.extra_chat):
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
