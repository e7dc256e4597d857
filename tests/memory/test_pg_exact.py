"""PostgreSQL recall never loses a user's neighbours: pgvector search against exact numpy search
over 100 users x 1,000 memories (the issue's check; a filtered ANN index would fail it)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa

from companion.memory.pg_index import PgMemoryIndex, copy_memories
from companion.storage import open_store
from companion.storage.schema import memories, users
from tests.servers import Postgres

USERS, PER_USER, DIM, K = 100, 1000, 384, 10


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_pg_vector_search_equals_exact_search_per_user(pg_server: Postgres, pg_url: str) -> None:
    if not pg_server.vector_distance_ok:
        pytest.skip("the bundled pgvector's distance operator crashes on this CPU (SIGILL)")
    rng = np.random.default_rng(15)
    store = open_store(pg_url)
    now = datetime.now(UTC)
    vectors = {f"u{u}": _unit(rng, PER_USER) for u in range(USERS)}
    with store.writing() as conn:
        conn.execute(sa.insert(users), [{"id": u, "created_at": now} for u in vectors])
    rows = (
        (user, f"memory {i}", v) for user, matrix in vectors.items() for i, v in enumerate(matrix)
    )
    copy_memories(store, rows, "test", now)
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
