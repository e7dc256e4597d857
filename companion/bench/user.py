"""bench user: the spec's "Single User Performance" (requests/min by query type) and "Per-User
Memory" (what one active user costs), through Companion.chat with the real model and SQLite.

Query types, each timed alone (one request at a time, greedy):
- cached: the same question again from new visitors (answered by the response cache);
- simple: a short chit-chat opener in a new session, cache off;
- complex: a long multi-part question from a user with `memories` stored memories, in a
  session that already has a few turns (memory recall and a full context), cache off;
- long: the last turns of one long Synthetic-Persona-Chat session (cache on: its turns are
  stored in the user's private cache scope).
Per-user memory is read from what those turns stored: the long session's messages and its KV
cells, the complex user's memories (rows and in-RAM vectors), persona and relationship rows,
and a user's private cache rows; the context buffer is the engine's whole KV cache.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from companion.bench import persona_chat_openers
from companion.bench.engine import session_lines
from companion.bench.memory import fill, persona_facts, persona_rows
from companion.config import Settings
from companion.llm.llama_cpp import KV_BYTES
from companion.llm.registry import gguf_metadata
from companion.runtime import Runtime, open_runtime

COMPLEX = (
    "Thinking about everything I have told you about my family, my job and my hobbies, "
    "what would be a good plan for my weekend, and why would it suit me better than "
    "staying at home? Please also remind me what I said about my pets."
)
CACHED_QUESTION = "What is a good hobby to start this winter?"


def kv_bytes_per_token(model: Path, kv_type: str = "f16") -> float:
    """KV cache bytes one token takes: K and V of every layer, from the GGUF header."""
    meta = gguf_metadata(model)
    arch = str(meta.get("general.architecture", "llama"))
    layers = int(meta.get(f"{arch}.block_count", 0))
    embd = int(meta.get(f"{arch}.embedding_length", 0))
    heads = int(meta.get(f"{arch}.attention.head_count", 1)) or 1
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
    return 2 * layers * (embd // heads) * kv_heads * KV_BYTES[kv_type]


async def _timed(rt: Runtime, calls: list[tuple[str, str, str | None, bool]], tokens: int) -> Any:
    """Send (user, message, session, use_cache) one after another: (seconds, last result)."""
    started, result = time.perf_counter(), None
    for user, message, session, cache in calls:
        result = await rt.companion.chat(
            user, message, session, use_cache=cache, max_tokens=tokens, temperature=0.0
        )
    return time.perf_counter() - started, result


def _per_min(count: int, seconds: float) -> float:
    return round(count / seconds * 60, 1) if seconds > 0 else 0.0


async def _query_types(rt: Runtime, n: int, turns: int, tokens: int) -> dict[str, Any]:
    """requests/min per query type, and the long session's id and last result."""
    chat = rt.companion.chat
    await chat("visitor-0", CACHED_QUESTION, None, max_tokens=tokens, temperature=0.0)
    cached_s, _ = await _timed(rt, [(f"visitor-{i + 1}", CACHED_QUESTION, None, True)
                                    for i in range(max(n, 20))], tokens)  # fmt: skip
    openers = persona_chat_openers(n) or [CACHED_QUESTION] * n
    simple_s, _ = await _timed(rt, [(f"simple-{i}", t, None, False) for i, t in
                                    enumerate(openers[:n])], tokens)  # fmt: skip
    lines = session_lines(turns + n)
    first = await chat("complex", lines[0], None, use_cache=False, max_tokens=tokens)
    await _timed(rt, [("complex", t, first.session_id, False) for t in lines[1:3]], tokens)
    complex_s, _ = await _timed(rt, [("complex", COMPLEX, first.session_id, False)] * n, tokens)
    long = await chat("long", lines[0], None, max_tokens=tokens)
    await _timed(rt, [("long", t, long.session_id, True) for t in lines[1:turns]], tokens)
    long_s, last = await _timed(
        rt, [("long", t, long.session_id, True) for t in lines[turns : turns + n]], tokens
    )
    return {
        "cached_req_per_min": _per_min(max(n, 20), cached_s),
        "simple_req_per_min": _per_min(n, simple_s),
        "complex_req_per_min": _per_min(n, complex_s),
        "long_req_per_min": _per_min(n, long_s),
        "_long": (long.session_id, last),
    }


