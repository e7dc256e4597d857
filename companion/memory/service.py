"""MemoryService: extraction, reconciliation, recall and cleanup over the store and the index."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
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
    Episode,
    Kind,
    Memory,
    Recalled,
)
from companion.memory.cleanup import CleanupPolicy, Schedule, doomed
from companion.memory.episodes import ROLES, EpisodeRepo, sentence_texts
from companion.memory.extract import extract, topics_of
from companion.memory.index import MemoryIndex, episode_key, fact_key
from companion.memory.recall import Weights, recall
from companion.memory.reconcile import Decision, decide
from companion.memory.repo import MemoryRepo, merge_sources
from companion.shared.bus import Bus
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
        self.episode_repo = EpisodeRepo(store, embedder.name)
        # In process on both backends (loaded through SQLAlchemy Core): recall ranks facts and
        # turns with each turn's conversation context, which pg_index.py does not hold yet.
        self.index = MemoryIndex(embedder.dim, max_loaded_users)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # one reconciliation at a time: decide, write, index
        self._schedule: Schedule | None = None
        self.bus: Bus | None = None  # set by the runtime: deletions reach every instance

    # turns

    def observe(self, user_id: str, text: str, message_id: int | None, *,
                subject: str | None = None, extra: Sequence[Candidate] = (),
                now: datetime | None = None, session_id: str | None = None) -> list[Change]:
        """Keep one user turn as an episode, extract its facts (plus `extra`, e.g. from a
        model) and reconcile them; the facts' source is the turn's `message_id`."""
        now = now or _now()
        self.remember_turn(user_id, "user", text, message_id, session_id=session_id,
                           subject=subject, now=now)
        candidates = [*extract(text, subject), *extra]
        self.counts["turns"] += 1
        return self.reconcile_candidates(user_id, candidates, message_id, now=now)

    def observe_reply(self, user_id: str, text: str, message_id: int | None, *,
                      session_id: str | None = None, now: datetime | None = None,
                      ) -> Episode | None:
        """Keep the companion's reply as an episode: recallable ("you recommended ..."),
        never extracted into facts about the user."""
        return self.remember_turn(user_id, "assistant", text, message_id,
                                  session_id=session_id, now=now)

    def remember_turn(self, user_id: str, role: str, text: str, message_id: int | None, *,
                      session_id: str | None = None, subject: str | None = None,
                      now: datetime | None = None) -> Episode | None:
        """Store one turn as an episode and index it (None for an empty turn)."""
        if role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}", field="role")
        if not isinstance(text, str) or not text.strip():
            return None
        self.store.ensure_user(user_id)
        self._load(user_id)
        parts = sentence_texts(role, text.strip())
        if parts:  # a long user turn: its sentences are embedded too (one batch)
            both = self.embedder.embed([text, *parts])
            vector, sentence_vectors = both[0], both[1:]
        else:
            vector, sentence_vectors = self.embedder.embed_one(text), None
        with self._lock, self.store.writing() as conn:
            episode = self.episode_repo.insert(
                conn, user_id, role=role, text=text.strip(), vector=vector,
                message_id=message_id, session_id=session_id, subject=subject, now=now or _now(),
                sentence_vectors=sentence_vectors)
            self.index.put_many(user_id, [episode])
        self._changed(user_id)
        self.counts[f"episodes_{role}"] += 1
        return episode

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
               k: int | None = None, *, now: datetime | None = None,
               as_of: datetime | None = None) -> list[Recalled]:
        """The best facts and turns for `query`, asked at `now`; `as_of`: only what was said
        up to then, facts as they stood then. Does not mark them used (see mark_recalled)."""
        self._load(user_id)
        if vector is None:
            vector = self.embedder.embed_one(query)
        found = recall(self.index, user_id, query, vector, k or self.top_k, now or _now(),
                       self.weights, as_of=as_of,
                       anchor_time=lambda words: self._anchor(user_id, words))
        return self._as_of(user_id, found, as_of) if as_of is not None else found

    def mark_recalled(self, user_id: str, recalled: Sequence[Recalled],
                      now: datetime | None = None) -> None:
        """Facts and turns that went into a prompt (facts gain importance, see mark_used)."""
        now = now or _now()
        self.mark_used(user_id, [r.memory.id for r in recalled if not r.is_episode], now)
        turns = [r.memory.id for r in recalled if r.is_episode]
        if turns:
            with self._lock, self.store.writing() as conn:
                self.episode_repo.touch(conn, turns, now)

    def episodes(self, user_id: str, limit: int = 50, offset: int = 0,
                 session_id: str | None = None) -> list[Episode]:
        """A user's turns as kept, newest first (optionally of one session)."""
        return self.episode_repo.page(user_id, limit, offset, session_id)

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
        self._changed(user_id)
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
        self._changed(user_id)
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
        self.index.remove(user_id, [fact_key(memory_id)])
        self._deleted(user_id)

    def memories(self, user_id: str, limit: int = 50, offset: int = 0,
                 topic: str | None = None) -> list[Memory]:
        """A user's memories, most important first (optionally only one topic)."""
        if topic is None:
            return self.repo.page(user_id, limit, offset)
        self._load(user_id)
        loaded = self.index.facts(user_id)
        hits = self.index.text_search(user_id, topic, limit=2 * (limit + offset), column="topics")
        found = [loaded[key // 2] for key, _ in hits if key % 2 == 0 and key // 2 in loaded]
        return found[offset:offset + limit]

    def history(self, user_id: str, memory_id: int | None = None) -> list[dict[str, Any]]:
        """Every ADD / UPDATE / DELETE / NONE of a user (or of one memory)."""
        return self.repo.history(user_id, memory_id)

    def forget_session(self, user_id: str, session_id: str) -> int:
        """Delete the turns kept of a deleted conversation (its facts stay: they are about
        the user, and have their own API); returns how many went."""
        with self._lock, self.store.writing() as conn:
            gone = self.episode_repo.delete_session(conn, user_id, session_id)
        self.index.remove(user_id, [episode_key(i) for i in gone])
        return len(gone)

    def forget_user(self, user_id: str) -> None:
        """Unload a user whose rows were deleted."""
        self.index.drop(user_id)

    # cleanup

    def cleanup(self, user_id: str | None = None, now: datetime | None = None) -> CleanupReport:
        """Apply the policy to one user or to every user with memories or episodes."""
        now = now or _now()
        users = [user_id] if user_id else sorted({*self.repo.users(), *self.episode_repo.users()})
        totals = [0, 0, 0, 0]
        for uid in users:
            for i, n in enumerate((*self._cleanup_facts(uid, now), *self._cleanup_turns(uid, now))):
                totals[i] += n
        report = CleanupReport(totals[0], totals[1], len(users), totals[2], totals[3])
        if any(totals):
            log.info("memory cleanup: %s", report.to_dict())
        return report

    def _cleanup_facts(self, uid: str, now: datetime) -> tuple[int, int]:
        """The spec's policy on one user's facts, each deletion in the history."""
        with self._lock, self.store.writing() as conn:
            gone_old, gone_over = doomed(self.repo.for_user(uid), self.policy, now)
            for memory_id, why in [*((i, "expired") for i in gone_old),
                                   *((i, "over max_memories") for i in gone_over)]:
                change = Change("DELETE", memory_id, None, None, f"cleanup: {why}")
                self.repo.log(conn, uid, change, message_id=None, old_importance=None,
                              new_importance=None, now=now)
            self.repo.delete(conn, [*gone_old, *gone_over])
        self.index.remove(uid, [fact_key(i) for i in (*gone_old, *gone_over)])
        if gone_old or gone_over:
            self._deleted(uid)
        return len(gone_old), len(gone_over)

    def _cleanup_turns(self, uid: str, now: datetime) -> tuple[int, int]:
        """The episodes' policy (episodes.py): unrecalled replies expire, then the cap."""
        policy = self.policy.for_episodes()
        with self._lock, self.store.writing() as conn:
            gone_old, gone_over = doomed(self.episode_repo.for_user(uid), policy, now)
            self.episode_repo.delete(conn, [*gone_old, *gone_over])
        self.index.remove(uid, [episode_key(i) for i in (*gone_old, *gone_over)])
        return len(gone_old), len(gone_over)

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

    def _load(self, user_id: str) -> None:
        """Load a user's facts and turns into the index unless loaded."""
        self.index.ensure(user_id, lambda uid: [*self.repo.for_user(uid),
                                                *self.episode_repo.for_user(uid, True)])

    def _anchor(self, user_id: str, words: str) -> datetime | None:
        """When the event `words` names happened: the time of the best match for them."""
        vector = self.embedder.embed_one(words)
        found = recall(self.index, user_id, words, vector, 1, _now(), self.weights)
        return found[0].memory.created_at if found else None

    def _as_of(self, user_id: str, found: list[Recalled], as_of: datetime) -> list[Recalled]:
        """Facts changed after `as_of` as they read then (from their history)."""
        out = []
        for r in found:
            if r.is_episode or r.memory.updated_at <= as_of:
                out.append(r)
                continue
            rows = [h for h in self.repo.history(user_id, r.memory.id)
                    if h["new_text"] and datetime.fromisoformat(h["created_at"]) <= as_of]
            if rows:
                then = replace(r.memory, text=rows[-1]["new_text"], updated_at=as_of)
                out.append(Recalled(then, r.score, {**r.reasons, "as_of": as_of.isoformat()},
                                    r.snippet))
        return out

    def _deleted(self, user_id: str) -> None:
        """Tell the other instances to drop what they hold of this user's memories."""
        if self.bus is not None:
            self.bus.publish("memory_deleted", user_id=user_id)

    def _changed(self, user_id: str) -> None:
        """Tell the other instances (not this one: its index is up to date) that the user's
        memories changed: their in-process index of the user reloads on next use."""
        if self.bus is not None:
            self.bus.publish("memory_changed", user_id=user_id)

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
        self._load(user_id)
        changes: list[Change] = []
        stale: list[Episode] = []  # turns that told a value since updated
        with self._lock:
            current = self.index.facts(user_id)
            with self.store.writing() as conn:
                for cand, vector in items:
                    for decision in decide(cand, vector, list(current.values())):
                        change = self._apply(conn, user_id, cand, vector, decision, message_id,
                                             now, current, stale)
                        self.counts[change.event] += 1
                        changes.append(change)
            removed = [c.memory_id for c in changes if c.event == "DELETE"]
            self.index.remove(user_id, [fact_key(i) for i in removed])
            self.index.put_many(user_id, [*(current[c.memory_id] for c in changes
                                            if c.memory_id in current), *stale])
        if any(c.event != "NONE" for c in changes):
            self._changed(user_id)
        return changes

    def _apply(self, conn: Connection, user_id: str, cand: Candidate, vector: Vector,
               decision: Decision, message_id: int | None, now: datetime,
               current: dict[int, Memory], stale: list[Episode]) -> Change:
        """Write one decision and its history row; keep `current` in step. An UPDATE's new
        value has this turn as its source; the turns of the old value are marked superseded
        (they stay recallable as history, `stale` collects them for the index)."""
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
            sources = list(old.source_ids) if message_id is None else [message_id]
            stale += self.episode_repo.supersede(
                conn, user_id, [m for m in old.source_ids if m not in sources], now)
            new = self.repo.update(conn, old.id, text=cand.text, embedding=vector, updated_at=now,
                                   topics=tuple(dict.fromkeys((*old.topics, *cand.topics))),
                                   importance=max(old.importance, cand.importance),
                                   source_ids=sources)
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
