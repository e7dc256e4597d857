"""bench memory: the spec's "Memory Query Performance" rows at `scale` facts per user with
episodes (turns) indexed too, LoCoMo and LongMemEval recall against three baselines over the
raw turns in the same run (lme.py, locomo.py, baselines.py), and persona_fact_coverage.

Timings are per request on a warm index (the first request of a user loads it: index_load_ms).
total_memory_ms = recall (full text + vector + scoring) + persona and summary lookup + context
building; the query's embedding is shared with the cache, so it is reported on its own. The
turn sweep repeats the timing as the user's turns grow (TURN_SWEEP), to find how many turns a
user can have before the p95 passes TOTAL_GOAL_MS.
"""

from __future__ import annotations

import csv
import tempfile
import time
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from companion.bench import lme, locomo, shared_data
from companion.bench.baselines import CachedEmbedder
from companion.bench.progress import phase
from companion.bench.shared import prefixed, scratch_database
from companion.config import Settings
from companion.context import build_context
from companion.domain import Message
from companion.embed import load_embedder
from companion.llm.hardware import detect_hardware
from companion.llm.registry import Registry
from companion.memory import MemoryService
from companion.memory.base import Candidate
from companion.memory.episodes import sentence_texts
from companion.memory.extract import extract, topics_of
from companion.memory.extract_eval import extraction_figures
from companion.memory.pg_index import copy_memories
from companion.personal import Personal, open_personal
from companion.runtime import plan_model, start_engine
from companion.storage import Store, open_store

PERSONA_CHAT = "persona_chat/Synthetic-Persona-Chat_test.csv"
LOCOMO = "locomo/locomo_dev3.json"
LONGMEMEVAL = "longmemeval"
QUERIES = 200
SWEEP_QUERIES = 100
TURNS = 5000  # turns per user beside the facts for the headline timing
TURN_SWEEP = (0, 1000, 2500, TURNS, 10000, 20000, 40000)
UNIQUE_TURNS = 2000  # distinct utterances embedded for the sweep (repeated past that)
TOTAL_GOAL_MS = 5.0
CROWD = 98  # more users beside "bench" and "other" on PostgreSQL: 100 users


def persona_rows(limit: int | None = None) -> list[dict[str, str]]:
    """Rows of Synthetic-Persona-Chat (personas and conversation)."""
    path = shared_data(PERSONA_CHAT)
    if path is None:
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return rows[:limit]


def persona_facts(rows: list[dict[str, str]]) -> list[str]:
    """Every stated persona fact (one per line of both personas)."""
    return [line.strip() for row in rows for col in ("user 1 personas", "user 2 personas")
            for line in row[col].splitlines() if line.strip()]


def fact_coverage(facts: list[str]) -> dict[str, float]:
    """Share of facts extraction keeps as any memory, and as a structured (non-event) one."""
    kept = [extract(f) for f in facts]
    return {
        "persona_fact_coverage": round(sum(bool(k) for k in kept) / len(facts), 4),
        "persona_fact_coverage_structured": round(
            sum(any(c.kind != "event" for c in k) for k in kept) / len(facts), 4),
        "persona_facts": len(facts),
    }


def fill(memory: MemoryService, store: Store, user: str, texts: list[str]) -> np.ndarray:
    """Insert `texts` as one user's memories, ages spread over 60 days, in one transaction;
    their vectors."""
    store.ensure_user(user)
    vectors = np.vstack([memory.embedder.embed(texts[i:i + 64]) for i in range(0, len(texts), 64)])
    now = datetime.now(UTC)
    with store.writing() as conn:
        for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
            found = extract(text)
            kind = found[0].kind if found else "event"
            cand = Candidate(text=text, kind=kind, topics=topics_of(text),
                             importance=found[0].importance if found else 0.25)
            memory.repo.insert(conn, user, cand, vector, i, now - timedelta(hours=i * 1.4))
    return vectors


def crowd(memory: MemoryService, store: Store, users: int, texts: list[str],
          vectors: np.ndarray) -> None:
    """PostgreSQL only: `users` more users with the same memories each (one binary COPY), so
    that the timed user's rows sit among 100 users' (the issue's 100 x 1,000)."""
    names = [f"crowd-{n}" for n in range(users)]
    for name in names:
        store.ensure_user(name)
    model = memory.repo.embedding_model
    rows = ((u, t, v) for u in names for t, v in zip(texts, vectors, strict=True))
    copy_memories(store, rows, model, datetime.now(UTC))


def utterances(rows: list[dict[str, str]], limit: int) -> list[str]:
    """Distinct chat lines of Persona-Chat (the sweep's turns)."""
    lines = (t.partition(": ")[2].strip() for r in rows
             for t in r["Best Generated Conversation"].splitlines())
    return list(dict.fromkeys(x for x in lines if x))[:limit]


