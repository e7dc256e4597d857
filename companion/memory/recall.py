"""Hybrid recall over facts and episodes (the turns as said), ranked together.

Each candidate (the top of a full-text and of a vector search, plus the turns next to the
best ones) gets a relevance from similarity and bm25, times a factor from importance and
recency; a turn also takes a share of its neighbouring turns' and its session's best score
(the answer to a question is often the turn after it). Questions about what the companion
said lift the assistant's turns, which otherwise count half; a person named in the question
lifts what that person said; a time expression ("last week", "in May", "the first time")
prefers what was said then. A fact and the turn it came from come back as one result.

Each result carries its reasons, and an absolute `relevance` (similarity and the share of
the question's informative words it holds); nothing at or over `floor` means memory holds
nothing that answers the question, so the companion can say it does not know.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from companion.embed.base import Vector
from companion.memory.base import Item, Recalled
from companion.memory.extract import sentences
from companion.memory.index import MemoryIndex, stem_terms
from companion.memory.timeexpr import TimeHint, parse

# "what did you recommend", "you told me", "your suggestion", "remind me what you said"
ASSISTANT_CUE = re.compile(
    r"\byou(?:'ve| have| had)?\s+(?:\w+ly\s+)?(?:said|say|told|tell|mention|recommend|suggest|"
    r"gave|give|list|provid|shar|wrote|writ|explain|nam|describ|offer|propos|advis|point|"
    r"came up|come up|help|mean)\w*|\byour\s+(?:suggestion|recommendation|advice|answer|"
    r"list|idea|tip|explanation|reply|response)s?\b|\b(?:our|previous|last|earlier)\s+"
    r"(?:chat|conversation|discussion)s?\b",
    re.IGNORECASE,
)
SNIPPET_CHARS = 300
DEPTH_IN_WINDOW = 50  # turns taken from a time window when the question names only a time


@dataclass(frozen=True)
class Weights:
    """How the parts combine. Relevance (similarity and text) is multiplied by a factor from
    importance and recency, so importance orders relevant items but never lifts an
    irrelevant one. Chosen on the LoCoMo and LongMemEval dev data (companion bench memory).
    """

    similarity: float = 0.6  # share of cosine in relevance; the rest is bm25 / best bm25
    importance: float = 0.2
    recency: float = 0.1
    recency_half_life_days: float = 30.0
    min_similarity: float = 0.25  # below this, only a text match keeps an item in the running
    neighbour: float = 0.3  # share of the better neighbouring turn's score a turn adds
    session: float = 0.1  # share of its session's best score a turn adds
    expand: int = 20  # the turns next to this many best ones join the candidates
    assistant: float = 0.5  # factor for the assistant's turns unless the question asks for them
    speaker: float = 1.2  # factor for what a person named in the question said
    in_window: float = 1.25  # factor for items said inside the question's time window
    only_time: float = 0.5  # added inside the window when the question names nothing else
    superseded: float = 0.5  # factor for a turn that told a value since updated (history)
    order: float = 0.1  # "the first time" / "now": up to this much for the earliest / newest
    floor: float = 0.5  # relevance at which an item answers the question (see module doc)
    floor_similarity: float = 0.3  # the similarity's share of that relevance


def recency(memory: Item, now: datetime, half_life_days: float) -> float:
    """1.0 when just used or made, halving every `half_life_days`."""
    last = memory.last_used_at or memory.updated_at
    days = max(0.0, (now - last).total_seconds() / 86400)
    return math.pow(0.5, days / half_life_days)


def score(memory: Item, similarity: float, text: float, now: datetime,
          weights: Weights) -> tuple[float, dict[str, float]]:
    """The combined score of one item and its parts (before context and time)."""
    parts = {
        "similarity": max(0.0, similarity),
        "text_match": text,
        "importance": memory.importance,
        "recency": recency(memory, now, weights.recency_half_life_days),
    }
    relevance = weights.similarity * parts["similarity"] + (1 - weights.similarity) * text
    factor = (1.0 - weights.importance - weights.recency + weights.importance * parts["importance"]
              + weights.recency * parts["recency"])
    return relevance * factor, parts


@dataclass
class _Query:
    """One recall's inputs and what the index knows around them."""

    text: str
    vector: Vector | None
    now: datetime
    weights: Weights
    hint: TimeHint | None
    terms: list[str]
    idf: dict[str, float]
    stems: dict[int, frozenset[str]]
    prev: dict[int, int]
    next: dict[int, int]
    asks_assistant: bool


