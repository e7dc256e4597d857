"""The short way to answer a new conversation's first message from the response cache.

A first message in a new session, from a user with the default persona and no memories, has
nothing personal in its prompt: no history, no summary, no recalled memory, the default system
prompt. Its cache key (shared scope) is then known from the message alone, so this path looks
it up before any of the context work (history read, memory recall, prompt tokenization). On a
hit in the exact layer's in-process LRU it stores the exchange, the user row, the session and
the relationship's interaction in one transaction, batched with other requests' by a group
commit, and answers only after that commit. Everything else (a miss, a known session, a user
with a persona of their own or any memory, a message that refers back) takes the full path in
`Companion.chat_stream`'s steps, which also serve semantic hits. (This module and chat.py
share companion/turn.py; chat.py imports this one, never the other way.)

Equivalence with the full path (tests in tests/cache/test_cached_turn.py):
- the key is the one the full path computes for the same request (same system prompt,
  options, scope and context fingerprint); a user-scoped entry is never looked up here;
- whether the user has an own persona or memories is read inside the writing transaction; such
  a user's turn writes nothing here and goes the full path;
- the prompt is known to fit: a prompt has at most as many tokens as bytes (plus the chat
  template's markers, TEMPLATE_SLACK), so one that fits by bytes fits by tokens;
- the memory still learns from the user's words (extraction, as after_turn does), the
  relationship counts the exchange, and the session summary advances when its window is
  smaller than the two new messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from companion.cache import ResponseCache
from companion.cache.base import CacheHit
from companion.config import Settings
from companion.domain import ChatResult, Usage
from companion.llm.base import Engine
from companion.memory.extract import extract
from companion.persona.model import DEFAULT_ID, Relationship, interacted
from companion.persona.prompt import feedback, system_prompt
from companion.personal import Personal
from companion.stats import PerformanceStats
from companion.storage import Store
from companion.storage.group import GroupWriter
from companion.storage.schema import ID_LENGTH, memories, messages, relationships, sessions, users
from companion.turn import Turn, options_from, title_of

log = logging.getLogger("companion.chat")

TEMPLATE_SLACK = 256  # tokens of chat-template markers a prompt may add beyond its text bytes
MEMO_ENTRIES = 4096  # remembered token counts and "has facts" answers per message text


@dataclass(frozen=True)
class _Turn:
    """One cached exchange to store."""

    user_id: str
    session_id: str
    title: str
    text: str
    user_tokens: int
    reply: str
    reply_tokens: int
    model: str
    timings: dict[str, float]
    feedback: float
    check_memories: bool


@dataclass(frozen=True)
class _Saved:
    user_message_id: int
    reply_id: int


class _Memo:
    """A small LRU of answers by key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, compute: Any) -> Any:
        try:
            self._items.move_to_end(key)
            return self._items[key]
        except KeyError:
            value = self._items[key] = compute()
            if len(self._items) > self.size:
                self._items.popitem(last=False)
            return value