def add_turns(memory: MemoryService, store: Store, user: str, texts: list[str],
              vectors: np.ndarray, start: int, stop: int) -> None:
    """Give `user` turns start..stop (texts repeated round), sessions of 20, hourly; a long
    user turn with its sentence vectors, as remember_turn keeps it."""
    now = datetime.now(UTC)
    parts: dict[int, np.ndarray | None] = {}
    with store.writing() as conn:
        for i in range(start, stop):
            role = "user" if i % 2 == 0 else "assistant"
            n = i % len(texts)
            if role == "user" and n not in parts:
                found = sentence_texts(role, texts[n])
                parts[n] = memory.embedder.embed(found) if found else None
            memory.episode_repo.insert(
                conn, user, role=role, text=texts[n], vector=vectors[n], message_id=None,
                session_id=f"s{i // 20}", subject=None, now=now - timedelta(hours=stop - i),
                sentence_vectors=parts.get(n) if role == "user" else None)


def _pct(values: list[float], q: float) -> float:
    """A percentile, rounded for the report."""
    return round(float(np.percentile(values, q)), 3)


def query_figures(settings: Settings, scale: int, rows: list[dict[str, str]],
                  sweep: tuple[int, ...] = TURN_SWEEP, url: str | None = None,
                  headline: int = TURNS) -> dict[str, float]:
    """Topic search, importance ranking, context building and total, per request, at
    `scale` facts per user and each turn count of `sweep` (all stages at `headline` turns)."""
    facts = list(dict.fromkeys(persona_facts(rows)))
    queries = [t.partition(": ")[2] for r in rows for t in r["Best Generated Conversation"]
               .splitlines()[2:] if t.endswith("?")][:QUERIES]
    engine = start_engine(settings, plan_model(settings, Registry(settings.resolved_models_dir),
                                               detect_hardware(), "tiny"))
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(url or f"sqlite:///{tmp}/bench.db")
        personal = open_personal(settings, store, load_embedder())
        memory = personal.memory
        assert memory is not None
        pool = facts * (2 * scale // len(facts) + 1)  # enough for both users
        for n, user in enumerate(("bench", "other")):  # a second user: recall stays per user
            vectors = fill(memory, store, user, pool[n * scale:(n + 1) * scale])
        if store.dialect == "postgresql":  # 100 users in all (SQLite's figures: the two)
            crowd(memory, store, CROWD, pool[scale:2 * scale], vectors)
        texts = utterances(rows, UNIQUE_TURNS if max(sweep) else 0)  # none without turns
        vectors = memory.embedder.embed(texts) if texts else np.zeros((0, 1))
        session = store.create_session("bench", "s")
        history = [Message(i, "s", "user" if i % 2 == 0 else "assistant", q, "complete", None,
                           False, None, {}, datetime.now(UTC)) for i, q in enumerate(queries[:10])]
        figures: dict[str, float] = {}
        have = 0
        try:
            for turns in sweep:
                add_turns(memory, store, "bench", texts, vectors, have, turns)
                have = turns
                memory.forget_user("bench")  # reload with the new turns
                started = time.perf_counter()
                memory.recall("bench", "warm up")
                load_ms = (time.perf_counter() - started) * 1000
                asked = queries if turns == headline else queries[:SWEEP_QUERIES]
                timed = _time_requests(personal, engine, settings, session.id, asked, history)
                figures[f"total_memory_ms_p95_at_{turns}_turns"] = timed["total_memory_ms_p95"]
                figures[f"total_memory_cpu_ms_p95_at_{turns}_turns"] = timed[
                    "total_memory_cpu_ms_p95"]
                figures[f"index_load_ms_at_{turns}_turns"] = round(load_ms, 2)
                if turns == headline:
                    figures.update(timed, index_load_ms=round(load_ms, 2),
                                   sentence_vectors_per_user=memory.episode_repo.sentence_count(
                                       "bench"))
        finally:
            personal.close()
            store.close()
            engine.close()
    for name, part in (("", "ms"), ("_cpu", "cpu_ms")):
        within = [n for n in sweep
                  if figures[f"total_memory_{part}_p95_at_{n}_turns"] <= TOTAL_GOAL_MS]
        figures[f"max_turns_within_5ms{name}"] = max(within, default=0)
    users = 2 + (CROWD if url and url.startswith("postgresql") else 0)
    return {**figures, "memories_per_user": scale, "turns_per_user": headline, "users": users}


def _time_requests(personal: Personal, engine: Any, settings: Settings, session_id: str,
                   queries: list[str], history: list[Message]) -> dict[str, float]:
    """Time each stage of each query."""
    memory = personal.memory
    assert memory is not None
    parts: dict[str, list[float]] = {k: [] for k in (
        "embed", "topic", "rank", "prepare", "context", "total", "cpu")}
    budget = settings.context_length - settings.max_tokens
    for query in queries:
        t0 = time.perf_counter()
        vector = memory.embedder.embed_one(query)
        t1 = time.perf_counter()
        memory.index.text_search("bench", query)  # topic / full-text search alone
        t2 = time.perf_counter()
        memory.index.vector_search("bench", vector)
        memory.recall("bench", query, vector)  # importance ranking: the whole scored recall
        t3, c3 = time.perf_counter(), time.thread_time()
        notes = personal.prepare("bench", session_id, query, vector)
        t4 = time.perf_counter()
        build_context(engine, system_prompt=notes.system_prompt, history=history, message=query,
                      budget_tokens=budget, memories=notes.lines, summary=notes.summary)
        t5, c5 = time.perf_counter(), time.thread_time()
        for key, ms in (("embed", t1 - t0), ("topic", t2 - t1), ("rank", t3 - t2),
                        ("prepare", t4 - t3), ("context", t5 - t4), ("total", t5 - t3),
                        ("cpu", c5 - c3)):
            parts[key].append(ms * 1000)
    return {
        "query_embedding_ms_p50": _pct(parts["embed"], 50),
        "topic_search_ms": _pct(parts["topic"], 50),
        "importance_ranking_ms": _pct(parts["rank"], 50),
        "context_building_ms": _pct(parts["context"], 50),
        "total_memory_ms_p50": _pct(parts["total"], 50),
        "total_memory_ms_p95": _pct(parts["total"], 95),
        "total_memory_cpu_ms_p95": _pct(parts["cpu"], 95),  # this thread's CPU time: the
        "queries": len(queries),  # work itself, without waiting for a core on a busy machine
    }


def run(settings: Settings, scale: int | None, database_url: str | None = None,
        redis_url: str | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """All parts; `scale` = facts per user (default 1000). With `database_url`, the timings
    again with the store on PostgreSQL (a scratch schema), named pg_* (memory uses no Redis)."""
    scale = scale or 1000
    rows = persona_rows()
    notes: dict[str, Any] = {
        "timing": f"per request, warm index, {TURNS} turns per user beside the facts; total "
                  "excludes the query embedding (shared with the cache: query_embedding_ms_p50)",
        "locomo": "recall@k = share of evidence turns among the source turns of the top k; "
                  "baselines over raw 'speaker: text' turns, same embedder: dense, bm25, fusion",
        "longmemeval": "session level as LongMemEval scores it (first k distinct sessions), "
                       "turn level against has_answer turns; suites s_dev and pool50; best "
                       "baseline = best of dense, bm25, fusion over all turns or user turns",
        "weights": "recall weights were chosen on these dev sets (LoCoMo dev3, LongMemEval "
                   "oracle and s_dev)",
        "extraction": "rules only",
    }
    if not rows:
        return {}, {**notes, "skipped": "../shared/data not found"}
    phase(f"memory: recall timings over {scale} memories per user")
    figures = query_figures(settings, scale, rows)
    phase("memory: persona fact coverage")
    figures.update(fact_coverage(persona_facts(rows)))
    figures.update(extraction_figures())  # questions/hypotheticals/negations (extract_eval.py)
    phase("memory: LoCoMo and LongMemEval recall")
    recalled, notes["lme_by_type_at_5"] = recall_figures()
    figures.update(recalled)
    if database_url:
        phase("memory: recall timings on PostgreSQL")
        with scratch_database(database_url) as url:
            figures.update(prefixed(query_figures(settings, scale, rows, url=url)))
        phase("memory: LoCoMo recall on PostgreSQL")
        pg_recall, _ = recall_figures(database_url=database_url, parts=("locomo",))
        figures.update(prefixed(pg_recall))
        notes["pg"] = "pg_* = the same timings and LoCoMo recall with the store on PostgreSQL"
    return figures, notes


def recall_figures(locomo_limit: int | None = None, lme_limit: int | None = None,
                   pool: int = lme.POOL, database_url: str | None = None,
                   parts: tuple[str, ...] = ("locomo", "lme"),
                   ) -> tuple[dict[str, float], dict[str, Any]]:
    """LoCoMo and LongMemEval recall, ours and the baselines, one embedding cache for all;
    and LongMemEval's table by question type. With `database_url`, the store is a scratch
    database on that PostgreSQL server."""
    figures: dict[str, float] = {}
    table: dict[str, Any] = {}
    embedder = CachedEmbedder(load_embedder())
    for name, part in ((LOCOMO, "locomo"), (LONGMEMEVAL, "lme")):
        path = shared_data(name)
        if path is None or part not in parts:
            continue
        with tempfile.TemporaryDirectory() as tmp, (
            scratch_database(database_url) if database_url else nullcontext(None)
        ) as pg_url:
            store = open_store(pg_url or f"sqlite:///{tmp}/{part}.db")
            service = MemoryService(store, embedder, max_loaded_users=4)
            try:
                if part == "locomo":
                    figures.update(locomo.run(service, Path(path), locomo_limit))
                else:
                    found, table = lme.run(service, Path(path), pool, lme_limit)
                    figures.update(found)
            finally:
                service.close()
                store.close()
    return figures, table