def coverage(query: _Query, key: int) -> tuple[float, list[str]]:
    """Share of the question's informative words (idf-weighted) an item holds, and which."""
    have = query.stems.get(key, frozenset())
    found = [t for t in query.terms if t in have]
    total = sum(query.idf.values())
    return (sum(query.idf[t] for t in found) / total if total else 0.0), found


def _base(query: _Query, items: dict[int, Item], sims: dict[int, float],
          texts: dict[int, float], around: set[int], as_of: datetime | None,
          ) -> dict[int, tuple[float, dict]]:
    """Each candidate's own score and reasons (relevance x importance/recency x role/speaker)."""
    w = query.weights
    named = {s for s in {i.subject for i in items.values() if i.subject}
             if re.search(rf"\b{re.escape(s)}\b", query.text, re.IGNORECASE)}
    out: dict[int, tuple[float, dict]] = {}
    for key, item in items.items():
        if as_of is not None and item.created_at > as_of:
            continue
        similarity, text = sims.get(key, 0.0), texts.get(key, 0.0)
        if similarity < w.min_similarity and text == 0.0 and key not in around:
            continue
        total, parts = score(item, similarity, text, query.now, w)
        reasons: dict[str, Any] = {k: round(v, 4) for k, v in parts.items()}
        if item.subject in named:
            total *= w.speaker
            reasons["speaker_named"] = item.subject
        if query.hint is not None and query.hint.inside(item.created_at):
            total = (total * w.in_window if query.terms
                     else total + w.only_time)  # "what did I do last week?": the time is all
            reasons["in_time_window"] = True
        if item.is_episode and item.role == "assistant" and not query.asks_assistant:
            total *= w.assistant
        cover, found = coverage(query, key)
        relevance = w.floor_similarity * max(similarity, 0.0) + (1 - w.floor_similarity) * cover
        reasons.update(matched_terms=found, relevance=round(relevance, 4),
                       confident=relevance >= w.floor,
                       found_by=[n for n, v in (("text", text), ("vector", similarity)) if v > 0])
        out[key] = (total, reasons)
    return out


def _in_context(query: _Query, base: dict[int, tuple[float, dict]],
                items: dict[int, Item]) -> dict[int, float]:
    """Each turn's score plus shares of its neighbours' and its session's best."""
    w = query.weights
    best: dict[str | None, float] = {}
    for key, (value, _) in base.items():
        if key % 2:
            sid = items[key].session_id  # type: ignore[union-attr]
            best[sid] = max(best.get(sid, 0.0), value)
    scores = {}
    for key, (value, reasons) in base.items():
        if key % 2 == 0:
            scores[key] = value
            continue
        around = max(base.get(query.prev.get(key, -1), (0.0, None))[0],
                     base.get(query.next.get(key, -1), (0.0, None))[0])
        session = best.get(items[key].session_id, 0.0)  # type: ignore[union-attr]
        scores[key] = value + w.neighbour * around + w.session * session
        if around:
            reasons["neighbour"] = round(around, 4)
        if items[key].superseded_at is not None:  # type: ignore[union-attr]
            scores[key] *= w.superseded
            reasons["superseded"] = True
    return scores


def _ordered(query: _Query, scores: dict[int, float], items: dict[int, Item]) -> None:
    """"The first time" lifts the earliest candidates, "now" the newest (in place)."""
    order = query.hint.order if query.hint else None
    if order is None or len(scores) < 2:
        return
    ranked = sorted(scores, key=lambda k: items[k].created_at)
    for position, key in enumerate(ranked):
        share = position / (len(ranked) - 1)
        scores[key] *= 1 + query.weights.order * (share if order == "last" else 1 - share)


def snippet(text: str, terms: list[str], limit: int = SNIPPET_CHARS) -> str:
    """The sentences of a turn that hold the most question words, up to `limit` characters."""
    if len(text) <= limit:
        return text
    parts = list(sentences(text))
    wanted = set(terms)
    ranked = sorted(range(len(parts)), key=lambda i: -len(wanted & set(stem_terms(parts[i]))))
    chosen: list[int] = []
    for i in ranked:
        if sum(len(parts[j]) + 1 for j in chosen) + len(parts[i]) > limit and chosen:
            break
        chosen.append(i)
    return " ".join(parts[i] for i in sorted(chosen))[:limit]


