"""bench memory: the spec's "Memory Query Performance" rows at `scale` memories per user,
LoCoMo recall against a raw-turn embedding baseline in the same run, and persona_fact_coverage.

Timings are per request on a warm index (the first request of a user loads it: index_load_ms).
total_memory_ms = recall (full text + vector + scoring) + persona and summary lookup + context
building; the query's embedding is shared with the cache, so it is reported on its own.
"""

from __future__ import annotations

import csv
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from companion.bench import locomo, shared_data
from companion.config import Settings
from companion.context import build_context
from companion.domain import Message
from companion.embed import load_embedder
from companion.llm.hardware import detect_hardware
from companion.llm.registry import Registry
from companion.memory import MemoryService
from companion.memory.base import Candidate
from companion.memory.extract import extract, topics_of
from companion.personal import Personal, open_personal
from companion.runtime import plan_model, start_engine
from companion.storage import Store, open_store

PERSONA_CHAT = "persona_chat/Synthetic-Persona-Chat_test.csv"
LOCOMO = "locomo/locomo_dev3.json"
QUERIES = 200


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


def fill(memory: MemoryService, store: Store, user: str, texts: list[str]) -> None:
    """Insert `texts` as one user's memories, ages spread over 60 days, in one transaction."""
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


def _pct(values: list[float], q: float) -> float:
    """A percentile, rounded for the report."""
    return round(float(np.percentile(values, q)), 3)


def query_figures(settings: Settings, scale: int, rows: list[dict[str, str]]) -> dict[str, float]:
    """Topic search, importance ranking, context building and total, per request."""
    facts = list(dict.fromkeys(persona_facts(rows)))
    queries = [t.partition(": ")[2] for r in rows for t in r["Best Generated Conversation"]
               .splitlines()[2:] if t.endswith("?")][:QUERIES]
    engine = start_engine(settings, plan_model(settings, Registry(settings.resolved_models_dir),
                                               detect_hardware(), "tiny"))
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.db")
        personal = open_personal(settings, store, load_embedder())
        memory = personal.memory
        assert memory is not None
        pool = facts * (scale // len(facts) + 2)
        for n, user in enumerate(("bench", "other")):  # a second user: recall stays per user
            fill(memory, store, user, pool[n * scale:(n + 1) * scale])
        session = store.create_session("bench", "s")
        history = [Message(i, "s", "user" if i % 2 == 0 else "assistant", q, "complete", None,
                           False, None, {}, datetime.now(UTC)) for i, q in enumerate(queries[:10])]
        started = time.perf_counter()
        memory.recall("bench", "warm up")
        load_ms = (time.perf_counter() - started) * 1000
        try:
            figures = _time_requests(personal, engine, settings, session.id, queries, history)
        finally:
            personal.close()
            store.close()
            engine.close()
    return {**figures, "index_load_ms": round(load_ms, 2), "memories_per_user": scale}


def _time_requests(personal: Personal, engine: Any, settings: Settings, session_id: str,
                   queries: list[str], history: list[Message]) -> dict[str, float]:
    """Time each stage of each query."""
    memory = personal.memory
    assert memory is not None
    parts: dict[str, list[float]] = {k: [] for k in (
        "embed", "topic", "rank", "prepare", "context", "total")}
    budget = settings.context_length - settings.max_tokens
    for query in queries:
        t0 = time.perf_counter()
        vector = memory.embedder.embed_one(query)
        t1 = time.perf_counter()
        memory.index.text_search("bench", query)  # topic / full-text search alone
        t2 = time.perf_counter()
        memory.index.vector_search("bench", vector)
        memory.recall("bench", query, vector)  # importance ranking: the whole scored recall
        t3 = time.perf_counter()
        notes = personal.prepare("bench", session_id, query, vector)
        t4 = time.perf_counter()
        build_context(engine, system_prompt=notes.system_prompt, history=history, message=query,
                      budget_tokens=budget, memories=notes.lines, summary=notes.summary)
        t5 = time.perf_counter()
        for key, ms in (("embed", t1 - t0), ("topic", t2 - t1), ("rank", t3 - t2),
                        ("prepare", t4 - t3), ("context", t5 - t4), ("total", t5 - t3)):
            parts[key].append(ms * 1000)
    return {
        "query_embedding_ms_p50": _pct(parts["embed"], 50),
        "topic_search_ms": _pct(parts["topic"], 50),
        "importance_ranking_ms": _pct(parts["rank"], 50),
        "context_building_ms": _pct(parts["context"], 50),
        "total_memory_ms_p50": _pct(parts["total"], 50),
        "total_memory_ms_p95": _pct(parts["total"], 95),
        "queries": len(queries),
    }


def run(settings: Settings, scale: int | None) -> tuple[dict[str, float], dict[str, Any]]:
    """All three parts; `scale` = memories per user (default 1000)."""
    scale = scale or 1000
    rows = persona_rows()
    notes: dict[str, Any] = {
        "timing": "per request, warm index; total excludes the query embedding (shared with "
                  "the cache: query_embedding_ms_p50)",
        "locomo": "recall@k = share of evidence turns among the source turns of the top k; "
                  "baseline = cosine over raw 'speaker: text' turns, same embedder",
        "weights": "recall weights were chosen on these LoCoMo dev conversations",
        "extraction": "rules only (the engine exposes no grammar-constrained generation)",
    }
    if not rows:
        return {}, {**notes, "skipped": "../shared/data not found"}
    figures = query_figures(settings, scale, rows)
    figures.update(fact_coverage(persona_facts(rows)))
    path = shared_data(LOCOMO)
    if path is not None:
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store(f"sqlite:///{tmp}/locomo.db")
            service = MemoryService(store, load_embedder())
            try:
                figures.update(locomo.run(service, Path(path)))
            finally:
                service.close()
                store.close()
        figures["locomo_gain_at_5"] = round(
            figures["locomo_recall_at_5"] - figures["locomo_baseline_recall_at_5"], 4)
    return figures, notes