def _db_bytes(db: Path, sql: str, *args: Any) -> float:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return float(conn.execute(sql, args).fetchone()[0] or 0)


def per_user_mb(rt: Runtime, db: Path, session: str, last: Any) -> dict[str, float]:
    """What one active user costs (MB): conversation, memories, personality, private cache."""
    kv = kv_bytes_per_token(Path(rt.model_info.path), rt.settings.kv_cache_type)
    cells = rt.companion.engine.stats().get("kv_cells", 0.0)
    used_tokens = last.usage.prompt_tokens + last.usage.completion_tokens
    messages = _db_bytes(db, "SELECT SUM(LENGTH(text) + LENGTH(timings)) FROM messages "
                         "WHERE session_id = ?", session)  # fmt: skip
    memories = _db_bytes(db, "SELECT SUM(LENGTH(text) + LENGTH(topics) + LENGTH(source_ids) + "
                         "COALESCE(LENGTH(embedding), 0)) FROM memories WHERE user_id = ?",
                         "complex")  # fmt: skip
    count = _db_bytes(db, "SELECT COUNT(*) FROM memories WHERE user_id = ?", "complex")
    dim = rt.companion.embedder.dim if rt.companion.embedder else 0
    persona = _db_bytes(db, "SELECT MAX(LENGTH(data) + LENGTH(name)) FROM personas")
    cache = _db_bytes(db, "SELECT SUM(size_bytes + COALESCE(LENGTH(embedding), 0)) "
                      "FROM response_cache WHERE scope LIKE 'user:%'")  # fmt: skip
    cache_users = _db_bytes(db, "SELECT COUNT(DISTINCT scope) FROM response_cache "
                            "WHERE scope LIKE 'user:%'")  # fmt: skip
    return {
        "conversation_context_mb": round((messages + used_tokens * kv) / 2**20, 3),
        "conversation_kv_tokens": used_tokens,
        "memory_system_mb": round((memories + count * dim * 4) / 2**20, 3),
        "memories_per_user": int(count),
        "personality_data_mb": round((persona + 64) / 2**20, 4),  # + the relationship row
        "cache_data_mb": round(cache / cache_users / 2**20, 4) if cache_users else 0.0,
        "kv_bytes_per_token": kv,
        "kv_cells": cells,
        "context_buffer_mb": round(cells * kv / 2**20, 1),  # the engine's whole KV cache
    }


def run(
    settings: Settings,
    scale: int | None = None,
    *,
    turns: int = 10,
    memories: int = 300,
    max_tokens: int | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """All figures; `scale` = timed requests per query type (default 5)."""
    n, tokens = scale or 5, max_tokens or settings.max_tokens
    with tempfile.TemporaryDirectory() as tmp:
        local = settings.model_copy(update={
            "data_dir": Path(tmp), "database_url": None,
            "models_dir": settings.resolved_models_dir})  # fmt: skip
        rt = open_runtime(local)
        try:
            memory = rt.companion.personal.memory if rt.companion.personal else None
            facts = persona_facts(persona_rows(memories // 8 + 2))
            if memory is not None and facts:
                fill(memory, rt.store, "complex", (facts * (memories // len(facts) + 1))[:memories])
            found = asyncio.run(_query_types(rt, n, turns, tokens))
            session, last = found.pop("_long")
            found |= per_user_mb(rt, Path(tmp) / "companion.db", session, last)
        finally:
            rt.close()
    notes = {
        "model": rt.model_info.name,
        "requests_per_type": n,
        "max_tokens": tokens,
        "long_session_turns": f"turns {turns + 1}-{turns + n} of one session",
        "complex": f"a {len(COMPLEX.split())}-word question, {memories} memories, 3 prior turns",
        "conversation_context": "stored messages + KV cells of the long session",
        "kv_cache_type": settings.kv_cache_type,
    }
    return found, notes
