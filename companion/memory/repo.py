"""SQL access to memories and their history, on the Store's connections and writer lock."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from companion.embed.base import Vector
from companion.errors import NotFound
from companion.memory.base import Candidate, Change, Memory
from companion.storage import Store
from companion.storage.schema import memories, memory_history

MAX_SOURCES = 8  # source message ids kept per memory (the newest)


def memory_of(row: RowMapping) -> Memory:
    """A memories row as a Memory."""
    return Memory(
        id=int(row["id"]), user_id=row["user_id"], kind=row["kind"], slot=row["slot"],
        subject=row["subject"], text=row["text"], topics=tuple(row["topics"].split()),
        importance=float(row["importance"]), use_count=int(row["use_count"]),
        source_ids=tuple(int(i) for i in row["source_ids"] or ()), created_at=row["created_at"],
        updated_at=row["updated_at"], last_used_at=row["last_used_at"],
        embedding=row["embedding"],
    )


def merge_sources(old: Sequence[int], new: int | None) -> list[int]:
    """Old source ids plus the new one, newest MAX_SOURCES kept."""
    ids = [*old, *([new] if new is not None and new not in old else [])]
    return ids[-MAX_SOURCES:]


class MemoryRepo:
    """Reads and writes the memories and memory_history tables."""

    def __init__(self, store: Store, embedding_model: str) -> None:
        """Use `store`'s engine; `embedding_model` is recorded beside each vector."""
        self.store = store
        self.embedding_model = embedding_model

    def insert(self, conn: Connection, user_id: str, cand: Candidate, vector: Vector | None,
               message_id: int | None, now: datetime) -> Memory:
        """Add one memory (no history row: the caller writes it)."""
        values: dict[str, Any] = {
            "user_id": user_id, "kind": cand.kind, "slot": cand.slot, "subject": cand.subject,
            "text": cand.text, "topics": " ".join(cand.topics), "importance": cand.importance,
            "use_count": 0, "source_ids": [] if message_id is None else [message_id],
            "embedding": vector, "embedding_model": self.embedding_model,
            "created_at": now, "updated_at": now, "last_used_at": None,
        }
        key = conn.execute(sa.insert(memories).values(**values)).inserted_primary_key
        assert key is not None
        return self.one(conn, int(key[0]))

    def update(self, conn: Connection, memory_id: int, **values: Any) -> Memory:
        """Change some columns of one memory (a new vector records the embedding model)."""
        if "embedding" in values:
            values["embedding_model"] = self.embedding_model
        if "topics" in values:
            values["topics"] = " ".join(values["topics"])
        conn.execute(sa.update(memories).where(memories.c.id == memory_id).values(**values))
        return self.one(conn, memory_id)

    def delete(self, conn: Connection, ids: Iterable[int]) -> int:
        """Remove memories by id; returns how many went."""
        ids = list(ids)
        if not ids:
            return 0
        return int(conn.execute(sa.delete(memories).where(memories.c.id.in_(ids))).rowcount)

    @staticmethod
    def one(conn: Connection, memory_id: int) -> Memory:
        """One memory by id (NotFound when absent)."""
        row = conn.execute(sa.select(memories).where(memories.c.id == memory_id)).mappings().first()
        if row is None:
            raise NotFound(f"no memory {memory_id}", field="memory_id")
        return memory_of(row)

    @staticmethod
    def log(conn: Connection, user_id: str, change: Change, *, message_id: int | None,
            old_importance: float | None, new_importance: float | None, now: datetime) -> None:
        """Write one history row."""
        conn.execute(sa.insert(memory_history).values(
            memory_id=change.memory_id, user_id=user_id, event=change.event,
            old_text=change.old_text, new_text=change.new_text, old_importance=old_importance,
            new_importance=new_importance, message_id=message_id, reason=change.reason[:255],
            created_at=now,
        ))

    def for_user(self, user_id: str) -> list[Memory]:
        """Every memory of a user, with vectors (to load the in-process index)."""
        query = sa.select(memories).where(memories.c.user_id == user_id)
        with self.store.reading() as conn:
            return [memory_of(r) for r in conn.execute(query).mappings()]

    def page(self, user_id: str, limit: int, offset: int = 0,
             order: str = "importance") -> list[Memory]:
        """One page of a user's memories, most important (or newest) first."""
        key = memories.c.importance.desc() if order == "importance" else memories.c.id.desc()
        query = (sa.select(memories).where(memories.c.user_id == user_id)
                 .order_by(key, memories.c.id.desc()).offset(max(0, offset)).limit(max(0, limit)))
        with self.store.reading() as conn:
            return [memory_of(r) for r in conn.execute(query).mappings()]

    def history(self, user_id: str, memory_id: int | None = None) -> list[dict[str, Any]]:
        """History rows of a user (or of one memory), oldest first."""
        query = sa.select(memory_history).where(memory_history.c.user_id == user_id)
        if memory_id is not None:
            query = query.where(memory_history.c.memory_id == memory_id)
        with self.store.reading() as conn:
            rows = conn.execute(query.order_by(memory_history.c.id)).mappings().all()
        return [{**dict(r), "created_at": r["created_at"].isoformat()} for r in rows]

    def users(self) -> list[str]:
        """Users that have at least one memory."""
        with self.store.reading() as conn:
            return list(conn.execute(sa.select(memories.c.user_id).distinct()).scalars())

    def touch(self, conn: Connection, ids: Sequence[int], boost: float, now: datetime) -> None:
        """Mark memories as used by a prompt: count, time, a small importance boost."""
        if ids:
            conn.execute(sa.update(memories).where(memories.c.id.in_(list(ids))).values(
                use_count=memories.c.use_count + 1, last_used_at=now,
                importance=sa.func.min(1.0, memories.c.importance + boost)
                if self.store.dialect == "sqlite"
                else sa.func.least(1.0, memories.c.importance + boost),
            ))
