"""MemoryService: extraction, reconciliation, recall and cleanup over the store and the index."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from companion.embed.base import Embedder, Vector
from companion.errors import InputError, NotFound
from companion.memory.base import (
    RECALL_BOOST,
    REPEAT_BOOST,
    Candidate,
    Change,
    CleanupReport,
    Kind,
    Memory,
    Recalled,
    SearchIndex,
)
from companion.memory.cleanup import CleanupPolicy, Schedule, doomed
from companion.memory.extract import extract, topics_of
from companion.memory.index import MemoryIndex
from companion.memory.pg_index import PgMemoryIndex
from companion.memory.recall import Weights, recall
from companion.memory.reconcile import Decision, decide
from companion.memory.repo import MemoryRepo, merge_sources
from companion.storage import Store

log = logging.getLogger("companion.memory")
MAX_TEXT = 1000


def _now() -> datetime:
    """The clock every memory row uses."""
    return datetime.now(UTC)


class MemoryService:
    """Long-term memory of every user (implements the MemoryStore protocol)."""

    def __init__(self, store: Store, embedder: Embedder, *, top_k: int = 5,
                 policy: CleanupPolicy | None = None, weights: Weights | None = None,
                 max_loaded_users: int = 256) -> None:
        """Serve memories from `store`, embedding with `embedder` (shared with the cache)."""
        self.store = store
        self.embedder = embedder
        self.top_k = top_k
        self.policy = policy or CleanupPolicy()
        self.weights = weights or Weights()
        self.repo = MemoryRepo(store, embedder.name)
        self.index: SearchIndex = (
            PgMemoryIndex(store) if store.dialect == "postgresql"
            else MemoryIndex(embedder.dim, max_loaded_users)
        )
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # one reconciliation at a time: decide, write, index
        self._schedule: Schedule | None = None

    # turns

    def observe(self, user_id: str, text: str, message_id: int | None, *,
                subject: str | None = None, extra: Sequence[Candidate] = (),
                now: datetime | None = None) -> list[Change]:
        """Extract facts from one user turn (plus `extra`, e.g. from a model) and reconcile."""
        candidates = [*extract(text, subject), *extra]
        self.counts["turns"] += 1
        return self.reconcile_candidates(user_id, candidates, message_id, now=now)

    def reconcile_candidates(self, user_id: str, candidates: Sequence[Candidate],
                             message_id: int | None, *, now: datetime | None = None,
                             ) -> list[Change]:
        """Reconcile facts found outside observe() (a model's, see llm_extract.py)."""
        if not candidates:
            return []
        self.counts["extracted"] += len(candidates)
        # whom a fact is about is part of its meaning: "Caroline: went to a support group"
        vectors = self.embedder.embed([f"{c.subject}: {c.text}" if c.subject else c.text
                                       for c in candidates])
        return self._reconcile(user_id, list(zip(candidates, vectors, strict=True)),
                               message_id, now or _now())

    def recall(self, user_id: str, query: str, vector: Vector | None = None,
               k: int | None = None, *, now: datetime | None = None) -> list[Recalled]:
        """The best memories for `query`; does not mark them used (see mark_used)."""
        self.index.ensure(user_id, self.repo.for_user)
        if vector is None:
            vector = self.embedder.embed_one(query)
        return recall(self.index, user_id, query, vector, k or self.top_k, now or _now(),
                      self.weights)

    def mark_used(self, user_id: str, ids: Sequence[int], now: datetime | None = None) -> None:
        """Memories that went into a prompt: count, time, and a small importance boost."""
        if not ids:
            return
        now = now or _now()
        with self._lock, self.store.writing() as conn:
            self.repo.touch(conn, ids, RECALL_BOOST, now)
            fresh = [self.repo.one(conn, i) for i in ids]
        self.index.put_many(user_id, fresh)

    # the API's operations

    def add(self, user_id: str, text: str, *, importance: float = 0.9,
            topics: Sequence[str] = (), kind: Kind = "explicit") -> Memory:
        """Store a memory as given (no extraction); logged as ADD."""
        text = _checked_text(text)
        cand = Candidate(text=text, kind=kind, topics=tuple(topics) or topics_of(text),
                         importance=_checked_importance(importance))
        self.store.ensure_user(user_id)
        vector = self.embedder.embed_one(text)
        with self._lock, self.store.writing() as conn:
            memory = self.repo.insert(conn, user_id, cand, vector, None, _now())
            self.repo.log(conn, user_id, Change("ADD", memory.id, None, text, "added by user"),
                          message_id=None, old_importance=None,
                          new_importance=memory.importance, now=_now())
        self.index.put_many(user_id, [memory])
        return memory

    def edit(self, user_id: str, memory_id: int, *, text: str | None = None,
             importance: float | None = None, topics: Sequence[str] | None = None) -> Memory:
        """Change a memory's text, importance or topics; logged as UPDATE."""
        values: dict[str, Any] = {"updated_at": _now()}
        if text is not None:
            values["text"] = _checked_text(text)
            values["embedding"] = self.embedder.embed_one(values["text"])
        if importance is not None:
            values["importance"] = _checked_importance(importance)
        if topics is not None:
            values["topics"] = tuple(topics)
        with self._lock, self.store.writing() as conn:
            old = self._owned(conn, user_id, memory_id)
            new = self.repo.update(conn, memory_id, **values)
            self.repo.log(conn, user_id, Change("UPDATE", memory_id, old.text, new.text,
                                                "edited by user"),
                          message_id=None, old_importance=old.importance,
                          new_importance=new.importance, now=values["updated_at"])
        self.index.put_many(user_id, [new])
        return new

    def delete(self, user_id: str, memory_id: int) -> None:
        """Remove one memory; logged as DELETE."""
        with self._lock, self.store.writing() as conn:
            old = self._owned(conn, user_id, memory_id)
            self.repo.delete(conn, [memory_id])
            self.repo.log(conn, user_id, Change("DELETE", memory_id, old.text, None,
                                                "deleted by user"),
                          message_id=None, old_importance=old.importance, new_importance=None,
                          now=_now())
        self.index.remove(user_id, [memory_id])

    def memories(self, user_id: str, limit: int = 50, offset: int = 0,
                 topic: str | None = None) -> list[Memory]:
        """A user's memories, most important first (optionally only one topic)."""
        if topic is None:
            return self.repo.page(user_id, limit, offset)
        self.index.ensure(user_id, self.repo.for_user)
        hits = self.index.text_search(user_id, topic, limit=limit + offset, column="topics")
        loaded = self.index.fetch(user_id, [i for i, _ in hits[offset:]])
        return [loaded[i] for i, _ in hits[offset:] if i in loaded]

    def history(self, user_id: str, memory_id: int | None = None) -> list[dict[str, Any]]:
        """Every ADD / UPDATE / DELETE / NONE of a user (or of one memory)."""
        return self.repo.history(user_id, memory_id)

    def forget_user(self, user_id: str) -> None:
        """Unload a user whose rows were deleted."""
        self.index.drop(user_id)

    # cleanup

    def cleanup(self, user_id: str | None = None, now: datetime | None = None) -> CleanupReport:
        """Apply the policy to one user or to every user with memories."""
        now = now or _now()
        users = [user_id] if user_id else self.repo.users()
        expired = over = 0
        for uid in users:
            with self._lock, self.store.writing() as conn:
                gone_old, gone_over = doomed(self.repo.for_user(uid), self.policy, now)
                for memory_id, why in [*((i, "expired") for i in gone_old),
                                       *((i, "over max_memories") for i in gone_over)]:
                    change = Change("DELETE", memory_id, None, None, f"cleanup: {why}")
                    self.repo.log(conn, uid, change, message_id=None, old_importance=None,
                                  new_importance=None, now=now)
                self.repo.delete(conn, [*gone_old, *gone_over])
            self.index.remove(uid, [*gone_old, *gone_over])
            expired, over = expired + len(gone_old), over + len(gone_over)
        report = CleanupReport(expired, over, len(users))
        if expired or over:
            log.info("memory cleanup: %s", report.to_dict())
        return report

    def start_schedule(self, interval_s: float) -> None:
        """Run cleanup() every `interval_s` seconds in the background."""
        if self._schedule is None:
            self._schedule = Schedule(self.cleanup, interval_s, "memory-cleanup").start()

    def close(self) -> None:
        """Stop the schedule and free the index."""
        if self._schedule is not None:
            self._schedule.stop()
            self._schedule = None
        self.index.close()

    def stats(self) -> dict[str, int]:
        """Counters since start: turns, extracted, ADD/UPDATE/DELETE/NONE, parse failures."""
        return dict(self.counts)

    # internals

    def _owned(self, conn: Connection, user_id: str, memory_id: int) -> Memory:
        """The memory, if it belongs to `user_id` (NotFound otherwise, never another's)."""
        memory = self.repo.one(conn, memory_id)
        if memory.user_id != user_id:
            raise NotFound(f"no memory {memory_id}", field="memory_id")
        return memory

    def _reconcile(self, user_id: str, items: list[tuple[Candidate, Vector]],
                   message_id: int | None, now: datetime) -> list[Change]:
        """Decide and apply each candidate in one transaction, then refresh the index."""
        self.store.ensure_user(user_id)
        self.index.ensure(user_id, self.repo.for_user)
        changes: list[Change] = []
        with self._lock:
            current = self.index.memories(user_id)
            with self.store.writing() as conn:
                for cand, vector in items:
                    for decision in decide(cand, vector, list(current.values())):
                        change = self._apply(conn, user_id, cand, vector, decision, message_id,
                                             now, current)
                        self.counts[change.event] += 1
                        changes.append(change)
            removed = [c.memory_id for c in changes if c.event == "DELETE"]
            self.index.remove(user_id, removed)
            self.index.put_many(user_id, [current[c.memory_id] for c in changes
                                          if c.memory_id in current])
        return changes

    def _apply(self, conn: Connection, user_id: str, cand: Candidate, vector: Vector,
               decision: Decision, message_id: int | None, now: datetime,
               current: dict[int, Memory]) -> Change:
        """Write one decision and its history row; keep `current` in step."""
        old = decision.target
        if decision.event == "ADD":
            new = self.repo.insert(conn, user_id, cand, vector, message_id, now)
        elif old is None:  # a forget request that matched nothing
            return Change("NONE", 0, None, None, decision.reason)
        elif decision.event == "DELETE":
            self.repo.delete(conn, [old.id])
            current.pop(old.id, None)
            new = None
        elif decision.event == "UPDATE":
            new = self.repo.update(conn, old.id, text=cand.text, embedding=vector, updated_at=now,
                                   topics=tuple(dict.fromkeys((*old.topics, *cand.topics))),
                                   importance=max(old.importance, cand.importance),
                                   source_ids=merge_sources(old.source_ids, message_id))
        else:
            new = self.repo.update(conn, old.id, importance=min(1.0, old.importance + REPEAT_BOOST),
                                   source_ids=merge_sources(old.source_ids, message_id),
                                   updated_at=now)
        if new is not None:
            current[new.id] = new
        target = new if new is not None else old
        assert target is not None  # ADD made `new`; every other branch had `old`
        change = Change(decision.event, target.id, old.text if old else None,
                        new.text if new else None, decision.reason)
        self.repo.log(conn, user_id, change, message_id=message_id,
                      old_importance=old.importance if old else None,
                      new_importance=new.importance if new else None, now=now)
        return change


def _checked_text(text: str) -> str:
    """A memory text: non-empty, at most MAX_TEXT characters."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("memory text must be a non-empty string", field="text")
    if len(text) > MAX_TEXT:
        raise InputError(f"memory text is over {MAX_TEXT} characters", field="text")
    return text.strip()


def _checked_importance(value: float) -> float:
    """An importance in [0, 1]."""
    if not 0.0 <= float(value) <= 1.0:
        raise InputError("importance must be between 0 and 1", field="importance")
    return float(value)
