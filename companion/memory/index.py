"""The in-process search index of each user's memories: SQLite FTS5 plus a vector matrix.

(The SQLite backend of the memory index; memory/pg_index.py is the PostgreSQL one. Both have
the methods of `SearchIndex` in memory/base.py, and tests/memory/test_index_contract.py runs
one test body against both.)

The database holds the memories; this index holds, per loaded user, an FTS5 table (in an
in-memory SQLite connection, so its shadow tables never touch the main schema, and the same
code serves a PostgreSQL store) and the user's vectors as one float32 matrix. A user is loaded
on first use and dropped when the least recently used of more than `max_users`.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np

from companion.embed.base import Vector
from companion.memory.base import Memory
from companion.memory.extract import content_words

SEARCH_LIMIT = 50  # candidates taken from each of the text and the vector search


def fts_query(text: str) -> str | None:
    """An FTS5 query OR-ing the content words of `text` (each quoted), or None if none."""
    terms = dict.fromkeys(w.replace('"', "").strip("'") for w in content_words(text))
    quoted = [f'"{t}"' for t in terms if t]
    return " OR ".join(quoted) if quoted else None


class _UserIndex:
    """One user's memories, their FTS5 table and (built on demand) their vector matrix."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.memories: dict[int, Memory] = {}
        self._ids: np.ndarray | None = None
        self._matrix: np.ndarray | None = None

    def invalidate(self) -> None:
        """Drop the matrix; the next vector search rebuilds it."""
        self._ids = self._matrix = None

    def matrix(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the memories that have a vector."""
        if self._ids is None or self._matrix is None:
            pairs = [(m.id, m.embedding) for m in self.memories.values()
                     if m.embedding is not None]
            self._ids = np.array([i for i, _ in pairs], dtype=np.int64)
            self._matrix = (np.vstack([v for _, v in pairs]).astype(np.float32)
                            if pairs else np.zeros((0, dim), dtype=np.float32))
        return self._ids, self._matrix


class MemoryIndex:
    """Full-text and vector search over the memories of recently active users."""

    def __init__(self, dim: int, max_users: int = 256) -> None:
        """`dim`: vector size; `max_users`: users kept loaded at once."""
        self.dim = dim
        self.max_users = max_users
        self._conn = sqlite3.connect(":memory:", check_same_thread=False)
        self._users: OrderedDict[str, _UserIndex] = OrderedDict()
        self._names = itertools.count()
        self._lock = threading.RLock()

    def ensure(self, user_id: str, load: Callable[[str], list[Memory]]) -> None:
        """Load a user's memories with `load` unless already loaded."""
        with self._lock:
            if user_id in self._users:
                self._users.move_to_end(user_id)
                return
            index = _UserIndex(f"fts_{next(self._names)}")
            self._conn.execute(f"CREATE VIRTUAL TABLE {index.table} USING fts5("
                               "text, topics, tokenize='porter unicode61')")
            self._users[user_id] = index
            self.put_many(user_id, load(user_id))
            while len(self._users) > self.max_users:
                self.drop(next(iter(self._users)))

    def put_many(self, user_id: str, items: Iterable[Memory]) -> None:
        """Insert or replace memories of a loaded user."""
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                return
            items = list({m.id: m for m in items}.values())  # one row per id (the last given)
            ids = [(m.id,) for m in items]
            self._conn.executemany(f"DELETE FROM {index.table} WHERE rowid = ?", ids)
            self._conn.executemany(
                f"INSERT INTO {index.table}(rowid, text, topics) VALUES (?, ?, ?)",
                [(m.id, m.text + (f" {m.subject}" if m.subject else ""), " ".join(m.topics))
                 for m in items],
            )
            index.memories.update({m.id: m for m in items})
            index.invalidate()

    def remove(self, user_id: str, ids: Iterable[int]) -> None:
        """Forget memories of a loaded user."""
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                return
            for memory_id in ids:
                index.memories.pop(memory_id, None)
                self._conn.execute(f"DELETE FROM {index.table} WHERE rowid = ?", (memory_id,))
            index.invalidate()

    def drop(self, user_id: str) -> None:
        """Unload a user (after deleting all their data, or to make room)."""
        with self._lock:
            index = self._users.pop(user_id, None)
            if index is not None:
                self._conn.execute(f"DROP TABLE {index.table}")

    def memories(self, user_id: str) -> dict[int, Memory]:
        """The loaded memories of a user by id (empty when not loaded)."""
        with self._lock:
            index = self._users.get(user_id)
            return dict(index.memories) if index else {}

    def fetch(self, user_id: str, ids: Iterable[int]) -> dict[int, Memory]:
        """These loaded memories of the user by id."""
        with self._lock:
            index = self._users.get(user_id)
            held = index.memories if index else {}
            return {i: held[i] for i in ids if i in held}

    def text_search(self, user_id: str, query: str, limit: int = SEARCH_LIMIT,
                    column: str | None = None) -> list[tuple[int, float]]:
        """(memory id, bm25) best first; bm25 is negative, lower is better."""
        match = fts_query(query)
        with self._lock:
            index = self._users.get(user_id)
            if index is None or match is None:
                return []
            if column is not None:
                match = f"{column} : ({match})"
            rows = self._conn.execute(
                f"SELECT rowid, bm25({index.table}) FROM {index.table} WHERE {index.table} "
                f"MATCH ? ORDER BY bm25({index.table}) LIMIT ?", (match, limit),
            ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    def vector_search(self, user_id: str, vector: Vector,
                      limit: int = SEARCH_LIMIT) -> list[tuple[int, float]]:
        """(memory id, cosine similarity) best first."""
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                return []
            ids, matrix = index.matrix(self.dim)
        if len(ids) == 0:
            return []
        sims = matrix @ np.asarray(vector, dtype=np.float32)
        top = np.argpartition(-sims, min(limit, len(sims)) - 1)[:limit]
        top = top[np.argsort(-sims[top])]
        return [(int(ids[i]), float(sims[i])) for i in top]

    def close(self) -> None:
        """Free the in-memory database."""
        with self._lock:
            self._users.clear()
            self._conn.close()
