"""PostgreSQL recall never loses a user's neighbours: pgvector search against exact numpy search
over 100 users x 1,000 memories (the issue's check; a filtered ANN index would fail it)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import sqlalchemy as sa
from pgvector.psycopg import register_vector

from companion.memory.pg_index import PgMemoryIndex
from companion.storage import Store, open_store
from companion.storage.schema import memories, users

USERS, PER_USER, DIM, K = 100, 1000, 384, 10


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _copy_memories(store: Store, vectors: dict[str, np.ndarray], now: datetime) -> None:
    """100,000 rows in one binary COPY (row by row INSERTs take minutes on a busy machine)."""
    raw = store.engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        register_vector(driver)
        columns = (
            "user_id, kind, text, topics, importance, use_count, source_ids, embedding, "
            "embedding_model, created_at, updated_at"
        )
        sql = f"COPY memories ({columns}) FROM STDIN WITH (FORMAT BINARY)"
        with driver.cursor() as cur, cur.copy(sql) as copy:
            copy.set_types(
                [
                    "text",
                    "text",
                    "text",
                    "text",
                    "float8",
                    "int4",
                    "json",
                    "vector",
                    "text",
                    "timestamptz",
                    "timestamptz",
                ]
            )
            for user, matrix in vectors.items():
                for i, vector in enumerate(matrix):
                    copy.write_row(
                        (user, "event", f"memory {i}", "", 0.5, 0, "[]", vector, "test", now, now)
                    )
        driver.commit()
    finally:
        raw.close()


def test_pg_vector_search_equals_exact_search_per_user(pg_url: str) -> None:
    rng = np.random.default_rng(15)
    store = open_store(pg_url)
    now = datetime.now(UTC)
    vectors = {f"u{u}": _unit(rng, PER_USER) for u in range(USERS)}
    with store.writing() as conn:
        conn.execute(sa.insert(users), [{"id": u, "created_at": now} for u in vectors])
    _copy_memories(store, vectors, now)
    ids: dict[str, list[int]] = {}
    with store.reading() as conn:
        for user, memory_id in conn.execute(
            sa.select(memories.c.user_id, memories.c.id).order_by(memories.c.id)
        ):
            ids.setdefault(user, []).append(int(memory_id))
    index = PgMemoryIndex(store)
    try:
        for user in [f"u{u}" for u in rng.choice(USERS, 20, replace=False)]:
            query = _unit(rng, 1)[0]
            sims = vectors[user] @ query
            exact = [ids[user][i] for i in np.argsort(-sims)[:K]]
            found = index.vector_search(user, query, limit=K)
            assert [i for i, _ in found] == exact
            assert np.allclose([s for _, s in found], np.sort(sims)[::-1][:K], atol=1e-5)
            assert set(exact) <= set(ids[user])  # never another user's rows
    finally:
        store.close()
