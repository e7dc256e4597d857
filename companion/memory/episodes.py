"""SQL access to episodes (every chat turn kept as episodic memory), and their cleanup policy.

Episodes are capped apart from facts: the spec's 90 days / 0.3 / 1,000 policy counts facts.
A user keeps at most `max_episodes` turns (past that, the least worth keeping go: importance,
then recency); the assistant's replies (importance 0.25) that were never recalled expire after
`days_old` like unrecalled events; the user's own turns (0.5) stay until the cap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from companion.embed.base import Vector
from companion.memory.base import Episode
from companion.memory.extract import sentences
from companion.storage import Store
from companion.storage.schema import episode_sentences, episodes

ROLES = ("user", "assistant")
EPISODE_IMPORTANCE = {"user": 0.5, "assistant": 0.25}
SENTENCE_TURN_CHARS = 250  # a user turn longer than this is also indexed by its sentences
SENTENCE_MIN_CHARS = 20  # shorter sentences ("Thanks!", "Hi there.") get no vector of their own
MAX_SENTENCES = 16  # at most this many per turn (the longest)


def sentence_texts(role: str, text: str) -> list[str]:
    """The sentences of a turn that get vectors of their own: a long user turn's (a request,
    a plan, a story) with at least two such sentences; none for the assistant's or short turns.
    """
    if role != "user" or len(text) <= SENTENCE_TURN_CHARS:
        return []
    parts = [p for p in sentences(text) if len(p) >= SENTENCE_MIN_CHARS]
    if len(parts) > MAX_SENTENCES:
        longest = set(sorted(range(len(parts)), key=lambda i: -len(parts[i]))[:MAX_SENTENCES])
        parts = [p for i, p in enumerate(parts) if i in longest]
    return parts if len(parts) >= 2 else []


def episode_of(row: RowMapping) -> Episode:
    """An episodes row as an Episode."""
    return Episode(
        id=int(row["id"]),
        user_id=row["user_id"],
        session_id=row["session_id"],
        message_id=None if row["message_id"] is None else int(row["message_id"]),
        role=row["role"],
        subject=row["subject"],
        text=row["text"],
        importance=float(row["importance"]),
        use_count=int(row["use_count"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        embedding=row["embedding"],
        superseded_at=row["superseded_at"],
    )


class EpisodeRepo:
    """Reads and writes the episodes table."""

    def __init__(self, store: Store, embedding_model: str) -> None:
        """Use `store`'s engine; `embedding_model` is recorded beside each vector."""
        self.store = store
        self.embedding_model = embedding_model

    def insert(
        self,
        conn: Connection,
        user_id: str,
        *,
        role: str,
        text: str,
        vector: Vector | None,
        message_id: int | None,
        session_id: str | None,
        subject: str | None,
        now: datetime,
        sentence_vectors: Vector | None = None,
    ) -> Episode:
        """Keep one turn (and its sentences' vectors, one row each, when it has them)."""
        values: dict[str, Any] = {
            "user_id": user_id,
            "session_id": session_id,
            "message_id": message_id,
            "role": role,
            "subject": subject,
            "text": text,
            "importance": EPISODE_IMPORTANCE[role],
            "use_count": 0,
            "embedding": vector,
            "embedding_model": self.embedding_model,
            "created_at": now,
            "last_used_at": None,
        }
        key = conn.execute(sa.insert(episodes).values(**values)).inserted_primary_key
        assert key is not None
        if sentence_vectors is not None and len(sentence_vectors):
            conn.execute(
                sa.insert(episode_sentences),
                [
                    {"episode_id": int(key[0]), "user_id": user_id, "position": i, "embedding": v}
                    for i, v in enumerate(sentence_vectors)
                ],
            )
        else:
            sentence_vectors = None
        return Episode(
            id=int(key[0]),
            user_id=user_id,
            session_id=session_id,
            message_id=message_id,
            role=role,
            subject=subject,
            text=text,
            importance=values["importance"],
            use_count=0,
            created_at=now,
            last_used_at=None,
            embedding=vector,
            sentence_vectors=sentence_vectors,
        )

    def for_user(self, user_id: str, with_sentences: bool = False) -> list[Episode]:
        """Every episode of a user in time order, with vectors (to load the index; with
        `with_sentences`, each long user turn's sentence vectors too)."""
        query = (
            sa.select(episodes)
            .where(episodes.c.user_id == user_id)
            .order_by(episodes.c.created_at, episodes.c.id)
        )
        with self.store.reading() as conn:
            found = [episode_of(r) for r in conn.execute(query).mappings()]
            if not with_sentences:
                return found
            rows = conn.execute(
                sa.select(episode_sentences.c.episode_id, episode_sentences.c.embedding)
                .where(episode_sentences.c.user_id == user_id)
                .order_by(episode_sentences.c.episode_id, episode_sentences.c.position)
            )
            held: dict[int, list[Vector]] = defaultdict(list)
            for episode_id, vector in rows:
                held[int(episode_id)].append(vector)
        return [
            replace(e, sentence_vectors=np.vstack(held[e.id]).astype(np.float32))
            if e.id in held
            else e
            for e in found
        ]

    def sentence_count(self, user_id: str) -> int:
        """How many sentence vectors a user's turns have."""
        query = (
            sa.select(sa.func.count())
            .select_from(episode_sentences)
            .where(episode_sentences.c.user_id == user_id)
        )
        with self.store.reading() as conn:
            return int(conn.execute(query).scalar_one())

    def page(
        self, user_id: str, limit: int, offset: int = 0, session_id: str | None = None
    ) -> list[Episode]:
        """One page of a user's episodes, newest first (optionally of one session)."""
        query = sa.select(episodes).where(episodes.c.user_id == user_id)
        if session_id is not None:
            query = query.where(episodes.c.session_id == session_id)
        query = (
            query.order_by(episodes.c.created_at.desc(), episodes.c.id.desc())
            .offset(max(0, offset))
            .limit(max(0, limit))
        )
        with self.store.reading() as conn:
            return [episode_of(r) for r in conn.execute(query).mappings()]

    def count(self, user_id: str) -> int:
        """How many episodes a user has."""
        query = (
            sa.select(sa.func.count()).select_from(episodes).where(episodes.c.user_id == user_id)
        )
        with self.store.reading() as conn:
            return int(conn.execute(query).scalar_one())

    @staticmethod
    def delete(conn: Connection, ids: Iterable[int]) -> int:
        """Remove episodes by id; returns how many went."""
        ids = list(ids)
        if not ids:
            return 0
        # their sentences first (the foreign key cascades too; this does not rely on it)
        conn.execute(sa.delete(episode_sentences).where(episode_sentences.c.episode_id.in_(ids)))
        return int(conn.execute(sa.delete(episodes).where(episodes.c.id.in_(ids))).rowcount)

    @staticmethod
    def delete_session(conn: Connection, user_id: str, session_id: str) -> list[int]:
        """Remove a session's episodes; returns their ids."""
        where = sa.and_(episodes.c.user_id == user_id, episodes.c.session_id == session_id)
        ids = [int(i) for i in conn.execute(sa.select(episodes.c.id).where(where)).scalars()]
        EpisodeRepo.delete(conn, ids)  # with their sentences
        return ids

    @staticmethod
    def touch(conn: Connection, ids: Sequence[int], now: datetime) -> None:
        """Mark episodes as used by a prompt (count and time: they then outlive expiry)."""
        if ids:
            conn.execute(
                sa.update(episodes)
                .where(episodes.c.id.in_(list(ids)))
                .values(use_count=episodes.c.use_count + 1, last_used_at=now)
            )

    @staticmethod
    def supersede(
        conn: Connection, user_id: str, message_ids: Sequence[int], now: datetime
    ) -> list[Episode]:
        """Mark the turns of some messages as told a fact that has since changed."""
        if not message_ids:
            return []
        where = sa.and_(episodes.c.user_id == user_id, episodes.c.message_id.in_(list(message_ids)))
        conn.execute(sa.update(episodes).where(where).values(superseded_at=now))
        return [episode_of(r) for r in conn.execute(sa.select(episodes).where(where)).mappings()]

    def users(self) -> list[str]:
        """Users that have at least one episode."""
        with self.store.reading() as conn:
            return list(conn.execute(sa.select(episodes.c.user_id).distinct()).scalars())
