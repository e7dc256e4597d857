"""LongMemEval retrieval recall: our memory against plain retrieval over the raw turns.

Suites: `s_dev`, the six LongMemEval_S questions with their full haystacks (42-48 sessions),
and `pool<N>`, harder haystacks built from `oracle/`: the questions are shuffled (fixed seed)
and cut into groups of N; one simulated user holds every evidence session of its group's
questions, so each question's evidence sits among the other questions' sessions (similar
topics, other people's facts), about 2 N sessions per user.

Each haystack's sessions are fed in date order, turn by turn (user turns through `observe`,
the assistant's through `observe_reply`), then each question is asked at its date, as of the
end of that day (recall's `as_of`; the baselines leave out the same later turns): a pooled
haystack holds other questions' sessions dated after it, which the user had not said yet.
Recall at k, by question type: session level as LongMemEval scores it (the first k distinct
sessions of the ranking: does it hold any / all of the answer sessions), and turn level (the
turns of the first k results against the `has_answer` turns). Baselines: dense, BM25 and their
fusion over the raw turns, over all turns and over the user's turns only; the best of the six
is the bar.
`_abs` questions are left out of recall: for them, `abstained` is the share where nothing
recalled reaches the relevance floor (and `false_abstention` the same share for the others).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from companion.bench.baselines import BASELINES, CachedEmbedder, RawTurns
from companion.memory import MemoryService

KS = (5, 10)
DEPTH = 50  # ranking depth asked of every system (session level needs k distinct sessions)
POOL = 50
SEED = 14
SYSTEMS = ("companion", *BASELINES, *(f"{b}_user" for b in BASELINES))
METRICS = ("session_recall_any", "session_recall_all", "turn_recall_any", "turn_recall_all")


@dataclass
class Turn:
    """One turn as fed."""

    session: str
    role: str
    text: str
    when: datetime
    has_answer: bool


@dataclass
class Question:
    """One question of a haystack."""

    qid: str
    qtype: str
    text: str
    when: datetime
    sessions: set[str]
    abstain: bool


@dataclass
class Haystack:
    """One user's sessions and the questions asked of them."""

    name: str
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


def _date(text: str) -> datetime:
    """'2023/05/20 (Sat) 00:29' as UTC."""
    day, _, clock = text.split(" ")
    return datetime.strptime(f"{day} {clock}", "%Y/%m/%d %H:%M").replace(tzinfo=UTC)


def _day_end(when: datetime) -> datetime:
    """The last moment of `when`'s day: what a question asked then can know (LongMemEval's
    question times are only good to the day: 66 of its 934 answer sessions are dated later
    on the question's day, none on a later day)."""
    return when.replace(hour=23, minute=59, second=59, microsecond=999999)


def haystack(name: str, items: list[dict[str, Any]]) -> Haystack:
    """The union of the items' sessions in date order, and their questions."""
    sessions: dict[str, tuple[datetime, list[dict[str, Any]]]] = {}
    for item in items:
        for sid, date, turns in zip(
            item["haystack_session_ids"],
            item["haystack_dates"],
            item["haystack_sessions"],
            strict=True,
        ):
            sessions.setdefault(sid, (_date(date), turns))
    hay = Haystack(name)
    for sid, (when, turns) in sorted(sessions.items(), key=lambda kv: (kv[1][0], kv[0])):
        hay.turns += [
            Turn(
                sid, t["role"], t["content"], when + timedelta(seconds=i), bool(t.get("has_answer"))
            )
            for i, t in enumerate(turns)
        ]
    hay.questions = [
        Question(
            q["question_id"],
            q["question_type"],
            q["question"],
            _date(q["question_date"]),
            set(q["answer_session_ids"]),
            "_abs" in q["question_id"],
        )
        for q in items
    ]
    return hay


def _read(folder: Path) -> list[dict[str, Any]]:
    """Every question file of a folder, by name."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


def suites(root: Path, pool: int = POOL, limit: int | None = None) -> dict[str, list[Haystack]]:
    """s_dev (one haystack per question) and pool<N> (oracle questions in groups of N)."""
    out: dict[str, list[Haystack]] = {}
    if (root / "s_dev").is_dir():
        out["s_dev"] = [
            haystack(f"s_dev-{q['question_id']}", [q]) for q in _read(root / "s_dev")[:limit]
        ]
    if (root / "oracle").is_dir():
        oracle = _read(root / "oracle")
        random.Random(SEED).shuffle(oracle)
        oracle = oracle[: limit * pool] if limit else oracle
        out[f"pool{pool}"] = [
            haystack(f"pool{pool}-{i // pool}", oracle[i : i + pool])
            for i in range(0, len(oracle), pool)
        ]
    return out


class Tally:
    """Sums of 0/1 outcomes by (suite, system, question type, metric, k)."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, ...], float] = defaultdict(float)
        self.counts: dict[tuple[str, ...], int] = defaultdict(int)

    def add(self, key: tuple[str, ...], value: float) -> None:
        """One outcome, counted under its key."""
        self.sums[key] += value
        self.counts[key] += 1

    def mean(self, key: tuple[str, ...]) -> float | None:
        """The mean outcome of a key (None when none)."""
        return self.sums[key] / self.counts[key] if self.counts.get(key) else None


def outcomes(
    ranked: list[list[int]], turns: list[Turn], q: Question, gold: set[int]
) -> Iterator[tuple[str, int, float]]:
    """(metric, k, 0/1) of one ranking: groups of turn indexes, best first."""
    sessions = list(dict.fromkeys(turns[i].session for group in ranked for i in group))
    for k in KS:
        top = set(sessions[:k])
        yield "session_recall_any", k, float(bool(top & q.sessions))
        yield "session_recall_all", k, float(q.sessions <= top)
        if gold:
            found = {i for group in ranked[:k] for i in group}
            yield "turn_recall_any", k, float(bool(found & gold))
            yield "turn_recall_all", k, float(gold <= found)


