"""Hybrid recall over facts and episodes (the turns as said), ranked together.

Each candidate (the top of a full-text and of a vector search, plus the turns next to the
best ones) gets a relevance from similarity and bm25, times a factor from importance and
recency; a turn also takes a share of its neighbouring turns' and its session's best score
(the answer to a question is often the turn after it). Questions about what the companion
said lift the assistant's turns, which otherwise count half; a person named in the question
lifts what that person said; a time expression ("last week", "in May", "the first time")
prefers what was said then. A question that gathers several mentions ("how many", "in
total", "the order of", or one with a time expression) weighs meaning more, drops the
session's share and searches again from its best matches (pseudo-relevance feedback). A
fact and the turn it came from come back as one result.

Each result carries its reasons, and an absolute `relevance` (similarity and the share of
the question's informative words it holds); nothing at or over `floor` means memory holds
nothing that answers the question, so the companion can say it does not know.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np

from companion.embed.base import Vector
from companion.memory.base import Item, Recalled
from companion.memory.extract import sentences
from companion.memory.index import (
    ASSISTANT,
    EPISODE,
    SEARCH_LIMIT,
    SUPERSEDED,
    MemoryIndex,
    _UserIndex,
    stem_terms,
)
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
# questions whose answer gathers several mentions: "how many", "in total", "the order of"
GATHERS = re.compile(
    r"\b(?:how\s+(?:many|much)|total|sum|combined|altogether|average|in\s+all|all\s+the|"
    r"list|every|order|each)\b",
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

    similarity: float = 0.7  # share of cosine in relevance; the rest is bm25 / best bm25
    importance: float = 0.2
    recency: float = 0.1
    recency_half_life_days: float = 30.0
    min_similarity: float = 0.25  # below this, only a text match keeps an item in the running
    neighbour: float = 0.3  # share of the better neighbouring turn's score a turn adds
    session: float = 0.1  # share of its session's best own score a turn adds
    expand: int = 20  # the turns next to this many best ones join the candidates
    assistant: float = 0.5  # factor for the assistant's turns unless the question asks for them
    speaker: float = 1.2  # factor for what a person named in the question said
    in_window: float = 1.25  # factor for items said inside the question's time window
    only_time: float = 0.5  # added inside the window when the question names nothing else
    superseded: float = 0.5  # factor for a turn that told a value since updated (history)
    order: float = 0.1  # "the first time" / "now": up to this much for the earliest / newest
    floor: float = 0.5  # relevance at which an item answers the question (see module doc)
    floor_similarity: float = 0.3  # the similarity's share of that relevance
    # A question that gathers (GATHERS, or one with a time expression: "the order of",
    # "which first", "two weeks ago") has its answer in several conversations, said in
    # passing: it is ranked with more weight on meaning than on shared words, without the
    # session's share (it lifts every turn of one conversation over the others), and with
    # the query vector moved towards its best `feedback_top` matches (pseudo-relevance
    # feedback: the other mentions of the same thing read like the first ones found).
    gather: bool = True
    gather_similarity: float = 0.75
    gather_session: float = 0.0
    feedback: float = 0.5  # weight of the best matches' mean vector added to the question's
    feedback_top: int = 3
    gather_time: bool = True  # a question with a time expression counts as one that gathers


def recency(memory: Item, now: datetime, half_life_days: float) -> float:
    """1.0 when just used or made, halving every `half_life_days`."""
    last = memory.last_used_at or memory.updated_at
    days = max(0.0, (now - last).total_seconds() / 86400)
    return math.pow(0.5, days / half_life_days)


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


@dataclass
class _Candidates:
    """The candidates of one recall as parallel arrays (one entry per item), scored in numpy:
    the same sums for every candidate at once instead of a Python loop per item."""

    keys: np.ndarray  # int64
    rows: np.ndarray  # their rows in the user's Vectors
    similarity: np.ndarray
    text: np.ndarray
    recency: np.ndarray
    named: np.ndarray  # bool: said by a person named in the question
    in_window: np.ndarray  # bool: said inside the question's time window
    own: np.ndarray  # each one's own score (relevance x importance/recency x role/speaker/time)
    neighbour: np.ndarray  # the better neighbouring turn's own score (turns)
    score: np.ndarray  # the final score


def coverage(query: _Query, key: int) -> tuple[float, list[str]]:
    """Share of the question's informative words (idf-weighted) an item holds, and which."""
    have = query.stems.get(key, frozenset())
    found = [t for t in query.terms if t in have]
    total = sum(query.idf.values())
    return (sum(query.idf[t] for t in found) / total if total else 0.0), found


def _epoch(when: datetime | None) -> float | None:
    """A time as seconds since the epoch (None stays None)."""
    return None if when is None else when.timestamp()