def _merge(ranked: list[Recalled], query: _Query, k: int) -> list[Recalled]:
    """A fact and the turn it came from as one result, in the better one's place: the fact
    (what is known now) with the turn's words as its snippet."""
    out: list[Recalled] = []
    by_message: dict[int, int] = {}
    for r in ranked:
        item = r.memory
        mine = item.source_ids if item.is_episode else item.source_ids[-1:]
        place = next((by_message[m] for m in mine if m in by_message), None)
        if place is None:
            by_message.update({m: len(out) for m in mine})
            text = snippet(item.text, query.terms) if item.is_episode else None
            out.append(Recalled(item, r.score, r.reasons, text))
            if len(out) == k:
                break
            continue
        kept = out[place]
        if kept.is_episode and not item.is_episode:  # the fact takes the turn's place
            reasons = {**r.reasons, "source_turn": kept.memory.id, "turn_score": kept.score}
            out[place] = Recalled(item, kept.score, reasons, kept.snippet)
        elif not kept.is_episode and item.is_episode and kept.snippet is None:
            kept.reasons["source_turn"] = item.id
            out[place] = Recalled(kept.memory, kept.score, kept.reasons,
                                  snippet(item.text, query.terms))
    return out


def recall(index: MemoryIndex, user_id: str, query: str, vector: Vector | None, k: int,
           now: datetime, weights: Weights | None = None, *, as_of: datetime | None = None,
           anchor_time: Callable[[str], datetime | None] | None = None) -> list[Recalled]:
    """The top `k` facts and turns of `user_id` for `query` (the user must be loaded).

    `as_of`: only what was said up to then. `anchor_time`: when an event was ("before I
    moved"); by default the time of the best match for its words.
    """
    w = weights or Weights()
    hint = parse(query, now)
    words = query  # the time phrase says when, not what: it is not matched against the text
    if hint is not None and hint.phrase:
        words = re.sub(re.escape(hint.phrase), " ", query, flags=re.IGNORECASE)
    text_hits = index.text_search(user_id, words)
    best = min((bm for _, bm in text_hits), default=0.0)
    texts = {key: (bm / best if best < 0 else 0.0) for key, bm in text_hits}
    sims = dict(index.vector_search(user_id, vector)) if vector is not None else {}
    terms = stem_terms(words)
    prev, nxt, stems, idf = index.context(user_id, terms)
    q = _Query(query, vector, now, w, hint, terms, idf, stems, prev, nxt,
               bool(ASSISTANT_CUE.search(query)))
    if hint is not None and hint.anchor and anchor_time is not None:
        q.hint = _anchored(hint, anchor_time(hint.anchor))
    around = _around(q, texts, sims, w.expand)
    if hint is not None and not terms and hint.inside(now) is not None:
        around |= index.said_between(user_id, hint.start, hint.end, DEPTH_IN_WINDOW)
    items = index.get(user_id, set(texts) | set(sims) | around)
    if vector is not None:
        sims.update(index.similarities(user_id, [k_ for k_ in items if k_ not in sims], vector))
    base = _base(q, items, sims, texts, around, as_of)
    scores = _in_context(q, base, items)
    _ordered(q, scores, items)
    ranked = [Recalled(items[key], value, base[key][1])
              for key, value in sorted(scores.items(), key=lambda kv: (-kv[1], -kv[0]))]
    if q.hint is not None:
        for r in ranked[:k]:
            r.reasons["time"] = q.hint.to_dict()
    return _merge(ranked, q, k)


def _around(query: _Query, texts: dict[int, float], sims: dict[int, float], n: int) -> set[int]:
    """The turns before and after the `n` best candidates by similarity and by text."""
    best = [*sorted(sims, key=lambda k: -sims[k])[:n], *sorted(texts, key=lambda k: -texts[k])[:n]]
    out = set()
    for key in best:
        out.update(x for x in (query.prev.get(key), query.next.get(key)) if x is not None)
    return out


def _anchored(hint: TimeHint, when: datetime | None) -> TimeHint:
    """A hint whose window ends (before) or starts (after) at the anchor event's time."""
    if when is None:
        return hint
    if hint.relative == "before":
        return TimeHint(end=when, order=hint.order, relative=hint.relative, anchor=hint.anchor,
                        phrase=f"before {hint.anchor}")
    return TimeHint(start=when, order=hint.order, relative=hint.relative, anchor=hint.anchor,
                    phrase=f"after {hint.anchor}")