class CachedTurns:
    """The short way for a cache hit that starts a conversation (see the module's notes)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        cache: ResponseCache | None,
        personal: Personal | None,
        stats: PerformanceStats,
        main_engine: Callable[[], Engine],
    ) -> None:
        """Serve from `cache` into `store`; `main_engine()` is the model that counts a user
        message's tokens (as the full path counts them), whichever model answers."""
        self.settings = settings
        self.cache = cache
        self.personal = personal
        self.stats = stats
        self.main_engine = main_engine
        self.writer: GroupWriter[_Turn, _Saved | None] = GroupWriter(
            store.writing, _write_turns, "cached-turn-writer"
        )
        self._tokens = _Memo(MEMO_ENTRIES)
        self._facts = _Memo(MEMO_ENTRIES)
        self.served = 0

    def close(self) -> None:
        """Commit what is queued and stop the writer."""
        self.writer.close()

    async def serve(self, turn: Turn) -> ChatResult | None:
        """The stored, counted reply of a shared exact hit; None: take the full path.

        `turn.route` is the model chosen for the message (and says why, for the reply)."""
        cache, user_id, text = self.cache, turn.user_id, turn.text
        if cache is None or not self.settings.enable_caching or not turn.use_cache:
            return None
        if not user_id.strip() or len(user_id) > ID_LENGTH:
            return None  # the full path says why
        assert turn.route is not None
        engine = turn.engine
        looked_up = time.perf_counter()
        personal = self.personal
        system = (system_prompt(personal.personas.default) if personal is not None
                  else self.settings.system_prompt)
        opts = options_from(self.settings, **turn.options)  # the default persona: no sampling
        budget = engine.info.context_length - opts.max_tokens
        if len(system.encode()) + len(text.encode()) + TEMPLATE_SLACK > budget:
            return None
        info = engine.info
        probe = cache.probe(
            user_id, [{"role": "system", "content": system}], text, options=opts,
            model_name=info.name, model_path=info.path, history_used=0, personal=False,
        )
        if probe.key.scope.kind != "shared":
            return None
        hit = cache.peek(probe)
        if hit is None:
            return None
        lookup_ms = (time.perf_counter() - looked_up) * 1000
        entry = hit.entry
        timings = cached_timings(hit, turn.started, {"context_ms": 0.0})
        total_ms = timings["total_ms"]
        memory = personal.memory if personal is not None else None
        counter = self.main_engine()  # the full path counts the user's tokens with the main one
        stored = _Turn(
            user_id=user_id, session_id=_new_id(), title=title_of(text), text=text,
            user_tokens=self._tokens.get((counter.info.path, text),
                                         lambda: counter.count_tokens(text)),
            reply=entry.response, reply_tokens=entry.completion_tokens, model=entry.model,
            timings=timings, feedback=feedback(text) if personal is not None else 0.0,
            check_memories=memory is not None,
        )
        try:
            saved = await asyncio.wrap_future(self.writer.submit(stored))
        except Exception:
            log.exception("storing a cached turn failed; taking the full path")
            return None
        if saved is None:  # an own persona or memories: the full path decides the scope
            return None
        cache.count_hit(hit, lookup_ms)
        self.stats.record_cache(True, "exact")
        if personal is not None:
            await self._after_turn(user_id, stored, saved)
        self.stats.record_request(response_ms=total_ms, ttft_ms=total_ms, tokens_per_s=0.0,
                                  prompt=0, completion=0)
        self.served += 1
        return cached_result(hit, stored.session_id, user_id, stored.timings, saved.reply_id,
                             turn.route.to_dict())

    async def _after_turn(self, user_id: str, turn: _Turn, saved: _Saved) -> None:
        """What Personal.after_turn does for a first turn whose relationship is already stored:
        extraction (a thread hop only when the message has facts) and the summary."""
        personal = self.personal
        assert personal is not None
        memory = personal.memory
        if memory is not None:
            text = turn.text
            if self._facts.get(text, lambda: bool(extract(text))):
                await asyncio.to_thread(memory.observe, user_id, text, saved.user_message_id)
            else:
                memory.counts["turns"] += 1  # what observe() counts for a turn without facts
            if personal.extractor is not None:  # LLM extraction, as after_turn queues it
                personal.extractor.submit(user_id, text, saved.user_message_id)
        window = self.settings.history_messages
        if window < 3:  # the two new messages already overflow the window
            await asyncio.to_thread(
                personal.summaries.advance, turn.session_id, window, self.settings.history_step
            )


def _new_id() -> str:
    return uuid.uuid4().hex


def cached_timings(hit: CacheHit, started: float, before: dict[str, float]) -> dict[str, float]:
    """A cached reply's timings: `before` (context work), then the hit, all of it first token."""
    total_ms = round((time.perf_counter() - started) * 1000, 2)
    return {**before, "cache_similarity": round(hit.similarity, 4),
            "time_to_first_token_ms": total_ms, "generation_ms": 0.0, "tokens_per_second": 0.0,
            "total_ms": total_ms}


def cached_result(
    hit: CacheHit, session_id: str, user_id: str, timings: dict[str, float], message_id: int,
    route_info: dict[str, Any] | None = None,
) -> ChatResult:
    """The ChatResult of a reply served from the cache (both ways of serving one)."""
    entry = hit.entry
    extra: dict[str, Any] = {"cache_layer": hit.layer, "cache_similarity": hit.similarity,
                             "cache_scope": entry.scope, "cache_key": entry.key}
    if route_info is not None:
        extra["route"] = route_info
    return ChatResult(
        response=entry.response, session_id=session_id, user_id=user_id, cached=True,
        model=entry.model, usage=Usage(0, entry.completion_tokens), timings=timings,
        finish_reason=entry.finish_reason, message_id=message_id, extra=extra,
    )


# the batched write (runs in the group writer's thread, inside one transaction)