def _candidates(query: _Query, user: _UserIndex, keys: list[int], sims_all: np.ndarray | None,
                texts: dict[int, float], around: set[int], as_of: datetime | None,
                ) -> _Candidates:
    """Score the candidates: each one's own score, then a turn's share of its neighbours'
    and its session's, the superseded factor and the first/last-time order."""
    w = query.weights
    vectors = user.vectors
    row_of = vectors.row_of
    karr = np.asarray(keys, dtype=np.int64)
    rows = np.array([row_of.get(key, -1) for key in keys], dtype=np.int64)
    text = np.zeros(len(keys))
    text[: len(texts)] = list(texts.values())  # the text hits come first in `keys`
    keep = rows >= 0
    if not keep.all():
        karr, rows, text = karr[keep], rows[keep], text[keep]
    col = vectors.columns
    created, flags = col["created"][rows], col["flags"][rows]
    similarity = (sims_all[rows].astype(np.float64) if sims_all is not None
                  else np.zeros(len(rows)))
    keep = (similarity >= w.min_similarity) | (text != 0.0)
    if around:
        keep |= np.isin(karr, list(around))
    if as_of is not None:
        keep &= created <= as_of.timestamp()
    if not keep.all():
        karr, rows, created, flags = karr[keep], rows[keep], created[keep], flags[keep]
        similarity, text = similarity[keep], text[keep]
    similarity = np.maximum(similarity, 0.0)
    seconds = query.now.timestamp() - col["last"][rows]
    recent = np.exp(np.maximum(seconds, 0.0) * (math.log(0.5) / (w.recency_half_life_days
                                                                  * 86400)))
    own = (w.similarity * similarity + (1 - w.similarity) * text) * (
        1.0 - w.importance - w.recency + w.importance * col["importance"][rows].astype(np.float64)
        + w.recency * recent)
    named = np.zeros(len(rows), dtype=bool)
    codes = [code for name, code in user.subjects.items()
             if re.search(rf"\b{re.escape(name)}\b", query.text, re.IGNORECASE)]
    if codes:
        named = np.isin(col["subject"][rows], codes)
        own = np.where(named, own * w.speaker, own)
    in_window = np.zeros(len(rows), dtype=bool)
    hint = query.hint
    if hint is not None and (hint.start is not None or hint.end is not None):
        in_window = np.ones(len(rows), dtype=bool)
        if hint.start is not None:
            in_window &= created >= hint.start.timestamp()
        if hint.end is not None:
            in_window &= created < hint.end.timestamp()
        own = np.where(in_window, own * w.in_window if query.terms else own + w.only_time, own)
    if not query.asks_assistant:
        own = np.where(flags & ASSISTANT > 0, own * w.assistant, own)
    episode = flags & EPISODE > 0
    listed = karr.tolist()
    prev, nxt = query.prev, query.next
    neighbour = np.maximum(_own_of(karr, own, [prev.get(key, -1) for key in listed]),
                           _own_of(karr, own, [nxt.get(key, -1) for key in listed]))
    session = col["session"][rows]
    grouped = episode & (session >= 0)  # a turn outside any conversation takes no share
    best = np.zeros(len(user.sessions) + 1)  # [-1]: outside a session, 0
    np.maximum.at(best, session[grouped], own[grouped])
    score = np.where(episode, own + w.neighbour * neighbour + w.session * best[session], own)
    score = np.where(flags & SUPERSEDED > 0, score * w.superseded, score)
    order = hint.order if hint is not None else None
    if order is not None and len(score) > 1:  # "the first time": earliest lifted; "now": newest
        rank = np.empty(len(score))
        rank[np.argsort(created, kind="stable")] = np.arange(len(score)) / (len(score) - 1)
        score = score * (1 + w.order * (rank if order == "last" else 1 - rank))
    return _Candidates(karr, rows, similarity, text, recent, named, in_window, own, neighbour,
                       score)


def feedback_vector(vector: Vector, best: np.ndarray, share: float) -> np.ndarray:
    """The question's unit vector plus `share` times the unit mean of the best matches'
    vectors (rows of `best`), as a unit vector (Rocchio's pseudo-relevance feedback)."""
    def unit(v: np.ndarray) -> np.ndarray:
        return v / max(float(np.linalg.norm(v)), 1e-9)

    q = unit(np.asarray(vector, dtype=np.float32))
    if not len(best):
        return q
    return unit(q + share * unit(np.asarray(best, dtype=np.float32).mean(axis=0)))


def _own_of(keys: np.ndarray, own: np.ndarray, wanted: list[int]) -> np.ndarray:
    """The own score of each wanted key among the candidates (0 where it is not one)."""
    if not len(keys):
        return np.zeros(0)
    order = np.argsort(keys)
    at = np.searchsorted(keys, wanted, sorter=order).clip(0, len(keys) - 1)
    found = order[at]
    return np.where(keys[found] == wanted, own[found], 0.0)