def run_haystack(memory: MemoryService, hay: Haystack, suite: str, tally: Tally) -> None:
    """Feed one haystack as one user, ask its questions, add every system's outcomes."""
    user = f"lme-{hay.name}"
    embedder = memory.embedder
    for number, turn in enumerate(hay.turns, start=1):
        if turn.role == "user":
            memory.observe(user, turn.text, number, session_id=turn.session, now=turn.when)
        else:
            memory.observe_reply(user, turn.text, number, session_id=turn.session, now=turn.when)
    vectors = embedder.embed([t.text for t in hay.turns])
    mine = [i for i, t in enumerate(hay.turns) if t.role == "user"]
    raw = {
        "": (RawTurns([t.text for t in hay.turns], vectors), list(range(len(hay.turns)))),
        "_user": (RawTurns([hay.turns[i].text for i in mine], vectors[mine]), mine),
    }
    for q in hay.questions:
        vector = embedder.embed_one(q.text)
        hits = memory.recall(user, q.text, vector, DEPTH, now=q.when, as_of=_day_end(q.when))
        if q.abstain:
            tally.add(
                (suite, "companion", "abstention", "abstained", "-"),
                float(not any(h.reasons.get("confident") for h in hits[:10])),
            )
            continue
        tally.add(
            (suite, "companion", "answerable", "false_abstention", "-"),
            float(not any(h.reasons.get("confident") for h in hits[:10])),
        )
        gold = {i for i, t in enumerate(hay.turns) if t.has_answer and t.session in q.sessions}
        rankings = {"companion": [[m - 1 for m in h.memory.source_ids] for h in hits]}
        said = np.array([t.when <= _day_end(q.when) for t in hay.turns])
        for suffix, (index, back) in raw.items():
            for name, ranking in index.rankings(q.text, vector, DEPTH, said[back]).items():
                rankings[name + suffix] = [[back[i]] for i in ranking]
        for system, ranked in rankings.items():
            for metric, k, value in outcomes(ranked, hay.turns, q, gold):
                for qtype in ("all", q.qtype):
                    tally.add((suite, system, qtype, metric, str(k)), value)
    for index, _ in raw.values():
        index.close()


def figures(tally: Tally, suite_names: Iterable[str]) -> dict[str, float]:
    """The headline figures (all suites together), per suite, and by question type at k=5."""
    out: dict[str, float] = {}
    names = list(suite_names)
    types = sorted(
        {key[2] for key in tally.counts if key[2] not in ("all", "abstention", "answerable")}
    )

    def mean(suites: list[str], system: str, qtype: str, metric: str, k: str) -> float | None:
        keys = [(s, system, qtype, metric, k) for s in suites]
        n = sum(tally.counts.get(key, 0) for key in keys)
        return sum(tally.sums.get(key, 0.0) for key in keys) / n if n else None

    def put(prefix: str, suites: list[str], qtype: str, metric: str, k: str) -> None:
        ours = mean(suites, "companion", qtype, metric, k)
        if ours is None:
            return
        base = {s: mean(suites, s, qtype, metric, k) for s in SYSTEMS[1:]}
        out[f"{prefix}_at_{k}"] = round(ours, 4)
        out[f"{prefix}_at_{k}_best_baseline"] = round(
            max(v for v in base.values() if v is not None), 4
        )
        if qtype == "all":
            out.update(
                {f"{prefix}_at_{k}_{s}": round(v, 4) for s, v in base.items() if v is not None}
            )

    for metric in METRICS:
        short = metric.removeprefix("session_")
        for k in map(str, KS):
            put(f"lme_{short}", names, "all", metric, k)
            for suite in names:
                put(f"lme_{suite}_{metric}", [suite], "all", metric, k)
        for qtype in types:
            put(f"lme_{qtype.replace('-', '_')}_{metric}", names, qtype, metric, "5")
    for qtype, metric in (("abstention", "abstained"), ("answerable", "false_abstention")):
        value = mean(names, "companion", qtype, metric, "-")
        if value is not None:
            out[f"lme_abs_{metric}"] = round(value, 4)
    return out


def table(tally: Tally) -> dict[str, dict[str, dict[str, float]]]:
    """Every system's recall at 5 by suite and question type ("all" too), for the report."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (suite, system, qtype, metric, k), n in sorted(tally.counts.items()):
        if k == "5" and n:
            row = out.setdefault(f"{suite}/{qtype}", {}).setdefault(system, {"n": n})
            row[metric] = round(tally.sums[(suite, system, qtype, metric, k)] / n, 4)
    return out


def run(
    memory: MemoryService, root: Path, pool: int = POOL, limit: int | None = None
) -> tuple[dict[str, float], dict[str, dict[str, dict[str, float]]]]:
    """Every suite under `root` (longmemeval/): the figures, and every system's recall at 5
    by suite and question type (table); `limit`: haystacks per suite (tests)."""
    tally = Tally()
    found = suites(root, pool, limit)
    for suite, hays in found.items():
        for hay in hays[:limit]:
            if isinstance(memory.embedder, CachedEmbedder):
                memory.embedder.warm([t.text for t in hay.turns])
            run_haystack(memory, hay, suite, tally)
    result = figures(tally, found)
    result["lme_questions"] = sum(len(h.questions) for hays in found.values() for h in hays[:limit])
    result["lme_turns_fed"] = sum(len(h.turns) for hays in found.values() for h in hays[:limit])
    return result, table(tally)
