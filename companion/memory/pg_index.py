"""The memory search index on PostgreSQL: tsvector + GIN for text, pgvector for vectors.

The database is the index, so every instance sees every memory at once (nothing to load, to
keep in step or to drop). Vector search is exact within the user's rows (found through the
B-tree indexes that start with user_id), so a user's recall never loses neighbours to a
filtered approximate index; at 1,000 memories a user that costs about a millisecond.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime

import numpy as np
import sqlalchemy as sa

from companion.embed.base import Vector
from companion.memory.base import Memory
from companion.memory.extract import content_words
from companion.memory.repo import memory_of
from companion.storage import Store
from companion.storage.schema import Embedding, memories

SEARCH_LIMIT = 50
TOPICS_TSVECTOR = "to_tsvector('english'::regconfig, topics)"
# BM25 over the user's rows, as FTS5's bm25() ranks on SQLite (k1 = 1.2, b = 0.75, idf from
# the user's own memories, as each user's FTS5 table has it), on the stored `tsv` column
# (migration 0008; GIN-indexed). Negative like bm25(): lower is better.
BM25 = """
WITH mine AS (
  SELECT id, tsv, (SELECT coalesce(sum(array_length(positions, 1)), 0) FROM unnest(tsv)) AS dl
  FROM memories WHERE user_id = :u
), stats AS (
  SELECT count(*) AS n, greatest(avg(dl), 1) AS avgdl FROM mine
), query AS (
  SELECT to_tsquery('english'::regconfig, :q) AS q
), hits AS (
  SELECT mine.id, mine.dl, x.lexeme, coalesce(array_length(x.positions, 1), 1) AS tf
  FROM mine, query, unnest(mine.tsv) AS x
  WHERE mine.tsv @@ query.q AND x.lexeme = ANY(tsvector_to_array(to_tsvector(
    'english'::regconfig, replace(:q, '|', ' '))))
), df AS (
  SELECT lexeme, count(*) AS docs FROM hits GROUP BY lexeme
)
SELECT hits.id, -sum(
  greatest(ln((stats.n - df.docs + 0.5) / (df.docs + 0.5)), 1e-6)
  * hits.tf * 2.2 / (hits.tf + 1.2 * (0.25 + 0.75 * hits.dl / stats.avgdl))
) AS score
FROM hits JOIN df USING (lexeme), stats
GROUP BY hits.id ORDER BY score, hits.id DESC LIMIT :n
"""
TOPICS = (
    f"SELECT id, -ts_rank({TOPICS_TSVECTOR}, q) AS score FROM memories, "
    "to_tsquery('english'::regconfig, :q) AS q "
    f"WHERE user_id = :u AND {TOPICS_TSVECTOR} @@ q ORDER BY score, id DESC LIMIT :n"
)


def ts_query(text: str) -> str | None:
    """A to_tsquery() string OR-ing the content words of `text`, or None if none."""
    terms = dict.fromkeys(re.sub(r"[^a-z0-9]", "", w) for w in content_words(text))
    kept = [t for t in terms if t]
    return " | ".join(kept) if kept else None


class PgMemoryIndex:
    """Full-text and vector search over the memories table itself (same methods as
    MemoryIndex, so recall() and MemoryService work on either)."""

    def __init__(self, store: Store) -> None:
        """Search `store`'s PostgreSQL database."""
        self.store = store
        self._distance = memories.c.embedding.op("<=>", return_type=sa.Float)

    def ensure(self, user_id: str, load: Callable[[str], list[Memory]]) -> None:
        """Nothing to load: the database is the index."""

    def put_many(self, user_id: str, items: Iterable[Memory]) -> None:
        """Nothing to do: rows are indexed as they are written."""

    def remove(self, user_id: str, ids: Iterable[int]) -> None:
        """Nothing to do: deleted rows leave the index with them."""

    def drop(self, user_id: str) -> None:
        """Nothing held in process."""

    def memories(self, user_id: str) -> dict[int, Memory]:
        """Every memory of the user by id."""
        query = sa.select(memories).where(memories.c.user_id == user_id)
        with self.store.reading() as conn:
            return {m.id: m for m in map(memory_of, conn.execute(query).mappings())}

    def fetch(self, user_id: str, ids: Iterable[int]) -> dict[int, Memory]:
        """These memories of the user by id (others' ids are ignored)."""
        wanted = list(ids)
        if not wanted:
            return {}
        query = sa.select(memories).where(memories.c.user_id == user_id, memories.c.id.in_(wanted))
        with self.store.reading() as conn:
            return {m.id: m for m in map(memory_of, conn.execute(query).mappings())}

    def text_search(
        self, user_id: str, query: str, limit: int = SEARCH_LIMIT, column: str | None = None
    ) -> list[tuple[int, float]]:
        """(memory id, bm25) best first: negative like FTS5's bm25, lower is better."""
        match = ts_query(query)
        if match is None:
            return []
        sql = sa.text(TOPICS if column == "topics" else BM25)
        with self.store.reading() as conn:
            rows = conn.execute(sql, {"q": match, "u": user_id, "n": limit}).all()
        return [(int(r[0]), float(r[1])) for r in rows]

    def vector_search(
        self, user_id: str, vector: Vector, limit: int = SEARCH_LIMIT
    ) -> list[tuple[int, float]]:
        """(memory id, cosine similarity) best first, exact over the user's rows."""
        distance = self._distance(sa.bindparam("v", vector, type_=Embedding()))
        query = (
            sa.select(memories.c.id, (1.0 - distance).label("sim"))
            .where(memories.c.user_id == user_id, memories.c.embedding.is_not(None))
            .order_by(distance)
            .limit(limit)
        )
        with self.store.reading() as conn:
            return [(int(r[0]), float(r[1])) for r in conn.execute(query)]

    def close(self) -> None:
        """Nothing to free."""


COPY_COLUMNS = (
    "user_id, kind, text, topics, importance, use_count, source_ids, embedding, "
    "embedding_model, created_at, updated_at"
)
COPY_TYPES = ["text", "text", "text", "text", "float8", "int4", "json", "vector", "text",
              "timestamptz", "timestamptz"]  # fmt: skip


def copy_memories(
    store: Store, rows: Iterable[tuple[str, str, np.ndarray]], model: str, now: datetime
) -> None:
    """Many (user, text, vector) event memories in one binary COPY, for checks and probes at
    scale (row-by-row INSERTs of 100,000 memories take minutes on a busy machine)."""
    from pgvector.psycopg import register_vector

    raw = store.engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        register_vector(driver)
        sql = f"COPY memories ({COPY_COLUMNS}) FROM STDIN WITH (FORMAT BINARY)"
        with driver.cursor() as cur, cur.copy(sql) as copy:
            copy.set_types(COPY_TYPES)
            for user, text, vector in rows:
                copy.write_row((user, "event", text, "", 0.5, 0, "[]", vector, model, now, now))
        driver.commit()
    finally:
        raw.close()