def _reasons(query: _Query, item: Item, c: _Candidates, i: int) -> dict[str, Any]:
    """Why an item was recalled: its parts, and its absolute relevance to the question."""
    w = query.weights
    similarity, text = float(c.similarity[i]), float(c.text[i])
    reasons: dict[str, Any] = {"similarity": round(similarity, 4),
                               "text_match": round(text, 4),
                               "importance": round(item.importance, 4),
                               "recency": round(float(c.recency[i]), 4)}
    if c.named[i]:
        reasons["speaker_named"] = item.subject
    if c.in_window[i]:
        reasons["in_time_window"] = True
    cover, found = coverage(query, item.key)
    relevance = w.floor_similarity * similarity + (1 - w.floor_similarity) * cover
    reasons.update(matched_terms=found, relevance=round(relevance, 4),
                   confident=relevance >= w.floor,
                   found_by=[n for n, v in (("text", text), ("vector", similarity)) if v > 0])
    if c.neighbour[i]:
        reasons["neighbour"] = round(float(c.neighbour[i]), 4)
    if item.is_episode and item.superseded_at is not None:  # type: ignore[union-attr]
        reasons["superseded"] = True
    return reasons


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


def _merge(ranked: Iterable[Recalled], query: _Query, k: int) -> list[Recalled]:
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
    gathers = w.gather and bool(GATHERS.search(query) or (w.gather_time and hint is not None))
    if gathers:
        w = replace(w, similarity=w.gather_similarity, session=w.gather_session)
    words = query  # the time phrase says when, not what: it is not matched against the text
    if hint is not None and hint.phrase:
        words = re.sub(re.escape(hint.phrase), " ", query, flags=re.IGNORECASE)
    said = hint  # the window of a question that names only a time
    if hint is not None and hint.anchor and anchor_time is not None:
        hint = _anchored(hint, anchor_time(hint.anchor))
    terms = stem_terms(words)
    with index.holding(user_id) as user:
        if user is None:
            return []
        by_then = None  # the rows said by `as_of` (None: all)
        if as_of is not None:
            columns = user.vectors.columns
            by_then = columns["created"][: user.vectors.size] <= as_of.timestamp()
        text_hits = index.text_search(user_id, words, SEARCH_LIMIT * (1 if by_then is None else 4))
        if by_then is not None:  # the best of what had been said by then
            row_of = user.vectors.row_of
            text_hits = [(key, bm) for key, bm in text_hits
                         if (row := row_of.get(key)) is not None and by_then[row]][:SEARCH_LIMIT]
        best = min((bm for _, bm in text_hits), default=0.0)
        texts = {key: (bm / best if best < 0 else 0.0) for key, bm in text_hits}
        q = _Query(query, vector, now, w, hint, terms,
                   {t: user.terms.idf(t) for t in terms}, user.stems, user.prev, user.next,
                   bool(ASSISTANT_CUE.search(query)))

        def scan(towards: Vector) -> np.ndarray:
            """Every row's similarity to `towards` (rows said after `as_of`: -2)."""
            scores = user.vectors.scan(towards)
            if by_then is not None:
                scores[~by_then] = -2.0
            return scores

        def ranked(scores: np.ndarray | None, window: bool) -> tuple[_Candidates, np.ndarray]:
            """The candidates from the text hits, the best `scores` and their neighbours (and,
            with `window`, the turns of a question that names only a time), best first."""
            sims = dict(user.vectors.top(scores, SEARCH_LIMIT)) if scores is not None else {}
            around = _around(q, texts, sims, w.expand)
            if window and said is not None and not terms and said.inside(now) is not None:
                around |= index.said_between(user_id, said.start, said.end, DEPTH_IN_WINDOW)
            c = _candidates(q, user, list(dict.fromkeys([*texts, *sims, *around])), scores,
                            texts, around, as_of)
            return c, np.lexsort((-c.keys, -c.score))

        sims_all = None
        if vector is not None and user.vectors.size > user.vectors.dead:
            sims_all = scan(vector)
        c, order = ranked(sims_all, window=True)
        if gathers and w.feedback > 0 and sims_all is not None and vector is not None and len(
                order):  # pseudo-relevance feedback: search again from the best matches
            moved = feedback_vector(vector, user.vectors.matrix[c.rows[order[: w.feedback_top]]],
                                    w.feedback)
            c, order = ranked(scan(moved), window=False)
            # the reasons (relevance, confidence) stay the question's own similarity
            c.similarity = np.maximum(sims_all[c.rows].astype(np.float64), 0.0)
        return _merge(_ranked(q, user, c, order, k), q, k)


def _ranked(query: _Query, user: _UserIndex, c: _Candidates, order: np.ndarray,
            k: int) -> Iterator[Recalled]:
    """The candidates best first as results, each with its reasons (made as taken)."""
    when = query.hint.to_dict() if query.hint is not None else None
    for position, i in enumerate(order):
        item = user.get(int(c.keys[i]))
        if item is None:
            continue
        reasons = _reasons(query, item, c, int(i))
        if when is not None and position < k:
            reasons["time"] = when
        yield Recalled(item, float(c.score[i]), reasons)


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