_RELATIONSHIP_UPDATE = (
    sa.update(relationships)
    .where(relationships.c.user_id == sa.bindparam("b_user"),
           relationships.c.persona_id == sa.bindparam("b_persona"))
    .values(familiarity=sa.bindparam("b_familiarity"), affinity=sa.bindparam("b_affinity"),
            interactions=sa.bindparam("b_interactions"), updated_at=sa.bindparam("b_updated"))
)


def _write_turns(conn: Connection, turns: Sequence[_Turn]) -> list[_Saved | None]:
    """Store every eligible turn: user row, session, both messages, relationship."""
    now = datetime.now(UTC)
    ids = list(dict.fromkeys(t.user_id for t in turns))
    own_persona: set[str] = set()
    default_rel: dict[str, Relationship] = {}
    for row in conn.execute(
        sa.select(relationships.c.user_id, relationships.c.persona_id, relationships.c.active,
                  relationships.c.familiarity, relationships.c.affinity,
                  relationships.c.interactions).where(relationships.c.user_id.in_(ids))
    ):
        if row.persona_id == DEFAULT_ID:
            default_rel[row.user_id] = Relationship(
                row.user_id, DEFAULT_ID, float(row.familiarity), float(row.affinity),
                int(row.interactions))
        elif row.active:
            own_persona.add(row.user_id)
    with_memories: set[str] = set()
    if any(t.check_memories for t in turns):
        with_memories = set(conn.execute(
            sa.select(memories.c.user_id).where(memories.c.user_id.in_(ids)).distinct()
        ).scalars())
    known = set(conn.execute(sa.select(users.c.id).where(users.c.id.in_(ids))).scalars())

    def eligible(t: _Turn) -> bool:
        return t.user_id not in own_persona and not (t.check_memories
                                                     and t.user_id in with_memories)

    ok = [t for t in turns if eligible(t)]
    if not ok:
        return [None] * len(turns)
    new_users = list(dict.fromkeys(t.user_id for t in ok if t.user_id not in known))
    if new_users:
        conn.execute(sa.insert(users), [{"id": u, "created_at": now} for u in new_users])
    conn.execute(sa.insert(sessions), [
        {"id": t.session_id, "user_id": t.user_id, "title": t.title, "created_at": now,
         "updated_at": now} for t in ok])
    asked = _insert_returning_ids(conn, [
        {"session_id": t.session_id, "role": "user", "text": t.text, "status": "complete",
         "token_count": t.user_tokens, "cached": False, "model": None, "timings": {},
         "created_at": now, "reply_to": None} for t in ok])
    replies = _insert_returning_ids(conn, [
        {"session_id": t.session_id, "role": "assistant", "text": t.reply, "status": "complete",
         "token_count": t.reply_tokens, "cached": True, "model": t.model, "timings": t.timings,
         "created_at": now, "reply_to": question} for t, question in zip(ok, asked, strict=True)])
    # the relationship with the default persona counts each exchange (PersonaStore.interacted)
    stored = set(default_rel)
    for t in ok:
        rel = default_rel.get(t.user_id) or Relationship(t.user_id, DEFAULT_ID)
        default_rel[t.user_id] = interacted(rel, t.feedback)
    touched = list(dict.fromkeys(t.user_id for t in ok))
    updates = [_rel_values(default_rel[u], now) for u in touched if u in stored]
    if updates:
        conn.execute(_RELATIONSHIP_UPDATE, updates)
    inserts = [default_rel[u] for u in touched if u not in stored]
    if inserts:
        conn.execute(sa.insert(relationships), [
            {"user_id": r.user_id, "persona_id": r.persona_id, "familiarity": r.familiarity,
             "affinity": r.affinity, "interactions": r.interactions, "active": False,
             "updated_at": now} for r in inserts])
    saved = iter(_Saved(q, r) for q, r in zip(asked, replies, strict=True))
    return [next(saved) if eligible(t) else None for t in turns]


def _rel_values(rel: Relationship, now: datetime) -> dict[str, Any]:
    return {"b_user": rel.user_id, "b_persona": rel.persona_id,
            "b_familiarity": rel.familiarity, "b_affinity": rel.affinity,
            "b_interactions": rel.interactions, "b_updated": now}


def _insert_returning_ids(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert message rows; their ids in the rows' order."""
    if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
        result = conn.execute(
            sa.insert(messages).returning(messages.c.id, sort_by_parameter_order=True), rows)
        return [int(i) for i in result.scalars()]
    return [int(conn.execute(sa.insert(messages).values(**row)).inserted_primary_key[0])
            for row in rows]
